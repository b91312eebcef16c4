import EscrowCore
import Foundation
import Testing
import TestSupport
@testable import FleetEngine

/// `fleetsim transfer` end to end against the real escrowd (managed mosquitto, mutual TLS for devices).
@Suite(.serialized) struct TransferScenarioTests {
    /// Runs `fleetsim transfer` off the pool; expects exit 0 and a verified story; returns the
    /// report, its transfer part and the printed lines.
    static func transfer(_ args: [String], escrowd: EscrowdProcess, report path: String) async throws
        -> (FleetReport, TransferReport, out: [String], err: [String]) {
        let run = try await fleetsim(args)
        #expect(run.code == 0, "\(run.err.suffix(30).joined(separator: "\n"))\n\(escrowd.logTail(1500))")
        let report = try FleetReport.decode(Data(contentsOf: URL(fileURLWithPath: path)))
        let t = try #require(report.transfer)
        #expect(t.verified, "\(t.verificationProblems)")
        return (report, t, run.out, run.err)
    }

    @Test func theWholeStoryViaAResellerVerifiesAndReports() async throws {
        let escrowd = try await EscrowdProcess(); defer { escrowd.stop() }
        let dir = try TempDirectory(prefix: "fleet-transfer")
        let json = dir.file("transfer.json"), html = dir.file("transfer.html")
        let args = ["transfer", "--admin-config", escrowd.dataDirectory + "/admin.conf", "--devices", "50",
                    "--via", "reseller", "--approve", "0.6", "--reject", "0.2", "--duration", "120s",
                    "--report", json, "--html", html]
        let (report, t, out, err) = try await Self.transfer(args, escrowd: escrowd, report: json)
        #expect(t.outcomes == ["activated": 30, "rejected": 10, "cancelled": 10])
        #expect(t.appliedOnDevices == 30 && t.appliedOnPlatform == 30)
        #expect(t.approvalToAppliedMs.count == 30 && t.approveSentToAppliedMs.count == 30)
        #expect(t.pushToAckMs.count > 0)
        #expect(t.steps.map(\.name) == ["a", "b", "c", "d", "e", "f", "g"])
        // The steps are phases on the run's clock, with their own counts and latencies.
        let phases = try #require(report.phases)
        #expect(phases.map(\.name) == ["accounts", "provisioning", "escrow connect", "reseller hold", "transfer request", "config applied", "config ack", "verify"])
        #expect(zip(phases.dropFirst(), phases).allSatisfy { $0.start >= $1.start - 0.01 } && t.steps.allSatisfy { $0.start != nil })
        #expect(phases[2].latencyName == "connect" && phases[5].latency?.count == 30 && phases[5].count == 30 && phases[4].count == 40)
        #expect(report.samples.first.map { $0.t >= phases[2].start - 0.5 } == true, "samples are on the run's clock, not the engine's")
        #expect(report.run?.broker.hasPrefix("mqtts://") == true && report.run?.tls == true)
        #expect(report.peakConnected == 50 && report.connectLatencyMs.count >= 50)
        #expect(report.stoppedBy == "verification passed")
        #expect(t.accounts["customer"] == "acme-\(t.runID)" && t.accounts["reseller"] == "reseller-\(t.runID)")
        // Progress and the platform's events, readable and summarised.
        #expect(err.contains { $0.contains("event  transfer.approved") && $0.contains("(hold)") }, "\(err)")
        #expect(err.contains { $0.contains("event  acme-\(t.runID)") && $0.contains("config.applied") })
        #expect(err.contains { $0.hasPrefix("  provisioned 50/50") })
        #expect(out.joined(separator: "\n").contains("verification              passed"))
        #expect(try String(contentsOfFile: html, encoding: .utf8).contains("Approval reply to configuration applied"))
    }

