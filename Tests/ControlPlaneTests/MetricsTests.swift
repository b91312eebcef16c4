import Foundation
import Testing
import EscrowCore
import ControlPlane
import TestSupport

/// `/metrics` content and `/readyz` logic, on the in-process control plane with a real broker.
@Suite("Metrics and readiness", .timeLimit(.minutes(2)))
struct MetricsTests {
    static func value(_ samples: [PrometheusText.ParsedSample], _ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { s in s.name == name && labels.allSatisfy { k, v in s.labels[k] == v } }?.value
    }

    @Test("the exposition is valid Prometheus text, and devices, presence, commands, acks and latencies move as a fleet is provisioned, comes online and is activated")
    func figuresMove() async throws {
        let p = try await PlatformFixture()
        let op = p.operators
        let before = try PrometheusText.validate(await p.service.metricsSnapshot().render())
        #expect(Self.value(before, "escrowd_broker_connected") == 1)
        #expect(Self.value(before, "escrowd_devices_presence", ["presence": "online"]) == 0)

        _ = try await op.send(.platform, "account.create", ["id": "oem", "name": "OEM", "kind": "provisioner"]).result(Account.self)
        _ = try await op.send(.platform, "account.create", ["id": "acme", "name": "Acme", "kind": "customer"]).result(Account.self)
        let conflict = try await op.send(.platform, "account.create", ["id": "oem", "name": "OEM", "kind": "provisioner"])
        #expect(conflict.error?.code == .conflict)
        _ = try await op.send("oem", "device.provision", ["prefix": "m-", "count": 3, "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        let ids = (1...3).map { String(format: "m-%06d", $0) }
        for id in ids { try p.startAgent(id) }
        try await waitUntil("three devices online in the metrics") {
            Self.value(try PrometheusText.validate(await p.service.metricsSnapshot().render()), "escrowd_devices_presence", ["presence": "online"]) == 3
        }
        let t = try await op.send("oem", "transfer.request", ["to": "acme", "deviceIds": TestSupport.ids(ids)]).result(Commands.TransferResult.self)
        _ = try await op.send("acme", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "activate"]).result(Commands.TransferResult.self)
        try await waitUntil("three acks and three active devices in the metrics") {
            let s = try PrometheusText.validate(await p.service.metricsSnapshot().render())
            return Self.value(s, "escrowd_config_acks_received_total").map { $0 >= 3 } == true && Self.value(s, "escrowd_devices", ["state": "active"]) == 3
        }
        // Outbox rows go once the broker has acknowledged them. The snapshot that shows it drained is
        // the one checked: a presence batch may queue a new event right after.
        var after: [PrometheusText.ParsedSample] = []
        try await waitUntil("the outbox drained (every event acknowledged by the broker)") {
            let s = try PrometheusText.validate(await p.service.metricsSnapshot().render())
            guard Self.value(s, "escrowd_outbox_depth") == 0 else { return false }
            after = s
            return true
        }
        #expect(Self.value(after, "escrowd_commands_total", ["command": "account.create", "code": "ok"]) == 2)
        #expect(Self.value(after, "escrowd_commands_total", ["command": "account.create", "code": "conflict"]) == 1)
        #expect(Self.value(after, "escrowd_command_duration_seconds_count", ["command": "transfer.approve", "code": "ok"]) == 1)
        #expect(Self.value(after, "escrowd_transfers", ["status": "approved"]) == 1)
        #expect((Self.value(after, "escrowd_configs_published_total") ?? 0) >= 3)
        #expect((Self.value(after, "escrowd_ledger_commit_duration_seconds_count") ?? 0) >= 4)
        #expect(Self.value(after, "escrowd_outbox_depth") == 0 && Self.value(after, "escrowd_outbox_oldest_age_seconds") == 0)
        await p.shutdown()
    }

    @Test("a command name outside the contract is counted as 'unknown', so hostile names cannot grow the label set")
    func boundedLabels() async throws {
        let p = try await PlatformFixture()
        for i in 0..<5 { _ = try await p.operators.send(.platform, "no.such.command-\(i)", [:]) }
        let s = try PrometheusText.validate(await p.service.metricsSnapshot().render())
        #expect(Self.value(s, "escrowd_commands_total", ["command": "unknown", "code": "unknown_command"]) == 5)
        #expect(!s.contains { $0.labels["command"]?.hasPrefix("no.such") == true })
        await p.shutdown()
    }

    @Test("readiness names what is wrong: a ledger that refuses writes, then ready again")
    func readiness() async throws {
        let p = try await PlatformFixture()
        #expect(await p.service.readiness().isEmpty)
        try await p.service.injectReadOnlyStorage(true)
        let problems = await p.service.readiness()
        #expect(problems.count == 1 && problems[0].contains("ledger refuses writes"), "\(problems)")
        try await p.service.injectReadOnlyStorage(false)
        #expect(await p.service.readiness().isEmpty)
        await p.shutdown()
    }
}
