import Foundation
import Testing
import POSIX
import TestSupport

/// Broker readiness is an event (sd_notify's READY=1 on a socket of ours), not a probe loop; the
/// behaviour ManagedBroker depends on, checked against the real mosquitto.
@Suite("Readiness by sd_notify", .timeLimit(.minutes(1)))
struct ReadinessNoticeTests {
    @Test("mosquitto says READY=1 once its listener is open; the port accepts at that moment")
    func mosquittoReady() async throws {
        let dir = try TempDirectory(prefix: "ready")
        let port = try freePorts(1)[0]
        let conf = dir.file("m.conf")
        try "listener \(port) 127.0.0.1\nallow_anonymous true\nuser root\nlog_dest stderr\n".write(toFile: conf, atomically: true, encoding: .utf8)
        let notice = try ReadinessNotice()
        let (outcome, accepts) = try await BlockingWork.run("test-ready") { () throws -> (ReadinessNotice.Outcome, Bool) in
            let p = try ChildProcess.spawn("/usr/sbin/mosquitto", ["-c", conf], stdout: dir.file("out"), environment: notice.environment)
            defer { p.terminate() }
            let outcome = notice.wait(for: p, timeout: .seconds(10))
            return (outcome, Self.connects(port))
        }
        #expect(outcome == .ready)
        #expect(accepts, "READY=1 came before the listener accepted")
    }

    @Test("a child that exits, or never says READY=1, is reported as such within the bound")
    func exitedAndTimedOut() async throws {
        let notice = try ReadinessNotice()
        let exited = try await BlockingWork.run("test-exit") { () throws -> ReadinessNotice.Outcome in
            notice.wait(for: try ChildProcess.spawn("/bin/false", []), timeout: .seconds(10))
        }
        #expect(exited == .exited)
        let silent = try await BlockingWork.run("test-silent") { () throws -> ReadinessNotice.Outcome in
            let p = try ChildProcess.spawn("/bin/sleep", ["10"], environment: notice.environment)
            defer { p.terminate(grace: .zero) }
            return notice.wait(for: p, timeout: .milliseconds(200))
        }
        #expect(silent == .timedOut)
    }

    static func connects(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET); a.sin_port = in_port_t(UInt16(port).bigEndian)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 } }
    }
}
