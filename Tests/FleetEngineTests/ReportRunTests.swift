import Foundation
import Testing
@testable import FleetEngine
import TestSupport

/// The report outputs of real runs against a private mosquitto.
@Suite("fleetsim report outputs of real runs")
struct ReportRunTests {
    @Test("a storm run records its phases, samples every --sample-interval and streams one interval line per sample")
    func stormPhasesIntervalsAndCSV() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let dir = try TempDirectory(prefix: "fleet-report-run")
        let lines = dir.file("intervals.jsonl"), json = dir.file("r.json"), html = dir.file("r.html"), csv = dir.file("csv")
        let run = try await fleetsim(["storm", "--broker", broker.url, "--devices", "80", "--duration", "20", "--storm-after", "0.6", "--quiet",
                                      "--qos", "1", "--heartbeat", "0.3", "--backoff-base", "0.3", "--backoff-max", "1", "--sample-interval", "100ms",
                                      "--interval-json", lines, "--report", json, "--html", html, "--csv", csv, "--threshold", "recovery.p99<20s"],
                                     version: "fleetsim test-version")
        let code = run.code, out = run.out.map { $0 + "\n" }.joined()
        #expect(code == 0, "\(out)")
        let r = try FleetReport.decode(Data(contentsOf: URL(fileURLWithPath: json)))
        #expect(r.stoppedBy == "storm recovered")
        #expect(r.sampleIntervalSeconds == 0.1)
        // Sub-second samples: about one per 100 ms (the loop wakes at least every 50 ms).
        #expect(Double(r.samples.count) >= r.elapsedSeconds / 0.1 * 0.7, "\(r.samples.count) samples in \(r.elapsedSeconds) s")
        #expect(zip(r.samples.dropFirst(), r.samples).allSatisfy { $0.t > $1.t })
        #expect(r.samples.contains { $0.connectP99Ms != nil } && r.samples.contains { $0.recoveryP99Ms != nil })
        // Phases: connect ramp, hold, storm; each with the latency that belongs to it.
        let phases = try #require(r.phases)
        #expect(phases.map(\.name) == ["connect", "escrow hold", "storm"])
        #expect(phases[0].start == 0 && phases[0].count == 80 && phases[0].latencyName == "connect" && phases[0].latency?.count == 80)
        #expect(phases[1].latencyName == "puback" && phases[2].latencyName == "recovery" && phases[2].count == 80)
        #expect(abs(phases[0].end - (r.timeToAllConnected ?? -1)) < 0.01 && phases[1].end == phases[2].start)
        #expect(r.run?.version == "fleetsim test-version" && r.run?.commandLine.hasPrefix("fleetsim storm --broker mqtt://127.0.0.1:") == true)
        #expect(r.run?.tls == false && r.run?.stoppedBy == "storm recovered" && r.run?.cpus ?? 0 >= 1)
        // --interval-json: one parseable line per sample, in order, written as the run went.
        let jsonl = try String(contentsOfFile: lines, encoding: .utf8).split(separator: "\n")
        #expect(jsonl.count == r.samples.count)
        let parsed = try jsonl.map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        #expect(parsed.map { $0["t"] as? Double } == r.samples.map(\.t))
        #expect(parsed.allSatisfy { ($0["timestamp"] as? String)?.hasSuffix("Z") == true && $0["connected"] is Int })
        let seen = Set(parsed.compactMap { $0["phase"] as? String })
        #expect(seen.isSubset(of: ["connect", "escrow hold", "storm"]) && seen.contains("storm"), "\(seen)")
        // CSV rows match the report.
        let samples = try String(contentsOfFile: csv + "/samples.csv", encoding: .utf8).split(separator: "\n")
        #expect(samples.count == 1 + r.samples.count)
        #expect(try String(contentsOfFile: csv + "/phases.csv", encoding: .utf8).split(separator: "\n").count == 4)
        #expect(FileManager.default.fileExists(atPath: csv + "/latency-recovery.csv"))
        let page = try String(contentsOfFile: html, encoding: .utf8)
        #expect(page.contains("PASS") && page.contains("<td>storm</td>") && !page.contains("<script"))
        #expect(out.contains("report written: \(csv)"))
    }

    @Test("--interval-json - keeps stdout for the lines: the summary goes to stderr")
    func intervalJSONOnStdout() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let run = try await fleetsim(["connect", "--broker", broker.url, "--devices", "5", "--duration", "0.6", "--quiet", "--interval-json", "-"])
        let code = run.code, out = run.out.joined(), err = run.err.map { $0 + "\n" }.joined()
        #expect(code == 0, "\(err)")
        #expect(out.isEmpty, "the closure stdout gets nothing; the lines went to the process's stdout")
        #expect(err.contains("fleetsim connect summary"), "\(err)")
    }
}
