import EscrowCore
import Foundation
import Testing
@testable import FleetEngine
import TestSupport

/// `--ramp`, `--publish-rate`/`--topic`/`--payload`, `--subscribe`/`--fanout-publisher`: the pure
/// parts without I/O, then each against a private mosquitto.
@Suite("fleetsim scenario options")
struct ScenarioLoadTests {
    // MARK: Pure

    @Test("ramp profiles: grammar and how many devices each has released by a time")
    func rampProfiles() throws {
        #expect(try RampProfile.parse("linear:10s") == .linear(seconds: 10))
        #expect(try RampProfile.parse("step:1000/5s") == .step(devices: 1000, every: 5))
        #expect(try RampProfile.parse("step:10/500ms") == .step(devices: 10, every: 0.5))
        #expect(try RampProfile.parse("spike:500") == .spike(devices: 500))
        for bad in ["linear", "linear:0", "step:10", "step:0/1s", "spike:0", "wave:3", "spike:many"] {
            #expect(throws: FleetError.usage("--ramp expects linear:DUR, step:N/DUR or spike:N (e.g. linear:10s, step:1000/5s, spike:5000), got '\(bad)'")) {
                try RampProfile.parse(bad)
            }
        }
        let linear = RampProfile.linear(seconds: 10)
        #expect([0, 2.51, 5, 9.99, 10, 60].map { linear.released(at: $0, of: 100, releasedConnected: false) } == [0, 26, 50, 100, 100, 100])
        let step = RampProfile.step(devices: 30, every: 5)
        #expect([0, 4.9, 5, 12, 100].map { step.released(at: $0, of: 100, releasedConnected: false) } == [30, 30, 60, 90, 100])
        let spike = RampProfile.spike(devices: 25)
        #expect(spike.released(at: 0, of: 100, releasedConnected: false) == 75)
        #expect(spike.released(at: 9, of: 100, releasedConnected: false) == 75)
        #expect(spike.released(at: 9, of: 100, releasedConnected: true) == 100)
        #expect(spike.released(at: 0, of: 20, releasedConnected: false) == 20, "a spike of the whole fleet is everyone at once")
        #expect(RampProfile.constant.released(at: 0, of: 7, releasedConnected: false) == 7)
        #expect(RampProfile.step(devices: 1000, every: 5).share(workers: 3) == .step(devices: 334, every: 5))
        #expect(try RampProfile.parse(RampProfile.linear(seconds: 2.5).label) == .linear(seconds: 2.5))
    }

    @Test("topic patterns, load message payloads and the pacer")
    func loadPieces() {
        #expect(DeviceLoad.resolve("plant/%n/%i/t%%", id: "sim-000007", index: 7) == "plant/7/sim-000007/t%")
        #expect(DeviceLoad.problem(in: "devices/%i/telemetry", allowWildcards: false) == nil)
        #expect(DeviceLoad.problem(in: "a/+/b", allowWildcards: false)?.contains("wildcard") == true)
        #expect(DeviceLoad.problem(in: "a/+/b", allowWildcards: true) == nil)
        #expect(DeviceLoad.problem(in: "a/%q", allowWildcards: true)?.contains("only %i") == true)
        #expect(DeviceLoad.problem(in: "a/%", allowWildcards: true) != nil && DeviceLoad.problem(in: "", allowWildcards: true) != nil)
        let p = LoadMessage.payload(sentAt: 1234.5678, size: 300)
        #expect(p.count == 300 && LoadMessage.sentAt(p) == 1234.5678)
        #expect(LoadMessage.payload(sentAt: 1, size: 12).count == 12)
        #expect(LoadMessage.sentAt(Array("{\"mode\":\"escrow\"}".utf8)) == nil)
        var pacer = Pacer(interval: 0.1, first: 1)
        #expect(pacer.fire(now: 0.5) == (0, 0.5))
        let first = pacer.fire(now: 1)
        #expect(first.count == 1 && abs(first.after - 0.1) < 1e-9)
        let late = pacer.fire(now: 1.35) // due at 1.1, 1.2, 1.3
        #expect(late.count == 3 && abs(late.after - 0.05) < 1e-9)
        #expect(pacer.fire(now: 1000).count == Pacer.maxBurst, "a long stall drops the backlog")
    }

    @Test("an agent with load: subscribes and schedules on connect, publishes on its timer, measures load messages it receives")
    func agentWithLoad() throws {
        var b = AgentBehavior(id: DeviceID("sim-000003"), heartbeatInterval: 30)
        b.load = DeviceLoad(publishInterval: 0.5, topic: "load/3", payloadBytes: 40, qos: .atLeastOnce, subscription: "fleet/broadcast")
        let connected = b.onConnected(now: 10)
        #expect(connected.contains(.subscribe(filter: "fleet/broadcast", qos: .atLeastOnce)))
        #expect(connected.contains { if case .schedule(AgentBehavior.loadTimer, let after) = $0 { return after <= 0.5 } else { return false } })
        let fired = b.onTimer(AgentBehavior.loadTimer, now: 11)
        let publishes = fired.compactMap { a -> [UInt8]? in if case .publish("load/3", let p, .atLeastOnce, false) = a { return p } else { return nil } }
        #expect(!publishes.isEmpty && publishes.allSatisfy { $0.count == 40 && LoadMessage.sentAt($0) == 11 })
        #expect(b.onMessage(IncomingMessage(topic: "fleet/broadcast", payload: LoadMessage.payload(sentAt: 11.25, size: 20)), now: 11.5)
            == [.measure(.fanout, seconds: 0.25)])
        // Heartbeat tokens never collide with the load timer.
        for _ in 0..<600 { _ = b.onTimer(0, now: 12) }
        var plain = AgentBehavior(id: DeviceID("sim-000004"))
        #expect(!plain.onConnected(now: 0).contains { if case .subscribe("fleet/broadcast", _) = $0 { return true } else { return false } })
    }

    // MARK: Against mosquitto

    @Test("--publish-rate on --topic with --payload: every device's messages arrive on its own topic at the given size")
    func publishRateTopicAndPayload() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let o = try FleetOptions.parse(["connect", "--broker", broker.url, "--devices", "10", "--publish-rate", "10", "--topic", "load/%n/%i",
                                        "--payload", "300", "--qos", "1", "--heartbeat", "30"])
        let runner = FleetRunner(options: o, output: { _ in })
        let probe = try Engine(configuration: engineConfig(broker), behaviors: [RecorderBehavior(clientID: "probe-load", filters: ["load/#"])])
        probe.startAll()
        #expect(probe.run(timeout: 5) { probe.connectedCount == 1 })
        let ids = (0..<10).map { FleetRunner.deviceID(prefix: o.prefix, index: $0) }
        let behaviors = ids.enumerated().map { i, id in
            var b = AgentBehavior(id: id, heartbeatInterval: 30)
            b.load = runner.deviceLoad(id: id, index: i)
            return b
        }
        let engine = try Engine(configuration: runner.engineConfiguration(), behaviors: behaviors)
        engine.startAll()
        let topics = Set(ids.enumerated().map { "load/\($0.offset)/\($0.element.rawValue)" })
        var perTopic: [String: Int] = [:]
        let ok = pump(engine, probe, timeout: 15) {
            perTopic = Dictionary(grouping: probe.behavior(at: 0).messages, by: \.topic).mapValues(\.count)
            return topics.allSatisfy { (perTopic[$0] ?? 0) >= 3 }
        }
        #expect(ok, "\(perTopic)")
        #expect(Set(perTopic.keys) == topics)
        let messages = probe.behavior(at: 0).messages
        #expect(messages.allSatisfy { $0.payload.count == 300 && LoadMessage.sentAt($0.payload) != nil })
        #expect(engine.metrics.pubacks > 0 && engine.metrics.totalErrors == 0)
        engine.stopAll(); probe.stopAll()
    }

    @Test("--subscribe + --fanout-publisher: every message fans out to the fleet; fanout latency is reported, phased and thresholded")
    func fanOut() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let dir = try TempDirectory(prefix: "fleet-fanout")
        let run = try await fleetsim(["connect", "--broker", broker.url, "--devices", "40", "--duration", "2", "--quiet", "--subscribe", "fleet/broadcast",
                                      "--fanout-publisher", "20", "--payload", "100", "--report", dir.file("r.json"), "--html", dir.file("r.html"),
                                      "--threshold", "fanout.p99<5s"])
        let code = run.code, out = run.out.joined(separator: "\n"), err = run.err.joined(separator: "\n")
        #expect(code == 0, "\(out)\(err)")
        let r = try FleetReport.decode(Data(contentsOf: URL(fileURLWithPath: dir.file("r.json"))))
        let fanout = try #require(r.fanoutMs)
        let published = r.counters["fanoutPublished"] ?? 0
        #expect(published >= 20, "about 20/s for 2 s, got \(published)")
        #expect(fanout.count >= 400 && fanout.count <= UInt64(published * 40), "\(fanout.count) deliveries of \(published) messages to 40 devices")
        #expect(fanout.p99 < 1000)
        #expect(r.phases?.last?.name == "escrow hold" && r.phases?.last?.latencyName == "fanout")
        #expect(r.samples.contains { $0.fanoutP99Ms != nil })
        #expect(r.thresholds?.first?.passed == true)
        #expect(try String(contentsOfFile: dir.file("r.html"), encoding: .utf8).contains("Fan-out delivery latency"))
    }

    @Test("--ramp step: devices connect in steps (plateaus in the 100 ms samples)")
    func rampStep() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let o = try FleetOptions.parse(["connect", "--broker", broker.url, "--devices", "30", "--duration", "2.2", "--quiet", "--heartbeat", "30",
                                        "--ramp", "step:10/0.7s", "--sample-interval", "100ms"])
        let r = try await offPool { try FleetRunner(options: o, output: { _ in }).run() }
        let all = try #require(r.timeToAllConnected)
        #expect(all >= 1.4 && all < 2.2, "the third step starts at 1.4 s; all after \(all) s")
        #expect(r.samples.contains { $0.connected == 10 } && r.samples.contains { $0.connected == 20 }, "\(r.samples.map(\.connected))")
        #expect(r.samples.first { $0.t < 0.65 && $0.connected > 10 } == nil)
        #expect(r.settings["ramp"] == "step:10/0.7s")
    }

    @Test("--ramp spike: the last N connect at once after the rest, as a spike phase of their own")
    func rampSpike() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let o = try FleetOptions.parse(["connect", "--broker", broker.url, "--devices", "40", "--duration", "1.5", "--quiet", "--heartbeat", "30",
                                        "--ramp", "spike:25"])
        let r = try await offPool { try FleetRunner(options: o, output: { _ in }).run() }
        let phases = try #require(r.phases)
        #expect(phases.map(\.name) == ["connect", "spike", "escrow hold"])
        #expect(phases[0].count == 15 && phases[1].count == 25 && phases[1].latency?.count == 25)
        #expect(r.finalConnected == 40)
    }

    @Test("--ramp linear and soak with --churn: an even ramp, then a churn phase of reconnects")
    func rampLinearSoakChurn() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let o = try FleetOptions.parse(["soak", "--broker", broker.url, "--devices", "120", "--duration", "3.5", "--quiet", "--heartbeat", "30",
                                        "--ramp", "linear:0.8s", "--churn", "100", "--backoff-base", "0.2", "--backoff-max", "0.5"])
        let r = try await offPool { try FleetRunner(options: o, output: { _ in }).run() }
        let all = try #require(r.timeToAllConnected)
        #expect(all >= 0.75, "linear:0.8s releases the last device at 0.8 s; all after \(all) s")
        let phases = try #require(r.phases)
        #expect(phases.map(\.name) == ["connect", "churn"])
        #expect(phases[1].latencyName == "recovery" && phases[1].count >= 3 && phases[1].count == Int(phases[1].latency?.count ?? 0))
    }
}
