import Foundation
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
            let errors = device.messages
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
            var reply: MQTTMessage?
            try await waitUntil(timeout: .seconds(20), "the malformed heartbeat's error (\(label))") {
                try await device.publish("devices/hb-1/heartbeat", Array(#"{"schema":1,"seq":"x"}"#.utf8), qos: .atLeastOnce)
                reply = try? await firstElement(of: errors, timeout: .seconds(1), "an error report") { $0.topic == "devices/hb-1/error" }
                return reply != nil
            }
            let report = try WireCodec.decode(DeviceErrorReport.self, from: try #require(reply).payload)
            #expect(report.code == .malformed && report.topic == "devices/hb-1/heartbeat")
            await device.disconnect()
        }
        try await round("before")
        try await p.broker.restart()
        try await round("after")
        await p.shutdown()
    }
}
