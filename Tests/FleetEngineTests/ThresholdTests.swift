import Foundation
import Testing
@testable import FleetEngine
import TestSupport

@Suite("fleetsim --threshold")
struct ThresholdTests {
    @Test("the grammar: metrics, operators, units; mistakes are usage errors that say what is known")
    func grammar() throws {
        let t = try Threshold.parse("connect.p99<2s")
        #expect(t.metric == "connect.p99" && t.op == .lt && t.value == 2000)
        #expect(try Threshold.parse("push_ack.p90 <= 500ms").value == 500 && (try Threshold.parse("push_ack.p90 <= 500ms").op) == .le)
        #expect(try Threshold.parse("puback.max<750us").value == 0.75)
        #expect(try Threshold.parse("connect.p50>=3").value == 3, "milliseconds by default")
        #expect(try Threshold.parse("errors==0").op == .eq && (try Threshold.parse("drops!=0").op) == .ne)
        #expect(try Threshold.parse("connected>=19000").value == 19_000)
        #expect(throws: FleetError.self) { try Threshold.parse("connect.p99") }
        #expect(throws: FleetError.self) { try Threshold.parse("errors==zero") }
        do { _ = try Threshold.parse("conect.p99<2s"); Issue.record("accepted a misspelt metric") } catch {
            #expect(error.description.contains("did you mean connect.p99"), "\(error)")
        }
        #expect(throws: FleetError.self) { try FleetOptions.parse(["connect", "--threshold", "nope>1"]) }
        #expect(FleetMain.run(["connect", "--threshold", "nope>1"], stdout: { _ in }, stderr: { _ in }) == 64)
    }

    @Test("thresholds are checked at the end: all pass exits 0, one failing exits 99 with the reports written and the result in them")
    func exitCodes() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let dir = try TempDirectory(prefix: "thresholds")
        let first = try await fleetsim(["connect", "--broker", broker.url, "--devices", "10", "--duration", "10", "--quiet",
                                        "--threshold", "connected==10", "--threshold", "errors==0", "--threshold", "connect.p99<10s"])
        let ok = first.code, out = first.out.map { $0 + "\n" }.joined()
        #expect(ok == 0, "\(out)")
        #expect(out.contains("threshold connected==10") && out.contains("pass") && !out.contains("FAIL"), "\(out)")
        let json = dir.file("r.json"), html = dir.file("r.html")
        let second = try await fleetsim(["connect", "--broker", broker.url, "--devices", "10", "--duration", "10", "--quiet", "--report", json, "--html", html,
                                         "--threshold", "connected>=11", "--threshold", "approval_applied.p99<1s"])
        let failed = second.code, err = second.err.joined()
        #expect(failed == Threshold.exitCode, "\(err)")
        #expect(err.contains("2 of 2 thresholds failed"), "\(err)")
        let report = try FleetReport.decode(Data(contentsOf: URL(fileURLWithPath: json)))
        #expect(report.thresholds?.map(\.passed) == [false, false])
        #expect(report.thresholds?.first?.actual == 10 && report.thresholds?.last?.actual == nil, "a transfer metric of a connect run is not measured")
        #expect(try String(contentsOfFile: html, encoding: .utf8).contains("<h2>Thresholds</h2>"))
    }
}
