import MQTTWire
import Foundation
import EscrowCore

/// Renders a report as one self-contained HTML page a load tester reads at a glance: the verdict
/// and thresholds first, then the run metadata, the phase table, the series over time with phase
/// markers, and a log-scaled CDF per latency, each with what exactly it measures.
///
/// Inline SVG and CSS only: no script, no external asset, no URL. Series longer than
/// `maxPoints` are downsampled (the maximum of each group), so a long soak stays small.
public enum HTMLReport {
    static let maxPoints = 1200

    public static func render(_ r: FleetReport) -> String {
        var b = ""
        let results = r.thresholds ?? []
        let verdict: String
        if results.isEmpty {
            verdict = "<span class=\"badge none\">no thresholds</span>"
        } else {
            let failed = results.filter { !$0.passed }.count
            verdict = failed == 0 ? "<span class=\"badge pass\">PASS</span>" : "<span class=\"badge fail\">FAIL · \(failed) of \(results.count)</span>"
        }
        b += "<h1>fleetsim \(esc(r.scenario.rawValue)) \(verdict)</h1>\n"
        b += "<p class=\"lead\">\(r.targetDevices) devices · peak \(r.peakConnected) connected, \(r.finalConnected) at the end · \(fmt(r.elapsedSeconds)) s · stopped by \(esc(r.stoppedBy))"
        b += r.timeToAllConnected.map { " · all connected after \(String(format: "%.2f", $0)) s" } ?? " · never all connected"
        b += "</p>\n"
        if !results.isEmpty {
            b += "<h2>Thresholds</h2>\n<table><tr><th>rule</th><th>measured</th><th>result</th></tr>"
                + results.map { t in
                    "<tr><td><code>\(esc(t.threshold.expression))</code></td><td>\(esc(t.measured))</td><td class=\"\(t.passed ? "ok" : "bad")\">\(t.passed ? "pass" : "FAIL")</td></tr>"
                }.joined() + "</table>\n"
            b += def("A rule holds when the measured value satisfies it; a metric the run did not measure fails. fleetsim exits 99 when one fails.")
        }
        if !r.problems.isEmpty {
            b += "<h2>Problems</h2>\n<ul>" + r.problems.map { "<li>\(esc($0))</li>" }.joined() + "</ul>\n"
        }
        b += runSection(r)
        b += phaseSection(r)
        b += timeSection(r)
        b += distributionSection(r)
        b += "<h2>Summary</h2>\n<pre>\(esc(r.summaryTable))</pre>\n"
        return """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>fleetsim \(esc(r.scenario.rawValue)) report</title>
        <style>
        body{font-family:sans-serif;margin:2em auto;max-width:980px;color:#222}
        h1 .badge{font-size:60%;vertical-align:middle;padding:.2em .6em;border-radius:4px;color:#fff}
        .pass{background:#1f7a3f}.fail{background:#b3261e}.none{background:#777}
        .lead{font-size:110%} .ok{color:#1f7a3f;font-weight:bold} .bad{color:#b3261e;font-weight:bold}
        table{border-collapse:collapse;margin:.5em 0;font-size:13px} td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
        td:first-child,th:first-child{text-align:left} th{background:#f3f3f3}
        .def{color:#555;font-size:12px;margin:.2em 0 1.2em 0;max-width:900px}
        pre{background:#f6f6f6;padding:1em;font-size:12px;overflow-x:auto}
        svg{background:#fff;border:1px solid #ddd;display:block} svg text{font-size:11px;font-family:sans-serif}
        </style></head>
        <body>
        \(b)
        </body></html>
        """
    }

    // MARK: Sections

