import MQTTWire
import Foundation

/// Why a device connection failed or ended; the engine counts each separately.
public enum ErrorCause: String, Codable, Sendable, CaseIterable {
    /// CONNACK with a refusal code other than an authorisation failure.
    case refused
    /// No TCP connect, CONNACK or PINGRESP in time.
    case timeout
    /// Connection reset or closed by the broker.
    case reset
    /// CONNACK "not authorised" / "bad user name or password".
    case auth
    /// EADDRNOTAVAIL: the ephemeral port range of a source address is used up.
    case portExhausted = "port_exhausted"
    /// ECONNREFUSED / ENETUNREACH: nothing listens at the broker address.
    case unreachable
    /// EMFILE/ENFILE: out of file descriptors.
    case fdExhausted = "fd_exhausted"
    /// The broker sent bytes that are not valid MQTT.
    case protocolError = "protocol"
    case other
}

/// One sample of the time series, every `--sample-interval` (default 250 ms).
///
/// The rates are counter deltas over the interval; `errors` is cumulative. The interval
/// percentiles (milliseconds) cover only the latencies recorded in that interval and are nil
/// when none were (they were added after the first reports, so old reports decode without them).
public struct Sample: Codable, Sendable, Equatable {
    public var t: Double
    public var connected: Int
    public var connectsPerSec: Double
    public var msgsOutPerSec: Double
    public var msgsInPerSec: Double
    public var errors: Int
    public var connectP50Ms: Double?
    public var connectP99Ms: Double?
    public var pubackP50Ms: Double?
    public var pubackP99Ms: Double?
    public var recoveryP50Ms: Double?
    public var recoveryP99Ms: Double?
    public var fanoutP50Ms: Double?
    public var fanoutP99Ms: Double?

    public init(t: Double, connected: Int, connectsPerSec: Double, msgsOutPerSec: Double, msgsInPerSec: Double, errors: Int) {
        self.t = t; self.connected = connected; self.connectsPerSec = connectsPerSec
        self.msgsOutPerSec = msgsOutPerSec; self.msgsInPerSec = msgsInPerSec; self.errors = errors
    }

    /// The interval percentiles (p50, p99) of one latency, nil when none was recorded.
    public func interval(_ kind: LatencyKind) -> (p50: Double, p99: Double)? {
        let pair: (Double?, Double?)
        switch kind {
        case .connect: pair = (connectP50Ms, connectP99Ms)
        case .puback: pair = (pubackP50Ms, pubackP99Ms)
        case .recovery: pair = (recoveryP50Ms, recoveryP99Ms)
        case .fanout: pair = (fanoutP50Ms, fanoutP99Ms)
        }
        guard let a = pair.0, let b = pair.1 else { return nil }
        return (a, b)
    }

    public mutating func setInterval(_ kind: LatencyKind, _ value: (p50: Double, p99: Double)?) {
        switch kind {
        case .connect: (connectP50Ms, connectP99Ms) = (value?.p50, value?.p99)
        case .puback: (pubackP50Ms, pubackP99Ms) = (value?.p50, value?.p99)
        case .recovery: (recoveryP50Ms, recoveryP99Ms) = (value?.p50, value?.p99)
        case .fanout: (fanoutP50Ms, fanoutP99Ms) = (value?.p50, value?.p99)
        }
    }
}

/// The latencies the engine measures itself (microseconds in `Metrics`, milliseconds in reports).
public enum LatencyKind: String, Codable, Sendable, CaseIterable {
    /// TCP connect start to CONNACK.
    case connect
    /// QoS 1 PUBLISH sent to its PUBACK.
    case puback
    /// Connection lost to CONNACK again.
    case recovery
    /// A load message's publish (send time in its payload) to a subscribed device receiving it.
    case fanout
}

/// One resource sample (every 10 s and at the end): resident memory and open descriptors.
public struct ResourceSample: Codable, Sendable, Equatable {
    public var t: Double
    public var rssKB: Int
    public var fds: Int
    public var connected: Int
}

/// Counters, histograms and time series of one engine. Owned by the engine's thread.
public final class Metrics {
    public var connectAttempts = 0
    public var connacks = 0
    public var disconnects = 0
    public var errors: [ErrorCause: Int] = [:]
    public var published = 0
    public var publishedQoS1 = 0
    public var pubacks = 0
    public var received = 0
    public var heartbeats = 0
    public var configsApplied = 0
    public var configsIgnored = 0
    public var configsRejected = 0
    public var droppedWhileOffline = 0
    public var bytesOut = 0
    public var bytesIn = 0

