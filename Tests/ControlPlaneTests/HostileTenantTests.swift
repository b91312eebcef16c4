import Foundation
import Testing
import EscrowCore
import ControlPlane
import OperatorCLI
import MQTT
import TestSupport

/// Issue 13: isolation against hostile tenants, enforced by the broker escrowd configures (its
/// generated mosquitto.conf, ACL, password file and the EscrowFleet broker plugin), with real
/// mutual TLS. escrowd runs in-process so the test can read what it received.
@Suite("Hostile tenants: the broker refuses shared-subscription theft and session takeover", .serialized, .timeLimit(.minutes(4)))
struct HostileTenantTests {
    /// Every shared-subscription filter a hostile client might try, and plain filters outside its rights.
    static let stolenFilters = [
        "$share/escrowd/accounts/+/cmd/+", "$share/escrowd/devices/+/status", "$share/escrowd/devices/+/heartbeat",
        "$share/escrowd/devices/+/config/ack", "$share/escrowd/devices/+/csr", "$share/escrowd/#", "$share/x/#",
        "$share/escrowd/accounts/acme/cmd/+", "$share/g/devices/dev-good/heartbeat",
        "#", "+/#", "accounts/+/cmd/+", "accounts/acme/events/#", "devices/+/heartbeat", "devices/dev-good/config", "$SYS/#",
    ]

    /// A running Daemon (managed broker with its plugin) and its administrator.
    final class Platform: @unchecked Sendable {
        let dir: TempDirectory
        let daemon: Daemon
        let admin: OperatorProbe
        let task: Task<Void, any Error>

        init(_ configure: (inout Daemon.Settings) -> Void = { _ in }) async throws {
            dir = try TempDirectory(prefix: "hostile")
            let ports = try freePorts(2)
            var settings = Daemon.Settings(dataDirectory: dir.path + "/data")
            settings.devicePort = ports[0]
            settings.operatorPort = ports[1]
            settings.store = try await TestStore.forDaemon()
            configure(&settings)
            daemon = try Daemon(settings: settings, log: .silent)
            let daemon = self.daemon
            task = Task { try await daemon.run() }
            let conf = settings.dataDirectory + "/admin.conf"
            try await waitUntil(timeout: .seconds(30), "escrowd writes admin.conf") { FileManager.default.fileExists(atPath: conf) }
            let text = try String(contentsOfFile: conf, encoding: .utf8)
            let password = text.split(separator: "\n").first { $0.hasPrefix("password = ") }.map { String($0.dropFirst(11)) } ?? ""
            var probe: OperatorProbe?
            try await waitUntil("the administrator logs in") {
                probe = try? await OperatorProbe(port: ports[1], username: BrokerNames.administrator, password: password, accounts: [.platform])
                return probe != nil
            }
            admin = probe!
            // escrowd subscribes after it connects: it is ready once it answers.
            let admin = self.admin
            try await waitUntil("escrowd answers") {
                (try? await admin.send(.platform, "account.list", [:], timeout: .milliseconds(500))) != nil
            }
        }

        func account(_ id: AccountID, kind: Account.Kind) async throws -> OperatorProbe {
            _ = try await admin.send(.platform, "account.create", ["id": .string(id.rawValue), "name": .string(id.rawValue), "kind": .string(kind.rawValue)]).result(Account.self)
            let user = "op-\(id)", password = "pw-\(id)-secret"
            _ = try await admin.send(.platform, "operator.create", ["username": .string(user), "password": .string(password), "account": .string(id.rawValue)]).result(Commands.OperatorResult.self)
            var probe: OperatorProbe?
            try await waitUntil("\(user) logs in after the broker reloads") {
                probe = try? await OperatorProbe(port: daemon.settings.operatorPort, username: user, password: password, accounts: [id])
                return probe != nil
            }
            return probe!
        }