    static func runSection(_ r: FleetReport) -> String {
        var rows: [(String, String)] = []
        if let m = r.run {
            rows = [("fleetsim", m.version), ("command line", m.commandLine), ("host", m.host), ("kernel", m.kernel), ("CPUs", "\(m.cpus)"),
                    ("broker", m.broker + (m.tls ? " (mutual TLS)" : " (plain MQTT)")), ("started (UTC)", m.startedAt),
                    ("duration", "\(fmt(m.durationSeconds)) s"), ("stopped by", m.stoppedBy)]
        } else {
            rows = [("started (UTC)", RunMetadata.timestamp(r.startedAt)), ("broker", r.settings["broker"] ?? "?"),
                    ("duration", "\(fmt(r.elapsedSeconds)) s"), ("stopped by", r.stoppedBy)]
        }
        rows.append(("sample interval", "\(fmt(r.sampleInterval * 1000)) ms"))
        rows.append(("processes", r.workers > 1 ? "\(r.workers) workers" : "1"))
        var s = "<h2>Run</h2>\n<table>" + rows.map { "<tr><th>\(esc($0.0))</th><td style=\"text-align:left\"><code>\(esc($0.1))</code></td></tr>" }.joined() + "</table>\n"
        let settings = r.settings.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        s += def("Settings: " + esc(settings))
        if let parts = r.mergedRuns, !parts.isEmpty {
            s += "<h3>Merged reports</h3>\n<table><tr><th>host</th><th>started (UTC)</th><th>duration s</th><th>stopped by</th><th>command line</th></tr>"
                + parts.map { "<tr><td>\(esc($0.host))</td><td>\(esc($0.startedAt))</td><td>\(fmt($0.durationSeconds))</td><td>\(esc($0.stoppedBy))</td><td style=\"text-align:left\"><code>\(esc($0.commandLine))</code></td></tr>" }.joined()
                + "</table>\n"
            s += def("Series and phases are aligned by each report's wall-clock start; t = 0 is the earliest. Counts are summed and histograms merged exactly; interval percentiles over time are the slowest report's.")
        }
        return s
    }

    static func phaseSection(_ r: FleetReport) -> String {
        guard let phases = r.phases, !phases.isEmpty else { return "" }
        var s = "<h2>Phases</h2>\n<table><tr><th>phase</th><th>start–end s</th><th>count</th><th>rate/s</th><th>errors</th><th>latency</th><th>p50 ms</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>"
        for p in phases {
            let h = p.latency.flatMap { $0.count > 0 ? $0 : nil }
            let cells = h.map { [$0.p50, $0.p90, $0.p99, $0.p999, $0.max].map { "<td>\(fmt($0))</td>" }.joined() } ?? String(repeating: "<td>-</td>", count: 5)
            s += "<tr><td>\(esc(p.name))</td><td>\(String(format: "%.2f–%.2f", p.start, p.end))</td><td>\(p.count)</td><td>\(fmt(p.ratePerSec))</td>"
                + "<td class=\"\(p.errors > 0 ? "bad" : "")\">\(p.errors)</td><td>\(esc(p.latencyName ?? "-"))</td>\(cells)</tr>"
        }
        s += "</table>\n<dl class=\"def\">"
        for name in phases.map(\.name) where Phase.definitions[name] != nil {
            s += "<dt><b>\(esc(name))</b></dt><dd>\(esc(Phase.definitions[name]!))</dd>"
        }
        s += "<dt><b>columns</b></dt><dd>count: the measurements of the phase's latency (or messages published when it has none); rate: count per second of the phase; errors: failed connects and lost connections during the phase.</dd></dl>\n"
        return s
    }

