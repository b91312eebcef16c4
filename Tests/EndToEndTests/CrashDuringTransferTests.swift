import Foundation
import Testing
import EscrowCore
import MQTT
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A durable QoS 1 subscriber to one account's events (clean session off, fixed client id): what
/// an operator's integration sees. Records every event id it receives and every connection drop.
actor DurableEventSubscriber {
    let account: AccountID
    let client: MQTTClient
    private(set) var received: [String: Int] = [:]   // event id -> deliveries
    private(set) var bySeq: [Int: Event] = [:]
    private(set) var drops = 0
    private var tasks: [Task<Void, Never>] = []

    init(port: Int, account: AccountID, user: String, password: String) async throws {
        self.account = account
        var o = MQTTOptions(clientID: BrokerNames.clientID(user, suffix: "durable-\(account)"), port: port)
        o.username = user; o.password = password
        o.cleanSession = false
        client = try MQTTClient(o)
        try await client.connect()
        _ = try await client.subscribe([("accounts/\(account)/events/+", .atLeastOnce)])
        let deliveries = client.deliveries
        tasks.append(Task { [weak self] in
            for await d in deliveries {
                switch d {
                case .message(let m):
                    guard let e = try? WireCodec.decode(Event.self, from: m.payload) else { continue }
                    await self?.take(e)
                case .event(.disconnected): await self?.dropped()
                case .event: break
                }
            }
        })
    }

    private func take(_ e: Event) {
        guard let id = e.id, let seq = e.seq else { return }
        received[id, default: 0] += 1
        bySeq[seq] = e
    }
    private func dropped() { drops += 1 }
    var duplicates: Int { received.values.reduce(0) { $0 + $1 - 1 } }

    func close() async { for t in tasks { t.cancel() }; await client.disconnect() }
}

@Suite("escrowd killed with SIGKILL at 20 random points of a multi-hop 1,000-device transfer", .serialized, .timeLimit(.minutes(8)))
struct CrashDuringTransferTests {
    /// Sends a command and, while escrowd is down or restarting, sends it again with the same
    /// request id until it is answered: what an operator's tool does, and what makes the replay safe.
    static func sendUntilAnswered(_ op: OperatorProbe, _ account: AccountID, _ command: String, _ args: [String: JSONValue],
                                  requestID: String, deadline: Duration = .seconds(120)) async throws -> CommandReply {
        let end = ContinuousClock.now + deadline
        var lastError: (any Error)?
        while ContinuousClock.now < end {
            do { return try await op.send(account, command, args, requestID: requestID, timeout: .seconds(3)) } catch { lastError = error }
        }
        throw TestSupportError("\(command) (\(requestID)) was not answered within \(deadline): \(String(describing: lastError))")
    }

    @Test("every committed event reaches a durable subscriber at least once, no device is activated twice, no connection drops, and the run converges")
    func twentyKills() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let resell = try await platform.account("resell", kind: .reseller)
        let acme = try await platform.account("acme", kind: .customer)
        let accounts: [AccountID] = ["oem", "resell", "acme"]
        var subscribers: [AccountID: DurableEventSubscriber] = [:]
        for a in accounts {
            subscribers[a] = try await DurableEventSubscriber(port: platform.escrowd.operatorPort, account: a, user: "op-\(a)", password: "pw-\(a)-secret")
        }
        // Events committed before the subscriptions existed are not theirs to receive.
        var baseline: [AccountID: Int] = [:]
        for (account, op) in [("oem", oem), ("resell", resell), ("acme", acme)] as [(AccountID, OperatorProbe)] {
            baseline[account] = try await op.send(account, "events.since", ["after": 0, "limit": 1]).result(Commands.EventsSinceResult.self).latestSeq
        }
        // Three real escrow agents (mutual TLS) outside the transfer: their connections must survive every kill.
        let agentDir = try TempDirectory(prefix: "crash-agents")
        let agents = try await platform.startAgents(["keep-1", "keep-2", "keep-3"], by: oem, account: "oem", into: agentDir)
        let responder = try await DeviceResponder(escrowd: platform.escrowd)
        let brokerPID = try #require(platform.escrowd.brokerPID)

