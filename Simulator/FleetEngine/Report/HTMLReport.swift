import Foundation

/// Renders a report as one self-contained HTML page: inline SVG charts, no external assets.
public enum HTMLReport {
    public static func render(_ r: FleetReport) -> String {
        let t = r.samples.map(\.t)
        var body = "<h1>fleetsim \(esc(r.scenario.rawValue))</h1>\n<pre>\(esc(r.summaryTable))</pre>\n"
        if let results = r.thresholds, !results.isEmpty {
            body += "<h2>Thresholds</h2>\n<table><tr><th>rule</th><th>measured</th><th>result</th></tr>"
                + results.map { t in
                    "<tr><td><code>\(esc(t.threshold.expression))</code></td><td>\(esc(t.measured))</td><td style=\"color:\(t.passed ? "#1f7a3f" : "#b3261e")\">\(t.passed ? "pass" : "FAIL")</td></tr>"
                }.joined() + "</table>\n"
        }
        body += "<h2>Connected devices</h2>\n" + lineChart(x: t, series: [("connected", r.samples.map { Double($0.connected) }, "#1f77b4")], yLabel: "devices")
        body += "<h2>Rates</h2>\n" + lineChart(x: t, series: [
            ("connects/s", r.samples.map(\.connectsPerSec), "#2ca02c"),
            ("msgs out/s", r.samples.map(\.msgsOutPerSec), "#ff7f0e"),
            ("msgs in/s", r.samples.map(\.msgsInPerSec), "#9467bd"),
        ], yLabel: "per second")
        body += "<h2>Errors (cumulative)</h2>\n" + lineChart(x: t, series: [("errors", r.samples.map { Double($0.errors) }, "#d62728")], yLabel: "errors")
        if !r.resources.isEmpty {
            body += "<h2>Memory</h2>\n" + lineChart(x: r.resources.map(\.t), series: [("RSS MB", r.resources.map { Double($0.rssKB) / 1024 }, "#8c564b")], yLabel: "MB")
            body += "<h2>Open file descriptors</h2>\n" + lineChart(x: r.resources.map(\.t), series: [("fds", r.resources.map { Double($0.fds) }, "#7f7f7f")], yLabel: "fds")
        }
        for (name, h) in [("Connect latency (TCP connect to CONNACK)", r.connectLatencyMs), ("PUBACK latency", r.pubackLatencyMs), ("Reconnect time", r.recoveryMs)] where h.count > 0 {
            body += "<h2>\(esc(name))</h2>\n" + histogramChart(h)
        }
        if let tr = r.transfer {
            for (name, h) in [("Approval reply to configuration applied", tr.approvalToAppliedMs), ("Configuration push to platform ack", tr.pushToAckMs)] where h.count > 0 {
                body += "<h2>\(esc(name))</h2>\n" + histogramChart(h)
            }
        }
        return """
        <!DOCTYPE html>
        <html><head><meta charset="utf-8"><title>fleetsim \(esc(r.scenario.rawValue)) report</title>
        <style>body{font-family:sans-serif;margin:2em;max-width:980px}pre{background:#f6f6f6;padding:1em;font-size:12px}
        svg{background:#fff;border:1px solid #ddd}text{font-size:11px;font-family:sans-serif}</style></head>
        <body>
        \(body)
        </body></html>
        """
    }

    static func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    static func fmt(_ v: Double) -> String {
        if v >= 10_000 { return String(format: "%.0fk", v / 1000) }
        if v == v.rounded() { return String(Int(v)) }
        return String(format: "%.2f", v)
    }

    static let w = 900.0, h = 260.0, left = 60.0, bottom = 30.0, top = 20.0, right = 20.0

