import Foundation
import Testing
import EscrowCore
import MQTT
import TestSupport

/// Isolation enforced by the broker that escrowd configures, with real TLS.
@Suite("Security: identities and isolation enforced by the broker", .serialized, .timeLimit(.minutes(3)))
struct SecurityTests {
    /// A device's MQTT client, from its bundle directory.
    static func deviceClient(_ dir: String, id: String, port: Int, cert: String? = nil, key: String? = nil) throws -> MQTTClient {
        var o = MQTTOptions(clientID: id, port: port)
        o.tls = MQTTTLS(caFile: dir + "/broker-ca.pem", certFile: cert ?? dir + "/device.crt", keyFile: key ?? dir + "/device.key")
        o.reconnect = nil
        return try MQTTClient(o)
    }

    @Test("device A can neither read B's configuration nor speak for B")
    func deviceIsolation() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let files = try TempDirectory(prefix: "bundles")
        _ = try await platform.provision(["dev-a", "dev-b"], by: oem, account: "oem", into: files)
        let a = try Self.deviceClient(files.path + "/dev-a", id: "dev-a", port: platform.escrowd.devicePort)
        try await a.connect()
        // Speaking for B: the broker refuses each publish (MQTT 5 PUBACK reason 135).
        for topic in ["devices/dev-b/heartbeat", "devices/dev-b/status", "devices/dev-b/config/ack", "devices/dev-b/csr", "devices/dev-b/config"] {
            await #expect(throws: MQTTError.self, "publish to \(topic)") {
                try await a.publish(topic, WireCodec.encode(Heartbeat(seq: 1, mode: .escrow, uptime: 1, configVersion: 0)), qos: .atLeastOnce)
            }
        }
        // Its own topics are fine.
        try await a.publish("devices/dev-a/heartbeat", WireCodec.encode(Heartbeat(seq: 1, mode: .escrow, uptime: 1, configVersion: 0)), qos: .atLeastOnce)
        // Reading B's configuration: granted or not at subscribe time, nothing is ever delivered.
        _ = try await a.subscribe([("devices/dev-b/config", .atLeastOnce), ("devices/+/config", .atLeastOnce), ("accounts/#", .atLeastOnce)])
        _ = try await platform.admin.send(.platform, "account.create", ["id": "acme", "name": "Acme", "kind": "customer"]).result(Account.self)
        let t = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": ids(["dev-b"])]).result(Commands.TransferResult.self)
        let acme = try await platform.admin.send(.platform, "operator.create", ["username": "op-acme", "password": "pw-acme-secret", "account": "acme"])
        #expect(acme.ok)
        let acmeOp = try await platform.operatorProbe(user: "op-acme", password: "pw-acme-secret", accounts: ["acme"])
        _ = try await acmeOp.send("acme", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "activate"]).result(Commands.TransferResult.self)
        // B's configuration is now retained on devices/dev-b/config; a sentinel on A's own topic proves delivery order.
        let b = try Self.deviceClient(files.path + "/dev-b", id: "dev-b", port: platform.escrowd.devicePort)
        try await b.connect()
        _ = try await b.subscribe([("devices/dev-b/config", .atLeastOnce)])
        _ = try await firstElement(of: b.messages, "B receives its own configuration") { $0.topic == "devices/dev-b/config" }
        try await a.publish("devices/dev-a/heartbeat", [], qos: .atLeastOnce)
        let leaked = try? await firstElement(of: a.messages, timeout: .seconds(1), "anything for A") { _ in true }
        #expect(leaked == nil, "A received \(leaked?.topic ?? "")")
        // Nothing reached escrowd in B's name: B never sent a heartbeat, so it has no last-seen time from A.
        let dev = try await acmeOp.send("acme", "device.show", ["deviceId": "dev-b"]).result(Commands.DeviceShowResult.self)
        #expect(dev.device.agentVersion == nil)
        await a.disconnect(); await b.disconnect()
        await acmeOp.close()
        await platform.close()
    }

    @Test("no certificate, or a certificate from an unknown CA, is refused")
    func unknownIdentities() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let files = try TempDirectory(prefix: "bundles")
        _ = try await platform.provision(["dev-a"], by: oem, account: "oem", into: files)
        let dir = files.path + "/dev-a"
        // No client certificate.
        var o = MQTTOptions(clientID: "dev-a", port: platform.escrowd.devicePort)
        o.tls = MQTTTLS(caFile: dir + "/broker-ca.pem", certFile: nil, keyFile: nil)
        o.reconnect = nil
        await #expect(throws: MQTTError.self) { try await MQTTClient(o).connect(timeout: .seconds(5)) }
        // A certificate with the right CN from a CA the platform never issued.
        let rogue = try TestCertificates(caName: "Rogue CA")
        let cert = try rogue.makeClient(commonName: "dev-a")
        let client = try Self.deviceClient(dir, id: "dev-a", port: platform.escrowd.devicePort, cert: cert.certFile, key: cert.keyFile)
        await #expect(throws: MQTTError.self) { try await client.connect(timeout: .seconds(5)) }
        // Anonymous on the operator listener.
        let anonymous = try MQTTClient(MQTTOptions(clientID: "anon", port: platform.escrowd.operatorPort))
        await #expect(throws: MQTTError.self) { try await anonymous.connect(timeout: .seconds(5)) }
        await platform.close()
    }

    @Test("an operator of X cannot tail Y's events, command as Y or approve Y's transfers")
    func operatorIsolation() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let x = try await platform.account("xco", kind: .customer)
        let y = try await platform.account("yco", kind: .customer)
        _ = try await oem.send("oem", "device.provision", ["deviceIds": ids(["dev-1"]), "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        // X subscribes to Y's topics: the broker delivers nothing.
        _ = try await x.client.subscribe([("accounts/yco/events/+", .atLeastOnce), ("accounts/yco/reply/+", .atLeastOnce), ("accounts/#", .atLeastOnce)])
        let t = try await oem.send("oem", "transfer.request", ["to": "yco", "deviceIds": ids(["dev-1"])]).result(Commands.TransferResult.self)
        // X commands in Y's account, or approves Y's transfer: refused by the broker (PUBACK 135).
        let approve = CommandEnvelope(requestId: "x-steals", args: ["transferId": .string(t.transfer.id), "action": "activate"])
        await #expect(throws: MQTTError.self) { try await x.client.publish("accounts/yco/cmd/transfer.approve", WireCodec.encode(approve)) }
        // In its own account, the payload cannot name Y's transfer either: it is not found.
        let own = try await x.send("xco", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "activate"])
        #expect(own.error?.code == .notFound)
        let yEvents = await y.events(of: .transferRequested)
        #expect(yEvents.count == 1)
        let xSaw = await x.events.filter { $0.account != "xco" }
        #expect(xSaw.isEmpty, "X saw \(xSaw.map(\.type))")
        let view = try await y.send("yco", "transfer.show", ["transferId": .string(t.transfer.id)]).result(TransferView.self)
        #expect(view.status == .pending)
        await platform.close()
    }

    @Test("the OEM acts in a customer account it manages, never in a standalone one, and loses sight of devices activated there")
    func managedAndStandalone() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        _ = try await platform.admin.send(.platform, "account.create", ["id": "managed", "name": "Managed", "kind": "customer", "managedBy": "oem"]).result(Account.self)
        let solo = try await platform.account("solo", kind: .customer)
        // An OEM operator created after the managed account reaches it (the broker ACL is regenerated).
        let r = try await platform.admin.send(.platform, "operator.create", ["username": "op-oem2", "password": "pw-oem2-secret", "account": "oem"]).result(Commands.OperatorResult.self)
        #expect(r.reach == ["oem", "managed"])
        let oem2 = try await platform.operatorProbe(user: "op-oem2", password: "pw-oem2-secret", accounts: ["oem", "managed", "solo"])
        let list = try await oem2.send("managed", "device.list", [:])
        #expect(list.ok, "the OEM acts in the managed account")
        let refused = CommandEnvelope(requestId: "oem-in-solo", args: [:])
        await #expect(throws: MQTTError.self) { try await oem2.client.publish("accounts/solo/cmd/device.list", WireCodec.encode(refused)) }

        // Activate a device in the standalone account; the OEM hears the outcome and nothing after.
        let files = try TempDirectory(prefix: "bundles")
        let confs = try await platform.provision(["solo-dev"], by: oem, account: "oem", into: files)
        let agent = try AgentProcess(config: confs["solo-dev"]!)
        defer { agent.process.terminate() }
        try await waitUntil("the device is online") {
            try await oem.send("oem", "device.list", ["online": true]).result(Commands.DeviceListResult.self).total == 1
        }
        let t = try await oem.send("oem", "transfer.request", ["to": "solo", "deviceIds": ids(["solo-dev"])]).result(Commands.TransferResult.self)
        await oem2.clearEvents()
        _ = try await solo.send("solo", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "activate"]).result(Commands.TransferResult.self)
        try await waitUntil("the device applies its configuration in the standalone account") {
            try await solo.send("solo", "config.status", [:]).result(Commands.ConfigStatusResult.self).devices.first?.state == .applied
        }
        // Restart the agent: presence events go to the owner only.
        agent.process.signal(SIGKILL); agent.process.waitForExit(timeout: .seconds(5))
        try agent.restart()
        try await waitUntil("the owner sees the device back online") { await solo.events(of: .deviceOnline).count >= 1 }
        let oemSaw = await oem2.events
        #expect(oemSaw.allSatisfy { $0.transferId == t.transfer.id }, "the OEM saw only the transfer's outcome: \(oemSaw.map(\.type))")
        #expect(oemSaw.contains { $0.type == .transferApproved })
        #expect(!oemSaw.contains { $0.deviceId?.rawValue == "solo-dev" })
        let gone = try await oem.send("oem", "device.show", ["deviceId": "solo-dev"])
        #expect(gone.error?.code == .notFound)
        await oem2.close()
        await platform.close()
    }

    @Test("device ids cannot take an operator's or escrowd's broker identity, and private keys are never stored")
    func reservedNamesAndKeys() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        // A device named svc-escrowd would log in (by certificate CN) with escrowd's ACL.
        let r = try await oem.send("oem", "device.provision", ["deviceIds": ids(["svc-escrowd", "op-admin", "dev-ok"])]).result(Commands.DeviceProvisionResult.self)
        #expect(r.provisioned.map(\.rawValue) == ["dev-ok"])
        #expect(Set(r.refused.map(\.deviceId.rawValue)) == ["svc-escrowd", "op-admin"])
        #expect(r.refused.allSatisfy { $0.reason.contains("reserved") })
        // The bundle's key went to the operator once; a replay of the same request id has no key.
        let first = try await oem.send("oem", "device.provision", ["deviceIds": ids(["dev-key"])], requestID: "provision-key")
        let bundle = try #require(try first.result(Commands.DeviceProvisionResult.self).bundles.first)
        #expect(bundle.privateKey.contains("PRIVATE KEY"))
        let replay = try await oem.send("oem", "device.provision", ["deviceIds": ids(["dev-key"])], requestID: "provision-key")
        #expect(replay.result?["privateKeysOmitted"]?.boolValue == true)
        #expect(try replay.result(Commands.DeviceProvisionResult.self).bundles.first?.privateKey == "")
        let db = try TestStore.everything(platform.escrowd.ledger)
        #expect(!db.contains(bundle.privateKey.split(separator: "\n")[1]), "the key is not in the database")
        await platform.close()
    }
}

