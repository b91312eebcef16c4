import Dispatch
import EscrowCore
import Foundation
import Glibc
import Synchronization

/// A stop request that may be set from any thread (a signal source, a test) and is polled by
/// the single-threaded run loop.
public final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    public func request() { flag.store(true, ordering: .relaxed) }
    public var isRequested: Bool { flag.load(ordering: .relaxed) }

    /// SIGINT/SIGTERM set this flag (through DispatchSource, so no work runs in a signal handler).
    /// Keep the returned sources alive for the life of the run.
    public func installSignalHandlers() -> [any DispatchSourceSignal] {
        // A broker that dies mid-write is a reconnect, not a reason for the whole fleet to die.
        signal(SIGPIPE, SIG_IGN)
        return [SIGINT, SIGTERM].map { sig in
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            src.setEventHandler { [self] in request() }
            src.resume()
            return src
        }
    }
}

/// Runs one scenario in this process: builds the fleet, drives the engine, samples metrics,
/// prints progress, and returns the report.
public final class FleetRunner {
    public let options: FleetOptions
    private let output: (String) -> Void
    private let progressToTTY: Bool
    /// `--interval-json`: receives every sample as it is taken.
    private let intervals: IntervalJSON?

    /// `output` receives progress and diagnostics (default: stderr).
    public init(options: FleetOptions, output: ((String) -> Void)? = nil, tty: Bool? = nil, intervals: IntervalJSON? = nil) {
        self.options = options
        self.output = output ?? { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
        progressToTTY = tty ?? (isatty(2) == 1)
        self.intervals = intervals
    }

    /// Seconds between resource samples: about 30 per run, between 1 s and 10 s.
    public static func resourceInterval(duration: Double) -> Double { min(10, max(1, (duration / 30).rounded())) }

    public static func deviceID(prefix: String, index: Int) -> DeviceID {
        let n = String(index)
        return DeviceID(prefix + String(repeating: "0", count: max(0, 6 - n.count)) + n)!
    }

    public func engineConfiguration(tls: TLSSettings? = nil) -> EngineConfiguration {
        var c = EngineConfiguration()
        c.tls = tls
        c.brokerHost = options.brokerHost
        c.brokerPort = options.brokerPort
        c.sourceAddresses = options.sourceAddresses
        c.mqttVersion = options.mqtt
        c.keepAlive = options.keepAlive
        c.connectRate = options.rate
        c.connectWindow = options.window
        c.backoffBase = options.backoffBase
        c.backoffMax = options.backoffMax
        // Load messages carry their send time: every engine (and worker) on the host reads one clock.
        if options.usesLoadMessages { c.clockOrigin = 0 }
        return c
    }

    /// The extra traffic of device `index` (nil when no scenario option asks for any).
    public func deviceLoad(id: DeviceID, index: Int) -> DeviceLoad? {
        let o = options
        guard o.publishRate > 0 || o.subscription != nil else { return nil }
        return DeviceLoad(publishInterval: o.publishRate > 0 ? 1 / o.publishRate : 0,
                          topic: DeviceLoad.resolve(o.topic, id: id.rawValue, index: index),
                          payloadBytes: o.payloadBytes ?? FleetOptions.defaultPayload, qos: o.qos,
                          subscription: o.subscription.map { DeviceLoad.resolve($0, id: id.rawValue, index: index) })
    }

    public func run(stop: StopFlag = StopFlag()) throws(FleetError) -> FleetReport {
        let o = options
        let limit = System.raiseFileLimit()
        if o.devices + 64 > limit {
            output("warning: \(o.devices) devices need about \(o.devices + 64) descriptors but the open-file limit is \(limit); use --workers or raise ulimit -n")
        }
        let baseline = ProcessStats.rssKB()
        let started = Date()
        var ids = (0..<o.devices).map { Self.deviceID(prefix: o.prefix, index: o.firstIndex + $0) }
        var tls: TLSSettings?
        var identities: [DeviceTLSIdentity] = []
        if let dir = o.bundles {
            let bundles = try DeviceBundles(directory: dir)
            guard o.firstIndex + o.devices <= bundles.deviceIDs.count else {
                throw .usage("--devices \(o.devices) exceeds the \(bundles.deviceIDs.count) bundles in \(dir)")
            }
            ids = Array(bundles.deviceIDs[o.firstIndex..<(o.firstIndex + o.devices)])
            identities = try bundles.identities(ids[...], keepParsed: o.tlsIdentities == .parsed)
            let ca: String
            if let p = o.tlsCA { ca = try DeviceBundles.read(p) } else { ca = try bundles.brokerCAPEM() }
            tls = try TLSSetup.settings(caPEM: ca, host: o.brokerHost, maxHandshakes: o.tlsHandshakes)
            if !o.quiet { output("loaded \(identities.count) device identities from \(dir); mutual TLS to \(o.brokerURL)") }
        }
        let behaviors = ids.enumerated().map { i, id in
            var b = AgentBehavior(id: id, heartbeatInterval: o.heartbeat, heartbeatJitter: o.heartbeatJitter, heartbeatQoS: o.qos)
            b.load = deviceLoad(id: id, index: o.firstIndex + i)
            return b
        }
        let engine: Engine<AgentBehavior>
        var publisher: Engine<FanoutPublisher>?
        do {
            engine = try Engine(configuration: engineConfiguration(tls: tls), behaviors: behaviors, identities: identities)
            if o.fanoutRate > 0, let topic = o.subscription {
                var c = engineConfiguration(tls: nil)
                c.sourceAddresses = []
                let p = FanoutPublisher(clientID: "fleetsim-fanout-\(getpid())-\(o.firstIndex)", topic: topic, rate: o.fanoutRate,
                                        payloadBytes: o.payloadBytes ?? FleetOptions.defaultPayload, qos: o.qos)
                publisher = try Engine(configuration: c, behaviors: [p])
            }
        } catch let e as FleetError { throw e } catch {
            throw .runtime("cannot start the engine: \(error)")
        }
        let m = engine.metrics
        publisher?.startAll()
        var released = 0
        /// Starts the devices the ramp profile has released by `t`; true when that opened a spike.
        func release(_ t: Double) -> Bool {
            let due = o.ramp.released(at: t, of: o.devices, releasedConnected: released > 0 && engine.connectedCount == released)
            guard due > released else { return false }
            let spike = released > 0 && o.ramp.spikeSize(of: o.devices) > 0
            while released < due { engine.start(released); released += 1 }
            return spike
        }
        // With a publisher its pacing needs short waits (its timers fire only between polls).
        let maxWait = publisher == nil ? min(0.05, o.sampleInterval / 2) : 0.005
        var peak = 0, peakRSS = baseline
        var allConnectedAt: Double?
        var stormAt: Double?, stormRecovered: Double?
        let resourceEvery = Self.resourceInterval(duration: o.duration)
        // Resources are sampled at t = 0 just before the loop, so the loop's first is one interval later.
        var nextSample = o.sampleInterval, nextSecond = 1.0, nextResource = resourceEvery, nextLine = 5.0
        var stoppedBy = "duration"
        var problems: [String] = []
        var warnedPorts = false
        var churnCarry = 0.0
        let t0 = engine.now
        m.sampleResources(t: 0, connected: 0)
        m.beginPhase("connect", at: 0, latency: .connect)
        _ = release(0)
        while true {
            engine.poll(maxWait: maxWait)
            publisher?.poll(maxWait: 0)
            let t = engine.now - t0
            if allConnectedAt == nil && release(t) { m.beginPhase("spike", at: t, latency: .connect) }
            peak = max(peak, engine.connectedCount)
            if allConnectedAt == nil && m.connacks >= o.devices && engine.connectedCount == o.devices {
                allConnectedAt = t
                if o.churn > 0 { m.beginPhase("churn", at: t, latency: .recovery) } else {
                    m.beginPhase("escrow hold", at: t, latency: o.subscription != nil ? .fanout : (o.qos == .atLeastOnce ? .puback : nil))
                }
            }
            if stop.isRequested { stoppedBy = "signal"; break }
            if t >= o.duration { break }
            if let fatal = fatalCondition(engine, t: t) { problems.append(fatal); stoppedBy = "error"; break }
            if !warnedPorts, let d = engine.lastErrorDetail[.portExhausted] {
                warnedPorts = true
                let msg = "ephemeral ports exhausted (\(d)); add source addresses with --source-count K or --source-addresses"
                output("warning: " + msg); problems.append(msg)
            }
            if o.scenario == .storm {
                if stormAt == nil, let all = allConnectedAt, t >= all + o.stormAfter {
                    stormAt = t
                    output("storm: dropping all \(engine.connectedCount) connections at t=\(String(format: "%.1f", t)) s")
                    m.beginPhase("storm", at: t, latency: .recovery)
                    engine.dropAll()
                } else if let s = stormAt, stormRecovered == nil, engine.connectedCount == o.devices {
                    stormRecovered = t - s
                    output(String(format: "storm: all %d back after %.2f s", o.devices, t - s))
                    stoppedBy = "storm recovered"
                    break
                }
            }
            if t >= nextSample {
                while nextSample <= t { nextSample += o.sampleInterval }
                // Sampled first: inside `intervals?.write(...)` the sample would be skipped without --interval-json.
                let sample = m.sample(t: t, connected: engine.connectedCount)
                intervals?.write(sample, start: started, phase: m.currentPhase)
            }
            if t >= nextSecond {
                nextSecond += 1
                // Churn is the hold phase's: it starts once the whole fleet has connected.
                if o.churn > 0 && allConnectedAt != nil { churnCarry += churn(engine, carry: churnCarry) }
                if !o.quiet { progress(engine, t: t, final: false, line: t >= nextLine) }
                if t >= nextLine { nextLine += 5 }
            }
            if t >= nextResource {
                nextResource += resourceEvery
                m.sampleResources(t: t, connected: engine.connectedCount)
                peakRSS = max(peakRSS, m.resources.last!.rssKB)
            }
        }
        let t = engine.now - t0
        let last = m.sample(t: t, connected: engine.connectedCount)
        intervals?.write(last, start: started, phase: m.currentPhase)
        m.endPhase(at: t)
        m.sampleResources(t: t, connected: engine.connectedCount)
        peakRSS = max(peakRSS, m.resources.last!.rssKB)
        let final = engine.connectedCount
        if !o.quiet { progress(engine, t: t, final: true, line: true) }
        engine.stopAll()
        var counters = Self.counters(m)
        if let p = publisher {
            counters["fanoutPublished"] = p.behavior(at: 0).published
            if p.metrics.connacks == 0 {
                problems.append("the fan-out publisher never connected to \(o.brokerURL): \(p.lastErrorDetail.values.first ?? "no CONNACK")")
            }
            p.stopAll()
        }
        for (cause, detail) in engine.lastErrorDetail.sorted(by: { $0.key.rawValue < $1.key.rawValue }) where !problems.contains(where: { $0.contains(detail) }) {
            problems.append("last \(cause.rawValue) error: \(detail)")
        }
        var report = FleetReport(
            scenario: o.scenario, startedAt: started, elapsedSeconds: (t * 100).rounded() / 100, stoppedBy: stoppedBy,
            settings: settings(), targetDevices: o.devices, peakConnected: peak, finalConnected: final,
            timeToAllConnected: allConnectedAt.map { ($0 * 1000).rounded() / 1000 },
            stormRecoverySeconds: stormRecovered.map { ($0 * 1000).rounded() / 1000 },
            counters: counters, errors: Dictionary(uniqueKeysWithValues: m.errors.map { ($0.key.rawValue, $0.value) }),
            connectLatencyMs: HistogramSummary(m.connectLatency), pubackLatencyMs: HistogramSummary(m.pubackLatency),
            recoveryMs: HistogramSummary(m.recoveryTime), samples: m.samples, resources: m.resources,
            baselineRSSKB: baseline, peakRSSKB: peakRSS,
            rssPerDeviceKB: peak > 0 ? (Double(peakRSS - baseline) / Double(peak) * 100).rounded() / 100 : nil,
            workers: 1, problems: problems, sampleIntervalSeconds: o.sampleInterval, phases: m.phases)
        if o.subscription != nil { report.fanoutMs = HistogramSummary(m.fanoutLatency) }
        return report
    }

    static func counters(_ m: Metrics) -> [String: Int] {
        [
            "connectAttempts": m.connectAttempts, "connacks": m.connacks, "disconnects": m.disconnects,
            "published": m.published, "publishedQoS1": m.publishedQoS1, "pubacks": m.pubacks, "received": m.received,
            "configsApplied": m.configsApplied, "configsIgnored": m.configsIgnored, "configsRejected": m.configsRejected,
            "droppedWhileOffline": m.droppedWhileOffline, "bytesOut": m.bytesOut, "bytesIn": m.bytesIn, "heartbeats": m.heartbeats,
        ]
    }

    func settings() -> [String: String] {
        let o = options
        return ["broker": o.brokerURL, "devices": "\(o.devices)", "prefix": o.prefix,
                "rate": "\(o.rate)", "window": "\(o.window)", "sources": o.sourceAddresses.joined(separator: ","),
                "keepalive": "\(o.keepAlive)", "heartbeat": "\(o.heartbeat)", "heartbeatJitter": "\(o.heartbeatJitter)",
                "qos": "\(o.qos.rawValue)", "mqtt": o.mqtt.label, "churn": "\(o.churn)", "duration": "\(o.duration)",
                "sampleInterval": "\(o.sampleInterval)", "ramp": o.ramp.label, "publishRate": "\(o.publishRate)",
                "topic": o.topic, "payload": "\(o.payloadBytes ?? FleetOptions.defaultPayload)", "subscribe": o.subscription ?? "",
                "fanoutPublisher": "\(o.fanoutRate)"]
    }

    /// A one-line reason to give up early: nothing ever connected and every attempt failed the same way.
    func fatalCondition(_ engine: Engine<AgentBehavior>, t: Double) -> String? {
        let m = engine.metrics
        guard m.connacks == 0, t > 1.5 else { return nil }
        let attempts = max(1, min(options.devices, 20))
        let broker = options.brokerURL
        if m.errors[.unreachable, default: 0] >= attempts {
            return "broker unreachable at \(broker): \(engine.lastErrorDetail[.unreachable] ?? "connection refused") (is mosquitto running there?)"
        }
        if m.errors[.auth, default: 0] >= attempts {
            return "all connections refused as not authorised by \(broker): \(engine.lastErrorDetail[.auth] ?? "") (check identities, CA and ACL)"
        }
        if m.errors[.refused, default: 0] >= attempts { return "all connections refused by \(broker): \(engine.lastErrorDetail[.refused] ?? "")" }
        if m.errors[.portExhausted, default: 0] >= attempts { return "local port range exhausted: add --source-count K" }
        if t > 3, m.totalErrors >= attempts, let (cause, n) = m.errors.max(by: { $0.value < $1.value }) {
            return "no device connected in \(Int(t)) s: \(n) attempts failed with \(cause.rawValue) (\(engine.lastErrorDetail[cause] ?? "")) on \(broker)"
        }
        return nil
    }

    /// Drops a random share of connected devices (percent per minute, applied each second).
    private func churn(_ engine: Engine<AgentBehavior>, carry: Double) -> Double {
        let want = Double(engine.connectedCount) * options.churn / 100 / 60 + carry
        var n = Int(want)
        let left = want - Double(n)
        var tries = 0
        while n > 0 && tries < engine.deviceCount * 2 {
            tries += 1
            let d = Int.random(in: 0..<engine.deviceCount)
            if engine.state(of: d) == .connected { engine.drop(d); n -= 1 }
        }
        return left - carry
    }

    private func progress(_ engine: Engine<AgentBehavior>, t: Double, final: Bool, line: Bool) {
        let m = engine.metrics
        let rate = m.samples.last?.connectsPerSec ?? 0
        let msgs = m.samples.last?.msgsOutPerSec ?? 0
        let text = String(format: "connected %d/%d  connects %.0f/s  msgs %.0f/s  errors %d  elapsed %.1fs",
                          engine.connectedCount, engine.deviceCount, rate, msgs, m.totalErrors, t)
        if progressToTTY {
            // Rewrite one line in place; the final update ends it.
            FileHandle.standardError.write(Data(("\r\u{1B}[2K" + text + (final ? "\n" : "")).utf8))
        } else if line || final {
            output(text)
        }
    }
}
