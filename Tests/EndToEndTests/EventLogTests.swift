import Foundation
import Testing
import EscrowCore
import POSIX
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The event log: every committed event numbered per account, `events.since`, and `escrowctl tail`
/// resuming across broker kills with no gap.
@Suite("Event log: events.since and tail --since", .timeLimit(.minutes(4)))
struct EventLogTests {
    static func page(_ op: OperatorProbe, _ account: AccountID, _ args: [String: JSONValue]) async throws -> Commands.EventsSinceResult {
        try await op.send(account, "events.since", args).result(Commands.EventsSinceResult.self)
    }

    /// The whole log of an account, page by page.
    static func all(_ op: OperatorProbe, _ account: AccountID) async throws -> [Event] {
        var out: [Event] = [], after = 0
        while true {
            let r = try await page(op, account, ["after": .number(Double(after)), "limit": 7])
            out += r.events
            guard r.more, let last = r.events.last?.seq else { return out }
            after = last
        }
    }

    @Test("each account's events are numbered 1, 2, 3... as published; events.since pages by number and by time; bad positions are refused")
    func numberedAndPaged() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let acme = try await platform.account("acme", kind: .customer)
        let names = (1...4).map { "evl-00000\($0)" }
        _ = try await oem.send("oem", "device.provision", ["deviceIds": ids(names), "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        let t = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": ids(names)]).result(Commands.TransferResult.self)
        _ = try await acme.send("acme", "transfer.approve", ["transferId": .string(t.transfer.id), "deviceIds": ids(Array(names.prefix(3))), "action": "activate"])
            .result(Commands.TransferResult.self)

        for (op, account) in [(oem, AccountID("oem")), (acme, AccountID("acme"))] {
            let log = try await Self.all(op, account)
            #expect(log.map(\.seq) == Array(1...log.count).map(Optional.some), "\(account): numbered with no gap")
            #expect(log.map(\.id) == log.map { "\(account)-\($0.seq!)" }, "\(account): ids are account-seq")
            #expect(log.allSatisfy { $0.account == account })
            // What subscribers received carries the same numbers (the live copy is the stored one).
            try await waitUntil("\(account)'s live events include every stored one") {
                let live = await op.events.filter { $0.details["_topicAccount"] == .string(account.rawValue) }
                // account.created is published before the account's operator exists to subscribe.
                return Set(live.compactMap(\.seq)).isSuperset(of: log.filter { $0.type != .accountCreated }.compactMap(\.seq))
            }
            let live = await op.events.filter { $0.details["_topicAccount"] == .string(account.rawValue) && $0.seq != nil }
            for e in live {
                var stored = try #require(log.first { $0.seq == e.seq })
                stored.details["_topicAccount"] = .string(account.rawValue)
                #expect(stored == e, "live and stored copies of \(account)-\(e.seq!) agree")
            }
        }
        let acmeLog = try await Self.all(acme, "acme")
        #expect(acmeLog.filter { $0.type == .deviceActivated }.count == 3)
        #expect(acmeLog.contains { $0.type == .accountCreated })