        let n = 1_000
        _ = try await oem.send("oem", "device.provision", ["prefix": "hop-", "count": .number(Double(n)), "issueIdentity": false], timeout: .seconds(60))
            .result(Commands.DeviceProvisionResult.self)
        let all = (1...n).map { String(format: "hop-%06d", $0) }

        // The killer: 20 SIGKILLs at random moments (seeded, printed), each followed by a restart
        // that must adopt the running broker.
        var rng = SystemRandomNumberGenerator()
        let seed = UInt64.random(in: 1...UInt64.max, using: &rng)
        print("crash test seed \(seed)")
        let escrowd = platform.escrowd
        let killer = Task.detached { () throws -> [Duration] in
            var g = SplitMix64(state: seed)
            var restarts: [Duration] = []
            for _ in 0..<20 {
                let pause = Int.random(in: 100...1_200, using: &g)
                try await Task.sleep(for: .milliseconds(pause)) // a random moment of the run, not a synchronisation
                escrowd.crash()
                let t0 = ContinuousClock.now
                try await escrowd.start(timeout: .seconds(30))
                restarts.append(ContinuousClock.now - t0)
            }
            return restarts
        }

        // The flow: oem -> resell (held in escrow), resell -> acme (activated), retried through the kills.
        let started = ContinuousClock.now
        let t1 = try await Self.sendUntilAnswered(oem, "oem", "transfer.request", ["to": "resell", "deviceIds": ids(all)], requestID: "hop-1")
            .result(Commands.TransferResult.self)
        let h = try await Self.sendUntilAnswered(resell, "resell", "transfer.approve",
                                                 ["transferId": .string(t1.transfer.id), "action": "hold"], requestID: "hop-1-approve")
            .result(Commands.TransferResult.self)
        #expect(h.decided.count == n, "\(h.refused)")
        let t2 = try await Self.sendUntilAnswered(resell, "resell", "transfer.request", ["to": "acme", "deviceIds": ids(all)], requestID: "hop-2")
            .result(Commands.TransferResult.self)
        let a = try await Self.sendUntilAnswered(acme, "acme", "transfer.approve",
                                                 ["transferId": .string(t2.transfer.id), "action": "activate"], requestID: "hop-2-approve")
            .result(Commands.TransferResult.self)
        #expect(a.decided.count == n, "\(a.refused)")
        let restarts = try await killer.value
        try await waitUntil(timeout: .seconds(90), "all 1,000 devices applied their configuration after the last kill") {
            guard let r = try? await acme.send("acme", "config.status", [:], timeout: .seconds(5)),
                  let s = try? r.result(Commands.ConfigStatusResult.self).devices else { return false }
            return s.count == n && s.allSatisfy { $0.state == .applied }
        }
        let converged = ContinuousClock.now - started

        // Every event the ledger holds for each account reached its durable subscriber at least once.
        var stored: [AccountID: [Event]] = [:]
        for account in accounts {
            let op = account == "oem" ? oem : account == "resell" ? resell : acme
            var after = 0, events: [Event] = []
            while true {
                let page = try await op.send(account, "events.since", ["after": .number(Double(after)), "limit": 1000])
                    .result(Commands.EventsSinceResult.self)
                events += page.events
                guard page.more, let last = page.events.last?.seq else { break }
                after = last
            }
            #expect(events.map { $0.seq ?? -1 } == Array(1...(events.count)), "\(account): the stored sequence has no gap")
            stored[account] = events
            let sub = subscribers[account]!, expected = events.filter { ($0.seq ?? 0) > baseline[account]! }
            do {
                try await waitUntil(timeout: .seconds(60), "every stored event of \(account) reached its durable subscriber") {
                    let got = await sub.received
                    return expected.allSatisfy { got[$0.id ?? ""] != nil }
                }
            } catch {
                let got = await sub.received
                let missing = expected.filter { got[$0.id ?? ""] == nil }
                Issue.record("\(account): \(missing.count) of \(expected.count) events never arrived, first: \(missing.prefix(5).map { "\($0.seq ?? 0) \($0.type.rawValue)" })")
            }
        }