@Suite("Operators on other hosts: TLS on the operator listener", .timeLimit(.minutes(2)))
struct OperatorTLSTests {
    @Test("with --operator-tls, escrowctl works through the admin.conf escrowd writes, and plain MQTT is refused")
    func operatorTLS() async throws {
        let escrowd = try await EscrowdProcess(arguments: ["--operator-tls"])
        defer { escrowd.stop() }
        let conf = try String(contentsOfFile: escrowd.dataDirectory + "/admin.conf", encoding: .utf8)
        #expect(conf.contains("broker = mqtts://127.0.0.1:\(escrowd.operatorPort)") && conf.contains("ca = "), "\(conf)")
        let created = try await runCLI(["account", "create", "oem", "--name", "OEM", "--kind", "provisioner"], env: ["ESCROW_CONFIG": escrowd.dataDirectory + "/admin.conf"])
        #expect(created.status == 0, "\(created)")
        let list = try await runCLI(["--json", "account", "list"], env: ["ESCROW_CONFIG": escrowd.dataDirectory + "/admin.conf"])
        #expect(list.status == 0 && list.stdout.contains("\"oem\""), "\(list)")
        // The same login without TLS does not get through.
        let admin = try escrowd.adminCredentials()
        var plain = MQTTOptions(clientID: "plain-operator", port: escrowd.operatorPort)
        plain.username = admin.user; plain.password = admin.password; plain.reconnect = nil
        await #expect(throws: MQTTError.self) { try await MQTTClient(plain).connect(timeout: .seconds(5)) }
    }
}
