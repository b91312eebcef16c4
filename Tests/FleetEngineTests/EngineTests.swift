import EscrowCore
import Foundation
import Testing
@testable import MQTTWire
@testable import FleetEngine

/// A probe connection driven by its own engine: subscribes and records everything it sees.
struct RecorderBehavior: DeviceBehavior {
    var clientID: String
    var filters: [String]
    var messages: [IncomingMessage] = []
    var connected = false
    func connectSpec(keepAlive: UInt16, version: MQTTVersion) -> MQTTPacket.Connect {
        .init(version: version, clientID: clientID, keepAlive: keepAlive)
    }
    mutating func onConnected(now: Double) -> [DeviceAction] {
        connected = true
        return filters.map { .subscribe(filter: $0, qos: .atLeastOnce) }
    }
    mutating func onMessage(_ message: IncomingMessage, now: Double) -> [DeviceAction] { messages.append(message); return [] }
    mutating func onTimer(_ timer: UInt8, now: Double) -> [DeviceAction] { [] }
}

func engineConfig(_ broker: LocalBroker, version: MQTTVersion = .v311) -> EngineConfiguration {
    var c = EngineConfiguration()
    c.brokerPort = broker.port
    c.mqttVersion = version
    c.keepAlive = 30
    c.backoffBase = 0.2
    c.backoffMax = 2
    return c
}

func fleet(_ n: Int, prefix: String = "t-", heartbeat: Double = 0.5, qos: QoS = .atMostOnce) -> [EscrowDeviceBehavior] {
    (0..<n).map { EscrowDeviceBehavior(id: DeviceID("\(prefix)\($0)")!, heartbeatInterval: heartbeat, heartbeatJitter: 0.2, heartbeatQoS: qos) }
}

/// Polls both engines until `done` or timeout.
func pump<A, B>(_ a: Engine<A>, _ b: Engine<B>, timeout: Double, until done: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if done() { return true }
        a.poll(maxWait: 0.005); b.poll(maxWait: 0.005)
    }
    return done()
}

