import Foundation
import Testing
import EscrowCore
@testable import ControlPlane
import Storage
import TestSupport

/// The bulk read-ahead (`DeviceReadAhead`) only saves round trips: the same commands and acks leave
/// every table exactly as the per-device reads do, on both databases.
@Suite("Bulk decisions read ahead: the same ledger as reading per device", .timeLimit(.minutes(2)))
struct ReadAheadTests {
    enum Backend: String, CaseIterable { case sqlite, postgres }

    /// Runs one story (provision, activate 12 devices, resell 8, return 4 into escrow, acks in
    /// batches, a reject, a re-push) and returns every row of every table.
    static func story(readsAhead: Bool, store: StoreLocation) throws -> [String] {
        var tick = 1_800_000_000.0
        let writer = try LedgerWriter(store, name: "id", actor: "op-test", now: { Date(timeIntervalSince1970: tick) })
        let ledger = writer.ledger
        ledger.readsAhead = readsAhead
        func run(_ account: AccountID, _ command: String, _ args: JSONValue) throws -> JSONValue {
            tick += 1
            return try writer.run(account, command, args)
        }
        func transfer(_ devices: [String], from: AccountID, to: AccountID, action: String) throws {
            let t = try run(from, "transfer.request", ["to": .string(to.rawValue), "deviceIds": .array(devices.map { .string($0) })])
            _ = try run(to, "transfer.approve", ["transferId": .string(try LedgerWriter.transferID(t)), "action": .string(action)])
        }
        func acks(_ devices: [String], version: Int, result: ConfigAck.Result = .applied) throws {
            tick += 1
            try ledger.db.transaction {
                let batch = devices.map { (DeviceID($0)!, ConfigAck(version: version, result: result, reason: result == .rejected ? "no" : nil)) }
                try ledger.readingAhead(batch.map(\.0), configurations: true) {
                    for (d, a) in batch { _ = try ledger.recordAck(d, a); _ = try ledger.confirmIdentity(d, appliedVersion: a.version, at: Date(timeIntervalSince1970: tick)) }
                }
            }
        }
        _ = try run(.platform, "account.create", ["id": "oem", "name": "OEM", "kind": "provisioner"])
        _ = try run(.platform, "account.create", ["id": "acme", "name": "Acme", "kind": "customer"])
        _ = try run(.platform, "account.create", ["id": "beta", "name": "Beta", "kind": "customer"])
        _ = try run("oem", "device.provision", ["prefix": "ra-", "count": 12, "issueIdentity": false])
        let all = (1...12).map { String(format: "ra-%06d", $0) }
        try transfer(all, from: "oem", to: "acme", action: "activate")
        try acks(Array(all.prefix(10)), version: 1)
        try acks(["ra-000011"], version: 1, result: .rejected)
        try transfer(Array(all.prefix(8)), from: "acme", to: "beta", action: "activate")        // a resale
        try acks(Array(all.prefix(8)), version: 2)
        try acks(Array(all.prefix(8)), version: 2)                                               // re-acks change nothing
        try transfer(Array(all.prefix(4)), from: "beta", to: "acme", action: "hold")             // a return into escrow
        try acks(Array(all.prefix(4)) + ["ra-000005"], version: 3)
        let db = try store.open()
        var out: [String] = []
        for table in ["accounts", "devices", "configs", "transfers", "transfer_items", "custody", "events", "event_sequences", "revocations"] {
            for row in try db.query("SELECT * FROM \(table) ORDER BY 1, 2") { out.append("\(table): \(row)") }
        }
        // The outbox without its wall-clock commit time.
        for row in try db.query("SELECT id, topic, payload, retain FROM outbox ORDER BY id") { out.append("outbox: \(row)") }
        return out
    }

    @Test("activation, resale, return and acks: identical tables with and without the read-ahead", arguments: Backend.allCases)
    func identical(_ backend: Backend) async throws {
        let dir = try TempDirectory(prefix: "readahead")
        func store(_ name: String) async throws -> StoreLocation {
            switch backend {
            case .sqlite: return .sqlite(path: dir.file(name + ".db"))
            case .postgres:
                let server = try await PostgresServer.shared()
                return try await offPool { try server.freshStore() }
            }
        }
        let direct = try await store("direct"), ahead = try await store("ahead")
        let (a, b) = try await offPool { (try Self.story(readsAhead: false, store: direct), try Self.story(readsAhead: true, store: ahead)) }
        #expect(a.count > 150, "the story wrote \(a.count) rows")
        let custodyRows = a.filter { $0.hasPrefix("custody:") }.count
        #expect(custodyRows == 36, "12 provisioned, 12 activated, 8 resold, 4 returned")
        for (x, y) in zip(a, b) where x != y { Issue.record("differs:\n  per device: \(x)\n  read ahead: \(y)"); break }
        #expect(a.count == b.count)
    }
}
