import Foundation
import Testing
import EscrowCore
import MQTT
import TestSupport

/// Issue 15, audit: every state-changing command is recorded with who sent it, and "who" is the
/// broker's word (the plugin's escrow-operator stamp), never the client's.
@Suite("Audit log: who, vouched for by the broker", .serialized, .timeLimit(.minutes(2)))
struct AuditTests {
    @Test("commands are recorded with the authenticated sender; a forged escrow-operator property changes nothing; reads are not recorded")
    func audit() async throws {
        let platform = try await PlatformSession()
        let acme = try await platform.account("acme", kind: .customer)
        _ = try await platform.admin.send(.platform, "operator.create", ["username": "op-acme2", "password": "pw-acme2-secret", "account": "acme"])
            .result(Commands.OperatorResult.self)
        let second = try await platform.operatorProbe(user: "op-acme2", password: "pw-acme2-secret", accounts: ["acme"])

        _ = try await acme.send("acme", "profile.put", ["name": "field", "settings": ["region": "eu"]], requestID: "r-put-1").result(Commands.Profile.self)
        _ = try await second.send("acme", "device.list", [:]) // read-only: not recorded
        let refused = try await second.send("acme", "profile.delete", ["name": "nope"], requestID: "r-del-1")
        #expect(!refused.ok && refused.error?.code == .notFound)
        // op-acme2 claims to be op-acme: the client's own property comes before the broker's stamp.
        let forged = CommandEnvelope(requestId: "r-forged-1", args: ["name": "forged", "settings": [:]])
        try await second.client.publish("accounts/acme/cmd/profile.put", WireCodec.encode(forged),
                                        properties: MQTTProperties(userProperties: [("escrow-operator", "op-acme")]))

        var log: Commands.AuditListResult?
        try await waitUntil("the forged command is in the audit log") {
            log = try await acme.send("acme", "audit.list", [:]).result(Commands.AuditListResult.self)
            return log?.entries.contains { $0.requestId == "r-forged-1" } == true
        }
        let entries = try #require(log).entries
        let byRequest = Dictionary(entries.compactMap { e in e.requestId.map { ($0, e) } }, uniquingKeysWith: { a, _ in a })
        #expect(byRequest["r-put-1"]?.operator == "op-acme" && byRequest["r-put-1"]?.ok == true && byRequest["r-put-1"]?.command == "profile.put")
        #expect(byRequest["r-del-1"]?.operator == "op-acme2" && byRequest["r-del-1"]?.ok == false && byRequest["r-del-1"]?.code == .notFound)
        #expect(byRequest["r-forged-1"]?.operator == "op-acme2", "the broker's stamp, not the forged one: \(String(describing: byRequest["r-forged-1"]))")
        #expect(!entries.contains { $0.command == "device.list" || $0.command == "audit.list" }, "read-only commands are not audited")
        #expect(entries.map(\.id) == entries.map(\.id).sorted(by: >), "newest first")

        // A replay is not recorded twice; paging with before.
        _ = try await acme.send("acme", "profile.put", ["name": "field", "settings": ["region": "eu"]], requestID: "r-put-1")
        let again = try await acme.send("acme", "audit.list", [:]).result(Commands.AuditListResult.self)
        #expect(again.entries.filter { $0.requestId == "r-put-1" }.count == 1)
        let page = try await acme.send("acme", "audit.list", ["limit": 1]).result(Commands.AuditListResult.self)
        #expect(page.entries.count == 1 && page.more)
        let older = try await acme.send("acme", "audit.list", ["limit": 1000, "before": .number(Double(page.entries[0].id))]).result(Commands.AuditListResult.self)
        #expect(older.entries.count == again.entries.count - 1 && !older.more)
        // The platform's own log: the administrator created the accounts and logins.
        let admin = try await platform.admin.send(.platform, "audit.list", [:]).result(Commands.AuditListResult.self)
        #expect(admin.entries.contains { $0.command == "operator.create" && $0.operator == "op-admin" }, "\(admin.entries)")
        await second.close()
        await platform.close()
    }
}
