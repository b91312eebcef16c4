import MQTTWire
import Foundation

/// Percentiles of one histogram (milliseconds) plus its exact sparse buckets for merging.
public struct HistogramSummary: Codable, Sendable, Equatable {
    public var count: UInt64
    public var p50: Double, p90: Double, p99: Double, p999: Double, max: Double, mean: Double
    /// Raw histogram (microseconds): [[bucketIndex, count]], min, sum.
    public var buckets: [[UInt64]]
    public var minMicros: UInt64
    public var sumMicros: Double

    public init(_ h: Histogram) {
        count = h.count
        func ms(_ v: UInt64) -> Double { (Double(v) / 10).rounded() / 100 }
        p50 = ms(h.percentile(50)); p90 = ms(h.percentile(90)); p99 = ms(h.percentile(99))
        p999 = ms(h.percentile(99.9)); max = ms(h.max); mean = (h.mean / 10).rounded() / 100
        buckets = h.sparse; minMicros = h.count == 0 ? 0 : h.min; sumMicros = h.sum
    }

    public var histogram: Histogram {
        Histogram(sparse: buckets, min: minMicros, max: UInt64(max * 1000), sum: sumMicros)
    }

    /// The exact merge of two summaries (through their buckets).
    public func merged(_ other: HistogramSummary) -> HistogramSummary {
        var h = histogram
        h.merge(other.histogram)
        return HistogramSummary(h)
    }
}

/// Everything one run measured; written by `--report`, merged across `--workers` and by `fleetsim merge`.
///
/// Fields added after the first release are optional, so reports written before them still decode.
public struct FleetReport: Codable, Sendable {
    public var tool = "fleetsim"
    public var scenario: Scenario
    /// When the run started (JSON: ISO 8601, whole seconds; `run.startedAt` has milliseconds).
    public var startedAt: Date
    public var elapsedSeconds: Double
    public var stoppedBy: String
    public var settings: [String: String]
    public var targetDevices: Int
    public var peakConnected: Int
    public var finalConnected: Int
    /// Seconds from start until every device had connected once (nil if never).
    public var timeToAllConnected: Double?
    /// Storm: seconds from the drop until every device was connected again.
    public var stormRecoverySeconds: Double?
    public var counters: [String: Int]
    public var errors: [String: Int]
    public var connectLatencyMs: HistogramSummary
    public var pubackLatencyMs: HistogramSummary
    public var recoveryMs: HistogramSummary
    /// `--subscribe`: load message published to received by a device (nil when nothing subscribed).
    public var fanoutMs: HistogramSummary? = nil
    public var samples: [Sample]
    public var resources: [ResourceSample]
    public var baselineRSSKB: Int
    public var peakRSSKB: Int
    /// (peak RSS - RSS before devices) / peak connected.
    public var rssPerDeviceKB: Double?
    public var workers: Int
    public var problems: [String]
    /// Seconds between two samples (`--sample-interval`; nil in old reports, which sampled every second).
    public var sampleIntervalSeconds: Double? = nil
    /// The run's phases in order, each a marker on the time charts and a row of the phase table.
    public var phases: [Phase]? = nil
    /// Who ran what, where, when.
    public var run: RunMetadata? = nil
    /// `fleetsim merge`: the metadata of every merged report.
    public var mergedRuns: [RunMetadata]? = nil
    /// The `transfer` scenario's story and latencies (nil for the other scenarios).
    public var transfer: TransferReport?
    /// `--threshold` results, when any were given.
    public var thresholds: [Threshold.Result]?

