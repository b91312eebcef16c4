import Foundation
import Glibc
import Testing
import TestSupport
import MQTTWire
@testable import FleetEngine

/// Reliability: a reconnect storm against a real broker. 10,000 devices lose mosquitto at once
/// (SIGKILL and a restart on the same port) and must all be back within a measured bound, with
/// no thundering herd: connects in flight never exceed the engine's window, which stays under
/// mosquitto's listen backlog of 100 (beyond it SYNs are dropped and retried after 1 s).
@Suite(.serialized) struct ReconnectStormTests {
    static let devices = 10_000
    /// Generous bound for "all back" after the broker returns. Measured (debug build, 2 shared
    /// cores, mosquitto 2.0.11, 3 runs): all back 1.8-2.0 s after the restart, 64 in flight at
    /// most (the window, kept full: ~5,000 connects/s), reconnect p50 0.78-0.91 s, p99 1.6-1.9 s,
    /// max 1.6-1.9 s (ceiling 1 s + queue drain); no timeouts, no listen overflows.
    static let allBackBound = 30.0
    static let brokerBacklog = 100

    /// Mutable measurements of the storm phase, updated after every `poll`.
    struct StormProbe {
        /// Connects in flight seen after the last poll (an upper bound until the next scan).
        var inFlight = 0
        /// Largest in-flight count seen between polls.
        var peakObserved = 0
        /// Upper bound on the in-flight peak inside a poll: connects only begin in `pumpConnects`
        /// (each counted in `connectAttempts`), so the peak of a poll is at most the in-flight
        /// count before it plus the attempts it made.
        var peakBound = 0
        var maxAttempt: UInt16 = 0
        var lastAttempts = 0
        /// Connect attempts per whole second since the broker came back.
        var attemptsPerSecond: [Int] = []
        var connacksPerSecond: [Int] = []
        var lastConnacks = 0

        mutating func observe<B: DeviceBehavior>(_ engine: Engine<B>, second: Int) {
            let m = engine.metrics
            let started = m.connectAttempts - lastAttempts
            let acked = m.connacks - lastConnacks
            lastAttempts = m.connectAttempts; lastConnacks = m.connacks
            let s = max(0, second)
            if attemptsPerSecond.count <= s {
                attemptsPerSecond += Array(repeating: 0, count: s + 1 - attemptsPerSecond.count)
                connacksPerSecond += Array(repeating: 0, count: s + 1 - connacksPerSecond.count)
            }
            attemptsPerSecond[s] += started
            connacksPerSecond[s] += acked
            peakBound = max(peakBound, inFlight + started)
            // Without new attempts the in-flight count can only fall: the last scan stays a bound.
            guard started > 0 || inFlight > 0 else { return }
            var n = 0
            var top = maxAttempt
            engine.slots.withUnsafeBufferPointer { slots in
                for i in slots.indices {
                    let st = slots[i].state
                    if st == .connecting || st == .awaitingConnAck { n += 1 }
                    if slots[i].attempt > top { top = slots[i].attempt }
                }
            }
            inFlight = n
            maxAttempt = top
            peakObserved = max(peakObserved, n)
        }
    }

