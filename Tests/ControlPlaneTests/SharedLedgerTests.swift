import Foundation
import Testing
import EscrowCore
@testable import ControlPlane
import Storage
import TestSupport

/// Several escrowd on one PostgreSQL database (replicas) write one at a time, as SQLite's single
/// writer does: each transaction starts with the schema's writer lock, so it decides on every commit
/// before it. Two connections race the same decisions here, on real threads.
@Suite("One PostgreSQL ledger, two writers", .timeLimit(.minutes(2)))
struct SharedLedgerTests {
    /// A ledger (its own connection) and a processor over it.
    final class Writer: @unchecked Sendable {
        let ledger: Ledger
        var processor: CommandProcessor
        init(_ store: StoreLocation, name: String) throws {
            ledger = try Ledger(store: store)
            var ids = 0
            processor = CommandProcessor(ledger: ledger, credentials: nil, now: { Date() }, newID: { ids += 1; return "\(name)-\(ids)" })
            processor.actor = "op-\(name)"
        }
        func run(_ account: AccountID, _ command: String, _ args: JSONValue) throws -> JSONValue {
            try ledger.db.transaction {
                let outcome = try processor.execute(account: account, command: command, args: args)
                try ledger.appendEvents(outcome.effects.events)
                return outcome.result
            }
        }
    }

    /// Runs `a` and `b` on two threads released together; returns their results.
    static func race<A: Sendable, B: Sendable>(_ a: @escaping @Sendable () -> A, _ b: @escaping @Sendable () -> B) async throws -> (A, B) {
        let gate = DispatchSemaphore(value: 0)
        async let x = offPool { gate.wait(); return a() }
        async let y = offPool { gate.wait(); return b() }
        gate.signal(); gate.signal()
        return (try await x, try await y)
    }

    @Test("the same transfer approved on two connections at once: one decides, the other is refused as already decided, every device activated once")
    func approveTwice() async throws {
        let server = try await PostgresServer.shared()
        let store = try await offPool { try server.freshStore() }
        let (one, two) = try await offPool { (try Writer(store, name: "one"), try Writer(store, name: "two")) }
        let devices = (1...60).map { String(format: "sl-%06d", $0) }
        let transfer: String = try await offPool {
            _ = try one.run(.platform, "account.create", ["id": "oem", "name": "OEM", "kind": "provisioner"])
            _ = try one.run(.platform, "account.create", ["id": "acme", "name": "Acme", "kind": "customer"])
            _ = try one.run("oem", "device.provision", ["prefix": "sl-", "count": 60, "issueIdentity": false])
            let t = try one.run("oem", "transfer.request", ["to": "acme", "deviceIds": .array(devices.map { .string($0) })])
            guard case .object(let o) = t, case .object(let tr)? = o["transfer"], case .string(let id)? = tr["id"] else { throw TestSupportError("no transfer id") }
            return id
        }
        for round in 1...3 {
            let args: JSONValue = ["transferId": .string(transfer), "action": "activate", "deviceIds": .array(devices[((round - 1) * 20)..<(round * 20)].map { .string($0) })]
            let (a, b) = try await Self.race({ Result { try one.run("acme", "transfer.approve", args) } },
                                             { Result { try two.run("acme", "transfer.approve", args) } })
            let outcomes = [a, b]
            let decided = outcomes.filter { r in
                guard case .success(let v) = r, case .object(let o) = v, case .array(let d)? = o["decided"] else { return false }
                return d.count == 20
            }
            #expect(decided.count == 1, "round \(round): \(outcomes)")
            // The other one saw the first one's commit: nothing left to decide (refused devices), or
            // a domain error; never a storage failure from a half-applied duplicate.
            for r in outcomes { if case .failure(let e) = r { #expect(e is DomainError, "round \(round): \(e)") } }
        }
        let db = try await offPool { try store.open() }
        let activated = try await offPool { try db.query("SELECT device_id, count(*) AS n FROM custody WHERE decision = 'activated' GROUP BY device_id") }
        #expect(activated.count == 60 && activated.allSatisfy { $0["n"] == .integer(1) })
        let configs = try await offPool { try db.scalar("SELECT count(*) FROM configs") }
        #expect(configs == .integer(60))
    }

    @Test("commands racing on two connections: each account's events are numbered 1...n without a gap or a repeat, and the outbox holds them in commit order")
    func eventsInOrder() async throws {
        let server = try await PostgresServer.shared()
        let store = try await offPool { try server.freshStore() }
        let (one, two) = try await offPool { (try Writer(store, name: "one"), try Writer(store, name: "two")) }
        try await offPool { _ = try one.run(.platform, "account.create", ["id": "oem", "name": "OEM", "kind": "provisioner"]) }
        let (a, b) = try await Self.race({ Result { for i in 0..<40 { _ = try one.run("oem", "device.provision", ["prefix": .string("a\(i)-"), "count": 3, "issueIdentity": false]) } } },
                                         { Result { for i in 0..<40 { _ = try two.run("oem", "device.provision", ["prefix": .string("b\(i)-"), "count": 3, "issueIdentity": false]) } } })
        _ = try a.get(); _ = try b.get()
        let db = try await offPool { try store.open() }
        let seqs = try await offPool { try db.query("SELECT seq FROM events WHERE account_id = 'oem' ORDER BY seq").compactMap { $0["seq"]?.intValue } }
        // account.created, then one devices.provisioned event per command.
        #expect(seqs == Array(1...seqs.count))
        #expect(seqs.count == 1 + 80, "\(seqs.count) events")
        // Outbox order (publishing order) follows the events' numbers.
        let published = try await offPool {
            try db.query("SELECT payload FROM outbox WHERE topic LIKE 'accounts/oem/%' ORDER BY id").compactMap { r -> Int? in
                guard let p = r["payload"]?.blobValue, let e = try? WireCodec.decode(Event.self, from: p) else { return nil }
                return e.seq
            }
        }
        #expect(published == seqs)
    }
}