    public func json() -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        e.dateEncodingStrategy = .iso8601
        return (try? e.encode(self)) ?? Data()
    }

    public static func decode(_ data: Data) throws -> FleetReport {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return try d.decode(FleetReport.self, from: data)
    }

    /// The start with sub-second precision when the report has it (`run.startedAt`).
    public var preciseStart: Date { run.flatMap { RunMetadata.parseTimestamp($0.startedAt) } ?? startedAt }

    /// The sample spacing: as recorded, else the median gap of the samples, else 1 s.
    public var sampleInterval: Double {
        if let s = sampleIntervalSeconds, s > 0 { return s }
        let gaps = zip(samples.dropFirst(), samples).map { $0.t - $1.t }.filter { $0 > 0 }.sorted()
        return gaps.isEmpty ? 1 : gaps[gaps.count / 2]
    }

    /// One latency the report measured, under its threshold name, with what exactly it measures.
    public struct Latency: Sendable {
        public var name: String
        public var title: String
        public var definition: String
        public var summary: HistogramSummary
    }

    /// Every latency of the report (empty ones too), the one list thresholds, HTML and CSV use.
    public var latencies: [Latency] {
        var l = [
            Latency(name: "connect", title: "Connect latency", definition: "TCP connect() started to CONNACK accepted, per connection attempt that succeeded (first connects and reconnects). Includes the TLS handshake with mqtts://.", summary: connectLatencyMs),
            Latency(name: "puback", title: "PUBACK latency", definition: "QoS 1 PUBLISH written to its PUBACK read (heartbeats with --qos 1). QoS 0 messages are not measured.", summary: pubackLatencyMs),
            Latency(name: "recovery", title: "Reconnect time", definition: "Connection lost (drop, storm, churn, broker reset) to CONNACK accepted again, including the backoff wait.", summary: recoveryMs),
        ]
        if let f = fanoutMs {
            l.append(Latency(name: "fanout", title: "Fan-out delivery latency", definition: "A load message published (its send time is in the payload: --fanout-publisher or another device's --publish-rate) to a device that subscribed with --subscribe receiving it, on one host's monotonic clock.", summary: f))
        }
        if let t = transfer {
            l += [
                Latency(name: "approval_applied", title: "Approval reply to configuration applied", definition: "The transfer.approve batch's reply reaching the customer's operator to the device persisting its normal-mode configuration (0 when the device was faster than the reply).", summary: t.approvalToAppliedMs),
                Latency(name: "approve_sent_applied", title: "Approve sent to configuration applied", definition: "The transfer.approve command sent to the device persisting its normal-mode configuration.", summary: t.approveSentToAppliedMs),
                Latency(name: "push_ack", title: "Configuration push to platform ack", definition: "The device receiving its configuration to the customer's operator receiving config.applied for it.", summary: t.pushToAckMs),
            ]
            for stage in t.lifecycle ?? [] {
                switch stage.name {
                case "resell": l.append(Latency(name: stage.latencyName, title: "Resale: approve sent to configuration applied", definition: "The second customer's transfer.approve (activate) sent to the device persisting that customer's normal-mode configuration.", summary: stage.latencyMs))
                case "return": l.append(Latency(name: stage.latencyName, title: "Return: approve sent to escrow configuration applied", definition: "The sender's transfer.approve (hold) sent to the device persisting the escrow-mode configuration of the account it returned to.", summary: stage.latencyMs))
                default:
                    l.append(Latency(name: stage.latencyName, title: "Retire sent to device.retired event", definition: "The device.retire command sent to the retiring account's operator receiving device.retired for the device.", summary: stage.latencyMs))
                    if let c = stage.cutOffMs {
                        l.append(Latency(name: "retire_cutoff", title: "Retire sent to the broker closing the device", definition: "The device.retire command sent to the broker closing the retired device's connection (the revocation reload; escrowd replies once it is in force); the device then stays off.", summary: c))
                    }
                }
            }
        }
        return l
    }

    public func latency(named name: String) -> HistogramSummary? { latencies.first { $0.name == name }?.summary }

    /// Combines reports of workers or hosts: sums counts, merges histograms exactly, aligns the time
    /// series and phases by wall-clock start (the earliest start is t = 0), and takes the latest end.
    /// Levels (connected, cumulative errors, RSS, fds) are summed per time bucket; interval
    /// percentiles cannot be merged exactly from p50/p99 and are the slowest part's.
    public static func merge(_ parts: [FleetReport]) -> FleetReport? {
        guard var r = parts.first else { return nil }
        let origin = parts.map(\.preciseStart).min()!
        let offsets = parts.map { $0.preciseStart.timeIntervalSince(origin) }
        let interval = parts.map(\.sampleInterval).min() ?? 1
        r.startedAt = origin
        r.run?.startedAt = RunMetadata.timestamp(origin)
        r.elapsedSeconds = zip(parts, offsets).map { (($0.elapsedSeconds + $1) * 100).rounded() / 100 }.max() ?? r.elapsedSeconds
        for p in parts.dropFirst() {
            r.targetDevices += p.targetDevices
            r.peakConnected += p.peakConnected
            r.finalConnected += p.finalConnected
            r.timeToAllConnected = optionalMax(r.timeToAllConnected, p.timeToAllConnected, bothRequired: true)
            r.stormRecoverySeconds = optionalMax(r.stormRecoverySeconds, p.stormRecoverySeconds, bothRequired: true)
            r.counters.merge(p.counters, uniquingKeysWith: +)
            r.errors.merge(p.errors, uniquingKeysWith: +)
            r.connectLatencyMs = r.connectLatencyMs.merged(p.connectLatencyMs)
            r.pubackLatencyMs = r.pubackLatencyMs.merged(p.pubackLatencyMs)
            r.recoveryMs = r.recoveryMs.merged(p.recoveryMs)
            if let f = p.fanoutMs { r.fanoutMs = r.fanoutMs.map { $0.merged(f) } ?? f }
            r.baselineRSSKB += p.baselineRSSKB
            r.peakRSSKB += p.peakRSSKB
            r.problems += p.problems
        }
        r.samples = SeriesMerge.samples(parts.map(\.samples), offsets: offsets, interval: interval)
        r.resources = SeriesMerge.resources(parts.map(\.resources), offsets: offsets, interval: 1)
        r.phases = SeriesMerge.phases(parts.map { $0.phases ?? [] }, offsets: offsets)
        if r.phases?.isEmpty == true { r.phases = nil }
        r.sampleIntervalSeconds = interval
        r.workers = parts.map(\.workers).reduce(0, +)
        r.thresholds = nil
        r.rssPerDeviceKB = r.peakConnected > 0 ? (Double(r.peakRSSKB - r.baselineRSSKB) / Double(r.peakConnected) * 100).rounded() / 100 : nil
        return r
    }

    private static func optionalMax(_ a: Double?, _ b: Double?, bothRequired: Bool) -> Double? {
        guard let a, let b else { return bothRequired ? nil : (a ?? b) }
        return max(a, b)
    }

    /// The end-of-run table.
    public var summaryTable: String {
        func row(_ k: String, _ v: String) -> String { k.padding(toLength: 26, withPad: " ", startingAt: 0) + v }
        func h(_ s: HistogramSummary) -> String {
            s.count == 0 ? "-" : "p50 \(s.p50) ms  p90 \(s.p90)  p99 \(s.p99)  p99.9 \(s.p999)  max \(s.max)  (n=\(s.count))"
        }
        var lines = ["fleetsim \(scenario.rawValue) summary (\(workers > 1 ? "\(workers) workers" : "1 process"), stopped by \(stoppedBy))",
                     String(repeating: "-", count: 72)]
        lines.append(row("devices (target)", "\(targetDevices)"))
        lines.append(row("connected peak / final", "\(peakConnected) / \(finalConnected)"))
        lines.append(row("all connected after", timeToAllConnected.map { String(format: "%.2f s", $0) } ?? "never"))
        if scenario == .storm {
            lines.append(row("storm: all back after", stormRecoverySeconds.map { String(format: "%.2f s", $0) } ?? "not within the run"))
        }
        lines.append(row("elapsed", String(format: "%.1f s", elapsedSeconds)))
        lines.append(row("connect latency", h(connectLatencyMs)))
        lines.append(row("puback latency", h(pubackLatencyMs)))
        lines.append(row("reconnect time", h(recoveryMs)))
        for k in ["connectAttempts", "connacks", "disconnects", "heartbeats", "published", "pubacks", "received", "configsApplied", "configsIgnored"] {
            lines.append(row(k, "\(counters[k] ?? 0)"))
        }
        let errs = errors.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        lines.append(row("errors", errs.isEmpty ? "none" : errs.joined(separator: " ")))
        lines.append(row("RSS peak (baseline)", "\(peakRSSKB / 1024) MB (\(baselineRSSKB / 1024) MB)"))
        if let per = rssPerDeviceKB { lines.append(row("RSS per connected device", String(format: "%.2f KB", per))) }
        if let transfer {
            lines.append(String(repeating: "-", count: 72))
            lines += transfer.summaryLines
        }
        if let phases, !phases.isEmpty {
            lines.append(String(repeating: "-", count: 72))
            lines += Self.phaseLines(phases)
        }
        for p in problems { lines.append("! " + p) }
        return lines.joined(separator: "\n")
    }

    /// The phase table as text: one row per phase with its latency's percentiles.
    static func phaseLines(_ phases: [Phase]) -> [String] {
        func col(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s.padding(toLength: n, withPad: " ", startingAt: 0) }
        var lines = [col("phase", 18) + col("start-end s", 14) + col("count", 8) + col("rate/s", 9) + col("errors", 7) + "p50 / p90 / p99 / p99.9 / max ms"]
        for p in phases {
            let span = String(format: "%.2f-%.2f", p.start, p.end)
            let lat = p.latency.map { $0.count == 0 ? "-" : "\($0.p50) / \($0.p90) / \($0.p99) / \($0.p999) / \($0.max) (\(p.latencyName ?? ""))" } ?? "-"
            lines.append(col(p.name, 18) + col(span, 14) + col("\(p.count)", 8) + col(String(format: "%.1f", p.ratePerSec), 9) + col("\(p.errors)", 7) + lat)
        }
        return lines
    }
}
