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
}

/// Everything one run measured; written by `--report` and merged across `--workers`.
public struct FleetReport: Codable, Sendable {
    public var tool = "fleetsim"
    public var scenario: Scenario
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
    public var samples: [Sample]
    public var resources: [ResourceSample]
    public var baselineRSSKB: Int
    public var peakRSSKB: Int
    /// (peak RSS - RSS before devices) / peak connected.
    public var rssPerDeviceKB: Double?
    public var workers: Int
    public var problems: [String]
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

    /// Combines workers' reports: sums counts and series, merges histograms exactly, takes the
    /// slowest worker's times.
    public static func merge(_ parts: [FleetReport]) -> FleetReport? {
        guard var r = parts.first else { return nil }
        for p in parts.dropFirst() {
            r.elapsedSeconds = max(r.elapsedSeconds, p.elapsedSeconds)
            r.targetDevices += p.targetDevices
            r.peakConnected += p.peakConnected
            r.finalConnected += p.finalConnected
            r.timeToAllConnected = optionalMax(r.timeToAllConnected, p.timeToAllConnected, bothRequired: true)
            r.stormRecoverySeconds = optionalMax(r.stormRecoverySeconds, p.stormRecoverySeconds, bothRequired: true)
            r.counters.merge(p.counters, uniquingKeysWith: +)
            r.errors.merge(p.errors, uniquingKeysWith: +)
            var c = r.connectLatencyMs.histogram; c.merge(p.connectLatencyMs.histogram); r.connectLatencyMs = HistogramSummary(c)
            var a = r.pubackLatencyMs.histogram; a.merge(p.pubackLatencyMs.histogram); r.pubackLatencyMs = HistogramSummary(a)
            var v = r.recoveryMs.histogram; v.merge(p.recoveryMs.histogram); r.recoveryMs = HistogramSummary(v)
            r.samples = zipSum(r.samples, p.samples) { x, y in
                Sample(t: x.t, connected: x.connected + y.connected, connectsPerSec: x.connectsPerSec + y.connectsPerSec,
                       msgsOutPerSec: x.msgsOutPerSec + y.msgsOutPerSec, msgsInPerSec: x.msgsInPerSec + y.msgsInPerSec, errors: x.errors + y.errors)
            }
            r.resources = zipSum(r.resources, p.resources) { x, y in
                ResourceSample(t: x.t, rssKB: x.rssKB + y.rssKB, fds: x.fds + y.fds, connected: x.connected + y.connected)
            }
            r.baselineRSSKB += p.baselineRSSKB
            r.peakRSSKB += p.peakRSSKB
            r.problems += p.problems
        }
        r.workers = parts.count
        r.rssPerDeviceKB = r.peakConnected > 0 ? Double(r.peakRSSKB - r.baselineRSSKB) / Double(r.peakConnected) : nil
        return r
    }

    private static func optionalMax(_ a: Double?, _ b: Double?, bothRequired: Bool) -> Double? {
        guard let a, let b else { return bothRequired ? nil : (a ?? b) }
        return max(a, b)
    }

    private static func zipSum<T>(_ a: [T], _ b: [T], _ f: (T, T) -> T) -> [T] {
        let n = max(a.count, b.count)
        return (0..<n).map { i in
            if i < a.count && i < b.count { return f(a[i], b[i]) }
            return i < a.count ? a[i] : b[i]
        }
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
        for p in problems { lines.append("! " + p) }
        return lines.joined(separator: "\n")
    }
}
