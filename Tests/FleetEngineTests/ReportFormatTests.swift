import Foundation
import Testing
@testable import FleetEngine
import TestSupport

/// A synthetic report (no broker): `n` samples every `interval` s from `start`, histograms of
/// `devices` connect latencies spread over 1...`devices` ms, one connect and one hold phase.
func syntheticReport(scenario: Scenario = .connect, start: Date = Date(timeIntervalSince1970: 1_750_000_000.25), devices: Int = 100,
                     samples n: Int = 12, interval: Double = 0.25, host: String = "host-a") -> FleetReport {
    var connect = Histogram(), recovery = Histogram()
    for i in 1...devices { connect.record(UInt64(i) * 1000); recovery.record(UInt64(i) * 3000) }
    let samples = (1...n).map { i in
        var s = Sample(t: Double(i) * interval, connected: min(devices, i * devices / max(1, n / 2)), connectsPerSec: 40,
                       msgsOutPerSec: 10, msgsInPerSec: 5, errors: i / 4)
        if i <= n / 2 { s.setInterval(.connect, (Double(i), Double(i) * 2)) }
        return s
    }
    let hold = n / 2
    let phases = [
        Phase(name: "connect", start: 0, end: Double(hold) * interval, count: devices, errors: 1, latencyName: "connect", latency: HistogramSummary(connect)),
        Phase(name: "escrow hold", start: Double(hold) * interval, end: Double(n) * interval, count: 50, errors: 0),
    ]
    var r = FleetReport(
        scenario: scenario, startedAt: start, elapsedSeconds: Double(n) * interval, stoppedBy: "duration",
        settings: ["broker": "mqtt://127.0.0.1:1883", "devices": "\(devices)"], targetDevices: devices, peakConnected: devices,
        finalConnected: devices, timeToAllConnected: Double(hold) * interval, stormRecoverySeconds: nil,
        counters: ["connacks": devices, "published": 50], errors: ["timeout": 3],
        connectLatencyMs: HistogramSummary(connect), pubackLatencyMs: HistogramSummary(Histogram()), recoveryMs: HistogramSummary(recovery),
        samples: samples, resources: [ResourceSample(t: 0, rssKB: 10_000, fds: 10, connected: 0),
                                      ResourceSample(t: Double(n) * interval, rssKB: 12_000, fds: 10 + devices, connected: devices)],
        baselineRSSKB: 10_000, peakRSSKB: 12_000, rssPerDeviceKB: 20, workers: 1, problems: [],
        sampleIntervalSeconds: interval, phases: phases)
    r.run = RunMetadata(version: "fleetsim 0.4.0 (commit test; EscrowFleet; wire schema 1)", commandLine: "fleetsim connect --devices \(devices)",
                        host: host, kernel: "Linux 6.1.0", cpus: 2, broker: "mqtt://127.0.0.1:1883", tls: false,
                        startedAt: RunMetadata.timestamp(start), durationSeconds: Double(n) * interval, stoppedBy: "duration")
    return r
}

@Suite("fleetsim report formats (no broker)")
struct ReportFormatTests {
    @Test("JSON round trip keeps the run metadata, phases, sample interval and interval percentiles")
    func jsonRoundTrip() throws {
        let r = syntheticReport()
        let back = try FleetReport.decode(r.json())
        #expect(back.run == r.run)
        #expect(back.phases == r.phases)
        #expect(back.sampleIntervalSeconds == 0.25)
        #expect(back.samples == r.samples)
        #expect(back.samples[0].connectP99Ms == 2 && back.samples.last?.connectP99Ms == nil)
        #expect(back.connectLatencyMs == r.connectLatencyMs)
        #expect(back.preciseStart.timeIntervalSince1970 == 1_750_000_000.25, "run.startedAt keeps the milliseconds")
        #expect(r.run?.startedAt == "2025-06-15T15:06:40.250Z")
    }

    @Test("a report written before the new fields still decodes")
    func oldReportDecodes() throws {
        var obj = try #require(try JSONSerialization.jsonObject(with: syntheticReport().json()) as? [String: Any])
        for k in ["run", "phases", "sampleIntervalSeconds", "mergedRuns"] { obj.removeValue(forKey: k) }
        obj["samples"] = (obj["samples"] as? [[String: Any]])?.map { s in s.filter { !$0.key.hasSuffix("Ms") } }
        let old = try JSONSerialization.data(withJSONObject: obj)
        #expect(!String(decoding: old, as: UTF8.self).contains("connectP50Ms"))
        let r = try FleetReport.decode(old)
        #expect(r.run == nil && r.phases == nil && r.sampleIntervalSeconds == nil)
        #expect(r.samples.count == 12 && r.samples.allSatisfy { $0.interval(.connect) == nil })
        #expect(r.sampleInterval == 0.25, "the interval of an old report is the samples' spacing")
        #expect(r.preciseStart == Date(timeIntervalSince1970: 1_750_000_000), "old reports have whole seconds")
        #expect(!HTMLReport.render(r).isEmpty && CSVReport.files(r).count >= 3)
    }

