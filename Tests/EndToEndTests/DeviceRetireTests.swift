import Foundation
import Testing
import EscrowCore
import MQTT
import TestSupport

/// device.retire (issue 15, decommission) against the real broker, with real mutual TLS.
@Suite("Decommission: device.retire", .timeLimit(.minutes(3)))
struct DeviceRetireTests {
    /// A client on the operator listener as escrowd's own broker user: the one login that may read
    /// any device topic, to see what the broker retains for a device.
    static func serviceClient(_ platform: PlatformSession) async throws -> MQTTClient {
        let secret = try String(contentsOfFile: platform.escrowd.dataDirectory + "/escrowd.secret", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        var o = MQTTOptions(clientID: BrokerNames.clientID("svc-escrowd", suffix: "retained-\(UUID().uuidString.prefix(6))"), port: platform.escrowd.operatorPort)
        o.username = "svc-escrowd"; o.password = secret
        o.reconnect = nil
        let client = try MQTTClient(o)
        try await client.connect(timeout: .seconds(5))
        return client
    }

    /// The non-empty retained messages a fresh subscriber gets on `topics`; a sentinel the client
    /// publishes to itself afterwards marks the end of what the broker delivered for them.
    static func retained(_ platform: PlatformSession, _ topics: [String]) async throws -> [String] {
        let client = try await serviceClient(platform)
        let sentinel = "devices/retire-sentinel-\(UUID().uuidString.prefix(6))/error"
        _ = try await client.subscribe(topics.map { ($0, .atLeastOnce) } + [(sentinel, .atLeastOnce)])
        let messages = client.messages
        let collector = Task { () -> [String] in
            var seen: [String] = []
            for await m in messages {
                if m.topic == sentinel { return seen }
                if !m.payload.isEmpty { seen.append(m.topic) }
            }
            return seen
        }
        try await client.publish(sentinel, [1], qos: .atLeastOnce)
        let got = try await withThrowingTaskGroup(of: [String]?.self) { group in
            group.addTask { await collector.value }
            group.addTask { try await Task.sleep(for: .seconds(5)); collector.cancel(); return nil }
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
        await client.disconnect()
        guard let got else { throw TestSupportError("the sentinel on \(sentinel) never came back") }
        return got
    }

    @Test("retire: certificates revoked (open session closed, new ones refused), retained config and status cleared, custody chain ends in a verified retired entry, read-only afterwards")
    func retire() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let acme = try await platform.account("acme", kind: .customer)
        let files = try TempDirectory(prefix: "bundles")
        _ = try await platform.provision(["ret-1", "ret-2", "ret-3"], by: oem, account: "oem", into: files)
        try await AccountLifecycleTests.transfer(["ret-1"], from: oem, "oem", to: acme, "acme", action: "activate")
        let offered = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": ids(["ret-2"])]).result(Commands.TransferResult.self)

        // ret-1 online on its bundle's identity: it has its retained configuration and a retained status.
        let dir = files.path + "/ret-1"
        let device = try SecurityTests.deviceClient(dir, id: "ret-1", port: platform.escrowd.devicePort)
        try await device.connect(timeout: .seconds(5))
        let deviceMessages = device.messages
        _ = try await device.subscribe([("devices/ret-1/config", .atLeastOnce)])
        _ = try await firstElement(of: deviceMessages, "ret-1 receives its retained configuration") { $0.topic == "devices/ret-1/config" && !$0.payload.isEmpty }
        try await device.publish("devices/ret-1/status", WireCodec.encode(DeviceStatus(state: .online, mode: .normal, configVersion: 1)), qos: .atLeastOnce, retain: true)
        try await waitUntil("acme sees ret-1 online") {
            try await acme.send("acme", "device.show", ["deviceId": "ret-1"]).result(Commands.DeviceShowResult.self).device.online
        }
        // A set: the configuration is not acked here, so reconciliation (every 2 s) may publish it
        // again while the probe listens, and a busy machine makes that window wide.
        #expect(Set(try await Self.retained(platform, ["devices/ret-1/config", "devices/ret-1/status"])) == ["devices/ret-1/config", "devices/ret-1/status"])

        // Only the holder retires; a device in an open transfer waits for the transfer to close.
        let foreign = try await oem.send("oem", "device.retire", ["deviceIds": ids(["ret-1", "ret-none"])])
        #expect(foreign.error?.code == .notFound, "\(String(describing: foreign.error))")
        let inTransfer = try await oem.send("oem", "device.retire", ["deviceIds": ids(["ret-2"])])
        #expect(inTransfer.error?.code == .conflict && inTransfer.error?.message.contains("cancel the transfer first") == true, "\(String(describing: inTransfer.error))")

        // Retire ret-1.
        let first = try await acme.send("acme", "device.retire", ["deviceIds": ids(["ret-1", "ret-none"]), "reason": "water damage, RMA 7781"], requestID: "retire-1")
        let r = try first.result(Commands.DeviceRetireResult.self)
        #expect(r.retired == ["ret-1"] && r.revokedCertificates == 1, "\(r)")
        #expect(r.refused == [.init(deviceId: "ret-none", reason: "device ret-none is not a device of acme")])
        try await waitUntil("device.retired reaches acme") {
            await acme.events(of: .deviceRetired).contains {
                $0.deviceId == "ret-1" && $0.details["previousState"] == "active" && $0.details["reason"] == "water damage, RMA 7781"
            }
        }
        #expect(await oem.events(of: .deviceRetired).isEmpty, "the provisioner hears nothing of a device activated elsewhere")

        // The broker closes the open session at its next message, and refuses every new connection.
        try await waitUntil(timeout: .seconds(5), "the broker disconnects ret-1's open session", interval: .milliseconds(50)) {
            _ = try? device.publishNoWait("devices/ret-1/heartbeat", WireCodec.encode(Heartbeat(seq: 1, mode: .normal, uptime: 1, configVersion: 1)), qos: .atMostOnce)
            return !device.isConnected
        }
        await device.disconnect()
        #expect(try await CredentialRotationTests.escrowRefused(dir, port: platform.escrowd.devicePort, within: .seconds(5)), "ret-1's certificate is still accepted")

        // Its retained topics are gone.
        try await waitUntil(timeout: .seconds(5), "a fresh subscriber gets nothing retained for ret-1") {
            try await Self.retained(platform, ["devices/ret-1/config", "devices/ret-1/status"]).isEmpty
        }

        // The record stays, read-only, with its custody chain verified.
        let show = try await acme.send("acme", "device.show", ["deviceId": "ret-1"]).result(Commands.DeviceShowResult.self)
        #expect(show.device.state == .retired && !show.device.online)
        #expect(show.custody.map(\.decision) == [.provisioned, .activated, .retired])
        let last = try #require(show.custody.last)
        #expect(last.holder == "acme" && last.previousHolder == "acme" && last.reason == "water damage, RMA 7781" && last.transferId == nil)
        #expect(show.verification == .init(valid: true, entries: 3, brokenAt: nil, problem: nil))
        #expect(CustodyChain.verify(show.custody).valid, "the chain re-verifies from the reply alone")

        // Idempotent by request id; a new request reports it already retired.
        let replay = try await acme.send("acme", "device.retire", ["deviceIds": ids(["ret-1", "ret-none"]), "reason": "water damage, RMA 7781"], requestID: "retire-1")
        #expect(replay.result == first.result)
        let again = try await acme.send("acme", "device.retire", ["deviceIds": ids(["ret-1"])])
        #expect(again.error?.code == .conflict && again.error?.message.contains("ret-1 is already retired") == true, "\(String(describing: again.error))")
        #expect(try await acme.send("acme", "device.show", ["deviceId": "ret-1"]).result(Commands.DeviceShowResult.self).custody.count == 3)

        // Read-only: no configuration, listed and counted as retired.
        let push = try await acme.send("acme", "config.push", ["deviceIds": ids(["ret-1"]), "settings": ["x": 1]]).result(Commands.ConfigPushResult.self)
        #expect(push.pushed.isEmpty && push.refused.first?.reason.contains("ret-1 is retired") == true, "\(push)")
        let listed = try await acme.send("acme", "device.list", ["state": "retired"]).result(Commands.DeviceListResult.self)
        #expect(listed.total == 1 && listed.devices.map(\.id) == ["ret-1"])
        #expect(try await acme.send("acme", "device.list", ["state": "active"]).result(Commands.DeviceListResult.self).total == 0)
        let counts = try await platform.admin.send(.platform, "account.show", ["id": "acme"]).result(Commands.AccountShowResult.self).devices
        #expect(counts == .init(total: 1, escrow: 0, active: 0, online: 0, retired: 1))

        // An escrow device, once its transfer is cancelled: its escrow certificate is revoked too.
        _ = try await oem.send("oem", "transfer.cancel", ["transferId": .string(offered.transfer.id)]).result(Commands.TransferResult.self)
        let escrow = try await oem.send("oem", "device.retire", ["deviceIds": ids(["ret-2"])]).result(Commands.DeviceRetireResult.self)
        #expect(escrow.retired == ["ret-2"] && escrow.revokedCertificates == 1)
        #expect(try await CredentialRotationTests.escrowRefused(files.path + "/ret-2", port: platform.escrowd.devicePort, within: .seconds(5)), "ret-2's certificate is still accepted")
        let held = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": ids(["ret-2"])])
        #expect(held.error?.code == .conflict && held.error?.message.contains("ret-2 is retired") == true, "\(String(describing: held.error))")
        // Control: a device not retired still connects.
        let control = try SecurityTests.deviceClient(files.path + "/ret-3", id: "ret-3", port: platform.escrowd.devicePort)
        #expect(!(await brokerRefuses(control)), "ret-3 was never retired")
        let oemShow = try await oem.send("oem", "device.show", ["deviceId": "ret-2"]).result(Commands.DeviceShowResult.self)
        #expect(oemShow.custody.map(\.decision) == [.provisioned, .retired] && oemShow.verification.valid && oemShow.custody.last?.reason == nil)

        // Retired devices do not keep an account from being deleted.
        let deleted = try await platform.admin.send(.platform, "account.delete", ["id": "acme"])
        #expect(deleted.ok, "\(String(describing: deleted.error))")
        await oem.close(); await acme.close()
        await platform.close()
    }

    @Test("escrowctl device retire prints what it retired and refused; --help lists it with an example")
    func cli() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        _ = try await oem.send("oem", "device.provision", ["deviceIds": ids(["cli-1", "cli-2"]), "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        await oem.close()
        let env = operatorEnv(broker: platform.escrowd.operatorURL, user: "op-oem", password: "pw-oem-secret", account: "oem")
        let retired = try await runCLI(["--account", "oem", "device", "retire", "cli-1", "cli-9", "--reason", "end of life"], env: env)
        #expect(retired.status == 0 && retired.stdout.contains("retired 1 device in account oem") && retired.stdout.contains("cli-9"), "\(retired.status) \(retired.stdout) \(retired.stderr)")
        let again = try await runCLI(["--account", "oem", "device", "retire", "cli-1"], env: env)
        #expect(again.status == 67 && again.stderr.contains("already retired"), "\(again)")
        let list = try await runCLI(["--account", "oem", "device", "list", "--state", "retired"], env: env)
        #expect(list.status == 0 && list.stdout.contains("cli-1") && !list.stdout.contains("cli-2"), "\(list)")
        let show = try await runCLI(["--account", "oem", "device", "show", "cli-1"], env: env)
        #expect(show.status == 0 && show.stdout.contains("retired") && show.stdout.contains("chain verified: yes"), "\(show)")
        let help = try await runCLI(["--help"], env: env)
        #expect(help.stdout.contains("device retire"), "\(help)")
        let own = try await runCLI(["device", "retire", "--help"], env: env)
        #expect(own.stdout.contains("EXAMPLES") && own.stdout.contains("escrowctl device retire sn-000042"), "\(own)")
        await platform.close()
    }
}
