import Foundation
import Testing
import EscrowCore
import TestSupport
import Storage

/// `escrowctl custody verify` (issue 15): a chain built by every lifecycle step verifies on the
/// operator's side, and altering any one stored entry breaks it at that entry.
@Suite("Custody: verified by the operator", .timeLimit(.minutes(3)))
struct CustodyVerifyTests {
    @Test("provision, hold, activate, resale, return (hold), retire: the chain verifies after each step; tampering any stored entry fails at that entry, online and offline")
    func everyStepAndEveryEntry() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let shop = try await platform.account("shop", kind: .reseller)
        let acme = try await platform.account("acme", kind: .customer)
        let beta = try await platform.account("beta", kind: .customer)
        let files = try TempDirectory(prefix: "bundles")
        _ = try await platform.provision(["cv-1"], by: oem, account: "oem", into: files)
        let env = ["ESCROW_BROKER": "mqtt://127.0.0.1:\(platform.escrowd.operatorPort)", "ESCROW_USER": "op-beta", "ESCROW_PASSWORD": "pw-beta-secret", "ESCROW_ACCOUNT": "beta"]

        /// Verifies cv-1's chain as `account` with escrowctl; returns (exit, JSON line).
        func verify(_ account: String) async throws -> (Int32, [String: JSONValue]) {
            let r = try await runCLI(["custody", "verify", "cv-1", "--json"],
                                     env: env.merging(["ESCROW_USER": "op-\(account)", "ESCROW_PASSWORD": "pw-\(account)-secret", "ESCROW_ACCOUNT": account]) { $1 })
            let line = r.stdout.split(separator: "\n").first.map(String.init) ?? ""
            guard case .object(let o)? = try? JSONDecoder().decode(JSONValue.self, from: Data(line.utf8)) else { throw TestSupportError("no JSON line: \(r)") }
            return (r.status, o)
        }
        var decisions: [String] = ["provisioned"]
        func expectValid(_ account: String, _ step: String) async throws {
            let (status, o) = try await verify(account)
            #expect(status == 0 && o["valid"] == .bool(true) && o["platformValid"] == .bool(true), "after \(step): \(o)")
            #expect(o["decisions"] == .array(decisions.map { .string($0) }), "after \(step): \(o)")
        }
        try await expectValid("oem", "provisioning")
        try await AccountLifecycleTests.transfer(["cv-1"], from: oem, "oem", to: shop, "shop", action: "hold")
        decisions.append("held"); try await expectValid("shop", "the hold")
        try await AccountLifecycleTests.transfer(["cv-1"], from: shop, "shop", to: acme, "acme", action: "activate")
        decisions.append("activated"); try await expectValid("acme", "the activation")
        try await AccountLifecycleTests.transfer(["cv-1"], from: acme, "acme", to: beta, "beta", action: "activate")
        decisions.append("activated"); try await expectValid("beta", "the resale")
        try await AccountLifecycleTests.transfer(["cv-1"], from: beta, "beta", to: shop, "shop", action: "hold")
        decisions.append("held"); try await expectValid("shop", "the return")
        _ = try await shop.send("shop", "device.retire", ["deviceIds": ids(["cv-1"]), "reason": "end of life"]).result(Commands.DeviceRetireResult.self)
        decisions.append("retired"); try await expectValid("shop", "the retirement")

        // Saved for the offline check below, before any tampering.
        let saved = try await runCLI(["device", "show", "cv-1", "--json"], env: env.merging(["ESCROW_USER": "op-shop", "ESCROW_PASSWORD": "pw-shop-secret", "ESCROW_ACCOUNT": "shop"]) { $1 })
        #expect(saved.status == 0, "\(saved)")
        let scratch = try TempDirectory(prefix: "custody")
        try saved.stdout.write(toFile: scratch.file("chain.json"), atomically: true, encoding: .utf8)
        let offline = try await runCLI(["custody", "verify", "--file", scratch.file("chain.json")])
        #expect(offline.status == 0 && offline.stdout.contains("verified") && offline.stdout.contains("retired shop"), "\(offline)")

        // Alter each stored entry in turn (a different field each time), in the live database.
        let ledger = platform.escrowd.ledger
        func sql(_ statement: String, _ parameters: [SQLValue] = []) async throws -> SQLValue {
            try await offPool { try ledger.open().scalar(statement, parameters) }
        }
        let alterations = ["holder = 'mallory'", "at = at + 1", "decision = 'held'", "previous_holder = 'oem'", "transfer_id = 'tr-forged'", "reason = 'nothing happened'"]
        #expect(try await sql("SELECT count(*) FROM custody WHERE device_id = 'cv-1'") == .integer(6))
        for seq in 1...6 {
            let change = alterations[seq - 1]
            let column = String(change.split(separator: " ")[0])
            let original = try await sql("SELECT \(column) FROM custody WHERE device_id = 'cv-1' AND seq = \(seq)")
            _ = try await sql("UPDATE custody SET \(change) WHERE device_id = 'cv-1' AND seq = \(seq)")
            let (status, o) = try await verify("shop")
            #expect(status == 65 && o["valid"] == .bool(false) && o["brokenAt"] == .number(Double(seq)) && o["platformValid"] == .bool(false),
                    "entry \(seq) altered (\(change)): \(o)")
            _ = try await sql("UPDATE custody SET \(column) = ? WHERE device_id = 'cv-1' AND seq = \(seq)", [original])
            try await expectValid("shop", "restoring entry \(seq)")
        }

        // Offline: a saved chain edited by hand fails the same way, with the reason and exit 65.
        let forged = saved.stdout.replacingOccurrences(of: "\"holder\" : \"beta\"", with: "\"holder\" : \"mallory\"")
        #expect(forged != saved.stdout, "the saved JSON names beta as a holder")
        try forged.write(toFile: scratch.file("forged.json"), atomically: true, encoding: .utf8)
        let bad = try await runCLI(["custody", "verify", "--file", scratch.file("forged.json")])
        #expect(bad.status == 65 && bad.stdout.contains("BROKEN at entry 4") && bad.stderr.contains("custody_broken"), "\(bad)")
        await platform.close()
    }
}