    @Test("the HTML page: verdict, metadata, phase table, CDFs, definitions; no script, no URL; small")
    func htmlIsSelfContained() throws {
        var r = syntheticReport(devices: 19_000, samples: 120)
        r.thresholds = [try Threshold.parse("connect.p99<20s").evaluate(r), try Threshold.parse("errors==0").evaluate(r)]
        let html = HTMLReport.render(r)
        #expect(html.contains("FAIL · 1 of 2"), "one threshold fails: errors are 3")
        #expect(html.contains("<h2>Thresholds</h2>") && html.contains("<code>errors==0</code>"))
        #expect(html.range(of: "<h2>Thresholds</h2>")!.lowerBound < html.range(of: "<h2>Run</h2>")!.lowerBound, "thresholds come first")
        for text in ["host-a", "fleetsim connect --devices 19000", "Linux 6.1.0", "2025-06-15T15:06:40.250Z", "mqtt://127.0.0.1:1883 (plain MQTT)"] {
            #expect(html.contains(text), "metadata: \(text)")
        }
        #expect(html.contains("<h2>Phases</h2>") && html.contains("<td>connect</td>") && html.contains("<td>escrow hold</td>"))
        #expect(html.contains(Phase.definitions["connect"]!.prefix(40)))
        #expect(html.contains("latency (ms, log scale)") && html.contains("cumulative %") && html.contains("p99.9"))
        #expect(html.contains("Latency per interval (log scale)"))
        #expect(html.contains("TCP connect() started to CONNACK"), "each latency carries its definition")
        #expect(html.components(separatedBy: "stroke-dasharray=\"4,3\"").count - 1 >= 2 * 5, "phase markers on every time chart")
        #expect(!html.lowercased().contains("<script"))
        #expect(!html.contains("http://") && !html.contains("https://"))
        #expect(html.utf8.count < 1_000_000, "\(html.utf8.count) bytes")
        // A long soak is downsampled.
        let long = syntheticReport(samples: 20_000)
        #expect(HTMLReport.downsample(long.samples).count <= HTMLReport.maxPoints)
        #expect(HTMLReport.render(long).utf8.count < 1_000_000)
        #expect(HTMLReport.render(syntheticReport()).contains("no thresholds"))
        // Zero latencies (devices faster than the approval reply) sit on the lowest decade.
        var zeros = syntheticReport()
        var z = Histogram(); z.record(0, count: 5); z.record(1500)
        zeros.recoveryMs = HistogramSummary(z)
        #expect(HTMLReport.render(zeros).utf8.count < 200_000)
        #expect(HTMLReport.decades([0, 0.001, 1.5]) == (0.001, 10))
    }

    @Test("--csv: one file per series with a header; a row per sample, phase and non-empty bucket")
    func csvFiles() throws {
        let r = syntheticReport()
        let dir = try TempDirectory(prefix: "fleet-csv")
        let out = dir.file("csv")
        try CSVReport.write(r, to: out)
        let names = try FileManager.default.contentsOfDirectory(atPath: out).sorted()
        #expect(names == ["latency-connect.csv", "latency-recovery.csv", "phases.csv", "resources.csv", "samples.csv"])
        func lines(_ n: String) throws -> [String] {
            try String(contentsOfFile: out + "/" + n, encoding: .utf8).split(separator: "\n").map(String.init)
        }
        let samples = try lines("samples.csv")
        #expect(samples[0] == "t_s,connected,connects_per_s,msgs_out_per_s,msgs_in_per_s,errors_total,connect_p50_ms,connect_p99_ms,puback_p50_ms,puback_p99_ms,recovery_p50_ms,recovery_p99_ms,fanout_p50_ms,fanout_p99_ms")
        #expect(samples.count == 1 + r.samples.count)
        #expect(samples[1] == "0.250,16,40,10,5,0,1,2,,,,,,")
        #expect(try lines("resources.csv") == ["t_s,rss_kb,fds,connected", "0,10000,10,0", "3,12000,110,100"])
        let phases = try lines("phases.csv")
        #expect(phases[0] == "phase,start_s,end_s,count,rate_per_s,errors,latency,p50_ms,p90_ms,p99_ms,p999_ms,max_ms")
        #expect(phases.count == 3 && phases[1].hasPrefix("connect,0,1.500,100,66.667,1,connect,"))
        let cdf = try lines("latency-connect.csv")
        #expect(cdf[0] == "upper_bound_ms,count,cumulative_fraction")
        #expect(cdf.count == 1 + r.connectLatencyMs.buckets.count)
        #expect(cdf.last!.hasSuffix(",1.000000"))
        #expect(cdf.dropFirst().map { UInt64($0.split(separator: ",")[1])! }.reduce(0, +) == 100)
    }

    @Test("an interval line is one JSON object with the sample, its wall-clock time and the phase")
    func intervalLine() throws {
        var s = Sample(t: 1.25, connected: 7, connectsPerSec: 28, msgsOutPerSec: 3, msgsInPerSec: 1, errors: 2)
        s.setInterval(.connect, (4.5, 9))
        let line = IntervalJSON.line(s, start: Date(timeIntervalSince1970: 1_750_000_000), phase: "connect")
        #expect(!line.contains("\n"))
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(obj["timestamp"] as? String == "2025-06-15T15:06:41.250Z")
        #expect(obj["phase"] as? String == "connect" && obj["t"] as? Double == 1.25 && obj["connected"] as? Int == 7)
        #expect(obj["connectP99Ms"] as? Double == 9 && obj["pubackP99Ms"] == nil)
    }

    @Test("metadata: the command line is shell-quoted, the host and kernel are this machine's")
    func metadata() {
        #expect(RunMetadata.commandLine(["fleetsim", "connect", "--threshold", "connect.p99<2s", "--prefix", "a b"])
            == "fleetsim connect --threshold 'connect.p99<2s' --prefix 'a b'")
        let m = RunMetadata.current(version: "v", arguments: ["soak"], broker: "mqtts://127.0.0.1:8883", tls: true,
                                    startedAt: Date(), durationSeconds: 1, stoppedBy: "duration")
        #expect(!m.host.isEmpty && m.host != "unknown" && m.kernel.hasPrefix("Linux ") && m.cpus >= 1)
        #expect(m.commandLine == "fleetsim soak" && m.tls)
    }
}
