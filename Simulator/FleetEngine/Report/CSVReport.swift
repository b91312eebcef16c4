import Foundation

/// `--csv DIR`: one CSV file per series of a report, each with a header line.
///
/// - `samples.csv`: the time series (`t_s`, connected, rates, cumulative errors, interval p50/p99;
///   an empty cell when the interval measured nothing);
/// - `resources.csv`: RSS and open descriptors over time;
/// - `phases.csv`: the phase table;
/// - `latency-NAME.csv` per measured latency (NAME as in `--threshold`): each non-empty bucket's
///   upper bound in ms, its count and the cumulative fraction up to it.
public enum CSVReport {
    public static func files(_ r: FleetReport) -> [(name: String, text: String)] {
        func num(_ v: Double?) -> String { v.map { $0 == $0.rounded() && abs($0) < 1e15 ? String(Int($0)) : String(format: "%.3f", $0) } ?? "" }
        var out: [(String, String)] = []
        var rows = ["t_s,connected,connects_per_s,msgs_out_per_s,msgs_in_per_s,errors_total,connect_p50_ms,connect_p99_ms,puback_p50_ms,puback_p99_ms,recovery_p50_ms,recovery_p99_ms,fanout_p50_ms,fanout_p99_ms"]
        for s in r.samples {
            var cells = [num(s.t), String(s.connected), num(s.connectsPerSec), num(s.msgsOutPerSec), num(s.msgsInPerSec), String(s.errors)]
            for kind in LatencyKind.allCases { let v = s.interval(kind); cells += [num(v?.p50), num(v?.p99)] }
            rows.append(cells.joined(separator: ","))
        }
        out.append(("samples.csv", rows.joined(separator: "\n") + "\n"))
        rows = ["t_s,rss_kb,fds,connected"] + r.resources.map { "\(num($0.t)),\($0.rssKB),\($0.fds),\($0.connected)" }
        out.append(("resources.csv", rows.joined(separator: "\n") + "\n"))
        rows = ["phase,start_s,end_s,count,rate_per_s,errors,latency,p50_ms,p90_ms,p99_ms,p999_ms,max_ms"]
        for p in r.phases ?? [] {
            let h = p.latency.flatMap { $0.count > 0 ? $0 : nil }
            rows.append([quote(p.name), num(p.start), num(p.end), String(p.count), num(p.ratePerSec), String(p.errors), p.latencyName ?? "",
                         num(h?.p50), num(h?.p90), num(h?.p99), num(h?.p999), num(h?.max)].joined(separator: ","))
        }
        out.append(("phases.csv", rows.joined(separator: "\n") + "\n"))
        for l in r.latencies where l.summary.count > 0 {
            rows = ["upper_bound_ms,count,cumulative_fraction"]
            for b in cumulative(l.summary) { rows.append("\(num(b.upperMs)),\(b.count),\(String(format: "%.6f", b.fraction))") }
            out.append(("latency-\(l.name).csv", rows.joined(separator: "\n") + "\n"))
        }
        return out
    }

    /// Non-empty buckets with the cumulative fraction up to each (the CDF the charts draw).
    public static func cumulative(_ s: HistogramSummary) -> [(upperMs: Double, count: UInt64, fraction: Double)] {
        let total = Double(max(1, s.count))
        var seen: UInt64 = 0
        return s.histogram.nonEmptyBuckets.map { b in
            seen += b.count
            return (Double(b.upper) / 1000, b.count, Double(seen) / total)
        }
    }

    public static func write(_ r: FleetReport, to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (name, text) in files(r) {
            try Data(text.utf8).write(to: URL(fileURLWithPath: directory).appendingPathComponent(name))
        }
    }

    static func quote(_ s: String) -> String {
        s.contains(where: { ",\"\n".contains($0) }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
    }
}
