import Foundation
import Synchronization
import Testing
import EscrowCore
import MQTT
import TestSupport

/// Heartbeats reach escrowd on a connection of their own (`HeartbeatConnection`, 64 KiB reads
/// through MQTTWire), and keep reaching it after the broker restarts.
@Suite("The heartbeat connection", .timeLimit(.minutes(2)))
struct HeartbeatConnectionTests {
    @Test("heartbeats are counted, a malformed one is answered on the error topic, and both work again after a broker restart")
    func countsAndReconnects() async throws {
        let p = try await PlatformFixture()
        _ = try await p.operators.send(.platform, "account.create", ["id": "oem", "name": "oem", "kind": "provisioner"]).result(Account.self)
        _ = try await p.operators.send("oem", "device.provision", ["deviceIds": ["hb-1"], "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        let hb = WireCodec.encode(Heartbeat(seq: 1, mode: .escrow, uptime: 1, configVersion: 0))

        func round(_ label: String) async throws {
            var o = MQTTOptions(clientID: "hb-1-\(label)", port: p.broker.port)
            o.reconnect = nil
            let device = try MQTTClient(o)
            try await device.connect()
            // One collector for the whole round: cancelling a wait on an AsyncStream ends the stream.
            let reports = Mutex<[DeviceErrorReport]>([])
            let messages = device.messages
            let collector = Task {
                for await m in messages where m.topic == "devices/hb-1/error" {
                    if let r = try? WireCodec.decode(DeviceErrorReport.self, from: m.payload) { reports.withLock { $0.append(r) } }
                }
            }
            defer { collector.cancel() }
            _ = try await device.subscribe([("devices/hb-1/error", .atLeastOnce)])
            let before = await p.service.counters.heartbeats
            // The heartbeat connection may still be re-subscribing after a restart: send until counted.
            try await waitUntil(timeout: .seconds(20), "a heartbeat is counted (\(label))") {
                try await device.publish("devices/hb-1/heartbeat", hb, qos: .atLeastOnce)
                return await p.service.counters.heartbeats > before
            }
            let start = await p.service.counters.heartbeats
            for _ in 0..<500 { try await device.publish("devices/hb-1/heartbeat", hb, qos: .atMostOnce) }
            try await device.publish("devices/hb-1/heartbeat", hb, qos: .atLeastOnce)
            try await waitUntil("501 more heartbeats are counted (\(label))") { await p.service.counters.heartbeats - start >= 501 }
            // Error reports go out QoS 0 on escrowd's main client, which may still be reconnecting
            // after a restart (its backoff is longer than this connection's): send until answered.
            try await waitUntil(timeout: .seconds(20), "the malformed heartbeat's error (\(label))", interval: .milliseconds(200)) {
                try await device.publish("devices/hb-1/heartbeat", Array(#"{"schema":1,"seq":"x"}"#.utf8), qos: .atLeastOnce)
                return reports.withLock { !$0.isEmpty }
            }
            let report = try #require(reports.withLock { $0.first })
            #expect(report.code == .malformed && report.topic == "devices/hb-1/heartbeat")
            // Out of the documented limits: refused the same way, and not counted.
            let counted = await p.service.counters.heartbeats, seen = reports.withLock { $0.count }
            try await device.publish("devices/hb-1/heartbeat", WireCodec.encode(Heartbeat(seq: 0, mode: .escrow, uptime: 1, configVersion: 0)), qos: .atLeastOnce)
            try await waitUntil("the out-of-limits heartbeat's error (\(label))") {
                reports.withLock { $0.dropFirst(seen).contains { $0.message == "seq must be >= 1 (got 0)" } }
            }
            #expect(await p.service.counters.heartbeats == counted)
            await device.disconnect()
        }
        try await round("before")
        try await p.broker.restart()
        try await round("after")
        await p.shutdown()
    }
}
