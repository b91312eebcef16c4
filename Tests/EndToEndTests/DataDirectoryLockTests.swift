import Foundation
import Testing
import EscrowCore
import TestSupport

@Suite("One escrowd per data directory", .timeLimit(.minutes(2)))
struct DataDirectoryLockTests {
    @Test("a second escrowd on the same data directory refuses with the first one's pid, and the first keeps serving with its broker")
    func secondEscrowdRefuses() async throws {
        let platform = try await PlatformSession()
        let brokerBefore = try #require(platform.escrowd.brokerPID)
        let ports = try freePorts(2)
        let second = try runCommandStatus(try Products.path("escrowd"),
                                          ["--data", platform.escrowd.dataDirectory, "--device-port", String(ports[0]), "--operator-port", String(ports[1])],
                                          timeout: .seconds(30))
        #expect(second.status == 1, "\(second.output)")
        let pid = try #require(platform.escrowd.process?.pid)
        #expect(second.output.contains("another escrowd (pid \(pid)) is using this data directory"), "\(second.output)")
        // The first one's broker was not touched, and it still answers.
        #expect(platform.escrowd.brokerPID == brokerBefore && kill(brokerBefore, 0) == 0)
        _ = try await platform.account("oem", kind: .provisioner)
        await platform.close()
    }
}
