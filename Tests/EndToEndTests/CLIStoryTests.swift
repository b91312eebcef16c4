import Foundation
import Testing
import TestSupport

/// The escrowctl binary against a real escrowd: OEM provisions, offers devices, the reseller takes them.
@Suite("escrowctl against escrowd", .serialized, .timeLimit(.minutes(3)))
struct CLIStoryTests {
    /// Runs as an operator just created: the broker reloads its password file, so retry a refused login briefly.
    private func runAs(_ env: [String: String], _ args: [String]) throws -> CLIResult {
        var r = try runCLI(args, env: env)
        // (Right after operator.create even op-admin may be refused for a moment while the broker reloads.)
        for _ in 0..<50 where r.status == 77 && r.stderr.contains("refused user") {
            Thread.sleep(forTimeInterval: 0.1)
            r = try runCLI(args, env: env)
        }
        return r
    }

    @Test("OEM -> reseller: accounts, operators, provisioning with bundles, a transfer held, custody, errors")
    func story() throws {
        let escrowd = try EscrowdProcess()
        let admin = ["ESCROW_CONFIG": escrowd.dataDirectory + "/admin.conf"]
        #expect(try runCLI(["account", "create", "oem", "--name", "OEM", "--kind", "provisioner"], env: admin).status == 0)
        #expect(try runCLI(["account", "create", "resell", "--name", "Reseller", "--kind", "reseller"], env: admin).status == 0)
        let again = try runCLI(["account", "create", "oem", "--name", "OEM", "--kind", "provisioner"], env: admin)
        #expect(again.status == 67 && again.stderr.hasPrefix("escrowctl: conflict:"), "\(again)")
        let list = try runCLI(["--json", "account", "list"], env: admin)
        #expect(list.status == 0 && list.stdout.contains("\"resell\""), "\(list)")

        let created = try runCLI(["operator", "create", "op-oem", "--account", "oem"], env: admin)
        #expect(created.status == 0, "\(created)")
        let password = try #require(created.stdout.split(separator: "\n").first { $0.hasPrefix("password: ") }?.dropFirst(10))
        let created2 = try runAs(admin, ["operator", "create", "op-res", "--account", "resell", "--password", "reseller-secret"])
        #expect(created2.status == 0, "\(created2)")
        let oem = operatorEnv(broker: escrowd.operatorURL, user: "op-oem", password: String(password), account: "oem")
        let res = operatorEnv(broker: escrowd.operatorURL, user: "op-res", password: "reseller-secret", account: "resell")

        let out = try TempDirectory()
        let provisioned = try runAs(oem, ["device", "provision", "--prefix", "sn-", "--count", "1200", "--out", out.path])
        #expect(provisioned.status == 0 && provisioned.stdout.contains("provisioned 1200 devices"), "\(provisioned)")
        for id in ["sn-000001", "sn-001200"] {
            #expect(FileManager.default.fileExists(atPath: out.path + "/\(id)/agent.conf"))
            let mode = try FileManager.default.attributesOfItem(atPath: out.path + "/\(id)/device.key")[.posixPermissions] as? Int
            #expect(mode == 0o600)
        }
        let devices = try runCLI(["--json", "device", "list", "--state", "escrow", "--limit", "3"], env: oem)
        #expect(devices.status == 0 && devices.stdout.contains("\"total\" : 1200"), "\(devices)")

        let request = try runCLI(["transfer", "request", "--to", "resell", "--prefix", "sn-", "--count", "10", "--note", "PO 4711"], env: oem)
        #expect(request.status == 0, "\(request)")
        let tid = try #require(request.stdout.split(separator: " ").dropFirst().first.map(String.init))
        #expect(tid.hasPrefix("tr-"), "\(request)")

        let gone = try runCLI(["device", "show", "sn-000001"], env: res)
        #expect(gone.status == 66 || gone.status == 77, "\(gone)")
        let tail = try runCLI(["tail", "--for", "1s"], env: oem)
        #expect(tail.status == 0, "\(tail)")
        guard created2.status == 0 else { return }
        let inbox = try runAs(res, ["transfer", "inbox", "--incoming"])
        #expect(inbox.status == 0 && inbox.stdout.contains(tid), "\(inbox)")
        let approved = try runCLI(["transfer", "approve", tid, "--hold"], env: res)
        #expect(approved.status == 0 && approved.stdout.contains("10 devices approved (hold)"), "\(approved)")
        let shown = try runCLI(["device", "show", "sn-000001"], env: res)
        #expect(shown.status == 0 && shown.stdout.contains("chain verified: yes (2 entries)"), "\(shown)")
        let transfer = try runCLI(["transfer", "show", tid], env: oem)
        #expect(transfer.status == 0 && transfer.stdout.contains("sn-000010  approved"), "\(transfer)")

        let moved = try runCLI(["device", "show", "sn-000001"], env: oem)
        #expect(moved.status == 66 && moved.stderr.hasPrefix("escrowctl: not_found:"), "\(moved)")
        let elsewhere = try runCLI(["--account", "oem", "device", "list"], env: res)
        #expect(elsewhere.status == 77, "\(elsewhere)")
    }
}
