import Foundation
import Testing
import POSIX
import EscrowCore
import TestSupport

/// The escrowctl binary against a real escrowd: OEM provisions, offers devices, the reseller takes them.
@Suite("escrowctl against escrowd", .serialized, .timeLimit(.minutes(3)))
struct CLIStoryTests {
    /// Runs as an operator just created: no retry, the login is in force at operator.create's reply.
    private func runAs(_ env: [String: String], _ args: [String]) async throws -> CLIResult {
        try await runCLI(args, env: env)
    }

    @Test("OEM -> reseller -> customer: accounts, operators, bundles, hold, partial approval, rejection, cancel, tail --json, custody, exit codes")
    func story() async throws {
        let escrowd = try await EscrowdProcess()
        let admin = ["ESCROW_CONFIG": escrowd.dataDirectory + "/admin.conf"]
        #expect(try await runCLI(["account", "create", "oem", "--name", "OEM", "--kind", "provisioner"], env: admin).status == 0)
        #expect(try await runCLI(["account", "create", "resell", "--name", "Reseller", "--kind", "reseller"], env: admin).status == 0)
        let again = try await runCLI(["account", "create", "oem", "--name", "OEM", "--kind", "provisioner"], env: admin)
        #expect(again.status == 67 && again.stderr.hasPrefix("escrowctl: conflict:"), "\(again)")
        let list = try await runCLI(["--json", "account", "list"], env: admin)
        #expect(list.status == 0 && list.stdout.contains("\"resell\""), "\(list)")

        let created = try await runCLI(["operator", "create", "op-oem", "--account", "oem"], env: admin)
        #expect(created.status == 0, "\(created)")
        let password = try #require(created.stdout.split(separator: "\n").first { $0.hasPrefix("password: ") }?.dropFirst(10))
        let created2 = try await runAs(admin, ["operator", "create", "op-res", "--account", "resell", "--password", "reseller-secret"])
        #expect(created2.status == 0, "\(created2)")
        let oem = operatorEnv(broker: escrowd.operatorURL, user: "op-oem", password: String(password), account: "oem")
        let res = operatorEnv(broker: escrowd.operatorURL, user: "op-res", password: "reseller-secret", account: "resell")

        let out = try TempDirectory()
        let provisioned = try await runAs(oem, ["device", "provision", "--prefix", "sn-", "--count", "1200", "--out", out.path])
        #expect(provisioned.status == 0 && provisioned.stdout.contains("provisioned 1200 devices"), "\(provisioned)")
        for id in ["sn-000001", "sn-001200"] {
            #expect(FileManager.default.fileExists(atPath: out.path + "/\(id)/agent.conf"))
            let mode = try FileManager.default.attributesOfItem(atPath: out.path + "/\(id)/device.key")[.posixPermissions] as? Int
            #expect(mode == 0o600)
        }
        let devices = try await runCLI(["--json", "device", "list", "--state", "escrow", "--limit", "3"], env: oem)
        #expect(devices.status == 0 && devices.stdout.contains("\"total\" : 1200"), "\(devices)")

        let request = try await runCLI(["transfer", "request", "--to", "resell", "--prefix", "sn-", "--count", "10", "--note", "PO 4711"], env: oem)
        #expect(request.status == 0, "\(request)")
        let tid = try #require(request.stdout.split(separator: " ").dropFirst().first.map(String.init))
        #expect(tid.hasPrefix("tr-"), "\(request)")

        let gone = try await runCLI(["device", "show", "sn-000001"], env: res)
        #expect(gone.status == 66 || gone.status == 77, "\(gone)")
        let tail = try await runCLI(["tail", "--for", "1s"], env: oem)
        #expect(tail.status == 0, "\(tail)")
        guard created2.status == 0 else { return }
        let inbox = try await runAs(res, ["transfer", "inbox", "--incoming"])
        #expect(inbox.status == 0 && inbox.stdout.contains(tid), "\(inbox)")
        let approved = try await runCLI(["transfer", "approve", tid, "--hold"], env: res)
        #expect(approved.status == 0 && approved.stdout.contains("10 devices approved (hold)"), "\(approved)")
        let shown = try await runCLI(["device", "show", "sn-000001"], env: res)
        #expect(shown.status == 0 && shown.stdout.contains("chain verified: yes (2 entries)"), "\(shown)")
        let transfer = try await runCLI(["transfer", "show", tid], env: oem)
        #expect(transfer.status == 0 && transfer.stdout.contains("sn-000010  approved"), "\(transfer)")

        let moved = try await runCLI(["device", "show", "sn-000001"], env: oem)
        #expect(moved.status == 66 && moved.stderr.hasPrefix("escrowctl: not_found:"), "\(moved)")
        let elsewhere = try await runCLI(["--account", "oem", "device", "list"], env: res)
        #expect(elsewhere.status == 77, "\(elsewhere)")

        // The reseller offers the 10 devices to a standalone customer: part activated, part
        // rejected, the rest cancelled by the reseller; the customer tails its events as JSON.
        #expect(try await runCLI(["account", "create", "cust", "--name", "Customer", "--kind", "customer"], env: admin).status == 0)
        #expect(try await runAs(admin, ["operator", "create", "op-cust", "--account", "cust", "--password", "customer-secret"]).status == 0)
        let cust = operatorEnv(broker: escrowd.operatorURL, user: "op-cust", password: "customer-secret", account: "cust")
        let offer = try await runAs(res, ["--json", "transfer", "request", "--to", "cust", "--prefix", "sn-", "--count", "10", "--expires", "1d"])
        #expect(offer.status == 0, "\(offer)")
        let offerID = try #require(try JSONDecoder().decode(JSONValue.self, from: Data(offer.stdout.utf8))["transfer"]?["id"]?.stringValue)
        let tailOut = try TempDirectory(prefix: "tail")
        let tailer = try ChildProcess.spawn(try escrowctlPath(), ["tail", "--json", "--for", "20s", "--count", "3", "--type", "transfer.approved,transfer.rejected,transfer.cancelled"],
                                            stdout: tailOut.file("out"), environment: cust.merging(["PATH": "/usr/bin:/bin"]) { $1 })
        do {
            try await waitUntil(timeout: .seconds(30), "tail is subscribed") {
                (try? String(contentsOfFile: tailOut.file("out"), encoding: .utf8))?.contains("following events") == true
            }
        } catch {
            Issue.record("tail printed: \((try? String(contentsOfFile: tailOut.file("out"), encoding: .utf8)) ?? "nothing"); exit status \(String(describing: tailer.exitStatus))")
            throw error
        }
        let some = try await runCLI(["transfer", "approve", offerID, "--ids", "sn-000001,sn-000002,sn-000003,sn-000004,sn-000005", "--activate"], env: cust)
        #expect(some.status == 0 && some.stdout.contains("5 devices approved (activate)"), "\(some)")
        let rejected = try await runCLI(["transfer", "reject", offerID, "--ids", "sn-000006,sn-000007,sn-000008", "--reason", "wrong model"], env: cust)
        #expect(rejected.status == 0 && rejected.stdout.contains("3 devices rejected"), "\(rejected)")
        let senderApproves = try await runCLI(["transfer", "approve", offerID, "--activate"], env: res.merging(["ESCROW_ACCOUNT": "resell"]) { $1 })
        #expect(senderApproves.status == 77, "the sender may not approve: \(senderApproves)")
        let cancelled = try await runCLI(["transfer", "cancel", offerID], env: res)
        #expect(cancelled.status == 0 && cancelled.stdout.contains("2 devices cancelled"), "\(cancelled)")
        let cancelAgain = try await runCLI(["transfer", "cancel", offerID], env: res)
        #expect(cancelAgain.status == 67, "nothing pending any more: \(cancelAgain)")
        let unknown = try await runCLI(["transfer", "show", "tr-nope"], env: cust)
        #expect(unknown.status == 66, "\(unknown)")
        let outcome = try await runCLI(["--json", "transfer", "show", offerID], env: cust)
        let view = try JSONDecoder().decode(JSONValue.self, from: Data(outcome.stdout.utf8))
        #expect(view["counts"]?["approved"]?.intValue == 5 && view["counts"]?["rejected"]?.intValue == 3 && view["counts"]?["cancelled"]?.intValue == 2, "\(outcome.stdout)")
        #expect(tailer.waitForExit(timeout: .seconds(25)))
        let lines = ((try? String(contentsOfFile: tailOut.file("out"), encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.hasPrefix("{") }
        let types = lines.compactMap { try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8))["type"]?.stringValue }
        #expect(types == ["transfer.approved", "transfer.rejected", "transfer.cancelled"], "tail --json: \(lines)")
        let usage = try await runCLI(["transfer", "approve"], env: cust)
        #expect(usage.status == 64, "a missing transfer id is a usage error: \(usage)")
    }

