import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The readiness protocol of sd_notify(3), from the receiving side: a datagram socket in the
/// abstract namespace (no file to clean up) whose name goes to a child as `NOTIFY_SOCKET`; a child
/// built with systemd support (Debian's mosquitto is) sends `READY=1` once it serves. Waiting for
/// that datagram, and for the child's exit on its pidfd, in one `poll`: readiness is an event,
/// not a port probed in a loop.
public final class ReadinessNotice: Sendable {
    public enum Outcome: Sendable, Equatable {
        case ready
        case exited
        case timedOut
    }

    public let fd: Int32
    /// The `NOTIFY_SOCKET` value: `@` + the abstract name.
    public let address: String
    private static let counter = Atomic<Int>(0)

    public init() throws(SpawnError) {
        let name = "escrow-ready-\(getpid())-\(Self.counter.add(1, ordering: .relaxed).newValue)"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw SpawnError(executable: "socket(AF_UNIX)", errno: errno) }
        var a = sockaddr_un()
        a.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(name.utf8)
        withUnsafeMutableBytes(of: &a.sun_path) { path in
            path[0] = 0 // abstract namespace
            for (i, b) in bytes.enumerated() { path[i + 1] = b }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + 1 + bytes.count)
        let rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard rc == 0 else {
            let saved = errno
            close(fd)
            throw SpawnError(executable: "bind(\(name))", errno: saved)
        }
        self.fd = fd
        address = "@" + name
    }

    deinit { close(fd) }

    /// The current environment plus `NOTIFY_SOCKET`, for `ChildProcess.spawn`.
    public var environment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["NOTIFY_SOCKET"] = address
        return env
    }

    /// Waits until the child says `READY=1`, exits, or `timeout` passes. Blocks: call it from a
    /// thread that may (`BlockingWork`).
    public func wait(for process: ChildProcess, timeout: Duration) -> Outcome {
        BlockingWork.check("wait for \(process.executable) to be ready")
        let deadline = ContinuousClock.now + timeout
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let left = ContinuousClock.now.duration(to: deadline)
            if left <= .zero { return .timedOut }
            let ms = Int32(clamping: max(1, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000))
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
            if process.exitDescriptor >= 0 { fds.append(pollfd(fd: process.exitDescriptor, events: Int16(POLLIN), revents: 0)) }
            let r = poll(&fds, nfds_t(fds.count), process.exitDescriptor >= 0 ? ms : min(ms, 50))
            if r < 0 && errno == EINTR { continue }
            if fds[0].revents & Int16(POLLIN) != 0 {
                // One datagram may carry several newline-separated assignments.
                while true {
                    let n = recv(fd, &buffer, buffer.count, 0)
                    if n <= 0 { break }
                    let text = String(decoding: buffer[..<n], as: UTF8.self)
                    if text.split(separator: "\n").contains("READY=1") { return .ready }
                }
            }
            if !process.isRunning { return .exited }
        }
    }
}
