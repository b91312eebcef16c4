import Foundation
import Testing
import EscrowCore
import Identity
import MQTT
import TestSupport

/// Issue 15, life after activation: an active device sold on to another customer, and one sent
/// back to its OEM (RMA). Real escrowd, its managed broker, real escrow-agent processes over
/// mutual TLS. Each change of owner gives the device a new key and a certificate from the
/// receiver's authority; the previous owner's certificate is refused at the broker afterwards.
@Suite("Resale and return of active devices", .serialized, .timeLimit(.minutes(4)))
struct ResaleReturnTests {
    static func issuedCertificate(_ dir: String) throws -> Certificate {
        try Certificate(pem: String(contentsOfFile: dir + "/state/identity.crt", encoding: .utf8))
    }

    /// True once the broker refuses the identity `certificate` + `key` (its revocation set reloads
    /// after the ack that confirmed the next identity), within 15 s.
    static func refused(_ dir: String, _ label: String, certificate: String, key: String, port: Int) async throws -> Bool {
        let cert = dir + "/\(label).crt", keyFile = dir + "/\(label).key"
        try certificate.write(toFile: cert, atomically: true, encoding: .utf8)
        try key.write(toFile: keyFile, atomically: true, encoding: .utf8)
        let id = (dir as NSString).lastPathComponent
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline {
            if await brokerRefuses(try SecurityTests.deviceClient(dir, id: id, port: port, cert: cert, key: keyFile)) { return true }
        }
        return false
    }

    /// Starts the agent of `config` and waits until its device is online in escrow and the agent
    /// has sent its CSR (what an activation signs). The caller terminates it.
    static func startEscrowAgent(_ config: String, watchedBy oem: OperatorProbe) async throws -> AgentProcess {
        let agent = try AgentProcess(config: config)
        try await waitUntil(timeout: .seconds(15), "the agent is online in escrow and has sent its CSR") {
            try await oem.send("oem", "device.list", [:]).result(Commands.DeviceListResult.self).devices.first?.online == true
                && CredentialRotationTests.persisted(agent, "certificateRequested") == .bool(true)
        }
        return agent
    }

    /// Activates `name` in `customer`, waits until the agent runs on the customer-issued identity.
    static func activate(_ name: String, from oem: OperatorProbe, to customer: OperatorProbe, _ account: AccountID,
                         agent: AgentProcess, dir: String) async throws -> Certificate {
        let t = try await oem.send("oem", "transfer.request", ["to": .string(account.rawValue), "deviceIds": ids([name])]).result(Commands.TransferResult.self)
        _ = try await customer.send(account, "transfer.approve", ["transferId": .string(t.transfer.id), "action": "activate"]).result(Commands.TransferResult.self)
        var cert: Certificate?
        try await waitUntil(timeout: .seconds(20), "\(name) runs on an identity issued by \(account)") {
            let show = try await customer.send(account, "device.show", ["deviceId": .string(name)]).result(Commands.DeviceShowResult.self)
            cert = try? Self.issuedCertificate(dir)
            return show.device.online && show.device.mode == .normal && cert?.issuerCommonName == "EscrowFleet customer \(account)"
                && show.device.fingerprint == cert?.sha256Fingerprint
        }
        return cert!
    }

    @Test("resale A -> B with the device online: new key and B's certificate, A's certificate refused, A loses the device")
    func resale() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let a = try await platform.account("shopa", kind: .customer)
        let b = try await platform.account("shopb", kind: .customer)
        let files = try TempDirectory(prefix: "resale")
        let confs = try await platform.provision(["res-0001"], by: oem, account: "oem", into: files)
        let dir = files.path + "/res-0001"
        let agent = try await Self.startEscrowAgent(confs["res-0001"]!, watchedBy: oem)
        defer { agent.process.terminate() }
        let certA = try await Self.activate("res-0001", from: oem, to: a, "shopa", agent: agent, dir: dir)
        let keyA = try String(contentsOfFile: dir + "/state/identity.key", encoding: .utf8)

