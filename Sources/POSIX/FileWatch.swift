import CSystem
#if canImport(Glibc)
import Glibc
#endif

/// Wakes a waiting thread when a file is written (inotify): how a wait for a child's output (a
/// subscriber's SUBACK line in its log) is an event, not a re-read every few milliseconds.
public final class FileWatch: Sendable {
    /// Poll it for `POLLIN` next to other descriptors; `drain()` when it is readable.
    public let fd: Int32

    /// Watches `path`, which must exist.
    public init(_ path: String) throws(SpawnError) {
        fd = escrow_inotify_file(path)
        guard fd >= 0 else { throw SpawnError(executable: "inotify(\(path))", errno: errno) }
    }

    deinit { close(fd) }

    /// Consumes the pending notifications.
    public func drain() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while read(fd, &buffer, buffer.count) > 0 {}
    }

    /// Waits until the file is written, `process` exits (when given), or `milliseconds` pass; true
    /// when something happened. Blocks: call it from a thread that may.
    @discardableResult
    public func wait(milliseconds: Int32, orExitOf process: ChildProcess? = nil) -> Bool {
        BlockingWork.check("wait for a write to a watched file")
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
        if let process, process.exitDescriptor >= 0 { fds.append(pollfd(fd: process.exitDescriptor, events: Int16(POLLIN), revents: 0)) }
        var r: Int32
        repeat { r = poll(&fds, nfds_t(fds.count), max(0, milliseconds)) } while r < 0 && errno == EINTR
        if fds[0].revents != 0 { drain() }
        return r > 0
    }
}
