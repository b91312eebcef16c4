import Foundation
import Testing
import EscrowCore
@testable import ControlPlane
import Storage
import MQTT
import TestSupport

/// Several escrowd on one PostgreSQL database (replicas) write one at a time, as SQLite's single
/// writer does: each transaction starts with the schema's writer lock, so it decides on every commit
/// before it. Two connections race the same decisions here, on real threads.
@Suite("One PostgreSQL ledger, two writers", .timeLimit(.minutes(2)))
struct SharedLedgerTests {
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
        let (one, two) = try await offPool { (try LedgerWriter(store, name: "one"), try LedgerWriter(store, name: "two")) }
        let devices = (1...60).map { String(format: "sl-%06d", $0) }
        let transfer: String = try await offPool {
            _ = try one.run(.platform, "account.create", ["id": "oem", "name": "OEM", "kind": "provisioner"])
            _ = try one.run(.platform, "account.create", ["id": "acme", "name": "Acme", "kind": "customer"])
            _ = try one.run("oem", "device.provision", ["prefix": "sl-", "count": 60, "issueIdentity": false])
            return try LedgerWriter.transferID(try one.run("oem", "transfer.request", ["to": "acme", "deviceIds": .array(devices.map { .string($0) })]))
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
        let (one, two) = try await offPool { (try LedgerWriter(store, name: "one"), try LedgerWriter(store, name: "two")) }
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

    /// Leadership changes as they happen (`PostgresLeaderLease.onChange`), for bounded waits.
    final class Changes: Sendable {
        let stream: AsyncStream<(String, Bool)>
        private let continuation: AsyncStream<(String, Bool)>.Continuation
        init() { (stream, continuation) = AsyncStream.makeStream() }
        func watch(_ lease: PostgresLeaderLease, as name: String) { lease.onChange { [continuation] leads in continuation.yield((name, leads)) } }
    }

    @Test("one leader for the background jobs: when its connection dies (a killed escrowd) or it resigns, the other takes over within 5 s")
    func leadership() async throws {
        let server = try await PostgresServer.shared()
        let store = try await offPool { try server.freshStore() }
        guard case .postgres(let url) = store else { return }
        let changes = Changes()
        let first = try PostgresLeaderLease(url: url)
        changes.watch(first, as: "first")
        first.start()
        _ = try await firstElement(of: changes.stream, timeout: .seconds(5), "the first lease leads") { $0 == ("first", true) }
        let second = try PostgresLeaderLease(url: url)
        changes.watch(second, as: "second")
        second.start()
        #expect(first.isLeader && !second.isLeader)
        // The second is queued on the lock on the server (nothing announces that but the server's
        // lock table: a bounded poll of pg_locks).
        let admin = try await offPool { try PostgresDatabase(url: server.url()) }
        func queued(_ lease: PostgresLeaderLease, _ what: String) async throws {
            try await waitUntil(what) {
                let pid = lease.backendPID
                guard pid > 0 else { return false }
                return try await offPool { try admin.scalar("SELECT count(*) FROM pg_locks WHERE pid = CAST(? AS INTEGER) AND locktype = 'advisory' AND NOT granted", [.integer(Int64(pid))]) } == .integer(1)
            }
        }
        try await queued(second, "the second lease waits for the lock on the server")
        // The leader's server session ends, as when its escrowd is killed: the other leads at once.
        let pid = first.backendPID
        #expect(pid > 0)
        _ = try await offPool { try admin.query("SELECT pg_terminate_backend(CAST(? AS INTEGER))", [.integer(Int64(pid))]) }
        let order = try await collect(2, from: changes.stream, timeout: .seconds(5), "the first lease lost and the second gained")
        #expect(Set(order.map { "\($0.0) \($0.1)" }) == ["first false", "second true"], "\(order)")
        #expect(second.isLeader && !first.isLeader)
        // The first one queued again; when the leader resigns, it leads again.
        try await queued(first, "the first lease waits for the lock again")
        second.stop()
        let back = try await collect(2, from: changes.stream, timeout: .seconds(5), "leadership back to the first lease")
        #expect(Set(back.map { "\($0.0) \($0.1)" }) == ["second false", "first true"], "\(back)")
        first.stop()
    }

    @Test("two control planes on one ledger and one broker split the commands; every event is published once, by the leader, also for commands the other executed; a request sent to both at once is executed once and both answers are its reply")
    func twoControlPlanesPublishEachEventOnce() async throws {
        let server = try await PostgresServer.shared()
        let store = try await offPool { try server.freshStore() }
        let p = try await PlatformFixture(store: store)
        // The second escrowd: same ledger, same broker, its own connection and client id.
        let client = try MQTTClient(MQTTOptions(clientID: "escrowd-replica", port: p.broker.port))
        let replica = try ControlPlane(options: ControlPlane.Options(store: store), client: client, log: .silent)
        try await client.connect()
        let task = Task { try await replica.run() }
        defer { task.cancel() }
        try await waitUntil("one of the two leads") { await p.service.leads != replica.leads }
        let op = p.operators
        _ = try await op.send(.platform, "account.create", ["id": "oem", "name": "OEM", "kind": "provisioner"]).result(Account.self)
        // Commands reach either control plane ($share): both execute some (counted below).
        let before = (await p.service.counters.commands, await replica.counters.commands)
        for i in 0..<30 {
            _ = try await op.send("oem", "device.provision", ["prefix": .string("r\(i)-"), "count": 1, "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        }
        let executed = (await p.service.counters.commands - before.0, await replica.counters.commands - before.1)
        #expect(executed.0 > 0 && executed.1 > 0 && executed.0 + executed.1 == 30, "split \(executed)")
        try await waitUntil("all 31 events of oem arrive") { await op.events.filter { $0.account == "oem" }.count >= 31 }
        let seen = await op.events.filter { $0.account == "oem" }
        #expect(seen.count == 31 && Set(seen.compactMap(\.seq)) == Set(1...31), "\(seen.count) events, seqs \(seen.compactMap(\.seq).sorted())")

        // The same request sent twice at once ($share hands the copies to the two control planes):
        // one executes it, the other returns the first one's reply; the effect happens once.
        let listener = try MQTTClient(MQTTOptions(clientID: "reply-listener", port: p.broker.port))
        try await listener.connect()
        _ = try await listener.subscribe([("accounts/oem/reply/+", .atLeastOnce)])
        let replies = listener.messages
        for i in 0..<10 {
            let envelope = WireCodec.encode(CommandEnvelope(requestId: "dup-\(i)", args: ["prefix": .string("dup\(i)-"), "count": 1, "issueIdentity": false]))
            try await op.sendRaw("oem", "device.provision", payload: envelope)
            try await op.sendRaw("oem", "device.provision", payload: envelope)
        }
        let answers = try await collect(20, from: replies, timeout: .seconds(20), "replies to 10 requests sent twice")
        var byID: [String: [[UInt8]]] = [:]
        for m in answers { byID[String(m.topic.split(separator: "/").last!), default: []].append(m.payload) }
        for i in 0..<10 {
            let two = byID["dup-\(i)"] ?? []
            #expect(two.count == 2, "dup-\(i): \(two.count) replies")
            let decoded = two.compactMap { try? WireCodec.decode(CommandReply.self, from: $0) }
            #expect(decoded.count == 2 && decoded.allSatisfy { $0.error == nil }, "dup-\(i): \(decoded.map { String(describing: $0.error) })")
        }
        let list = try await op.send("oem", "device.list", ["prefix": "dup"]).result(Commands.DeviceListResult.self)
        #expect(list.total == 10, "each duplicated request provisioned once")
        await listener.disconnect()
        await client.disconnect()
        await p.shutdown()
    }
}
