import Foundation
import Testing
import EscrowCore
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite("Broker crash and a paused control plane", .serialized, .timeLimit(.minutes(4)))
struct BrokerFaultTests {
    @Test("mosquitto SIGKILLed with configurations in flight: devices return, escrowd resubscribes and re-delivers what was lost")
    func brokerCrash() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let acme = try await platform.account("acme", kind: .customer)
        let files = try TempDirectory(prefix: "bundles")
        let names = (1...6).map { "brk-00000\($0)" }
        let agents = try await platform.startAgents(names, by: oem, account: "oem", into: files)
        defer { for a in agents { a.process.terminate() } }
        let t = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": ids(names)]).result(Commands.TransferResult.self)
        let brokerPID = try #require(platform.escrowd.brokerPID)
        _ = try await acme.send("acme", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "activate"]).result(Commands.TransferResult.self)
        // The retained configurations are at most milliseconds old: the broker has not saved them.
        kill(brokerPID, SIGKILL)
        try await waitUntil(timeout: .seconds(15), "escrowd's supervisor restarts the broker") {
            if let pid = platform.escrowd.brokerPID, pid != brokerPID, kill(pid, 0) == 0 { return true }
            return false
        }
        // escrowd's own reconnect says when the new broker serves (it also listens from the
        // supervisor's `restarted` event on, but that is escrowd's event, not this test's).
        try await waitUntil(timeout: .seconds(30), "escrowd is back on the restarted broker") {
            platform.escrowd.logTail(200_000).contains("broker connection re-established")
        }
        let acme2 = try await platform.operatorProbe(user: "op-acme", password: "pw-acme-secret", accounts: ["acme"])
        do {
            try await waitUntil(timeout: .seconds(60), "every device converges after the broker crash") {
                guard let s = try? await acme2.send("acme", "config.status", [:], timeout: .seconds(3)).result(Commands.ConfigStatusResult.self).devices else { return false }
                return s.count == names.count && s.allSatisfy { $0.state == .applied }
            }
        } catch {
            let agentLogs = zip(names, agents).map { "agent \($0.0):\n\($0.1.logTail())" }.joined(separator: "\n")
            Issue.record("escrowd log:\n\(platform.escrowd.logTail(4000))\n\(agentLogs)")
            throw error
        }
        for a in agents { #expect(a.persistedMode == "normal", "\(a.logTail())") }
        try await waitUntil(timeout: .seconds(30), "every device is back online") {
            (try? await acme2.send("acme", "device.list", ["online": true], timeout: .seconds(3)).result(Commands.DeviceListResult.self).total) == names.count
        }
        let log = platform.escrowd.logTail(20_000)
        #expect(log.contains("restarted"), "the supervisor reported the restart")
        await acme2.close()
        await platform.close()
    }

    @Test("escrowd paused with SIGSTOP while 2,000 devices ack and heartbeat: after SIGCONT no ack is lost")
    func pausedControlPlane() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let acme = try await platform.account("acme", kind: .customer)
        let n = 2_000
        for start in stride(from: 1, through: n, by: 1_000) {
            _ = try await oem.send("oem", "device.provision", ["prefix": "stop-", "start": .number(Double(start)), "count": 1_000, "issueIdentity": false], timeout: .seconds(30))
                .result(Commands.DeviceProvisionResult.self)
        }
        let all = (1...n).map { String(format: "stop-%06d", $0) }
        let t = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": ids(all)], timeout: .seconds(30)).result(Commands.TransferResult.self)
        let responder = try await DeviceResponder(escrowd: platform.escrowd)
        _ = try await acme.send("acme", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "activate"], timeout: .seconds(30)).result(Commands.TransferResult.self)
        // Pause escrowd as soon as configurations flow: the devices' acks then pile up at the broker.
        try await waitUntil(timeout: .seconds(30), "the first configurations reach the devices") { await responder.acked.count > 0 }
        platform.escrowd.signal(SIGSTOP)
        // While escrowd sleeps, the devices ack everything they got and keep heartbeating.
        for i in 0..<5_000 {
            _ = try? responder.client.publishNoWait("devices/\(all[i % n])/heartbeat", WireCodec.encode(Heartbeat(seq: i, mode: .normal, uptime: i, configVersion: 1)), qos: .atMostOnce)
        }
        try await Task.sleep(for: .seconds(3)) // a real pause: the point is that time passes while escrowd is stopped
        platform.escrowd.signal(SIGCONT)
        try await waitUntil(timeout: .seconds(60), "all 2,000 acks are recorded") {
            guard let s = try? await acme.send("acme", "config.status", [:], timeout: .seconds(5)).result(Commands.ConfigStatusResult.self).devices else { return false }
            return s.count == n && s.allSatisfy { $0.state == .applied }
        }
        await responder.close()
        await platform.close()
    }
}