        // A sells it to B, who activates it.
        let t = try await a.send("shopa", "transfer.request", ["to": "shopb", "deviceIds": ids(["res-0001"])]).result(Commands.TransferResult.self)
        #expect(t.decided == ["res-0001"] && t.refused.isEmpty, "an active device may be offered: \(t.refused)")
        _ = try await b.send("shopb", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "activate"]).result(Commands.TransferResult.self)
        // The previous owner's rights end at approval: its commands no longer find the device.
        let gone = try await a.send("shopa", "device.show", ["deviceId": "res-0001"])
        #expect(!gone.ok && gone.error?.code == .notFound, "A still sees the device: \(gone)")

        var certB: Certificate?
        try await waitUntil(timeout: .seconds(20), "the device runs on B's identity, B's config applied") {
            let show = try await b.send("shopb", "device.show", ["deviceId": "res-0001"]).result(Commands.DeviceShowResult.self)
            certB = try? Self.issuedCertificate(dir)
            return show.device.online && show.device.mode == .normal && certB?.issuerCommonName == "EscrowFleet customer shopb"
                && show.device.fingerprint == certB?.sha256Fingerprint && show.device.configState == .applied
        }
        let keyB = try String(contentsOfFile: dir + "/state/identity.key", encoding: .utf8)
        #expect(keyB != keyA, "a change of owner makes a new key on the device")
        #expect(try PrivateKey(pem: keyB).publicKey().matches(certB!.publicKey()))
        #expect(CredentialRotationTests.persisted(agent, "renewalRequested") == .bool(false))

        // A's certificate has no rights at the broker; B's identity connects.
        #expect(try await Self.refused(dir, "a", certificate: certA.pem(), key: keyA, port: platform.escrowd.devicePort),
                "A's certificate is still accepted")
        let current = try SecurityTests.deviceClient(dir, id: "res-0001-b", port: platform.escrowd.devicePort,
                                                     cert: dir + "/state/identity.crt", key: dir + "/state/identity.key")
        try await current.connect(timeout: .seconds(5))
        await current.disconnect()

        // The custody chain names every holder and verifies; B received the events, A none after the sale.
        let show = try await b.send("shopb", "device.show", ["deviceId": "res-0001"]).result(Commands.DeviceShowResult.self)
        #expect(show.custody.map(\.holder) == ["oem", "shopa", "shopb"] && show.verification.valid, "\(show.custody) \(show.verification)")
        // Each step names the operator whose command made it, as the broker stamped it.
        #expect(show.custody.map(\.operator) == ["op-oem", "op-shopa", "op-shopb"], "\(show.custody.map(\.operator))")
        #expect(await b.events(of: .deviceActivated).count == 1)
        #expect(await a.events(of: .configApplied).allSatisfy { $0.deviceId == "res-0001" })
        await platform.close()
    }

    @Test("RMA: customer -> OEM with hold while the device is offline; online again it is in escrow under the OEM on a new identity")
    func rmaReturn() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let acme = try await platform.account("acme", kind: .customer)
        let files = try TempDirectory(prefix: "rma")
        let confs = try await platform.provision(["rma-0001"], by: oem, account: "oem", into: files)
        let dir = files.path + "/rma-0001"
        let agent = try await Self.startEscrowAgent(confs["rma-0001"]!, watchedBy: oem)
        defer { agent.process.terminate() }
        _ = try await acme.send("acme", "profile.put", ["name": "field", "settings": ["region": "eu"], "makeDefault": true])
        let certAcme = try await Self.activate("rma-0001", from: oem, to: acme, "acme", agent: agent, dir: dir)
        let keyAcme = try String(contentsOfFile: dir + "/state/identity.key", encoding: .utf8)

        // The device goes offline; the customer sends it back and the OEM takes it into escrow.
        agent.process.signal(SIGKILL); agent.process.waitForExit(timeout: .seconds(5))
        let t = try await acme.send("acme", "transfer.request", ["to": "oem", "deviceIds": ids(["rma-0001"]), "note": "RMA 4711"]).result(Commands.TransferResult.self)
        _ = try await oem.send("oem", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "hold"]).result(Commands.TransferResult.self)
        let held = try await oem.send("oem", "device.show", ["deviceId": "rma-0001"]).result(Commands.DeviceShowResult.self)
        #expect(held.device.state == .escrow && held.device.owner == "oem", "\(held.device)")

        // Back online: it applies the escrow configuration (no settings), asks for a new identity, gets the OEM's.
        try agent.restart()
        var certOEM: Certificate?
        try await waitUntil(timeout: .seconds(30), "the returned device is in escrow mode on an identity the OEM issued") {
            let show = try await oem.send("oem", "device.show", ["deviceId": "rma-0001"]).result(Commands.DeviceShowResult.self)
            certOEM = try? Self.issuedCertificate(dir)
            return show.device.online && show.device.mode == .escrow && show.device.configState == .applied
                && certOEM?.issuerCommonName == "EscrowFleet provisioner oem" && show.device.fingerprint == certOEM?.sha256Fingerprint
        }
        #expect(CredentialRotationTests.persisted(agent, "mode") == .string("escrow"))
        #expect(CredentialRotationTests.persisted(agent, "settings") == .object([:]), "the customer's settings are gone")
        #expect(CredentialRotationTests.persisted(agent, "owner") == .string("oem"))
        #expect(try String(contentsOfFile: dir + "/state/identity.key", encoding: .utf8) != keyAcme)
        #expect(try await Self.refused(dir, "acme", certificate: certAcme.pem(), key: keyAcme, port: platform.escrowd.devicePort),
                "the customer-issued certificate is still accepted")
        let gone = try await acme.send("acme", "device.show", ["deviceId": "rma-0001"])
        #expect(!gone.ok && gone.error?.code == .notFound)

        // And it can be sold again from escrow like any escrow device.
        let show = try await oem.send("oem", "device.show", ["deviceId": "rma-0001"]).result(Commands.DeviceShowResult.self)
        #expect(show.custody.map(\.holder) == ["oem", "acme", "oem"] && show.verification.valid, "\(show.custody) \(show.verification)")
        #expect(show.custody.last?.decision == .held)
        await platform.close()
    }
}