        // Paging, the bounds, and a time.
        let first = try await Self.page(acme, "acme", ["limit": 2])
        #expect(first.events.map(\.seq) == [1, 2] && first.more && first.latestSeq == acmeLog.count && first.oldestSeq == 1 && first.pruned == nil)
        let tail = try await Self.page(acme, "acme", ["after": .number(Double(acmeLog.count - 1))])
        #expect(tail.events.map(\.seq) == [acmeLog.count] && !tail.more)
        let end = try await Self.page(acme, "acme", ["after": .number(Double(acmeLog.count))])
        #expect(end.events.isEmpty && !end.more)
        let past = try await acme.send("acme", "events.since", ["after": .number(Double(acmeLog.count + 5))])
        #expect(past.error?.code == .invalidArgument && past.error?.message.contains("start again with after = 0") == true, "\(String(describing: past.error))")
        let fromEpoch = try await Self.page(acme, "acme", ["since": "2000-01-01T00:00:00Z", "limit": 1_000])
        #expect(fromEpoch.events.map(\.seq) == acmeLog.map(\.seq))
        let future = try await Self.page(acme, "acme", ["since": "2100-01-01T00:00:00Z"])
        #expect(future.events.isEmpty && future.latestSeq == acmeLog.count)
        #expect(try await acme.send("acme", "events.since", ["since": "not a time, not at all"]).error?.code == .malformed)
        #expect(try await acme.send("acme", "events.since", ["after": 1, "since": "2000-01-01T00:00:00Z"]).error?.code == .invalidArgument)
        #expect(try await acme.send("acme", "events.since", ["after": -1]).error?.code == .invalidArgument)
        // The platform account has a log too (account.created, account.deleted).
        let platformLog = try await Self.page(platform.admin, .platform, [:])
        #expect(platformLog.events.filter { $0.type == .accountCreated }.count == 2)
        await oem.close(); await acme.close(); await platform.close()
    }

    /// One background `escrowctl tail --json` (resuming from the shared state directory).
    struct TailRun {
        let child: ChildProcess
        let out: String, err: String
        var stdout: String { (try? String(contentsOfFile: out, encoding: .utf8)) ?? "" }
        var stderr: String { (try? String(contentsOfFile: err, encoding: .utf8)) ?? "" }
        var seqs: [Int] {
            stdout.split(separator: "\n").compactMap { (try? WireCodec.decode(Event.self, from: Array($0.utf8)))?.seq }
        }
    }

    @Test("the broker SIGKILLed at 5 random points while events are produced: each new tail resumes where the last stopped, and together they print every event exactly once")
    func tailResumesAcrossBrokerKills() async throws {
        let platform = try await PlatformSession()
        let oemProbe = try await platform.account("oem", kind: .provisioner)
        await oemProbe.close()
        let scratch = try TempDirectory(prefix: "tail-state")
        let env = ["PATH": "/usr/bin:/bin", "HOME": scratch.path, "ESCROW_STATE_DIR": scratch.path + "/state"]
            .merging(operatorEnv(broker: platform.escrowd.operatorURL, user: "op-oem", password: "pw-oem-secret", account: "oem")) { $1 }
        let executable = try escrowctlPath()
        var rng = SplitMix64(state: UInt64(Date().timeIntervalSince1970))
        var runs: [TailRun] = []
        var provisioned = 0
        for round in 1...5 {
            // The first starts at the beginning of the log; the others resume where the last stopped.
            let run = TailRun(child: try ChildProcess.spawn(executable, ["tail", "--json"] + (round == 1 ? ["--since", "all"] : []), stdout: scratch.file("out-\(round)"), stderr: scratch.file("err-\(round)"),
                                                            environment: env, directory: scratch.path),
                              out: scratch.file("out-\(round)"), err: scratch.file("err-\(round)"))
            runs.append(run)
            try await waitUntil(timeout: .seconds(20), "tail \(round) is caught up and following") {
                if !run.child.isRunning { throw TailFailure("tail \(round) exited early: \(run.stderr)\nescrowd log:\n\(platform.escrowd.logTail(3000))") }
                return run.stderr.contains("following events of account oem")
            }
            let op = try await platform.operatorProbe(user: "op-oem", password: "pw-oem-secret", accounts: ["oem"])
            let killAt = Int.random(in: 1...6, using: &rng)
            for k in 1...8 {
                if k == killAt {
                    let pid = try #require(platform.escrowd.brokerPID)
                    kill(pid, SIGKILL)
                    try await waitUntil(timeout: .seconds(15), "escrowd restarts the broker (round \(round))") {
                        if let p = platform.escrowd.brokerPID, p != pid, kill(p, 0) == 0 { return true }
                        return false
                    }
                    // A command published before escrowd has re-subscribed reaches no one (MQTT drops
                    // it), so the next tail starts once escrowd answers again.
                    try await waitUntil(timeout: .seconds(20), "escrowd answers after the broker restart (round \(round))") {
                        guard let probe = try? await OperatorProbe(port: platform.escrowd.operatorPort, username: "op-oem", password: "pw-oem-secret", accounts: ["oem"]) else { return false }
                        let answered = (try? await probe.send("oem", "events.since", ["limit": 1], timeout: .seconds(1)).result(Commands.EventsSinceResult.self)) != nil
                        await probe.close()
                        return answered
                    }
                    break
                }
                // Each provisioning commits one device.provisioned event to oem's log.
                _ = try await op.send("oem", "device.provision", ["deviceIds": ids(["tl\(round)-\(k)"]), "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
                provisioned += 1
            }
            await op.close()
            // The tail's connection died with the broker: it exits, having saved its position.
            let exited = try await offPool { run.child.waitForExit(timeout: .seconds(20)) }
            #expect(exited, "tail \(round) noticed the broker's death")
            // Events committed while this tail ran but after the kill (none here) or lost in flight
            // are printed by the next tail.
        }
        // Some events after the last kill, then a last tail that catches up and stops.
        let op = try await platform.operatorProbe(user: "op-oem", password: "pw-oem-secret", accounts: ["oem"])
        for k in 1...3 {
            _ = try await op.send("oem", "device.provision", ["deviceIds": ids(["tl-end-\(k)"]), "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        }
        let latest = try await Self.page(op, "oem", ["limit": 1]).latestSeq
        let printedSoFar = runs.flatMap(\.seqs)
        let remaining = latest - (printedSoFar.max() ?? 0)
        #expect(remaining >= 3)
        let last = try await runCLI(["tail", "--json", "--count", String(remaining)], env: env)
        #expect(last.status == 0, "\(last)")
        let lastSeqs = last.stdout.split(separator: "\n").compactMap { (try? WireCodec.decode(Event.self, from: Array($0.utf8)))?.seq }
        let everything = printedSoFar + lastSeqs
        #expect(everything == Array(1...latest), "every event once, in order: \(everything)")
        #expect(provisioned + 3 <= latest)
        await op.close()
        await platform.close()
    }
}

struct TailFailure: Error, CustomStringConvertible { let description: String; init(_ d: String) { description = d } }