    static func timeSection(_ r: FleetReport) -> String {
        let samples = downsample(r.samples)
        let phases = r.phases ?? []
        let xMax = max(r.samples.last?.t ?? 0, r.resources.last?.t ?? 0, phases.map(\.end).max() ?? 0, 1e-3)
        let t = samples.map(\.t)
        var s = "<h2>Over time</h2>\n"
        s += "<h3>Connected devices</h3>\n" + timeChart(x: t, xMax: xMax, series: [("connected", samples.map { Double($0.connected) }, "#1f77b4")], phases: phases, yLabel: "devices")
        s += def("Devices with an accepted CONNACK at the end of each \(fmt(r.sampleInterval * 1000)) ms interval. Vertical lines mark the phases.")
        s += "<h3>Rates</h3>\n" + timeChart(x: t, xMax: xMax, series: [
            ("connects/s", samples.map(\.connectsPerSec), "#2ca02c"),
            ("msgs out/s", samples.map(\.msgsOutPerSec), "#ff7f0e"),
            ("msgs in/s", samples.map(\.msgsInPerSec), "#9467bd"),
        ], phases: phases, yLabel: "per second")
        s += def("Per interval: CONNACKs accepted, PUBLISH packets sent by the devices (heartbeats, statuses, acks), PUBLISH packets received, each divided by the interval's length.")
        var latencySeries: [(String, [Double?], String)] = []
        let colors: [LatencyKind: (String, String)] = [.connect: ("#1f77b4", "#aec7e8"), .puback: ("#ff7f0e", "#ffbb78"), .recovery: ("#2ca02c", "#98df8a"), .fanout: ("#9467bd", "#c5b0d5")]
        for kind in LatencyKind.allCases where r.samples.contains(where: { $0.interval(kind) != nil }) {
            latencySeries.append(("\(kind.rawValue) p50", samples.map { $0.interval(kind)?.p50 }, colors[kind]!.1))
            latencySeries.append(("\(kind.rawValue) p99", samples.map { $0.interval(kind)?.p99 }, colors[kind]!.0))
        }
        if !latencySeries.isEmpty {
            s += "<h3>Latency per interval (log scale)</h3>\n" + timeChart(x: t, xMax: xMax, series: latencySeries, phases: phases, yLabel: "ms (log)", logY: true)
            s += def("p50 and p99 of the latencies recorded in each interval only (connect: TCP connect to CONNACK; puback: QoS 1 PUBLISH to PUBACK; recovery: connection lost to CONNACK again; fanout: load message published to received). A gap is an interval with no measurement.")
        }
        s += "<h3>Errors (cumulative)</h3>\n" + timeChart(x: t, xMax: xMax, series: [("errors", samples.map { Double($0.errors) }, "#d62728")], phases: phases, yLabel: "errors")
        let causes = r.errors.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        s += def("Failed connection attempts and lost connections since the start, all causes (refused, timeout, reset, auth, port_exhausted, unreachable, fd_exhausted, protocol, other). This run: \(causes.isEmpty ? "none" : esc(causes)).")
        if !r.resources.isEmpty {
            let rt = r.resources.map(\.t)
            s += "<h3>Memory and descriptors</h3>\n" + timeChart(x: rt, xMax: xMax, series: [("RSS MB", r.resources.map { Double($0.rssKB) / 1024 }, "#8c564b")], phases: phases, yLabel: "MB")
            s += timeChart(x: rt, xMax: xMax, series: [("open fds", r.resources.map { Double($0.fds) }, "#7f7f7f")], phases: phases, yLabel: "fds")
            s += def("The simulator's own resident set size (VmRSS) and open file descriptors (sockets and files), summed over workers. Baseline before the devices: \(r.baselineRSSKB / 1024) MB; peak \(r.peakRSSKB / 1024) MB\(r.rssPerDeviceKB.map { String(format: ", %.2f KB per connected device", $0) } ?? "").")
        }
        return s
    }

    static func distributionSection(_ r: FleetReport) -> String {
        let measured = r.latencies.filter { $0.summary.count > 0 }
        guard !measured.isEmpty else { return "" }
        var s = "<h2>Latency distributions</h2>\n"
        s += def("Cumulative distributions on a log-scaled latency axis: the height at x is the share of measurements at or below x. p50, p90, p99 and p99.9 are marked. Histograms are log-linear (32 buckets per power of two, about 3 % error); percentiles are bucket midpoints.")
        for l in measured {
            let h = l.summary
            s += "<h3>\(esc(l.title)) <small>(\(esc(l.name)))</small></h3>\n" + cdfChart(h)
            s += def(esc(l.definition) + " n=\(h.count), mean \(fmt(h.mean)) ms, p50 \(fmt(h.p50)), p90 \(fmt(h.p90)), p99 \(fmt(h.p99)), p99.9 \(fmt(h.p999)), max \(fmt(h.max)) ms.")
        }
        return s
    }