    @Test("device list pages with --offset; a decision that decides nothing says so and exits 67")
    func pagingAndNoOps() async throws {
        let escrowd = try await EscrowdProcess()
        let admin = ["ESCROW_CONFIG": escrowd.dataDirectory + "/admin.conf"]
        #expect(try await runCLI(["account", "create", "oem", "--name", "OEM", "--kind", "provisioner"], env: admin).status == 0)
        #expect(try await runCLI(["account", "create", "cust", "--name", "Cust", "--kind", "customer"], env: admin).status == 0)
        #expect(try await runAs(admin, ["operator", "create", "op-oem", "--account", "oem", "--password", "oem-secret-1"]).status == 0)
        let oem = operatorEnv(broker: escrowd.operatorURL, user: "op-oem", password: "oem-secret-1", account: "oem")
        #expect(try await runAs(oem, ["device", "provision", "--prefix", "pg-", "--count", "5"]).status == 0)
        let first = try await runCLI(["device", "list", "--limit", "2"], env: oem)
        #expect(first.status == 0 && first.stderr.contains("next page: --offset 2"), "\(first)")
        let last = try await runCLI(["--json", "device", "list", "--limit", "2", "--offset", "4"], env: oem)
        #expect(last.status == 0 && last.stdout.contains("pg-000005") && !last.stdout.contains("pg-000004"), "\(last)")
        let request = try await runCLI(["transfer", "request", "--to", "cust", "--ids", "pg-000001"], env: oem)
        let tid = try #require(request.stdout.split(separator: " ").dropFirst().first.map(String.init), "\(request)")
        #expect(try await runAs(admin, ["operator", "create", "op-cust", "--account", "cust", "--password", "cust-secret-1"]).status == 0)
        let cust = operatorEnv(broker: escrowd.operatorURL, user: "op-cust", password: "cust-secret-1", account: "cust")
        let none = try await runAs(cust, ["transfer", "approve", tid, "--ids", "pg-000002", "--hold"])
        #expect(none.status == 67 && none.stderr.contains("nothing changed"), "\(none)")
        let cancelled = try await runCLI(["transfer", "cancel", tid], env: oem)
        #expect(cancelled.status == 0 && cancelled.stdout.contains("status now cancelled (cancelled 1)"), "\(cancelled)")
    }
}
