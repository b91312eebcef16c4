import Foundation
import Testing
import EscrowCore
import Storage
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Issue 16: two escrowd processes on one PostgreSQL ledger and one broker (the first manages it,
/// the second is a replica on `--broker`), either killed with SIGKILL at random points of a
/// 1,000-device approval and started again. Commands are retried with their request ids until
/// answered, as an operator's client does.
@Suite("Two escrowd replicas, either killed with SIGKILL during a 1,000-device approval", .serialized, .timeLimit(.minutes(5)))
struct ReplicaKillTests {
    /// "leading" lines of the process now running (the log keeps earlier runs' lines too).
    static func leadingLines(_ p: EscrowdProcess) -> Int {
        p.logOfThisRun.components(separatedBy: "escrowd info: leading:").count - 1
    }
    static func leads(_ p: EscrowdProcess) -> Bool {
        let log = p.logOfThisRun
        guard let lead = log.range(of: "escrowd info: leading:", options: .backwards) else { return false }
        guard let lost = log.range(of: "escrowd info: no longer leading", options: .backwards) else { return true }
        return lead.lowerBound > lost.lowerBound
    }

    @Test("every request answered, each device activated once, every event delivered; the survivor takes the jobs within 5 s")
    func killEither() async throws {
        let a = try await EscrowdProcess(postgres: true)
        defer { a.stop() }
        let creds = try a.adminCredentials()
        let admin = try await OperatorProbe(port: a.operatorPort, username: creds.user, password: creds.password, accounts: [.platform])
        for (id, kind) in [("oem", "provisioner"), ("acme", "customer")] {
            _ = try await admin.send(.platform, "account.create", ["id": .string(id), "name": .string(id), "kind": .string(kind)]).result(Account.self)
            _ = try await admin.send(.platform, "operator.create", ["username": .string("op-\(id)"), "password": .string("pw-\(id)-secret"), "account": .string(id)])
                .result(Commands.OperatorResult.self)
        }
        let oem = try await OperatorProbe(port: a.operatorPort, username: "op-oem", password: "pw-oem-secret", accounts: ["oem"])
        let acme = try await OperatorProbe(port: a.operatorPort, username: "op-acme", password: "pw-acme-secret", accounts: ["acme"])
        _ = try await oem.send("oem", "device.provision", ["prefix": "rk-", "count": 1000, "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        let ids = (1...1000).map { String(format: "rk-%06d", $0) }
        let t = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": .array(ids.map { .string($0) })]).result(Commands.TransferResult.self)

        let b = try await EscrowdProcess(replicaOf: a)
        defer { b.stop() }
        try await waitUntil(timeout: .seconds(10), "one of the two leads") { Self.leads(a) != Self.leads(b) }

        var rng = SplitMix64(state: 0x16_0b_5eed)
        var decided = 0, kills = 0, leaderKills = 0
        for chunk in 0..<20 {
            let args: [String: JSONValue] = ["transferId": .string(t.transfer.id), "action": "activate",
                                             "deviceIds": .array(ids[(chunk * 50)..<(chunk * 50 + 50)].map { .string($0) })]
            let id = "approve-\(chunk)"
            // A kill at a random moment of every other chunk: in flight, before or after its commit.
            let victim: EscrowdProcess? = chunk % 2 == 0 ? (Bool.random(using: &rng) ? a : b) : nil
            let pause = Int.random(in: 0...30, using: &rng)
            try await acme.sendRaw("acme", "transfer.approve", payload: WireCodec.encode(CommandEnvelope(requestId: id, args: .object(args))))
            if let victim {
                let survivor = victim === a ? b : a
                let wasLeader = Self.leads(victim)
                let before = Self.leadingLines(survivor)
                try await offPool { usleep(UInt32(pause) * 1000) }  // a random moment, not a synchronisation
                victim.crash()
                kills += 1
                if wasLeader {
                    leaderKills += 1
                    try await waitUntil(timeout: .seconds(5), "the survivor takes the background jobs within 5 s of the leader's kill") {
                        Self.leadingLines(survivor) > before
                    }
                }
                try await victim.start()
            }
            // The operator's client: the same request id again until it is answered.
            var reply: CommandReply?
            for _ in 0..<6 where reply == nil {
                reply = try? await acme.reply(id, timeout: .seconds(3))
                if reply == nil { try await acme.sendRaw("acme", "transfer.approve", payload: WireCodec.encode(CommandEnvelope(requestId: id, args: .object(args)))) }
            }
            let r = try #require(reply, "\(id) never answered")
            #expect(r.error == nil, "\(id): \(String(describing: r.error))")
            decided += try r.result(Commands.TransferResult.self).decided.count
        }
        #expect(kills == 10 && decided == 1000, "kills \(kills), decided \(decided)")

        // Each device activated exactly once; the event log numbered without a gap; every stored
        // event delivered to the operator at least once.
        let store = try #require(a.store)
        let (activations, seqs) = try await offPool { () -> ([Int], [Int]) in
            let db = try store.open()
            let n = try db.query("SELECT count(*) AS n FROM custody WHERE decision = 'activated' GROUP BY device_id").compactMap { $0["n"]?.intValue }
            let s = try db.query("SELECT seq FROM events WHERE account_id = 'acme' ORDER BY seq").compactMap { $0["seq"]?.intValue }
            return (n, s)
        }
        #expect(activations.count == 1000 && activations.allSatisfy { $0 == 1 }, "\(activations.count) devices activated, max \(activations.max() ?? 0) times")
        #expect(seqs == Array(1...seqs.count), "acme's event log has a gap")
        // acme's first event (account.created) went out before any acme operator existed to hear it.
        let heard = Array(seqs.dropFirst())
        try await waitUntil(timeout: .seconds(20), "every stored event of acme after its operator subscribed is delivered") {
            Set(await acme.events.compactMap(\.seq)).isSuperset(of: heard)
        }
        print("replicas: \(kills) kills (\(leaderKills) of the leader), \(decided) devices decided once, \(seqs.count) events of acme delivered")
        await admin.close(); await oem.close(); await acme.close()
    }
}