    // MARK: Charts

    static let w = 900.0, h = 270.0, left = 60.0, bottom = 30.0, top = 44.0, right = 20.0
    static var pw: Double { w - left - right }
    static var ph: Double { h - top - bottom }

    static func svgOpen() -> String { "<svg width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" role=\"img\">\n" }

    /// Lines over time (nil values leave gaps), linear or log y, with phase markers.
    static func timeChart(x: [Double], xMax: Double, series: [(String, [Double?], String)], phases: [Phase], yLabel: String, logY: Bool = false) -> String {
        guard !x.isEmpty else { return "<p>(no samples)</p>\n" }
        let values = series.flatMap { $0.1.compactMap { $0 } }
        var svg = svgOpen()
        let yOf: (Double) -> Double
        if logY {
            let (lo, hi) = decades(values.filter { $0 > 0 })
            yOf = { v in top + ph - (log10(max(v, lo)) - log10(lo)) / (log10(hi) - log10(lo)) * ph }
            svg += frame()
            for d in powersOfTen(lo, hi) {
                let y = yOf(d)
                svg += "<line x1=\"\(left)\" y1=\"\(r1(y))\" x2=\"\(left + pw)\" y2=\"\(r1(y))\" stroke=\"#eee\"/>\n"
                svg += "<text x=\"\(left - 5)\" y=\"\(r1(y + 4))\" text-anchor=\"end\">\(fmt(d))</text>\n"
            }
        } else {
            let yMax = niceCeiling(max(values.max() ?? 1, 1))
            yOf = { v in top + ph - v / yMax * ph }
            svg += frame()
            for i in 0...4 {
                let f = Double(i) / 4, y = top + ph - f * ph
                svg += "<line x1=\"\(left)\" y1=\"\(r1(y))\" x2=\"\(left + pw)\" y2=\"\(r1(y))\" stroke=\"#eee\"/>\n"
                svg += "<text x=\"\(left - 5)\" y=\"\(r1(y + 4))\" text-anchor=\"end\">\(fmt(yMax * f))</text>\n"
            }
        }
        let xOf = { (t: Double) in left + t / xMax * pw }
        svg += xTicks(xMax: xMax, xOf: xOf)
        svg += phaseMarkers(phases, xOf: xOf)
        for (k, (name, ys, color)) in series.enumerated() {
            var run: [String] = []
            func flush() {
                if run.count == 1 { svg += "<circle cx=\"\(run[0].split(separator: ",")[0])\" cy=\"\(run[0].split(separator: ",")[1])\" r=\"1.5\" fill=\"\(color)\"/>\n" }
                if run.count > 1 { svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\" points=\"\(run.joined(separator: " "))\"/>\n" }
                run = []
            }
            for (t, v) in zip(x, ys) {
                guard let v else { flush(); continue }
                run.append("\(r1(xOf(t))),\(r1(yOf(v)))")
            }
            flush()
            svg += "<text x=\"\(Int(left + 10 + Double(k) * 100))\" y=\"14\" fill=\"\(color)\">■ \(esc(name))</text>\n"
        }
        svg += axisLabels(x: "seconds since start", y: yLabel)
        return svg + "</svg>\n"
    }

