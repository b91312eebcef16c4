import Foundation
import Testing
@testable import FleetEngine
import TestSupport

@Suite("fleetsim merge")
struct MergeCommandTests {
    static let start = Date(timeIntervalSince1970: 1_750_000_000.25)

    /// Host A starts at `start`, host B half a second later (both sample every 250 ms).
    func twoHosts() -> (FleetReport, FleetReport) {
        (syntheticReport(start: Self.start, host: "host-a"), syntheticReport(start: Self.start.addingTimeInterval(0.5), host: "host-b"))
    }

    @Test("two hosts: counts summed, histograms merged exactly, series and phases aligned by wall-clock start")
    func mergeAlignsByTime() throws {
        let (a, b) = twoHosts()
        let m = try #require(FleetReport.merge([a, b]))
        #expect(m.targetDevices == 200 && m.peakConnected == 200 && m.counters["connacks"] == 200 && m.errors["timeout"] == 6)
        var exact = a.connectLatencyMs.histogram
        exact.merge(b.connectLatencyMs.histogram)
        #expect(m.connectLatencyMs == HistogramSummary(exact))
        #expect(m.connectLatencyMs.count == 200 && m.recoveryMs.count == 200)
        #expect(m.preciseStart == Self.start && m.elapsedSeconds == 3.5)
        func at(_ t: Double) -> Sample? { m.samples.first { abs($0.t - t) < 1e-9 } }
        #expect(m.samples.first?.t == 0.25 && m.samples.last?.t == 3.5 && m.samples.count == 14)
        #expect(at(0.25)?.connected == 16, "only A has started")
        #expect(at(0.75)?.connected == 50 + 16 && at(0.75)?.connectsPerSec == 80, "A's third sample and B's first share a bucket")
        #expect(at(3.5)?.connected == 100 && at(3.5)?.errors == 6, "A has ended: its connected no longer counts, its errors do")
        #expect(at(0.75)?.connectP99Ms == 6, "interval percentiles are the slowest host's")
        let phases = try #require(m.phases)
        #expect(phases.map(\.name) == ["connect", "escrow hold"])
        #expect(phases[0].start == 0 && phases[0].end == 2 && phases[0].count == 200 && phases[0].errors == 2)
        #expect(phases[0].latency == HistogramSummary(exact))
        #expect(phases[1].start == 1.5 && phases[1].end == 3.5)
        // Workers of one run start together: the same alignment, nothing shifted.
        let w = try #require(FleetReport.merge([a, syntheticReport(start: Self.start)]))
        #expect(w.samples.count == 12 && w.samples[0].connected == 32)
    }

    @Test("merge writes the merged report, HTML and CSV, and applies thresholds (exit 0 / 99)")
    func mergeCommand() throws {
        let dir = try TempDirectory(prefix: "fleet-merge")
        let (a, b) = twoHosts()
        try a.json().write(to: URL(fileURLWithPath: dir.file("a.json")))
        try b.json().write(to: URL(fileURLWithPath: dir.file("b.json")))
        var out = "", err = ""
        let ok = FleetMain.run(["merge", dir.file("a.json"), dir.file("b.json"), "--report", dir.file("m.json"), "--html", dir.file("m.html"),
                                "--csv", dir.file("csv"), "--threshold", "connected>=200"],
                               stdout: { out += $0 + "\n" }, stderr: { err += $0 + "\n" })
        #expect(ok == 0, "\(err)")
        #expect(out.contains("merged 2 reports") && out.contains("connected peak / final    200 / 200") && out.contains("pass"), "\(out)")
        let m = try FleetReport.decode(Data(contentsOf: URL(fileURLWithPath: dir.file("m.json"))))
        #expect(m.mergedRuns?.map(\.host) == ["host-a", "host-b"])
        #expect(m.run?.commandLine.hasPrefix("fleetsim merge ") == true && m.thresholds?.first?.passed == true)
        let html = try String(contentsOfFile: dir.file("m.html"), encoding: .utf8)
        #expect(html.contains("Merged reports") && html.contains("host-b") && html.contains("PASS"))
        #expect(FileManager.default.fileExists(atPath: dir.file("csv/samples.csv")))

        err = ""
        let failed = FleetMain.run(["merge", dir.file("a.json"), dir.file("b.json"), "--threshold", "connected>=201", "--report", dir.file("f.json")],
                                   stdout: { _ in }, stderr: { err += $0 })
        #expect(failed == Threshold.exitCode && err.contains("1 of 1 thresholds failed"), "\(err)")
        #expect(try FleetReport.decode(Data(contentsOf: URL(fileURLWithPath: dir.file("f.json")))).thresholds?.first?.passed == false)
    }

    @Test("usage errors: one line, exit 64")
    func usageErrors() throws {
        let dir = try TempDirectory(prefix: "fleet-merge-usage")
        try syntheticReport().json().write(to: URL(fileURLWithPath: dir.file("connect.json")))
        try syntheticReport(scenario: .storm).json().write(to: URL(fileURLWithPath: dir.file("storm.json")))
        try Data("{\"hello\": 1}".utf8).write(to: URL(fileURLWithPath: dir.file("other.json")))
        let cases: [([String], String)] = [
            ([], "merge needs reports to merge"),
            ([dir.file("missing.json")], "cannot read \(dir.file("missing.json")): no such file"),
            ([dir.file("connect.json"), dir.file("other.json")], "other.json is not a fleetsim report"),
            ([dir.file("connect.json"), dir.file("storm.json")], "is a storm report but \(dir.file("connect.json")) is connect"),
            ([dir.file("connect.json"), "--bogus"], "merge: unknown option '--bogus'"),
            ([dir.file("connect.json"), "--threshold", "nope<1"], "unknown metric 'nope'"),
        ]
        for (args, fragment) in cases {
            var err: [String] = []
            let code = FleetMain.run(["merge"] + args, stdout: { _ in }, stderr: { err.append($0) })
            #expect(code == 64, "\(args)")
            #expect(err.count == 1 && err[0].hasPrefix("fleetsim: ") && err[0].contains(fragment) && !err[0].contains("\n"), "\(err)")
        }
    }
}