        /// Provisions devices and writes each identity into `dir/{id}/`; returns the directories.
        func provision(_ ids: [String], by op: OperatorProbe, account: AccountID) async throws -> [String: String] {
            let r = try await op.send(account, "device.provision", ["deviceIds": TestSupport.ids(ids)]).result(Commands.DeviceProvisionResult.self)
            var dirs: [String: String] = [:]
            for b in r.bundles { dirs[b.deviceId.rawValue] = try DeviceBundleWriter.write(b, into: dir.path) }
            return dirs
        }

        func device(_ dir: String, clientID: String) throws -> MQTTClient {
            var o = MQTTOptions(clientID: clientID, port: daemon.settings.devicePort)
            o.tls = MQTTTLS(caFile: dir + "/broker-ca.pem", certFile: dir + "/device.crt", keyFile: dir + "/device.key")
            o.reconnect = nil
            return try MQTTClient(o)
        }

        func operatorClient(user: String, password: String, clientID: String) throws -> MQTTClient {
            var o = MQTTOptions(clientID: clientID, port: daemon.settings.operatorPort)
            o.username = user; o.password = password; o.reconnect = nil
            return try MQTTClient(o)
        }

        func close() async {
            await admin.close()
            await daemon.shutdown()
            task.cancel()
        }

        /// A test that failed before `close()` leaves no broker behind.
        deinit {
            task.cancel()
            daemon.stopBrokerSynchronously()
        }
    }

    @Test("hostile subscriptions get SUBACK failures, and escrowd still answers 1,000 of 1,000 commands and records 1,000 of 1,000 heartbeats")
    func sharedSubscriptionTheft() async throws {
        let p = try await Platform()
        let oem = try await p.account("oem", kind: .provisioner)
        let acme = try await p.account("acme", kind: .customer)
        let evil = try await p.account("evil", kind: .customer)
        let dirs = try await p.provision(["dev-good", "dev-evil"], by: oem, account: "oem")

        // The hostile operator and the hostile device subscribe to everything they can think of.
        let hostileDevice = try p.device(dirs["dev-evil"]!, clientID: "dev-evil")
        try await hostileDevice.connect()
        for client in [evil.client, hostileDevice] {
            let granted = try await client.subscribe(Self.stolenFilters.map { ($0, QoS.atLeastOnce) })
            for (filter, code) in zip(Self.stolenFilters, granted) {
                #expect(code >= 0x80, "\(filter) was granted (\(code)) to a hostile client")
            }
        }
        // Their own topics are still granted.
        #expect(try await evil.client.subscribe([("accounts/evil/events/+", .atLeastOnce)]) == [1])
        #expect(try await hostileDevice.subscribe([("devices/dev-evil/config", .atLeastOnce)]) == [1])

        // While they stay subscribed: 1,000 of 1,000 commands of another tenant are answered...
        var answered = 0
        let started = ContinuousClock.now
        for _ in 0..<1000 where try await acme.send("acme", "device.list", [:]).ok { answered += 1 }
        let elapsed = ContinuousClock.now - started
        #expect(answered == 1000)
        // ...and 1,000 of 1,000 heartbeats of a device reach escrowd.
        let good = try p.device(dirs["dev-good"]!, clientID: "dev-good")
        try await good.connect()
        let before = await p.daemon.service.counters.heartbeats
        let hb = WireCodec.encode(Heartbeat(seq: 1, mode: .escrow, uptime: 1, configVersion: 0))
        for _ in 0..<1000 { try await good.publish("devices/dev-good/heartbeat", hb, qos: .atLeastOnce) }
        try await waitUntil("escrowd counts 1,000 heartbeats") { await p.daemon.service.counters.heartbeats - before >= 1000 }
        #expect(await p.daemon.service.counters.heartbeats - before == 1000)
        // A measurement, not an assertion (docs/BENCHMARKS.md quotes it).
        print("hostile tenants subscribed: \(answered) of 1000 commands answered in \(elapsed) (one at a time), 1000 of 1000 heartbeats counted")
        #expect(hostileDevice.isConnected && evil.client.isConnected, "the hostile clients were not simply disconnected")

        await good.disconnect(); await hostileDevice.disconnect()
        for op in [oem, acme, evil] { await op.close() }
        await p.close()
    }

