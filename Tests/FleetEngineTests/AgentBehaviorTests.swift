import EscrowCore
import Testing
@testable import MQTTWire
@testable import FleetEngine

/// `AgentBehavior`: the engine callbacks drive `AgentMachine`, its effects come back as actions.
@Suite struct AgentBehaviorTests {
    let id: DeviceID = "dev-7"
    let owner: AccountID = "acme"

    func config(_ version: Int, mode: DeviceMode = .normal, heartbeat: Int = 60) -> [UInt8] {
        WireCodec.encode(DeviceConfig(version: version, mode: mode, heartbeatInterval: heartbeat, owner: owner, settings: ["region": .string("eu")]))
    }

    func message(_ payload: [UInt8]) -> IncomingMessage {
        IncomingMessage(topic: "devices/dev-7/config", payload: payload, qos: .atLeastOnce, retain: true)
    }

    func heartbeatToken(_ actions: [DeviceAction]) -> UInt8? {
        for a in actions { if case .schedule(let t, _) = a { return t } }
        return nil
    }

    func publishes(_ actions: [DeviceAction], _ topic: String) -> [(payload: [UInt8], qos: QoS, retain: Bool)] {
        actions.compactMap { if case .publish(topic, let p, let q, let r) = $0 { return (p, q, r) }; return nil }
    }

    @Test func connectSpecCarriesTheMachinesWill() {
        let b = AgentBehavior(id: id)
        let c = b.connectSpec(keepAlive: 30, version: .v311)
        #expect(c.clientID == "dev-7" && c.cleanStart && c.keepAlive == 30)
        let will = b.machine.will
        #expect(c.will == .init(topic: will.topic, payload: will.payload, qos: .atLeastOnce, retain: true))
        #expect(String(decoding: will.payload, as: UTF8.self).contains("\"offline\""))
    }

    @Test func bootThenConnectedSubscribesAnnouncesAndSchedulesTheFirstBeatWithinOneInterval() throws {
        var b = AgentBehavior(id: id, heartbeatInterval: 10)
        #expect(b.machine.phase == .booting)
        let actions = b.onConnected(now: 1)
        #expect(b.machine.phase == .online)
        #expect(actions.first == .subscribe(filter: "devices/dev-7/config", qos: .atLeastOnce))
        let status = publishes(actions, "devices/dev-7/status")
        #expect(status.count == 1 && status[0].qos == .atLeastOnce && status[0].retain)
        let st = try WireCodec.decode(DeviceStatus.self, from: status[0].payload)
        #expect(st.state == .online && st.mode == .escrow && st.agentVersion == AgentBehavior.agentVersion)
        #expect(actions.contains { if case .schedule(_, let after) = $0 { return after >= 0 && after <= 10 }; return false })
    }

    @Test func heartbeatsUseTheConfiguredQoSAndIgnoreStaleTimers() throws {
        var b = AgentBehavior(id: id, heartbeatInterval: 10, heartbeatJitter: 0, heartbeatQoS: .atLeastOnce)
        let token = try #require(heartbeatToken(b.onConnected(now: 0)))
        #expect(b.onTimer(token &+ 5, now: 3).isEmpty) // not the current timer
        let beat = b.onTimer(token, now: 10)
        let hb = publishes(beat, "devices/dev-7/heartbeat")
        #expect(hb.count == 1 && hb[0].qos == .atLeastOnce && !hb[0].retain)
        #expect(try WireCodec.decode(Heartbeat.self, from: hb[0].payload).seq == 1)
        #expect(beat.contains(.note(.heartbeat)))
        #expect(beat.contains { if case .schedule(_, 10) = $0 { return true }; return false })
        #expect(b.onTimer(token, now: 11).isEmpty) // the previous timer is no longer current
    }