        // No device activated twice: one device.activated event id per device, one configuration version.
        let activated = Dictionary(grouping: stored["acme"]!.filter { $0.type == .deviceActivated }, by: { $0.deviceId?.rawValue ?? "" })
        #expect(activated.count == n && activated.values.allSatisfy { $0.count == 1 }, "each device activated exactly once")
        let status = try await acme.send("acme", "config.status", [:]).result(Commands.ConfigStatusResult.self).devices
        #expect(Set(status.map(\.desiredVersion)) == [1])
        for d in all.shuffled().prefix(20) {
            let show = try await acme.send("acme", "device.show", ["deviceId": .string(d)]).result(Commands.DeviceShowResult.self)
            #expect(show.verification.valid)
            #expect(show.custody.filter { $0.decision == .activated }.count == 1, "\(d) activated once")
        }

        // No connection dropped: the same broker process throughout, adopted by every restart;
        // no subscriber, the device responder nor any agent lost its connection.
        #expect(platform.escrowd.brokerPID == brokerPID)
        #expect(platform.escrowd.logTail(Int.max).components(separatedBy: "adopted from the previous escrowd").count - 1 == 20)
        for (account, sub) in subscribers { #expect(await sub.drops == 0, "\(account)'s durable subscriber kept its connection") }
        for agent in agents {
            let log = agent.logTail()
            #expect(log.components(separatedBy: "connected to").count - 1 == 1, "one connection for the agent's whole life:\n\(log)")
        }
        let online = try await oem.send("oem", "device.list", ["online": true]).result(Commands.DeviceListResult.self)
        #expect(online.total == 3)

        var duplicates = 0, total = 0
        for (_, sub) in subscribers { duplicates += await sub.duplicates; total += await sub.received.count }
        let sortedRestarts = restarts.sorted()
        print("crash test: 20 SIGKILLs, converged in \(converged); \(total) events stored and delivered, \(duplicates) duplicate deliveries; restart (kill to serving) p50 \(sortedRestarts[10]) max \(sortedRestarts.last!)")

        for sub in subscribers.values { await sub.close() }
        await responder.close()
        for agent in agents { agent.process.terminate(grace: .seconds(5)) }
        await platform.close()
    }
}


@Suite("the next escrowd adopts the broker a crashed one left running, only when its configuration is unchanged")
struct BrokerAdoptionTests {
    @Test("same configuration: adopted (same pid, connections kept); changed configuration: replaced by a new broker")
    func adoptOrReplace() async throws {
        let platform = try await PlatformSession()
        let escrowd = platform.escrowd
        let first = try #require(escrowd.brokerPID)
        let watcher = try await DurableEventSubscriber(port: escrowd.operatorPort, account: "platform",
                                                       user: try escrowd.adminCredentials().user, password: try escrowd.adminCredentials().password)
        escrowd.crash()
        #expect(kill(first, 0) == 0, "the broker outlives escrowd's SIGKILL")
        try await escrowd.start()
        #expect(escrowd.brokerPID == first)
        #expect(escrowd.logTail().contains("managed mosquitto adopted from the previous escrowd, connections kept (pid \(first))"))
        #expect(try await platform.admin.send(.platform, "account.list", [:], timeout: .seconds(10)).ok, "the adopted broker serves the new escrowd")
        #expect(await watcher.drops == 0)

        // The running broker was launched with another configuration than today's: not adopted.
        escrowd.crash()
        let launched = escrowd.dataDirectory + "/broker/mosquitto.pid.conf"
        try ("# an older configuration\n" + String(contentsOfFile: launched, encoding: .utf8)).write(toFile: launched, atomically: true, encoding: .utf8)
        try await escrowd.start()
        let second = try #require(escrowd.brokerPID)
        #expect(second != first)
        #expect(kill(first, 0) != 0 || Self.isZombie(first), "the old broker was stopped")
        #expect(escrowd.logTail().contains("managed mosquitto started (pid \(second))"))
        await watcher.close()
        await platform.close()
    }

    /// An orphan reparented to a PID 1 that does not reap stays a zombie after it exits.
    static func isZombie(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
        return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
    }
}