    @Test("no client id can take over another's session: devices get their CN, logins only USERNAME or USERNAME:SUFFIX")
    func clientIDTakeover() async throws {
        let p = try await Platform()
        let oem = try await p.account("oem", kind: .provisioner)
        let dirs = try await p.provision(["dev-a", "dev-b"], by: oem, account: "oem")
        let b = try p.device(dirs["dev-b"]!, clientID: "dev-b")
        try await b.connect()
        let bEvents = b.deliveries
        // Device A's certificate, presenting B's client id, again and again: the broker uses A's CN instead.
        for _ in 0..<3 {
            let a = try p.device(dirs["dev-a"]!, clientID: "dev-b")
            try await a.connect()
            await a.disconnect()
        }
        try await b.publish("devices/dev-b/heartbeat", WireCodec.encode(Heartbeat(seq: 1, mode: .escrow, uptime: 1, configVersion: 0)), qos: .atLeastOnce)
        #expect(b.isConnected, "device B was disconnected by A's connections")
        let dropped = try? await firstElement(of: bEvents, timeout: .milliseconds(300), "B's connection events") {
            if case .event(.disconnected) = $0 { true } else { false }
        }
        #expect(dropped == nil)

        // On the operator listener: another login's client id (escrowd's, a device's, another operator's) is refused.
        let escrowdID = BrokerNames.clientID(BrokerNames.controlPlane, suffix: "escrowd-\(getpid())")
        for id in [escrowdID, BrokerNames.controlPlane, "dev-b", "op-admin", "op-admin:x", "op-oemx", "op-oe"] {
            let thief = try p.operatorClient(user: "op-oem", password: "pw-oem-secret", clientID: id)
            await #expect(throws: MQTTError.self, "op-oem connecting as client id \(id)") { try await thief.connect(timeout: .seconds(5)) }
        }
        // Its own forms are fine; escrowd still answers (it was never disconnected).
        for id in ["op-oem", "op-oem:console-1"] {
            let own = try p.operatorClient(user: "op-oem", password: "pw-oem-secret", clientID: id)
            try await own.connect(timeout: .seconds(5))
            await own.disconnect()
        }
        #expect(try await oem.send("oem", "device.list", [:]).ok)
        // The right client id with a wrong password is still refused (the plugin defers to the password file).
        let wrong = try p.operatorClient(user: "op-oem", password: "not-the-password", clientID: "op-oem:x")
        await #expect(throws: MQTTError.self) { try await wrong.connect(timeout: .seconds(5)) }
        #expect(b.isConnected)
        await b.disconnect()
        await oem.close()
        await p.close()
    }

    @Test("reserved names: operator.create refuses svc-*, op-admin and names outside op-*, and nothing changes")
    func reservedNames() async throws {
        let p = try await Platform()
        _ = try await p.admin.send(.platform, "account.create", ["id": "oem", "name": "OEM", "kind": "provisioner"]).result(Account.self)
        for name in ["svc-escrowd", "svc-anything", "op-admin", "op-", "escrowd", "dev-1", "op-a:b"] {
            let r = try await p.admin.send(.platform, "operator.create", ["username": .string(name), "password": "long-enough-pw", "account": "oem"])
            #expect(r.error?.code == .invalidArgument, "\(name): \(String(describing: r.error))")
        }
        // The broker's files hold exactly one entry for escrowd's login and none for the refused names.
        let layout = p.daemon.layout
        let passwd = try String(contentsOfFile: layout.passwordFile, encoding: .utf8)
        #expect(passwd.split(separator: "\n").filter { $0.hasPrefix("svc-escrowd:") }.count == 1)
        #expect(!passwd.contains("svc-anything") && !passwd.contains("\nescrowd:"))
        let acl = try String(contentsOfFile: layout.aclFile, encoding: .utf8)
        #expect(acl.split(separator: "\n").filter { $0 == "user svc-escrowd" }.count == 1)
        // escrowd still serves.
        #expect(try await p.admin.send(.platform, "account.list", [:]).ok)
        await p.close()
    }
}
