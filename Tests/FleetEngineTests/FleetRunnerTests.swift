import Foundation
import Synchronization
import Testing
import TestSupport
@testable import FleetEngine

/// The engine drives its sockets on the calling thread for the whole run: each run goes through
/// `offPool` (a thread of its own), never a thread of the cooperative pool, and the expectations
/// are checked back on the test's task (an issue recorded off it belongs to no test).
@Suite(.serialized) struct FleetRunnerTests {

    func options(_ broker: LocalBroker, _ extra: [String]) throws -> FleetOptions {
        try FleetOptions.parse(extra + ["--broker", broker.url, "--quiet", "--backoff-base", "0.3", "--backoff-max", "2"])
    }

    @Test func connectRunEndsByDurationWithReportAndHTML() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let o = try options(broker, ["connect", "--devices", "120", "--duration", "3", "--heartbeat", "0.5", "--qos", "1", "--rate", "1000"])
        let started = Date()
        let report = try await offPool { try FleetRunner(options: o, output: { _ in }).run() }
        // It ends by its duration (3 s, its own clock); the wall-clock bound only catches a hang.
        #expect(report.elapsedSeconds < 4.5, "\(report.elapsedSeconds) s")
        #expect(Date().timeIntervalSince(started) < 30)
        #expect(report.stoppedBy == "duration")
        #expect(report.peakConnected == 120 && report.finalConnected == 120)
        #expect(report.timeToAllConnected != nil)
        #expect(report.connectLatencyMs.count == 120)
        #expect((report.counters["heartbeats"] ?? 0) >= 120)
        #expect(report.pubackLatencyMs.count > 0)
        #expect(report.samples.count >= 2)
        #expect(report.errors.values.reduce(0, +) == 0)
        // JSON round trip and a self-contained HTML page with SVG charts.
        let back = try FleetReport.decode(report.json())
        #expect(back.peakConnected == 120 && back.connectLatencyMs == report.connectLatencyMs)
        let obj = try JSONSerialization.jsonObject(with: report.json()) as? [String: Any]
        #expect(obj?["scenario"] as? String == "connect")
        let html = HTMLReport.render(report)
        #expect(html.contains("<svg") && html.contains("</html>"))
        #expect(!html.contains("src=\"http") && !html.contains("href=\"http"))
        #expect(report.summaryTable.contains("connected peak / final    120 / 120"))
    }

    @Test func stormScenarioAllBack() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let o = try options(broker, ["storm", "--devices", "150", "--duration", "20", "--heartbeat", "5", "--storm-after", "0.5"])
        let collected = Printed()
        let report = try await offPool { try FleetRunner(options: o, output: { collected.out($0) }).run() }
        let lines = collected.outLines
        #expect(report.stoppedBy == "storm recovered")
        #expect(report.stormRecoverySeconds != nil)
        #expect((report.stormRecoverySeconds ?? 99) < 5)
        #expect(report.recoveryMs.count == 150)
        #expect(lines.contains { $0.hasPrefix("storm: all 150 back") })
        #expect(report.summaryTable.contains("storm: all back after"))
    }

    @Test func stopFlagEndsRunEarlyAndStillReports() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let o = try options(broker, ["soak", "--devices", "50", "--duration", "60"])
        let stop = StopFlag()
        DispatchQueue.global().asyncAfter(deadline: .now() + 1.5) { stop.request() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-stop-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let json = dir.appendingPathComponent("r.json").path, html = dir.appendingPathComponent("r.html").path
        let args = ["soak", "--broker", broker.url, "--devices", "50", "--duration", "60", "--quiet", "--report", json, "--html", html]
        let started = Date()
        DispatchQueue.global().asyncAfter(deadline: .now() + 1.5) { stop.request() }
        let run = try await fleetsim(args, stop: stop)
        let code = run.code, out = run.out.joined()
        #expect(code == 130, "Ctrl-C exits 130 after writing the partial report")
        #expect(Date().timeIntervalSince(started) < 10)
        #expect(out.contains("stopped by signal"))
        let report = try FleetReport.decode(Data(contentsOf: URL(fileURLWithPath: json)))
        #expect(report.stoppedBy == "signal" && report.peakConnected == 50)
        #expect(report.resources.count >= 2 && report.resources.allSatisfy { $0.rssKB > 0 && $0.fds > 0 })
        #expect(try String(contentsOfFile: html, encoding: .utf8).contains("<svg"))
        _ = o
    }

    @Test func unreachableBrokerIsOneClearErrorAndExit1() async throws {
        let port = try LocalBroker.freePort()
        let run = try await fleetsim(["connect", "--broker", "mqtt://127.0.0.1:\(port)", "--devices", "30", "--duration", "10", "--quiet"])
        let code = run.code, err = run.err
        #expect(code == 1)
        #expect(err.last?.contains("broker unreachable at mqtt://127.0.0.1:\(port)") == true, "\(err)")
    }

    @Test func churnDropsAndReconnects() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let o = try options(broker, ["connect", "--devices", "100", "--duration", "5", "--heartbeat", "5", "--churn", "100"])
        let report = try await offPool { try FleetRunner(options: o, output: { _ in }).run() }
        #expect((report.counters["disconnects"] ?? 0) >= 3)
        #expect((report.counters["connacks"] ?? 0) > 100)
    }

    @Test func workersMergeReports() async throws {
        let broker = try await LocalBroker(); defer { broker.stop() }
        let exe = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".build/debug/fleetsim").path
        try #require(FileManager.default.isExecutableFile(atPath: exe), "build fleetsim first: swift build --product fleetsim")
        let o = try options(broker, ["connect", "--devices", "60", "--duration", "2", "--workers", "2"])
        let report = try await offPool { () throws -> FleetReport in
            var pool = WorkerPool(options: o, output: { _ in })
            pool.executable = exe
            return try pool.run(stop: StopFlag())
        }
        #expect(report.workers == 2)
        #expect(report.targetDevices == 60 && report.peakConnected == 60)
        #expect(report.connectLatencyMs.count == 60)
    }
}