    @Test func aValidConfigurationIsPersistedThenAcknowledgedInThatOrder() throws {
        var b = AgentBehavior(id: id, heartbeatInterval: 10)
        let first = try #require(heartbeatToken(b.onConnected(now: 0)))
        let actions = b.onMessage(message(config(1)), now: 5)
        // The machine asked to persist; the flash is instant, so `.persisted` was fed at once.
        #expect(b.machine.phase == .online)
        #expect(b.machine.state.mode == .normal && b.machine.state.owner == owner && b.machine.state.appliedVersion == 1)
        #expect(b.normalAppliedAt == 5 && b.configReceivedAt == 5)
        let applied = try #require(actions.firstIndex(of: .note(.configApplied)))
        let ackIndex = try #require(actions.firstIndex { if case .publish("devices/dev-7/config/ack", _, _, _) = $0 { return true }; return false })
        #expect(applied < ackIndex, "the ack follows the persist")
        let ack = publishes(actions, "devices/dev-7/config/ack")
        #expect(ack.count == 1 && ack[0].qos == .atLeastOnce)
        #expect(try WireCodec.decode(ConfigAck.self, from: ack[0].payload) == ConfigAck(version: 1, result: .applied))
        // Mode changed: the retained status says normal; the heartbeat moves to the configuration's interval.
        let status = publishes(actions, "devices/dev-7/status")
        #expect(try WireCodec.decode(DeviceStatus.self, from: status[0].payload).mode == .normal)
        let second = try #require(heartbeatToken(actions))
        #expect(actions.contains { if case .schedule(_, let s) = $0 { return s >= 48 && s <= 72 }; return false })
        #expect(b.onTimer(first, now: 6).isEmpty, "the escrow heartbeat was cancelled")
        #expect(!b.onTimer(second, now: 65).isEmpty)
    }

    @Test func staleAndInvalidConfigurationsAreAnsweredAndCounted() throws {
        var b = AgentBehavior(id: id)
        _ = b.onConnected(now: 0)
        _ = b.onMessage(message(config(2)), now: 1)
        let stale = b.onMessage(message(config(2)), now: 2)
        #expect(stale.contains(.note(.configIgnored)))
        #expect(try WireCodec.decode(ConfigAck.self, from: publishes(stale, "devices/dev-7/config/ack")[0].payload) == ConfigAck(version: 2, result: .applied))
        let bad = b.onMessage(message(config(3, heartbeat: 1)), now: 3)
        #expect(bad.contains(.note(.configRejected)))
        let ack = try WireCodec.decode(ConfigAck.self, from: publishes(bad, "devices/dev-7/config/ack")[0].payload)
        #expect(ack.version == 3 && ack.result == .rejected)
        #expect(b.machine.state.appliedVersion == 2)
        #expect(b.onMessage(IncomingMessage(topic: "devices/other/config", payload: config(9)), now: 4).isEmpty)
    }

    @Test func reconnectAnnouncesTheStateInForce() throws {
        var b = AgentBehavior(id: id)
        _ = b.onConnected(now: 0)
        _ = b.onMessage(message(config(1)), now: 1)
        b.onDisconnected(now: 2)
        #expect(b.machine.phase == .connecting)
        let again = b.onConnected(now: 3)
        #expect(again.contains(.subscribe(filter: "devices/dev-7/config", qos: .atLeastOnce)))
        let st = try WireCodec.decode(DeviceStatus.self, from: publishes(again, "devices/dev-7/status")[0].payload)
        #expect(st.mode == .normal && st.configVersion == 1)
        // The retained configuration re-delivered after the reconnect is re-acked, not applied again.
        let redelivered = b.onMessage(message(config(1)), now: 4)
        #expect(redelivered.contains(.note(.configIgnored)) && b.normalAppliedAt == 1)
    }

    @Test func holdConfigurationStaysInEscrowAndIsNotANormalApply() {
        var b = AgentBehavior(id: id)
        _ = b.onConnected(now: 0)
        let actions = b.onMessage(message(config(1, mode: .escrow, heartbeat: 300)), now: 1)
        #expect(actions.contains(.note(.configApplied)))
        #expect(b.machine.state.mode == .escrow && b.normalAppliedAt < 0)
    }
}