    /// System-wide TCP listen-queue overflows (`TcpExt: ListenOverflows`), for the report only:
    /// other processes on this host share the counter.
    static func listenOverflows() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/net/netstat", encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n")
        for (i, line) in lines.enumerated() where line.hasPrefix("TcpExt:") && i + 1 < lines.count {
            let names = line.split(separator: " "), values = lines[i + 1].split(separator: " ")
            if let k = names.firstIndex(of: "ListenOverflows"), k < values.count, values[0] == "TcpExt:" { return Int(values[k]) }
        }
        return nil
    }

    static func ms(_ microseconds: UInt64) -> Double { Double(microseconds) / 1000 }

    @Test(.timeLimit(.minutes(2)))
    func tenThousandDevicesSurviveBrokerRestartWithoutThunderingHerd() async throws {
        let n = Self.devices
        let fdLimit = System.raiseFileLimit()
        try #require(fdLimit >= n + 256, "the open-file limit is \(fdLimit); \(n) devices need about \(n + 256)")

        let broker = try await MosquittoBroker(BrokerConfig(extraLines: ["max_connections -1"]))
        defer { broker.stop(graceful: false) }

        // Exactly as `fleetsim storm` configures its engine (plain MQTT, backoff base 1 s, the
        // default window, auto source addresses for a loopback broker).
        let options = try FleetOptions.parse(["storm", "--broker", broker.url, "--devices", String(n), "--quiet",
                                              "--backoff-base", "1", "--heartbeat", "60"])
        let runner = FleetRunner(options: options, output: { _ in })
        let configuration = runner.engineConfiguration()
        let window = configuration.connectWindow
        try #require(configuration.tls == nil && configuration.backoffBase == 1)
        try #require(window <= Self.brokerBacklog, "the connect window \(window) exceeds mosquitto's backlog")
        let behaviors = (0..<n).map {
            AgentBehavior(id: FleetRunner.deviceID(prefix: "storm-", index: $0), heartbeatInterval: options.heartbeat,
                          heartbeatJitter: options.heartbeatJitter, heartbeatQoS: options.qos)
        }
        // The engine is driven on threads of its own (`offPool`), never a cooperative-pool thread:
        // it blocks in epoll for up to a minute. `Unchecked` carries it between the two phases.
        // 1. Everyone connects (started and driven in one go: no pause between connect() and the loop).
        let (held, t0, connected) = try await offPool { () -> Unchecked<(Engine<AgentBehavior>, Double, Bool)> in
            let engine = try Engine(configuration: configuration, behaviors: behaviors)
            let t0 = engine.now
            engine.startAll()
            return Unchecked((engine, t0, engine.run(timeout: 45) { engine.connectedCount == n }))
        }.value
        let engine = held
        defer { engine.stopAll() }
        let m = engine.metrics
        try #require(connected, "only \(engine.connectedCount)/\(n) connected; errors \(m.errors) \(engine.lastErrorDetail)")
        let connectSeconds = engine.now - t0
        let attemptsBefore = m.connectAttempts, connacksBefore = m.connacks, disconnectsBefore = m.disconnects
        let errorsBefore = m.errors
        let recoveriesBefore = m.recoveryTime.count
        try #require(recoveriesBefore == 0, "devices recovered before the storm: \(m.errors)")
        let overflowsBefore = Self.listenOverflows()

        // 2. The broker dies (SIGKILL: every socket closes at once) and comes back on the same port.
        let killedAt = engine.now
        try await broker.restart(graceful: false)
        let backAt = engine.now

        // 3. Drive the engine until every device noticed the loss and is connected again.
        let bound = Self.allBackBound
        let box = Unchecked(engine)
        let (probe, allBackAt) = try await offPool { () -> Unchecked<(StormProbe, Double?)> in
            let engine = box.value, m = engine.metrics
            var probe = StormProbe(lastAttempts: m.connectAttempts, lastConnacks: m.connacks)
            var allBackAt: Double?
            let deadline = backAt + bound + 15
            while engine.now < deadline {
                engine.poll(maxWait: 0.02)
                probe.observe(engine, second: Int(engine.now - backAt))
                if m.disconnects - disconnectsBefore >= n && engine.connectedCount == n { allBackAt = engine.now; break }
            }
            return Unchecked((probe, allBackAt))
        }.value

        let recovery = m.recoveryTime
        let stormAttempts = m.connectAttempts - attemptsBefore
        let stormErrors = m.errors.compactMap { cause, count -> String? in
            let d = count - errorsBefore[cause, default: 0]
            return d == 0 ? nil : "\(cause.rawValue)=\(d)"
        }.sorted()
        var overflows: Int?
        if let before = overflowsBefore, let after = Self.listenOverflows() { overflows = after - before }
        let ceiling = Backoff.ceiling(attempt: Int(max(1, probe.maxAttempt)), base: configuration.backoffBase, max: configuration.backoffMax)
        let allBack = allBackAt.map { $0 - backAt }
        print(String(format: "storm: %d devices connected in %.2f s (window %d, %d source addresses)",
                     n, connectSeconds, window, configuration.sourceAddresses.count))
        print(String(format: "storm: broker killed and restarted in %.3f s; all %d back %@ after its return (%.2f s after the kill)",
                     backAt - killedAt, n, allBack.map { String(format: "%.2f s", $0) } ?? "NEVER",
                     (allBackAt ?? engine.now) - killedAt))
        print("storm: connects in flight peak \(probe.peakObserved) observed between polls, <= \(probe.peakBound) within a poll (window \(window), backlog \(Self.brokerBacklog))")
        print("storm: connect attempts \(stormAttempts) for \(n) devices; per second \(probe.attemptsPerSecond) (peak \(probe.attemptsPerSecond.max() ?? 0)/s); CONNACKs per second \(probe.connacksPerSecond)")
        print(String(format: "storm: reconnect time (loss -> CONNACK) p10 %.0f ms  p50 %.0f ms  p90 %.0f ms  p99 %.0f ms  max %.0f ms  (n=%d, backoff ceiling %.1f s, max attempt %d)",
                     Self.ms(recovery.percentile(10)), Self.ms(recovery.percentile(50)), Self.ms(recovery.percentile(90)),
                     Self.ms(recovery.percentile(99)), Self.ms(recovery.max), Int(recovery.count), ceiling, Int(probe.maxAttempt)))
        print(String(format: "storm: TCP connect -> CONNACK over the whole run p50 %.1f ms  p99 %.1f ms  max %.1f ms; errors during the storm %@; listen overflows (host-wide) %@",
                     Self.ms(m.connectLatency.percentile(50)), Self.ms(m.connectLatency.percentile(99)), Self.ms(m.connectLatency.max),
                     stormErrors.joined(separator: " "), overflows.map(String.init) ?? "n/a"))

        // All back, within the bound.
        #expect(allBack != nil, "\(engine.connectedCount)/\(n) back; errors \(m.errors) \(engine.lastErrorDetail)")
        #expect((allBack ?? .infinity) < Self.allBackBound)
        #expect(m.connacks - connacksBefore >= n)
        #expect(recovery.count - recoveriesBefore >= UInt64(n))
        // No thundering herd: the window holds (and is below the broker's backlog), so no SYN is
        // dropped and retried after 1 s, and nothing times out.
        #expect(probe.peakBound <= window)
        #expect(probe.peakObserved <= window)
        // A herd shows as whole windows of connects waiting for the 1 s SYN retransmission; one
        // connect that slow is a busy machine (the parallel suite), not a herd: at most 0.1 % may be.
        #expect(m.connectLatency.percentile(99.9) < 1_000_000,
                "p99.9 connect \(Self.ms(m.connectLatency.percentile(99.9))) ms (max \(Self.ms(m.connectLatency.max)) ms): SYNs retransmitted?")
        #expect(m.errors[.timeout, default: 0] == errorsBefore[.timeout, default: 0])
        // Full jitter spreads the reconnects over [0, ceiling] (the window then queues the
        // excess): the median is well above 0, p10..p90 spans a good part of the ceiling, and
        // the slowest device is back within the ceiling plus the time to drain the queue.
        #expect(Self.ms(recovery.percentile(50)) >= 0.2 * ceiling * 1000)
        #expect(Self.ms(recovery.percentile(90)) - Self.ms(recovery.percentile(10)) >= 0.3 * ceiling * 1000)
        #expect(Self.ms(recovery.max) <= (ceiling + 10) * 1000)
        // Each device reconnected about once (not a retry loop).
        #expect(stormAttempts < n + n / 10)
    }
}

/// Carries a value that is not `Sendable` (an engine) between the test's task and the threads
/// that drive it, one at a time: the test awaits each `offPool` before touching it again.
final class Unchecked<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