    static func lineChart(x: [Double], series: [(String, [Double], String)], yLabel: String) -> String {
        guard !x.isEmpty else { return "<p>(no samples)</p>\n" }
        let xMax = max(x.max() ?? 1, 1e-9)
        let yMax = max(series.flatMap(\.1).max() ?? 1, 1)
        let pw = w - left - right, ph = h - top - bottom
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\">\n"
        svg += axes(xMax: xMax, yMax: yMax, xLabel: "seconds", yLabel: yLabel)
        for (k, (name, ys, color)) in series.enumerated() {
            let pts = zip(x, ys).map { String(format: "%.1f,%.1f", left + $0 / xMax * pw, top + ph - $1 / yMax * ph) }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\" points=\"\(pts)\"/>\n"
            svg += "<text x=\"\(Int(left + 10 + Double(k) * 130))\" y=\"\(Int(top - 5))\" fill=\"\(color)\">\(esc(name))</text>\n"
        }
        return svg + "</svg>\n"
    }

    static func axes(xMax: Double, yMax: Double, xLabel: String, yLabel: String) -> String {
        let pw = w - left - right, ph = h - top - bottom
        var s = "<line x1=\"\(left)\" y1=\"\(top + ph)\" x2=\"\(left + pw)\" y2=\"\(top + ph)\" stroke=\"#333\"/>\n"
        s += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(top + ph)\" stroke=\"#333\"/>\n"
        for i in 0...4 {
            let f = Double(i) / 4
            let y = top + ph - f * ph, x = left + f * pw
            s += "<line x1=\"\(left)\" y1=\"\(y)\" x2=\"\(left + pw)\" y2=\"\(y)\" stroke=\"#eee\"/>\n"
            s += "<text x=\"\(left - 5)\" y=\"\(y + 4)\" text-anchor=\"end\">\(fmt(yMax * f))</text>\n"
            s += "<text x=\"\(x)\" y=\"\(top + ph + 15)\" text-anchor=\"middle\">\(fmt(xMax * f))</text>\n"
        }
        s += "<text x=\"\(left + pw / 2)\" y=\"\(h - 2)\" text-anchor=\"middle\">\(esc(xLabel))</text>\n"
        s += "<text x=\"12\" y=\"\(top + ph / 2)\" transform=\"rotate(-90 12 \(top + ph / 2))\" text-anchor=\"middle\">\(esc(yLabel))</text>\n"
        return s
    }

    /// Bars per non-empty log-linear bucket (x is bucket order, labelled in ms), with percentile marks.
    static func histogramChart(_ summary: HistogramSummary) -> String {
        let hist = summary.histogram
        let buckets = hist.nonEmptyBuckets
        guard !buckets.isEmpty else { return "" }
        let pw = w - left - right, ph = h - top - bottom
        let maxCount = Double(buckets.map(\.count).max() ?? 1)
        let bw = pw / Double(buckets.count)
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\">\n"
        svg += axes(xMax: 1, yMax: maxCount, xLabel: "latency bucket (ms, log-linear)", yLabel: "count").components(separatedBy: "\n")
            .filter { !$0.contains("text-anchor=\"middle\">0") && !$0.contains("text-anchor=\"middle\">1<") && !$0.contains(">0.") }.joined(separator: "\n")
        for (i, b) in buckets.enumerated() {
            let bh = Double(b.count) / maxCount * ph
            let rect = String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#1f77b4\">",
                              left + Double(i) * bw, top + ph - bh, max(1, bw - 1), bh)
            svg += rect + "<title>\(fmt(Double(b.lower) / 1000)) ms: \(b.count)</title></rect>\n"
            if buckets.count <= 12 || i % max(1, buckets.count / 8) == 0 {
                svg += "<text x=\"\(left + Double(i) * bw + bw / 2)\" y=\"\(top + ph + 15)\" text-anchor=\"middle\">\(fmt(Double(b.lower) / 1000))</text>\n"
            }
        }
        svg += "<text x=\"\(left + pw - 5)\" y=\"\(top + 12)\" text-anchor=\"end\">p50 \(summary.p50) ms · p90 \(summary.p90) · p99 \(summary.p99) · p99.9 \(summary.p999) · max \(summary.max)</text>\n"
        return svg + "</svg>\n"
    }
}