@Suite(.serialized) struct EngineTests {
    @Test(arguments: [MQTTVersion.v311, .v5])
    func connectsFleetAndAllHeartbeat(version: MQTTVersion) async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let probe = try Engine(configuration: engineConfig(broker, version: version),
                               behaviors: [RecorderBehavior(clientID: "probe", filters: ["devices/+/heartbeat"])])
        probe.startAll()
        #expect(probe.run(timeout: 5) { probe.connectedCount == 1 })
        probe.run(timeout: 0.3) { false } // let SUBACK land
        let n = 150
        let engine = try Engine(configuration: engineConfig(broker, version: version), behaviors: fleet(n, heartbeat: 0.5, qos: .atLeastOnce))
        engine.startAll()
        var seen = Set<String>()
        let ok = pump(engine, probe, timeout: 15) {
            for m in probe.behavior(at: 0).messages { seen.insert(m.topic) }
            return engine.connectedCount == n && seen.count == n
        }
        #expect(ok, "connected \(engine.connectedCount)/\(n), heartbeating \(seen.count)")
        #expect(engine.metrics.totalErrors == 0)
        #expect(engine.metrics.pubacks > 0)
        #expect(engine.metrics.connectLatency.count == UInt64(n))
        // A failed wait above must fail this test, not crash the whole test process.
        let first = try #require(probe.behavior(at: 0).messages.first, "the probe received no heartbeat")
        let hb = try WireCodec.decode(Heartbeat.self, from: first.payload)
        #expect(hb.mode == .escrow)
        engine.stopAll(); probe.stopAll()
    }

    @Test func retainedOnlineThenWillOfflineAfterStormAndAllBack() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let n = 100
        let engine = try Engine(configuration: engineConfig(broker), behaviors: fleet(n, heartbeat: 30))
        engine.startAll()
        #expect(engine.run(timeout: 10) { engine.connectedCount == n })
        engine.run(timeout: 0.5) { false }
        // A late subscriber sees every retained status online.
        let probe = try Engine(configuration: engineConfig(broker), behaviors: [RecorderBehavior(clientID: "probe", filters: ["devices/+/status"])])
        probe.startAll()
        func latest() -> [String: DeviceStatus.State] {
            var m: [String: DeviceStatus.State] = [:]
            for msg in probe.behavior(at: 0).messages {
                if let s = try? WireCodec.decode(DeviceStatus.self, from: msg.payload) { m[msg.topic] = s.state }
            }
            return m
        }
        #expect(pump(engine, probe, timeout: 10) { latest().count == n && latest().values.allSatisfy { $0 == .online } })
        #expect(probe.behavior(at: 0).messages.allSatisfy { $0.retain })
        // Every socket closed without DISCONNECT -> every will publishes offline (retained).
        engine.dropAll(reconnect: false)
        #expect(engine.connectedCount == 0)
        #expect(pump(engine, probe, timeout: 10) { latest().count == n && latest().values.allSatisfy { $0 == .offline } })
        engine.startAll()
        #expect(pump(engine, probe, timeout: 10) { engine.connectedCount == n && latest().values.allSatisfy { $0 == .online } })
        // Storm: all drop at once and come back by themselves with backoff + jitter.
        let before = engine.metrics.recoveryTime.count
        engine.dropAll()
        let back = pump(engine, probe, timeout: 15) { engine.connectedCount == n }
        #expect(back, "back \(engine.connectedCount)/\(n)")
        #expect(engine.metrics.recoveryTime.count - before == UInt64(n))
        #expect(Double(engine.metrics.recoveryTime.max) / 1e6 <= 5)
        engine.stopAll(); probe.stopAll()
    }

    @Test func configAppliedAckedAndModeNormalStaleIgnored() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let engine = try Engine(configuration: engineConfig(broker), behaviors: fleet(5, heartbeat: 30))
        engine.startAll()
        #expect(engine.run(timeout: 5) { engine.connectedCount == 5 })
        let probe = try Engine(configuration: engineConfig(broker), behaviors: [RecorderBehavior(clientID: "op", filters: ["devices/+/config/ack", "devices/t-2/status"])])
        probe.startAll()
        #expect(pump(engine, probe, timeout: 5) { probe.behavior(at: 0).messages.count >= 1 })
        func push(_ version: Int, _ mode: DeviceMode, interval: Int = 60) {
            let cfg = DeviceConfig(version: version, mode: mode, heartbeatInterval: interval, owner: "acme")
            probe.perform([.publish(topic: "devices/t-2/config", payload: WireCodec.encode(cfg), qos: .atLeastOnce, retain: true)], for: 0)
        }
        push(3, .normal)
        func acks() -> [ConfigAck] {
            probe.behavior(at: 0).messages.filter { $0.topic == "devices/t-2/config/ack" }.compactMap { try? WireCodec.decode(ConfigAck.self, from: $0.payload) }
        }
        #expect(pump(engine, probe, timeout: 5) { acks().count == 1 })
        #expect(acks().first == ConfigAck(version: 3, result: .applied))
        #expect(engine.behavior(at: 2).mode == .normal)
        #expect(engine.behavior(at: 2).appliedVersion == 3)
        #expect(engine.behavior(at: 2).heartbeatInterval == 60)
        let statuses = probe.behavior(at: 0).messages.filter { $0.topic == "devices/t-2/status" }.compactMap { try? WireCodec.decode(DeviceStatus.self, from: $0.payload) }
        #expect(pump(engine, probe, timeout: 3) { statuses.contains { $0.mode == .normal && $0.configVersion == 3 } || probe.behavior(at: 0).messages.contains { $0.topic == "devices/t-2/status" && (try? WireCodec.decode(DeviceStatus.self, from: $0.payload))?.mode == .normal } })
        // Equal and lower versions are ignored: no ack, no state change.
        push(3, .escrow); push(2, .escrow)
        _ = pump(engine, probe, timeout: 1) { false }
        #expect(acks().count == 1)
        #expect(engine.metrics.configsIgnored == 2)
        #expect(engine.behavior(at: 2).mode == .normal)
        // Out-of-range heartbeat is rejected with a reason.
        push(4, .normal, interval: 1)
        #expect(pump(engine, probe, timeout: 5) { acks().count == 2 })
        #expect(acks().last?.result == .rejected)
        #expect(engine.behavior(at: 2).appliedVersion == 3)
        // The retained (rejected) config is re-delivered after a reconnect and rejected again; version 3 stays.
        engine.drop(2)
        #expect(pump(engine, probe, timeout: 8) { engine.connectedCount == 5 && engine.metrics.configsRejected >= 2 })
        #expect(engine.behavior(at: 2).appliedVersion == 3)
        engine.stopAll(); probe.stopAll()
    }

    @Test func unreachableBrokerCountsAsUnreachable() throws {
        var c = EngineConfiguration()
        c.brokerPort = try LocalBroker.freePort()
        c.reconnect = false
        let engine = try Engine(configuration: c, behaviors: fleet(3))
        engine.startAll()
        #expect(engine.run(timeout: 5) { engine.metrics.errors[.unreachable] == 3 })
        #expect(engine.connectedCount == 0)
    }

    @Test func sourceAddressesRoundRobin() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        var c = engineConfig(broker)
        c.sourceAddresses = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        c.connectRate = 500
        c.connectWindow = 8
        let engine = try Engine(configuration: c, behaviors: fleet(30, heartbeat: 30))
        engine.startAll()
        #expect(engine.run(timeout: 10) { engine.connectedCount == 30 })
        #expect(engine.metrics.totalErrors == 0)
        engine.stopAll()
    }

    @Test func keepalivePingsHoldIdleConnections() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        var c = engineConfig(broker)
        c.keepAlive = 1  // mosquitto drops a client silent for 1.5 x keepalive
        let engine = try Engine(configuration: c, behaviors: fleet(20, heartbeat: 3600))
        engine.startAll()
        #expect(engine.run(timeout: 5) { engine.connectedCount == 20 })
        engine.run(timeout: 3.5) { false }
        #expect(engine.connectedCount == 20)
        #expect(engine.metrics.disconnects == 0 && engine.metrics.totalErrors == 0)
        engine.stopAll()
    }

    @Test func largePublishesGoThroughWriteBufferingIntact() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let probe = try Engine(configuration: engineConfig(broker), behaviors: [RecorderBehavior(clientID: "sink", filters: ["big/#"])])
        let source = try Engine(configuration: engineConfig(broker), behaviors: [RecorderBehavior(clientID: "src", filters: [])])
        probe.startAll(); source.startAll()
        #expect(pump(probe, source, timeout: 5) { probe.connectedCount == 1 && source.connectedCount == 1 })
        _ = pump(probe, source, timeout: 0.3) { false }
        // 6 x 900 KB queued at once: more than a loopback socket buffer, so writes go partial -> EPOLLOUT.
        let payloads = (0..<6).map { i in [UInt8](repeating: UInt8(i), count: 900_000) }
        source.perform(payloads.enumerated().map { .publish(topic: "big/\($0.offset)", payload: $0.element, qos: .atLeastOnce, retain: false) }, for: 0)
        #expect(pump(probe, source, timeout: 15) { probe.behavior(at: 0).messages.count == 6 && source.metrics.pubacks == 6 })
        #expect(probe.behavior(at: 0).messages.map(\.payload) == payloads)
        probe.stopAll(); source.stopAll()
    }
}
