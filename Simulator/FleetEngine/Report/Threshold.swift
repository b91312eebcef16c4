import Foundation
import EscrowCore

/// `--threshold 'connect.p99<2s'`: a pass/fail rule on a run's report, for CI pipelines.
///
/// Grammar: `METRIC OP VALUE[UNIT]` with OP one of `<` `<=` `>` `>=` `==` `!=`, UNIT `us`, `ms`
/// or `s` for latencies (default ms) and none for counts. Metrics:
/// - latencies (`NAME.p50|p90|p99|p999|max|mean`): `connect`, `puback`, `recovery`, `fanout`
///   (with `--subscribe`), and for the
///   transfer scenario `approval_applied`, `approve_sent_applied`, `push_ack` (and with its
///   lifecycle steps `resell_applied`, `return_applied`, `retire_event`, `retire_cutoff`);
/// - counts: `connected` (at the end), `peak_connected`, `errors` (all failed connects), `drops`
///   (connections lost), `rejected_connacks`.
/// A run whose thresholds fail exits 99 after writing its reports, distinct from run errors (1).
public struct Threshold: Sendable, Equatable, Codable {
    public enum Op: String, Sendable, Codable, CaseIterable { case lt = "<", le = "<=", gt = ">", ge = ">=", eq = "==", ne = "!=" }
    public var expression: String
    public var metric: String
    public var op: Op
    /// In the metric's unit: milliseconds for latencies, a count otherwise.
    public var value: Double

    public static let latencies = ["connect", "puback", "recovery", "fanout", "approval_applied", "approve_sent_applied", "push_ack",
                                   "resell_applied", "return_applied", "retire_event", "retire_cutoff"]
    public static let statistics = ["p50", "p90", "p99", "p999", "max", "mean"]
    public static let counts = ["connected", "peak_connected", "errors", "drops", "rejected_connacks"]
    public static var metrics: [String] { latencies.flatMap { l in statistics.map { "\(l).\($0)" } } + counts }
    public static let exitCode: Int32 = 99

    public static func parse(_ text: String) throws(FleetError) -> Threshold {
        let s = text.replacingOccurrences(of: " ", with: "")
        // Longest operators first, so "<=" is not read as "<".
        guard let op = [Op.le, .ge, .eq, .ne, .lt, .gt].first(where: { s.contains($0.rawValue) }),
              let range = s.range(of: op.rawValue) else {
            throw .usage("--threshold '\(text.prefix(80))' has no comparison: write METRIC<VALUE, e.g. 'connect.p99<2s' or 'errors==0'")
        }
        let metric = String(s[..<range.lowerBound]), rhs = String(s[range.upperBound...])
        guard metrics.contains(metric) else {
            throw .usage("--threshold: unknown metric '\(metric.prefix(60))'" + Suggestions.phrase(metric, in: metrics) + " Known: \(latencies.joined(separator: ", ")) with .p50/.p90/.p99/.p999/.max/.mean, and \(counts.joined(separator: ", "))")
        }
        let isLatency = metric.contains(".")
        var number = rhs, scale = 1.0
        if isLatency {
            for (unit, factor) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0)] where rhs.hasSuffix(unit) {
                number = String(rhs.dropLast(unit.count)); scale = factor; break
            }
        }
        guard let v = Double(number), v.isFinite else {
            throw .usage("--threshold '\(text.prefix(80))': '\(rhs.prefix(40))' is not a \(isLatency ? "duration like 250ms or 2s" : "number")")
        }
        return Threshold(expression: text, metric: metric, op: op, value: v * scale)
    }

    /// The metric's value in `report`, or nil when the run did not measure it (a transfer metric
    /// of a connect run, a latency with no sample).
    public func actual(in r: FleetReport) -> Double? {
        if !metric.contains(".") {
            switch metric {
            case "connected": return Double(r.finalConnected)
            case "peak_connected": return Double(r.peakConnected)
            case "errors": return Double(r.errors.values.reduce(0, +))
            case "drops": return Double(r.counters["disconnects"] ?? 0)
            default: return Double((r.errors[ErrorCause.refused.rawValue] ?? 0) + (r.errors[ErrorCause.auth.rawValue] ?? 0))
            }
        }
        let parts = metric.split(separator: ".").map(String.init)
        let h = r.latency(named: parts[0])
        guard let h, h.count > 0 else { return nil }
        switch parts[1] {
        case "p50": return h.p50
        case "p90": return h.p90
        case "p99": return h.p99
        case "p999": return h.p999
        case "max": return h.max
        default: return h.mean
        }
    }

    public func holds(for actual: Double) -> Bool {
        switch op {
        case .lt: return actual < value
        case .le: return actual <= value
        case .gt: return actual > value
        case .ge: return actual >= value
        case .eq: return actual == value
        case .ne: return actual != value
        }
    }

    /// What the run showed: the value, and whether the rule held (a metric not measured fails).
    public struct Result: Sendable, Equatable, Codable {
        public var threshold: Threshold
        public var actual: Double?
        public var passed: Bool
        /// `123.45 ms`, `19000` or `not measured`.
        public var measured: String {
            actual.map { threshold.metric.contains(".") ? String(format: "%.2f ms", $0) : String(Int($0)) } ?? "not measured"
        }
        public var line: String {
            let shown = measured
            return "threshold \(threshold.expression.padding(toLength: max(28, threshold.expression.count), withPad: " ", startingAt: 0)) \(shown.padding(toLength: 14, withPad: " ", startingAt: 0)) \(passed ? "pass" : "FAIL")"
        }
    }

    public func evaluate(_ r: FleetReport) -> Result {
        let a = actual(in: r)
        return Result(threshold: self, actual: a, passed: a.map(holds) ?? false)
    }
}
