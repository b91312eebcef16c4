import Foundation
import Testing
import EscrowCore
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite("escrow-agent against escrowd over mutual TLS", .serialized, .timeLimit(.minutes(3)))
struct AgentProcessTests {
    @Test("an agent comes up in escrow mode, is activated, and reports normal mode")
    func activation() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let acme = try await platform.account("acme", kind: .customer)
        let files = try TempDirectory(prefix: "bundles")
        let confs = try await platform.provision(["agent-0001"], by: oem, account: "oem", into: files)
        let agent = try AgentProcess(config: confs["agent-0001"]!)
        defer { agent.process.terminate() }

        try await waitUntil("the agent is online in escrow mode") {
            let d = try await oem.send("oem", "device.list", [:]).result(Commands.DeviceListResult.self).devices
            return d.first?.online == true && d.first?.mode == .escrow
        }
        let t = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": ids(["agent-0001"])]).result(Commands.TransferResult.self)
        let pushed = ContinuousClock.now
        _ = try await acme.send("acme", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "activate"]).result(Commands.TransferResult.self)
        try await waitUntil(timeout: .seconds(10), "the agent applies its configuration") {
            let s = try await acme.send("acme", "config.status", [:]).result(Commands.ConfigStatusResult.self).devices
            return s.first?.state == .applied
        }
        let elapsed = ContinuousClock.now - pushed
        print("activation: approve reply to config applied in \(elapsed)")
        #expect(agent.persistedMode == "normal")
        try await waitUntil("the platform sees normal mode") {
            try await acme.send("acme", "device.list", [:]).result(Commands.DeviceListResult.self).devices.first?.mode == .normal
        }
        // A clean stop marks the device offline (retained status), and the exit code is 0.
        agent.process.signal(SIGTERM)
        #expect(agent.process.waitForExit(timeout: .seconds(10)))
        #expect(agent.process.exitStatus == 0, "\(agent.logTail())")
        try await waitUntil("the device is offline") {
            try await acme.send("acme", "device.list", [:]).result(Commands.DeviceListResult.self).devices.first?.online == false
        }
        await platform.close()
    }

    @Test("agents killed with SIGKILL at any point of the activation end consistent with the platform")
    func killedDuringActivation() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let acme = try await platform.account("acme", kind: .customer)
        let files = try TempDirectory(prefix: "bundles")
        let names = (1...4).map { "kill-000\($0)" }
        let confs = try await platform.provision(names, by: oem, account: "oem", into: files)
        let agents = try names.map { try AgentProcess(config: confs[$0]!) }
        defer { for a in agents { a.process.terminate() } }
        try await waitUntil("all agents online") {
            try await oem.send("oem", "device.list", ["online": true]).result(Commands.DeviceListResult.self).total == names.count
        }
        let t = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": ids(names)]).result(Commands.TransferResult.self)
        _ = try await acme.send("acme", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "activate"]).result(Commands.TransferResult.self)
        // Kill each agent at a different moment: at once, shortly after, and after it applied.
        let delays: [Duration] = [.zero, .milliseconds(20), .milliseconds(150), .seconds(1)]
        await withTaskGroup(of: Void.self) { group in
            for (agent, delay) in zip(agents, delays) {
                group.addTask {
                    try? await Task.sleep(for: delay)
                    agent.process.signal(SIGKILL)
                    agent.process.waitForExit(timeout: .seconds(5))
                }
            }
        }
        for a in agents { try a.restart() }
        try await waitUntil(timeout: .seconds(30), "every killed agent converges to its configuration") {
            let s = try await acme.send("acme", "config.status", [:]).result(Commands.ConfigStatusResult.self).devices
            return s.count == names.count && s.allSatisfy { $0.state == .applied }
        }
        for a in agents {
            try await waitUntil("\(a.config) persisted normal mode") { a.persistedMode == "normal" }
        }
        for n in names {
            let show = try await acme.send("acme", "device.show", ["deviceId": .string(n)]).result(Commands.DeviceShowResult.self)
            #expect(show.verification.valid)
            #expect(show.custody.filter { $0.decision == .activated }.count == 1, "activated exactly once: \(n)")
            #expect(show.device.configVersion == 1, "one configuration version, not re-pushed by the crash: \(n)")
        }
        await platform.close()
    }
}