    /// Issue 15: resale, return and retirement of activated devices, each step timed and verified
    /// on both sides (the devices' own state, every account's device.list, custody chains).
    @Test func theLifecycleStepsResellReturnAndRetireWithTheirLatencies() async throws {
        let escrowd = try await EscrowdProcess(); defer { escrowd.stop() }
        let dir = try TempDirectory(prefix: "fleet-lifecycle")
        let json = dir.file("lifecycle.json"), html = dir.file("lifecycle.html")
        let args = ["transfer", "--admin-config", escrowd.dataDirectory + "/admin.conf", "--devices", "60", "--via", "none",
                    "--approve", "0.8", "--reject", "0.1", "--lifecycle", "--duration", "150s", "--report", json, "--html", html,
                    "--threshold", "resell_applied.p99<60s", "--threshold", "retire_event.max<60s"]
        let (report, t, out, err) = try await Self.transfer(args, escrowd: escrowd, report: json)
        #expect(t.outcomes == ["activated": 48, "rejected": 6, "cancelled": 6])
        #expect(t.steps.map(\.name) == ["a", "b", "c", "e", "f", "g", "h", "i", "j", "k"])
        let stages = try #require(t.lifecycle)
        #expect(stages.map(\.name) == ["resell", "return", "retire"])
        #expect(stages.map(\.devices) == [18, 6, 3] && stages.map(\.decided) == [18, 6, 3])
        #expect(stages.map(\.appliedOnDevices) == [18, 6, 0])
        #expect(stages.map(\.latencyMs.count) == [18, 6, 3] && stages.allSatisfy { $0.commandMs.count == 1 })
        #expect(stages[0].to == "shop-\(t.runID)" && stages[1].to == "oem-\(t.runID)" && stages[2].from == "acme-\(t.runID)")
        // The activation's latencies are the activation's, not moved by the resale that followed.
        #expect(t.approvalToAppliedMs.count == 48 && t.appliedOnDevices == 48)
        // Each step is a phase with its latency, and a threshold metric.
        let phases = try #require(report.phases)
        #expect(phases.suffix(4).map(\.name) == ["resell", "return", "retire", "verify lifecycle"])
        #expect(phases.first { $0.name == "resell" }?.latencyName == "resell_applied" && phases.first { $0.name == "retire" }?.count == 3)
        #expect(report.latency(named: "return_applied")?.count == 6)
        // Retired devices are cut off by the broker, then switched off (no refused reconnects).
        #expect(stages[2].cutOff == 3 && report.latency(named: "retire_cutoff")?.count == 3)
        #expect((report.errors["reset"] ?? 0) == 3, "\(report.errors)")
        let summary = out.joined(separator: "\n")
        #expect(summary.contains("resell") && summary.contains("18/18 approved, 18 applied on devices") && summary.contains("3/3 retired"), "\(summary)")
        #expect(err.contains { $0.hasPrefix("  lifecycle verified:") && $0.contains("custody chains verify") }, "\(err.suffix(20))")
        #expect(err.contains { $0.contains("event  device.retired") || $0.contains("device.retired ×") }, "\(err.suffix(40))")
        #expect(try String(contentsOfFile: html, encoding: .utf8).contains("Resale: approve sent to configuration applied"))
    }

    /// Reading the board is not a change: the control task reads it while it waits, and a read
    /// that counted as a change woke the wait at once, so it spun on the cooperative pool (it held
    /// a pool thread, starved the event tasks for ~30 s and grew the RSS to 3 GB in 30 s).
    @Test func readingTheBoardDoesNotWakeItsWaiters() async {
        let board = TransferBoard()
        let (_, before) = board.snapshot()
        _ = board.read { ($0.stopRequested, $0.appliedEvents) }
        #expect(board.snapshot().1 == before)
        board.with { $0.connected = 1 }
        #expect(board.snapshot().1 != before)
        await board.nextChange(after: before, within: .seconds(30)) // returns at once: there was a change
    }

    @Test func aBadAdminConfigIsOneClearLineAndExit1() throws {
        var err: [String] = []
        let code = FleetMain.run(["transfer", "--admin-config", "/nonexistent/admin.conf", "--devices", "5", "--duration", "10"],
                                 stdout: { _ in }, stderr: { err.append($0) })
        #expect(code == 1)
        #expect(err.last == "fleetsim: transfer failed: --admin-config /nonexistent/admin.conf cannot be read", "\(err)")
    }

    @Test func transferOptionsAreValidated() {
        #expect(throws: FleetError.self) { try FleetOptions.parse(["transfer"]) }
        #expect(throws: FleetError.self) { try FleetOptions.parse(["transfer", "--admin-config", "a", "--approve", "0.9", "--reject", "0.2"]) }
        #expect(throws: FleetError.self) { try FleetOptions.parse(["transfer", "--admin-config", "a", "--via", "bus"]) }
        let o = try? FleetOptions.parse(["transfer", "--admin-config", "a", "--via", "none", "--run-id", "Demo1"])
        #expect(o?.devices == 1000 && o?.duration == 300 && o?.route == TransferRoute.none && o?.runID == "demo1")
        #expect((try? FleetOptions.parse(["connect", "--duration", "5m"]))?.duration == 300)
        // The lifecycle acts on activated devices: its shares must fit in --approve.
        let l = try? FleetOptions.parse(["transfer", "--admin-config", "a", "--lifecycle"])
        #expect(l?.resellShare == 0.3 && l?.returnShare == 0.1 && l?.retireShare == 0.05 && l?.hasLifecycle == true)
        #expect(throws: FleetError.self) { try FleetOptions.parse(["transfer", "--admin-config", "a", "--approve", "0.3", "--lifecycle"]) }
        #expect((try? FleetOptions.parse(["transfer", "--admin-config", "a", "--retire", "0.1"]))?.hasLifecycle == true)
    }
}
