import Foundation
import Glibc
import Testing
@testable import FleetEngine

/// A private mosquitto for one test: config in a temp dir, free port, killed on `stop()`.
/// (Local stand-in until the shared TestSupport harness exists.)
final class LocalBroker {
    let port: UInt16
    let pid: pid_t
    let dir: URL

    init() throws {
        let binary = "/usr/sbin/mosquitto"
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw BrokerError("mosquitto not found at \(binary): apt-get install mosquitto")
        }
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-broker-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        port = try Self.freePort()
        var conf = "listener \(port) 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\nlog_dest none\n"
        if getuid() == 0 { conf += "user root\n" }
        let confURL = dir.appendingPathComponent("mosquitto.conf")
        try conf.write(to: confURL, atomically: true, encoding: .utf8)
        // posix_spawn (empty signal mask) + waitpid rather than Foundation.Process: its child
        // inherited a blocked SIGTERM and waitUntilExit hung under Swift Testing.
        let (p, rc) = System.spawn(binary, ["-c", confURL.path])
        guard rc == 0 else { throw BrokerError("posix_spawn mosquitto failed: \(rc)") }
        pid = p
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            if Self.canConnect(port) { return }
            usleep(20_000)
        }
        kill(pid, SIGKILL); var st: Int32 = 0; waitpid(pid, &st, 0)
        throw BrokerError("mosquitto did not accept on port \(port) within 5 s")
    }

    private var stopped = false

    func stop() {
        guard !stopped else { return }
        stopped = true
        kill(pid, SIGTERM)
        var st: Int32 = 0
        for _ in 0..<100 {
            if waitpid(pid, &st, WNOHANG) == pid { try? FileManager.default.removeItem(at: dir); return }
            usleep(20_000)
        }
        kill(pid, SIGKILL); waitpid(pid, &st, 0)
        try? FileManager.default.removeItem(at: dir)
    }

    deinit { stop() }

    var url: String { "mqtt://127.0.0.1:\(port)" }

    static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        sa.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &sa) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw BrokerError("no free port") }
        return UInt16(bigEndian: sa.sin_port)
    }

    static func canConnect(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        sa.sin_port = port.bigEndian
        return withUnsafePointer(to: &sa) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

struct BrokerError: Error, CustomStringConvertible {
    let description: String
    init(_ m: String) { description = m }
}
