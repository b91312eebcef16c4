import Foundation
import Testing
import EscrowCore
import TestSupport
import POSIX
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
        let agents = try await platform.startAgents(names, by: oem, account: "oem", into: files)
        defer { for a in agents { a.process.terminate() } }
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

@Suite("escrow-agent's clear failures and exit codes", .timeLimit(.minutes(2)))
struct AgentExitCodeTests {
    func run(_ conf: String, in dir: TempDirectory) throws -> (status: Int32, output: String) {
        let path = dir.file("agent.conf")
        try conf.write(toFile: path, atomically: true, encoding: .utf8)
        let out = try runCommandStatus(try Products.path("escrow-agent"), ["--config", path])
        return out
    }

    func runCommandStatus(_ exe: String, _ args: [String]) throws -> (status: Int32, output: String) {
        let scratch = try TempDirectory(prefix: "agent-run")
        let child = try ChildProcess.spawn(exe, args, stdout: scratch.file("out"))
        #expect(child.waitForExit(timeout: .seconds(30)), "escrow-agent ends by itself")
        return (child.exitStatus ?? -1, (try? String(contentsOfFile: scratch.file("out"), encoding: .utf8)) ?? "")
    }

    @Test("missing identity files, a usage error, an unreachable broker and a refused login each exit with their own code")
    func exitCodes() async throws {
        let dir = try TempDirectory(prefix: "agent-exit")
        // Identity files missing: 66.
        var r = try run("broker = mqtts://127.0.0.1:1\ndevice_id = dev-1\ncertificate = nope.crt\nprivate_key = nope.key\nbroker_ca = nope.pem\n", in: dir)
        #expect(r.status == 66 && r.output.contains("certificate"), "\(r)")
        // A bad setting: 64.
        r = try run("broker = mqtt://127.0.0.1:1\ndevice_id = dev/1\n", in: dir)
        #expect(r.status == 64, "\(r)")
        // Unreachable broker after the configured attempts: 69.
        let closed = try freePort()
        r = try run("broker = mqtt://127.0.0.1:\(closed)\ndevice_id = dev-1\nconnect_attempts = 2\nbackoff_initial = 1\nbackoff_max = 1\n", in: dir)
        #expect(r.status == 69 && r.output.contains("unreachable"), "\(r)")
        // A certificate the broker does not trust: refused, 77.
        let platform = try await PlatformSession()
        let rogue = try TestCertificates(caName: "Rogue CA")
        let cert = try rogue.makeClient(commonName: "dev-1")
        // Another device's certificate: refused before connecting, 66, naming both ids.
        let other = try rogue.makeClient(commonName: "dev-2")
        r = try run("broker = \(platform.escrowd.deviceURL)\ndevice_id = dev-1\ncertificate = \(other.certFile)\nprivate_key = \(other.keyFile)\nbroker_ca = \(platform.escrowd.dataDirectory)/platform-ca.pem\n", in: dir)
        #expect(r.status == 66 && r.output.contains("'dev-2'") && r.output.contains("dev-1"), "\(r)")
        let ca = platform.escrowd.dataDirectory + "/platform-ca.pem"
        r = try run("broker = \(platform.escrowd.deviceURL)\ndevice_id = dev-1\ncertificate = \(cert.certFile)\nprivate_key = \(cert.keyFile)\nbroker_ca = \(ca)\nconnect_attempts = 1\n", in: dir)
        #expect(r.status == 77, "a refused login is not retried: \(r)")
        await platform.close()
    }
}

@Suite("escrowd start-up failures say why", .timeLimit(.minutes(1)))
struct EscrowdStartupTests {
    @Test("--mosquitto names the broker binary; a broker that fails to start has its own error printed")
    func brokerBinary() async throws {
        let scratch = try TempDirectory(prefix: "fake-broker")
        let fake = scratch.file("mosquitto")
        try "#!/bin/sh\necho 'Error: Unknown configuration variable \"bogus\".' >&2\nexit 3\n".write(toFile: fake, atomically: true, encoding: .utf8)
        chmod(fake, 0o755)
        do {
            _ = try await EscrowdProcess(arguments: ["--mosquitto", fake])
            Issue.record("escrowd started with a broker that exits at once")
        } catch {
            #expect("\(error)".contains("Unknown configuration variable"), "the broker's own line is shown: \(error)")
        }
        do {
            _ = try await EscrowdProcess(arguments: ["--mosquitto", scratch.file("missing")])
            Issue.record("escrowd started without a broker binary")
        } catch {
            #expect("\(error)".contains("is not an executable file"), "\(error)")
        }
    }
}