    /// The CDF of one histogram: cumulative percent against latency on a log axis, percentiles marked.
    static func cdfChart(_ summary: HistogramSummary) -> String {
        let points = CSVReport.cumulative(summary)
        guard let first = points.first else { return "" }
        let lowest = max(Double(summary.minMicros) / 1000, 0.001)
        let (lo, hi) = decades([lowest, first.upperMs, summary.max, points.last!.upperMs])
        let xOf = { (v: Double) in left + (log10(max(v, lo)) - log10(lo)) / (log10(hi) - log10(lo)) * pw }
        let yOf = { (f: Double) in top + ph - f * ph }
        var svg = svgOpen() + frame()
        for pct in [0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0] {
            svg += "<line x1=\"\(left)\" y1=\"\(r1(yOf(pct)))\" x2=\"\(left + pw)\" y2=\"\(r1(yOf(pct)))\" stroke=\"#eee\"/>\n"
            if pct != 0.99 { svg += "<text x=\"\(left - 5)\" y=\"\(r1(yOf(pct) + 4))\" text-anchor=\"end\">\(fmt(pct * 100)) %</text>\n" }
        }
        for d in powersOfTen(lo, hi) {
            let x = xOf(d)
            svg += "<line x1=\"\(r1(x))\" y1=\"\(top)\" x2=\"\(r1(x))\" y2=\"\(top + ph)\" stroke=\"#eee\"/>\n"
            svg += "<text x=\"\(r1(x))\" y=\"\(top + ph + 15)\" text-anchor=\"middle\">\(fmtMs(d))</text>\n"
        }
        // A step function: flat until each bucket's upper bound, then up to its cumulative share.
        var pts = ["\(r1(xOf(lowest))),\(r1(yOf(0)))"]
        var prev = 0.0
        for p in points {
            pts.append("\(r1(xOf(p.upperMs))),\(r1(yOf(prev)))")
            pts.append("\(r1(xOf(p.upperMs))),\(r1(yOf(p.fraction)))")
            prev = p.fraction
        }
        svg += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"\(pts.joined(separator: " "))\"/>\n"
        for (k, (label, v)) in [("p50", summary.p50), ("p90", summary.p90), ("p99", summary.p99), ("p99.9", summary.p999)].enumerated() {
            let xv = xOf(v), x = r1(xv)
            svg += "<line x1=\"\(x)\" y1=\"\(top)\" x2=\"\(x)\" y2=\"\(top + ph)\" stroke=\"#d62728\" stroke-dasharray=\"3,3\"/>\n"
            svg += "<text x=\"\(r1(xv + 3))\" y=\"\(r1(top + 12 + Double(k) * 12))\" fill=\"#d62728\">\(label) \(fmt(v)) ms</text>\n"
        }
        svg += "<text x=\"\(left + 10)\" y=\"14\">n=\(summary.count) · max \(fmt(summary.max)) ms</text>\n"
        svg += axisLabels(x: "latency (ms, log scale)", y: "cumulative %")
        return svg + "</svg>\n"
    }

    /// The decades (powers of ten, at least one apart) around positive `values`, from 1 µs
    /// (0.001 ms) up; zeros (a device faster than the approval reply) sit on the lowest decade.
    static func decades(_ values: [Double]) -> (lo: Double, hi: Double) {
        let positive = values.filter { $0.isFinite && $0 >= 0.001 }
        let lo = pow(10, floor(log10(positive.min() ?? 0.001)))
        let hi = pow(10, ceil(log10(max(positive.max() ?? 1, lo * 10))))
        return (lo, max(hi, lo * 10))
    }

    static func powersOfTen(_ lo: Double, _ hi: Double) -> [Double] {
        let a = Int(log10(lo).rounded()), b = Int(log10(hi).rounded())
        return (a...max(a, b)).map { pow(10, Double($0)) }
    }

    static func frame() -> String {
        "<line x1=\"\(left)\" y1=\"\(top + ph)\" x2=\"\(left + pw)\" y2=\"\(top + ph)\" stroke=\"#333\"/>\n"
            + "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(top + ph)\" stroke=\"#333\"/>\n"
    }

