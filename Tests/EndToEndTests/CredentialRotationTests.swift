import Foundation
import Testing
import EscrowCore
import Identity
import MQTT
import TestSupport

/// Issue 6, "credentials change on activation": the escrow identity is the provisioner's; after
/// activation the device connects with an identity issued by its new owner, and the broker
/// refuses the escrow certificate.
@Suite("Credentials change on activation", .serialized, .timeLimit(.minutes(3)))
struct CredentialRotationTests {
    /// A field of the agent's durable state file.
    static func persisted(_ agent: AgentProcess, _ field: String) -> JSONValue? {
        let path = (agent.config as NSString).deletingLastPathComponent + "/state/agent-state.json"
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return (try? JSONDecoder().decode(JSONValue.self, from: data))?[field]
    }

    @Test("the agent sends a CSR in escrow, reconnects with the owner-issued certificate, and the escrow certificate is refused")
    func rotation() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let acme = try await platform.account("acme", kind: .customer)
        let files = try TempDirectory(prefix: "bundles")
        let confs = try await platform.provision(["rot-0001"], by: oem, account: "oem", into: files)
        let dir = files.path + "/rot-0001"
        let escrowCert = try Certificate(pem: String(contentsOfFile: dir + "/device.crt", encoding: .utf8))
        #expect(escrowCert.issuerCommonName == "EscrowFleet provisioner oem")
        let agent = try AgentProcess(config: confs["rot-0001"]!)
        defer { agent.process.terminate() }

        try await waitUntil("the agent is online in escrow mode and has sent its CSR") {
            let d = try await oem.send("oem", "device.list", [:]).result(Commands.DeviceListResult.self).devices
            return d.first?.online == true && d.first?.mode == .escrow && Self.persisted(agent, "certificateRequested") == .bool(true)
        }
        #expect(FileManager.default.fileExists(atPath: dir + "/state/next.key"))

        let t = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": ids(["rot-0001"])]).result(Commands.TransferResult.self)
        _ = try await acme.send("acme", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "activate"]).result(Commands.TransferResult.self)
        try await waitUntil(timeout: .seconds(15), "the agent applies the activation and installs its new identity") {
            let s = try await acme.send("acme", "config.status", [:]).result(Commands.ConfigStatusResult.self).devices
            return s.first?.state == .applied && Self.persisted(agent, "identity") == .string("issued")
        }

        // The new identity: same CN, issued by the customer's authority, for the key made on the device.
        let issued = try Certificate(pem: String(contentsOfFile: dir + "/state/identity.crt", encoding: .utf8))
        #expect(issued.commonName == "rot-0001")
        #expect(issued.issuerCommonName == "EscrowFleet customer acme", "\(agent.logTail())")
        #expect(issued.sha256Fingerprint != escrowCert.sha256Fingerprint)
        let key = try PrivateKey(pem: String(contentsOfFile: dir + "/state/identity.key", encoding: .utf8))
        #expect(try key.publicKey().matches(issued.publicKey()))
        #expect(!FileManager.default.fileExists(atPath: dir + "/state/next.key"), "the pending key became identity.key")
        let mode = try FileManager.default.attributesOfItem(atPath: dir + "/state/identity.key")[.posixPermissions] as? Int
        #expect(mode == 0o600)

        // The platform sees it online in normal mode over the new identity, and records its fingerprint.
        try await waitUntil(timeout: .seconds(15), "the device is online in normal mode with its new fingerprint") {
            let show = try await acme.send("acme", "device.show", ["deviceId": "rot-0001"]).result(Commands.DeviceShowResult.self)
            return show.device.online && show.device.mode == .normal && show.device.fingerprint == issued.sha256Fingerprint
        }
        #expect(agent.logTail().contains("reconnecting with the identity issued by acme"), "\(agent.logTail())")

        // The escrow certificate has no rights at the broker once it has reloaded its revocation set.
        #expect(try await Self.escrowRefused(dir, port: platform.escrowd.devicePort), "the escrow certificate is still accepted")
        // Control: the issued identity still connects (the refusal is the revocation, not the client id).
        let current = try SecurityTests.deviceClient(dir, id: "rot-0001-issued", port: platform.escrowd.devicePort,
                                                     cert: dir + "/state/identity.crt", key: dir + "/state/identity.key")
        try await current.connect(timeout: .seconds(5))
        await current.disconnect()

        // A restart comes back with the issued identity: online again, no new CSR.
        agent.process.signal(SIGKILL); agent.process.waitForExit(timeout: .seconds(5))
        try agent.restart()
        try await waitUntil(timeout: .seconds(15), "the restarted agent is online with its issued identity") {
            try await acme.send("acme", "device.list", [:]).result(Commands.DeviceListResult.self).devices.first?.online == true
                && agent.logTail().components(separatedBy: "connected to").count >= 3
        }
        #expect(Self.persisted(agent, "certificateRequested") == .bool(false))
        await platform.close()
    }

    /// Tries the escrow certificate until the broker refuses it (bounded by `timeout`).
    static func escrowRefused(_ dir: String, port: Int, within timeout: Duration = .seconds(15)) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let id = (dir as NSString).lastPathComponent
            if await brokerRefuses(try SecurityTests.deviceClient(dir, id: id, port: port)) { return true }
        }
        return false
    }

    @Test("a device offline during approval, with an escrowd restart in between, gets its owner identity within one reconnect and its escrow certificate is refused")
    func lateActivation() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let acme = try await platform.account("acme", kind: .customer)
        let files = try TempDirectory(prefix: "bundles")
        let confs = try await platform.provision(["late-0001"], by: oem, account: "oem", into: files)
        let dir = files.path + "/late-0001"
        // Approved while the device has never connected: no CSR is on file.
        let t = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": ids(["late-0001"])]).result(Commands.TransferResult.self)
        _ = try await acme.send("acme", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "activate"]).result(Commands.TransferResult.self)
        await oem.close(); await acme.close()
        await platform.admin.close()
        platform.escrowd.stop()
        try await platform.escrowd.start()
        let owner = try await platform.operatorProbe(user: "op-acme", password: "pw-acme-secret", accounts: ["acme"])

        let agent = try AgentProcess(config: confs["late-0001"]!)
        defer { agent.process.terminate() }
        try await waitUntil(timeout: .seconds(20), "the late device installs an identity issued by its owner") {
            Self.persisted(agent, "identity") == .string("issued") && Self.persisted(agent, "mode") == .string("normal")
        }
        let issued = try Certificate(pem: String(contentsOfFile: dir + "/state/identity.crt", encoding: .utf8))
        #expect(issued.issuerCommonName == "EscrowFleet customer acme", "\(agent.logTail())")
        try await waitUntil(timeout: .seconds(15), "the device is online in normal mode on its owner-issued identity") {
            let show = try await owner.send("acme", "device.show", ["deviceId": "late-0001"]).result(Commands.DeviceShowResult.self)
            return show.device.online && show.device.mode == .normal && show.device.fingerprint == issued.sha256Fingerprint
        }
        #expect(try await Self.escrowRefused(dir, port: platform.escrowd.devicePort), "the escrow certificate of an activated device is still accepted")
        await owner.close()
        platform.escrowd.stop()
    }
}