    /// TCP connect start to CONNACK, microseconds.
    public var connectLatency = Histogram()
    /// QoS 1 PUBLISH to PUBACK, microseconds.
    public var pubackLatency = Histogram()
    /// Connection lost to CONNACK again, microseconds.
    public var recoveryTime = Histogram()
    /// Load message published to received by a subscribed device, microseconds.
    public var fanoutLatency = Histogram()

    public var samples: [Sample] = []
    public var resources: [ResourceSample] = []
    /// Phases closed so far (`beginPhase` / `endPhase`), times as in the samples.
    public private(set) var phases: [Phase] = []

    /// Latencies recorded since the last sample (reset by `sample`), one per `LatencyKind`.
    private var interval = LatencyKind.allCases.map { _ in Histogram() }
    /// Latencies recorded since the current phase began, one per `LatencyKind`.
    private var inPhase = LatencyKind.allCases.map { _ in Histogram() }
    private var openPhase: (name: String, start: Double, latency: LatencyKind?, errors: Int, published: Int)?
    private var last = (connacks: 0, out: 0, inn: 0, t: 0.0)

    public init() {}

    public var totalErrors: Int { errors.values.reduce(0, +) }

    public func count(_ cause: ErrorCause) { errors[cause, default: 0] += 1 }

    /// Records one latency (microseconds) in the run's, the interval's and the phase's histogram.
    public func record(_ kind: LatencyKind, micros: UInt64) {
        switch kind {
        case .connect: connectLatency.record(micros)
        case .puback: pubackLatency.record(micros)
        case .recovery: recoveryTime.record(micros)
        case .fanout: fanoutLatency.record(micros)
        }
        let k = LatencyKind.allCases.firstIndex(of: kind)!
        interval[k].record(micros)
        inPhase[k].record(micros)
    }

    /// Appends a sample computed from counter deltas and the interval's latencies, starts the next
    /// interval, and returns the sample.
    @discardableResult
    public func sample(t: Double, connected: Int) -> Sample {
        let dt = Swift.max(t - last.t, 1e-3)
        var s = Sample(t: (t * 1000).rounded() / 1000, connected: connected,
                       connectsPerSec: Double(connacks - last.connacks) / dt,
                       msgsOutPerSec: Double(published - last.out) / dt,
                       msgsInPerSec: Double(received - last.inn) / dt,
                       errors: totalErrors)
        for (k, kind) in LatencyKind.allCases.enumerated() where interval[k].count > 0 {
            s.setInterval(kind, (Self.ms(interval[k].percentile(50)), Self.ms(interval[k].percentile(99))))
            interval[k].reset()
        }
        samples.append(s)
        last = (connacks, published, received, t)
        return s
    }

    /// The name of the open phase (nil before the first and after the last).
    public var currentPhase: String? { openPhase?.name }

    /// Closes the open phase (if any) and opens `name` at `t`. `latency` is the measurement that
    /// belongs to the phase (its count, rate and percentiles go to the phase table); nil counts
    /// messages published instead.
    public func beginPhase(_ name: String, at t: Double, latency: LatencyKind?) {
        endPhase(at: t)
        for k in inPhase.indices { inPhase[k].reset() }
        openPhase = (name, t, latency, totalErrors, published)
    }

    /// Closes the open phase at `t` (nothing when none is open).
    public func endPhase(at t: Double) {
        guard let p = openPhase else { return }
        openPhase = nil
        var h: HistogramSummary?
        let count: Int
        if let kind = p.latency {
            let hist = inPhase[LatencyKind.allCases.firstIndex(of: kind)!]
            h = HistogramSummary(hist)
            count = Int(hist.count)
        } else {
            count = published - p.published
        }
        phases.append(Phase(name: p.name, start: p.start, end: t, count: count, errors: totalErrors - p.errors,
                            latencyName: p.latency?.rawValue, latency: h))
    }

    static func ms(_ micros: UInt64) -> Double { (Double(micros) / 10).rounded() / 100 }

    public func sampleResources(t: Double, connected: Int) {
        resources.append(ResourceSample(t: (t * 10).rounded() / 10, rssKB: ProcessStats.rssKB(), fds: ProcessStats.openFDs(), connected: connected))
    }
}

/// Reads this process's resident set size and descriptor count from /proc.
public enum ProcessStats {
    public static func rssKB() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
        return 0
    }
    public static func openFDs() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
    }
}
