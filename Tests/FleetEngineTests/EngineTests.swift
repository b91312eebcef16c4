import EscrowCore
import Foundation
import Testing
import TestSupport
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

/// Expectations gathered on the engine's thread (a thread of its own, never the cooperative
/// pool: the engine blocks in epoll), reported back on the test's task by `report()`.
final class Checks: @unchecked Sendable {
    // @unchecked Sendable: written on the engine's thread only, read after that thread finished.
    private(set) var failures: [String] = []
    func expect(_ ok: Bool, _ what: @autoclosure () -> String, line: Int = #line) {
        if !ok { failures.append("line \(line): \(what())") }
    }
    func fail(_ what: String, line: Int = #line) { failures.append("line \(line): \(what)") }
}

/// Runs `body` with its engines on a thread of its own (`offPool`), then records every failed
/// check as an issue of the calling test.
func onEngineThread(_ body: @escaping @Sendable (Checks) throws -> Void) async throws {
    let checks = try await offPool { () -> Checks in
        let c = Checks()
        try body(c)
        return c
    }
    for f in checks.failures { Issue.record(Comment(rawValue: f)) }
}

func engineConfig(_ broker: LocalBroker, version: MQTTVersion = .v311) -> EngineConfiguration {
    engineConfig(port: broker.port, version: version)
}

func engineConfig(port: UInt16, version: MQTTVersion = .v311) -> EngineConfiguration {
    var c = EngineConfiguration()
    c.brokerPort = port
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
        let port = broker.port
        try await onEngineThread { c in
            let probe = try Engine(configuration: engineConfig(port: port, version: version),
                                   behaviors: [RecorderBehavior(clientID: "probe", filters: ["devices/+/heartbeat"])])
            probe.startAll()
            c.expect(probe.run(timeout: 5) { probe.connectedCount == 1 }, "the probe connects")
            probe.run(timeout: 0.3) { false } // let SUBACK land
            let n = 150
            let engine = try Engine(configuration: engineConfig(port: port, version: version), behaviors: fleet(n, heartbeat: 0.5, qos: .atLeastOnce))
            engine.startAll()
            var seen = Set<String>()
            let ok = pump(engine, probe, timeout: 15) {
                for m in probe.behavior(at: 0).messages { seen.insert(m.topic) }
                return engine.connectedCount == n && seen.count == n
            }
            c.expect(ok, "connected \(engine.connectedCount)/\(n), heartbeating \(seen.count)")
            c.expect(engine.metrics.totalErrors == 0, "errors: \(engine.metrics.totalErrors)")
            c.expect(engine.metrics.pubacks > 0, "no PUBACK")
            c.expect(engine.metrics.connectLatency.count == UInt64(n), "connect latencies: \(engine.metrics.connectLatency.count)")
            if let first = probe.behavior(at: 0).messages.first {
                c.expect((try? WireCodec.decode(Heartbeat.self, from: first.payload))?.mode == .escrow, "the heartbeat says escrow mode")
            } else {
                c.fail("the probe received no heartbeat")
            }
            engine.stopAll(); probe.stopAll()
        }
    }

