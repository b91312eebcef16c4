import EscrowCore
import Testing
@testable import MQTTWire
@testable import FleetEngine

@Suite struct DeviceBehaviorTests {
    let id: DeviceID = "dev-1"

    @Test func handWrittenPayloadsMatchTheWireCodec() throws {
        #expect(String(decoding: EscrowDeviceBehavior.offlinePayload, as: UTF8.self) == #"{"schema":1,"state":"offline"}"#)
        let hb = Heartbeat(seq: 7, mode: .normal, uptime: 42, configVersion: 3)
        #expect(EscrowDeviceBehavior.encode(hb) == WireCodec.encode(hb))
        let st = DeviceStatus(state: .online, mode: .escrow, configVersion: 0, agentVersion: EscrowDeviceBehavior.agentVersion)
        #expect(EscrowDeviceBehavior.onlineStatus(mode: .escrow, configVersion: 0) == WireCodec.encode(st))
    }

    @Test func connectCarriesWillAndClientID() {
        let b = EscrowDeviceBehavior(id: id)
        let c = b.connectSpec(keepAlive: 45, version: .v5)
        #expect(c.clientID == "dev-1" && c.keepAlive == 45 && c.version == .v5 && c.cleanStart)
        #expect(c.will == .init(topic: "devices/dev-1/status", payload: EscrowDeviceBehavior.offlinePayload, qos: .atLeastOnce, retain: true))
    }

    @Test func onConnectedSubscribesPublishesStatusAndSchedulesHeartbeat() throws {
        var b = EscrowDeviceBehavior(id: id, heartbeatInterval: 10)
        let actions = b.onConnected(now: 0)
        #expect(actions.contains(.subscribe(filter: "devices/dev-1/config", qos: .atLeastOnce)))
        #expect(actions.contains { if case .publish("devices/dev-1/status", _, .atLeastOnce, true) = $0 { return true }; return false })
        #expect(actions.contains { if case .schedule(EscrowDeviceBehavior.heartbeatTimer, let s) = $0 { return s >= 0 && s <= 10 }; return false })
        let hb = b.onTimer(EscrowDeviceBehavior.heartbeatTimer, now: 12)
        guard case .publish(let topic, let payload, .atMostOnce, false) = hb.first else { Issue.record("no heartbeat"); return }
        #expect(topic == "devices/dev-1/heartbeat")
        #expect(try WireCodec.decode(Heartbeat.self, from: payload) == Heartbeat(seq: 1, mode: .escrow, uptime: 12, configVersion: 0))
        #expect(hb.contains { if case .schedule(_, let s) = $0 { return s >= 8 && s <= 12 }; return false })
    }

    @Test func configVersionRules() throws {
        var b = EscrowDeviceBehavior(id: id)
        func config(_ v: Int, _ mode: DeviceMode, _ hb: Int = 60) -> IncomingMessage {
            IncomingMessage(topic: "devices/dev-1/config", payload: WireCodec.encode(DeviceConfig(version: v, mode: mode, heartbeatInterval: hb, owner: "acme")), qos: .atLeastOnce)
        }
        let applied = b.onMessage(config(2, .normal), now: 1)
        #expect(applied.contains(.note(.configApplied)))
        guard case .publish("devices/dev-1/config/ack", let ack, .atLeastOnce, false) = applied.first else { Issue.record("no ack"); return }
        #expect(try WireCodec.decode(ConfigAck.self, from: ack) == ConfigAck(version: 2, result: .applied))
        #expect(b.mode == .normal && b.appliedVersion == 2 && b.heartbeatInterval == 60)
        #expect(b.onMessage(config(2, .escrow), now: 2) == [.note(.configIgnored)])
        #expect(b.onMessage(config(1, .escrow), now: 2) == [.note(.configIgnored)])
        #expect(b.onMessage(IncomingMessage(topic: "devices/dev-1/config", payload: Array("nope".utf8)), now: 3) == [.note(.configRejected)])
        #expect(b.onMessage(IncomingMessage(topic: "devices/other/config", payload: [1]), now: 3) == [])
        #expect(b.mode == .normal)
    }
}
