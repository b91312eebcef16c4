import Foundation
import Broker
#if canImport(Glibc)
import Glibc
#endif

/// A throw-away mosquitto for one benchmark run: plain listener on 127.0.0.1, anonymous,
/// large queues, `$SYS` every second. Launched and awaited by the one launcher, `ManagedBroker`
/// (clean signal mask, readiness by connecting, pidfd exit), without restarts.
final class LocalBroker: Sendable {
    let port: Int
    let directory: String
    private let broker: ManagedBroker

    init(maxQueuedMessages: Int) async throws {
        directory = try makeTempDirectory("escrowbench-broker")
        port = try freePort()
        var lines = [
            "per_listener_settings false",
            "allow_anonymous true",
            "persistence false",
            "max_queued_messages \(maxQueuedMessages)",
            "set_tcp_nodelay true",
            "sys_interval 1",
            "log_dest stderr",
            "log_type error", "log_type warning", "log_type notice",
            "listener \(port) 127.0.0.1",
        ]
        if getuid() == 0 { lines.insert("user root", at: 0) }
        let conf = directory + "/mosquitto.conf"
        try (lines.joined(separator: "\n") + "\n").write(toFile: conf, atomically: true, encoding: .utf8)
        var options = ManagedBroker.Options()
        options.maxRestarts = 0
        options.stopGrace = .seconds(3)
        guard FileManager.default.isExecutableFile(atPath: options.executable) else {
            throw BenchError("mosquitto not found on PATH or in /usr/sbin; install it with `apt-get install -y mosquitto`")
        }
        broker = ManagedBroker(configFile: conf, readinessEndpoints: [("127.0.0.1", port)], outputFile: directory + "/mosquitto.log", options: options)
        do { try await broker.start() } catch { throw BenchError("\(error) (see \(directory)/mosquitto.log)") }
    }

    var pid: Int32 { broker.pid ?? 0 }

    func stop() { broker.stopSynchronously() }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

func makeTempDirectory(_ prefix: String) throws -> String {
    var template = Array((NSTemporaryDirectory() + "/\(prefix)-XXXXXX").utf8CString)
    guard let p = mkdtemp(&template) else { throw BenchError("mkdtemp failed: \(String(cString: strerror(errno)))") }
    return String(cString: p)
}

func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw BenchError("socket(): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var addr = loopback(port: 0)
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard ok else { throw BenchError("bind/getsockname: \(String(cString: strerror(errno)))") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

func loopback(port: Int) -> sockaddr_in {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = UInt16(port).bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return addr
}

/// A connected blocking TCP socket to 127.0.0.1:`port`, or -1.
func connectTCP(port: Int) -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return -1 }
    var addr = loopback(port: port)
    let rc = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    if rc != 0 { close(fd); return -1 }
    return fd
}