    @Test func retainedOnlineThenWillOfflineAfterStormAndAllBack() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let port = broker.port
        try await onEngineThread { c in
            let n = 100
            let engine = try Engine(configuration: engineConfig(port: port), behaviors: fleet(n, heartbeat: 30))
            engine.startAll()
            c.expect(engine.run(timeout: 10) { engine.connectedCount == n }, "all connect")
            engine.run(timeout: 0.5) { false }
            // A late subscriber sees every retained status online.
            let probe = try Engine(configuration: engineConfig(port: port), behaviors: [RecorderBehavior(clientID: "probe", filters: ["devices/+/status"])])
            probe.startAll()
            func latest() -> [String: DeviceStatus.State] {
                var m: [String: DeviceStatus.State] = [:]
                for msg in probe.behavior(at: 0).messages {
                    if let s = try? WireCodec.decode(DeviceStatus.self, from: msg.payload) { m[msg.topic] = s.state }
                }
                return m
            }
            c.expect(pump(engine, probe, timeout: 10) { latest().count == n && latest().values.allSatisfy { $0 == .online } }, "every retained status online")
            c.expect(probe.behavior(at: 0).messages.allSatisfy { $0.retain }, "all retained")
            // Every socket closed without DISCONNECT -> every will publishes offline (retained).
            engine.dropAll(reconnect: false)
            c.expect(engine.connectedCount == 0, "all dropped")
            c.expect(pump(engine, probe, timeout: 10) { latest().count == n && latest().values.allSatisfy { $0 == .offline } }, "every will says offline")
            engine.startAll()
            c.expect(pump(engine, probe, timeout: 10) { engine.connectedCount == n && latest().values.allSatisfy { $0 == .online } }, "all back online")
            // Storm: all drop at once and come back by themselves with backoff + jitter.
            let before = engine.metrics.recoveryTime.count
            engine.dropAll()
            let back = pump(engine, probe, timeout: 15) { engine.connectedCount == n }
            c.expect(back, "back \(engine.connectedCount)/\(n)")
            c.expect(engine.metrics.recoveryTime.count - before == UInt64(n), "recoveries: \(engine.metrics.recoveryTime.count - before)")
            c.expect(Double(engine.metrics.recoveryTime.max) / 1e6 <= 5, "slowest recovery \(Double(engine.metrics.recoveryTime.max) / 1e6) s")
            engine.stopAll(); probe.stopAll()
        }
    }

    @Test func configAppliedAckedAndModeNormalStaleIgnored() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let port = broker.port
        try await onEngineThread { c in
            let engine = try Engine(configuration: engineConfig(port: port), behaviors: fleet(5, heartbeat: 30))
            engine.startAll()
            c.expect(engine.run(timeout: 5) { engine.connectedCount == 5 }, "all connect")
            let probe = try Engine(configuration: engineConfig(port: port), behaviors: [RecorderBehavior(clientID: "op", filters: ["devices/+/config/ack", "devices/t-2/status"])])
            probe.startAll()
            c.expect(pump(engine, probe, timeout: 5) { probe.behavior(at: 0).messages.count >= 1 }, "the probe gets the retained status")
            func push(_ version: Int, _ mode: DeviceMode, interval: Int = 60) {
                let cfg = DeviceConfig(version: version, mode: mode, heartbeatInterval: interval, owner: "acme")
                probe.perform([.publish(topic: "devices/t-2/config", payload: WireCodec.encode(cfg), qos: .atLeastOnce, retain: true)], for: 0)
            }
            push(3, .normal)
            func acks() -> [ConfigAck] {
                probe.behavior(at: 0).messages.filter { $0.topic == "devices/t-2/config/ack" }.compactMap { try? WireCodec.decode(ConfigAck.self, from: $0.payload) }
            }
            c.expect(pump(engine, probe, timeout: 5) { acks().count == 1 }, "one ack")
            c.expect(acks().first == ConfigAck(version: 3, result: .applied), "acks: \(acks())")
            c.expect(engine.behavior(at: 2).mode == .normal, "mode normal")
            c.expect(engine.behavior(at: 2).appliedVersion == 3, "version 3 applied")
            c.expect(engine.behavior(at: 2).heartbeatInterval == 60, "heartbeat 60 s")
            c.expect(pump(engine, probe, timeout: 3) {
                probe.behavior(at: 0).messages.contains { $0.topic == "devices/t-2/status" && (try? WireCodec.decode(DeviceStatus.self, from: $0.payload)).map { $0.mode == .normal && $0.configVersion == 3 } == true }
            }, "a status in normal mode, version 3")
            // Equal and lower versions are ignored: no ack, no state change.
            push(3, .escrow); push(2, .escrow)
            _ = pump(engine, probe, timeout: 1) { false }
            c.expect(acks().count == 1, "acks: \(acks())")
            c.expect(engine.metrics.configsIgnored == 2, "ignored: \(engine.metrics.configsIgnored)")
            c.expect(engine.behavior(at: 2).mode == .normal, "still normal")
            // Out-of-range heartbeat is rejected with a reason.
            push(4, .normal, interval: 1)
            c.expect(pump(engine, probe, timeout: 5) { acks().count == 2 }, "a second ack")
            c.expect(acks().last?.result == .rejected, "rejected: \(acks())")
            c.expect(engine.behavior(at: 2).appliedVersion == 3, "version 3 stays")
            // The retained (rejected) config is re-delivered after a reconnect and rejected again; version 3 stays.
            engine.drop(2)
            c.expect(pump(engine, probe, timeout: 8) { engine.connectedCount == 5 && engine.metrics.configsRejected >= 2 }, "rejected again after the reconnect")
            c.expect(engine.behavior(at: 2).appliedVersion == 3, "version 3 stays after the reconnect")
            engine.stopAll(); probe.stopAll()
        }
    }

    @Test func unreachableBrokerCountsAsUnreachable() async throws {
        let port = try LocalBroker.freePort()
        try await onEngineThread { c in
            var config = EngineConfiguration()
            config.brokerPort = port
            config.reconnect = false
            let engine = try Engine(configuration: config, behaviors: fleet(3))
            engine.startAll()
            c.expect(engine.run(timeout: 5) { engine.metrics.errors[.unreachable] == 3 }, "3 unreachable: \(engine.metrics.errors)")
            c.expect(engine.connectedCount == 0, "none connected")
        }
    }

    @Test func sourceAddressesRoundRobin() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let port = broker.port
        try await onEngineThread { c in
            var config = engineConfig(port: port)
            config.sourceAddresses = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
            config.connectRate = 500
            config.connectWindow = 8
            let engine = try Engine(configuration: config, behaviors: fleet(30, heartbeat: 30))
            engine.startAll()
            c.expect(engine.run(timeout: 10) { engine.connectedCount == 30 }, "30 connected: \(engine.connectedCount)")
            c.expect(engine.metrics.totalErrors == 0, "errors: \(engine.metrics.errors)")
            engine.stopAll()
        }
    }

    @Test func keepalivePingsHoldIdleConnections() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let port = broker.port
        try await onEngineThread { c in
            var config = engineConfig(port: port)
            config.keepAlive = 1  // mosquitto drops a client silent for 1.5 x keepalive
            let engine = try Engine(configuration: config, behaviors: fleet(20, heartbeat: 3600))
            engine.startAll()
            c.expect(engine.run(timeout: 5) { engine.connectedCount == 20 }, "20 connected")
            engine.run(timeout: 3.5) { false } // the point: time passes with nothing but PINGREQs
            c.expect(engine.connectedCount == 20, "still 20 connected: \(engine.connectedCount)")
            c.expect(engine.metrics.disconnects == 0 && engine.metrics.totalErrors == 0, "drops \(engine.metrics.disconnects), errors \(engine.metrics.errors)")
            engine.stopAll()
        }
    }

    @Test func largePublishesGoThroughWriteBufferingIntact() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let port = broker.port
        try await onEngineThread { c in
            let probe = try Engine(configuration: engineConfig(port: port), behaviors: [RecorderBehavior(clientID: "sink", filters: ["big/#"])])
            let source = try Engine(configuration: engineConfig(port: port), behaviors: [RecorderBehavior(clientID: "src", filters: [])])
            probe.startAll(); source.startAll()
            c.expect(pump(probe, source, timeout: 5) { probe.connectedCount == 1 && source.connectedCount == 1 }, "both connect")
            _ = pump(probe, source, timeout: 0.3) { false }
            // 6 x 900 KB queued at once: more than a loopback socket buffer, so writes go partial -> EPOLLOUT.
            let payloads = (0..<6).map { i in [UInt8](repeating: UInt8(i), count: 900_000) }
            source.perform(payloads.enumerated().map { .publish(topic: "big/\($0.offset)", payload: $0.element, qos: .atLeastOnce, retain: false) }, for: 0)
            c.expect(pump(probe, source, timeout: 15) { probe.behavior(at: 0).messages.count == 6 && source.metrics.pubacks == 6 },
                     "received \(probe.behavior(at: 0).messages.count), acked \(source.metrics.pubacks)")
            c.expect(probe.behavior(at: 0).messages.map(\.payload) == payloads, "payloads intact")
            probe.stopAll(); source.stopAll()
        }
    }
}