    static func xTicks(xMax: Double, xOf: (Double) -> Double) -> String {
        let step = niceStep(xMax / 8)
        var s = "", t = 0.0
        while t <= xMax + 1e-9 {
            s += "<text x=\"\(r1(xOf(t)))\" y=\"\(top + ph + 15)\" text-anchor=\"middle\">\(fmt(t))</text>\n"
            t += step
        }
        return s
    }

    /// A dashed line and a label at each phase's start, and a light band over every other phase.
    static func phaseMarkers(_ phases: [Phase], xOf: (Double) -> Double) -> String {
        var s = ""
        for (i, p) in phases.enumerated() {
            let a = xOf(p.start), b = xOf(p.end), x0 = r1(a)
            if i % 2 == 1 && b > a { s += "<rect x=\"\(x0)\" y=\"\(top)\" width=\"\(r1(b - a))\" height=\"\(ph)\" fill=\"#000\" fill-opacity=\"0.04\"/>\n" }
            s += "<line x1=\"\(x0)\" y1=\"\(top - 12)\" x2=\"\(x0)\" y2=\"\(top + ph)\" stroke=\"#555\" stroke-dasharray=\"4,3\"/>\n"
            s += "<text x=\"\(r1(a + 3))\" y=\"\(r1(top - 14 + Double(i % 2) * 10))\" fill=\"#555\"><title>\(esc(p.name)) \(String(format: "%.2f–%.2f s", p.start, p.end))</title>\(esc(p.name))</text>\n"
        }
        return s
    }

    static func axisLabels(x: String, y: String) -> String {
        "<text x=\"\(left + pw / 2)\" y=\"\(h - 2)\" text-anchor=\"middle\">\(esc(x))</text>\n"
            + "<text x=\"12\" y=\"\(top + ph / 2)\" transform=\"rotate(-90 12 \(top + ph / 2))\" text-anchor=\"middle\">\(esc(y))</text>\n"
    }

    /// At most `maxPoints` samples: each group of consecutive samples becomes its last time with
    /// the maximum of every value (so a spike survives).
    static func downsample(_ samples: [Sample]) -> [Sample] {
        guard samples.count > maxPoints else { return samples }
        let k = (samples.count + maxPoints - 1) / maxPoints
        return stride(from: 0, to: samples.count, by: k).map { i in
            let group = samples[i..<min(samples.count, i + k)]
            var s = group.last!
            s.connected = group.map(\.connected).max()!
            s.connectsPerSec = group.map(\.connectsPerSec).max()!
            s.msgsOutPerSec = group.map(\.msgsOutPerSec).max()!
            s.msgsInPerSec = group.map(\.msgsInPerSec).max()!
            for kind in LatencyKind.allCases {
                let v = group.compactMap { $0.interval(kind) }
                s.setInterval(kind, v.isEmpty ? nil : (v.map(\.p50).max()!, v.map(\.p99).max()!))
            }
            return s
        }
    }

    static func def(_ html: String) -> String { "<p class=\"def\">\(html)</p>\n" }

    static func esc(_ s: String) -> String { HTMLText.escape(s) }

    static func r1(_ v: Double) -> String { String(format: "%.1f", v) }

    static func fmt(_ v: Double) -> String {
        if v >= 10_000 { return String(format: "%.0fk", v / 1000) }
        if v == v.rounded() { return String(Int(v)) }
        if v < 0.1 { return String(format: "%.3f", v) }
        return String(format: "%.2f", v)
    }

    static func fmtMs(_ ms: Double) -> String { ms >= 1000 ? fmt(ms / 1000) + " s" : fmt(ms) + " ms" }

    static func niceStep(_ raw: Double) -> Double {
        guard raw > 0 else { return 1 }
        let p = pow(10, floor(log10(raw)))
        for m in [1.0, 2, 2.5, 5, 10] where raw <= m * p { return m * p }
        return 10 * p
    }

    static func niceCeiling(_ v: Double) -> Double {
        let step = niceStep(v / 4)
        return (v / step).rounded(.up) * step
    }
}
