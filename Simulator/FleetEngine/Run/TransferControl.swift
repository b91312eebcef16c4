import EscrowCore
import Foundation
import OperatorCLI
import Synchronization

/// Lines from several threads (engine loop, control task, event tasks) to one sink.
final class Console: @unchecked Sendable {
    // @unchecked Sendable: `sink` is only ever called while `lock` is held.
    private let lock = NSLock()
    private let sink: (String) -> Void
    init(_ sink: @escaping (String) -> Void) { self.sink = sink }
    func line(_ s: String) {
        lock.lock()
        defer { lock.unlock() }
        sink(s)
    }
}

/// What the control task and the engine loop share; every access holds the lock.
final class TransferBoard: Sendable {
    /// One `transfer.approve` batch: device indices, command sent, reply received (monotonic ns).
    struct Approval: Sendable {
        var range: Range<Int>
        var sentNanos: UInt64
        var replyNanos: UInt64
        /// `activate` (step e), `resell`, `return` or `retire`.
        var stage = "activate"
        /// What the devices apply once approved: the receiver's configuration in this mode (nil
        /// owner: nothing to apply, a retirement).
        var owner: AccountID?
        var mode: DeviceMode = .normal
    }

    /// Which activated devices the lifecycle steps take (indices into the fleet) and where they go.
    struct LifecyclePlan: Sendable {
        var resell: Range<Int>
        var returned: Range<Int>
        var retired: Range<Int>
        var customer: AccountID
        /// The resale's receiver (a second standalone customer).
        var customer2: AccountID
        /// The return's receiver: the account that sent the devices to the customer.
        var sender: AccountID
    }

    struct State: Sendable {
        // control -> loop
        var bundles: [Commands.DeviceBundle]?
        var approvals: [Approval] = []
        var customer: AccountID?
        var approvedCount = 0
        var failure: String?
        var finished = false
        var steps: [TransferReport.Step] = []
        var outcomes: [String: Int] = [:]
        var appliedOnPlatform = 0
        /// Devices the customer's operator has received `config.applied` for.
        var appliedEvents = 0
        /// Devices the customer's operator has received `device.retired` for.
        var retiredEvents = 0
        var problems: [String] = []
        var accounts: [String: String] = [:]
        var runID = ""
        var lifecycle: LifecyclePlan?
        /// Per lifecycle stage: devices approved or retired.
        var decided: [String: Int] = [:]
        /// Devices (indices) about to be retired; the loop arms them (`retiringArmed`: through
        /// which index) to stay off once the broker cuts them off, before the command is sent.
        var retiring: Range<Int> = 0..<0
        var retiringArmed = 0
        // loop -> control
        var connected = 0
        /// Per stage of `approvals`: devices whose agent applied the receiver's configuration.
        var appliedByStage: [String: Int] = [:]
        var stopRequested = false
        var deadlinePassed = false
    }

    private let state = Mutex(State())
    /// Signalled after every change, so the loop thread waits for one instead of sleeping.
    private let changed = NSCondition()

    /// Tasks awaiting the next change (`nextChange`), by token, and the change count.
    private struct Waiters {
        var generation: UInt64 = 0
        var next: UInt64 = 0
        var waiting: [UInt64: CheckedContinuation<Void, Never>] = [:]
    }
    private let waiters = Mutex(Waiters())

    func with<T: Sendable>(_ body: (inout State) -> T) -> T {
        let result = state.withLock { body(&$0) }
        changed.lock(); changed.broadcast(); changed.unlock()
        let woken = waiters.withLock { w -> [CheckedContinuation<Void, Never>] in
            w.generation &+= 1
            defer { w.waiting = [:] }
            return Array(w.waiting.values)
        }
        for c in woken { c.resume() }
        return result
    }

    /// Reads the board without counting as a change (a read through `with` would wake every
    /// waiter, and a waiter that reads while it waits would never sleep).
    func read<T: Sendable>(_ body: (State) -> T) -> T { state.withLock { body($0) } }

    /// The board and its change count, read together for `nextChange(after:within:)`.
    func snapshot() -> (State, UInt64) {
        waiters.withLock { w in (state.withLock { $0 }, w.generation) }
    }

    /// Returns at the first change after `generation` (at once if there was one), or after
    /// `timeout` (the control task's progress tick), whichever comes first.
    func nextChange(after generation: UInt64, within timeout: Duration) async {
        let token = waiters.withLock { w -> UInt64 in w.next &+= 1; return w.next }
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            self?.waiters.withLock { $0.waiting.removeValue(forKey: token) }?.resume()
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = waiters.withLock { w -> Bool in
                if w.generation != generation { return true }
                w.waiting[token] = c
                return false
            }
            if now { c.resume() }
        }
        timer.cancel()
    }

    /// Returns at the next change of the board, or after `timeout` seconds (the loop's tick).
    func waitForChange(timeout: Double) {
        changed.lock()
        _ = changed.wait(until: Date().addingTimeInterval(timeout))
        changed.unlock()
    }
}

/// Collects the accounts' events: transfer events are printed at once (each once, though both
/// parties receive them); device events are counted and printed as one line per account per second.
final class EventDigest: Sendable {
    private struct State {
        var counts: [String: [String: Int]] = [:]
        var seen: Set<String> = []
        var parties: [String: (from: String, to: String)] = [:]
        var ackNanos: [DeviceID: UInt64] = [:]
        var retiredNanos: [DeviceID: UInt64] = [:]
    }
    private let state = Mutex(State())

    /// Records one event; returns a line to print now, if any.
    func take(_ received: ReceivedEvent, in account: AccountID) -> String? {
        let now = System.monotonicNanos()
        guard let e = received.event else { return "  event  \(account)  unreadable event on \(received.topic): \(received.problem ?? "")" }
        return state.withLock { s -> String? in
            switch e.type {
            case .transferRequested, .transferApproved, .transferRejected, .transferCancelled, .transferExpired, .transferCompleted, .commandFailed:
                let count = e.details["count"]?.intValue
                let key = "\(e.type.rawValue)|\(e.transferId ?? "")|\(count ?? -1)|\(e.at.timeIntervalSince1970)|\(e.type == .commandFailed ? e.account.rawValue : "")"
                guard s.seen.insert(key).inserted else { return nil }
                if e.type == .commandFailed {
                    return "  event  command.failed  \(e.account)  \(e.details["command"]?.stringValue ?? "?"): \(e.details["message"]?.stringValue ?? "")"
                }
                let tid = e.transferId ?? "?"
                if e.type == .transferRequested, let f = e.details["from"]?.stringValue, let t = e.details["to"]?.stringValue {
                    s.parties[tid] = (f, t)
                }
                let p = s.parties[tid].map { "\($0.from) -> \($0.to)" } ?? tid
                var line = "  event  \(e.type.rawValue)  \(p)"
                if let count { line += "  \(count) devices" }
                if let a = e.details["action"]?.stringValue { line += " (\(a))" }
                if let r = e.details["reason"]?.stringValue { line += " (reason: \(r))" }
                if let st = e.details["status"]?.stringValue { line += " (status \(st))" }
                return line
            default:
                if e.type == .configApplied, let d = e.deviceId, s.ackNanos[d] == nil { s.ackNanos[d] = now }
                if e.type == .deviceRetired, let d = e.deviceId, s.retiredNanos[d] == nil { s.retiredNanos[d] = now }
                s.counts[account.rawValue, default: [:]][e.type.rawValue, default: 0] += 1
                return nil
            }
        }
    }

    /// One line per account with the device events counted since the last flush.
    func flush() -> [String] {
        state.withLock { s in
            defer { s.counts = [:] }
            return s.counts.sorted { $0.key < $1.key }.map { account, types in
                "  event  \(account)  " + types.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: "  ")
            }
        }
    }

    /// When the customer's operator received `config.applied` per device (monotonic ns).
    var ackNanos: [DeviceID: UInt64] { state.withLock { $0.ackNanos } }
    /// When an operator received `device.retired` per device (monotonic ns).
    var retiredNanos: [DeviceID: UInt64] { state.withLock { $0.retiredNanos } }
    var retiredDevices: Int { state.withLock { $0.retiredNanos.count } }
    /// How many devices have a `config.applied` so far.
    var appliedDevices: Int { state.withLock { $0.ackNanos.count } }
}

/// Sessions to close at the end, whatever happened.
final class SessionBag: Sendable {
    private let sessions = Mutex<[OperatorSession]>([])
    func add(_ s: OperatorSession) { sessions.withLock { $0.append(s) } }
    func closeAll() async {
        for s in sessions.withLock({ $0 }) { await s.close() }
    }
}

enum TransferAbort: Error, CustomStringConvertible {
    case interrupted
    case deadline(String)
    case failed(String)
    var description: String {
        switch self {
        case .interrupted: return "interrupted before the story ended"
        case .deadline(let what): return "--duration ended while \(what)"
        case .failed(let m): return m
        }
    }
}

/// The control-plane side of `fleetsim transfer`: drives escrowd through OperatorSession while the
/// engine loop runs the fleet, and checks the outcome. Runs as one task.
struct TransferControl: Sendable {
    let options: FleetOptions
    let board: TransferBoard
    let console: Console
    let digest: EventDigest
    /// The run's start (monotonic ns): steps are recorded as offsets from it.
    let startNanos: UInt64
    let bag = SessionBag()
    /// Devices per `device.provision` and per `transfer.approve` / `transfer.reject` batch.
    static let batch = 1000

    func run() async {
        do { try await story() } catch {
            let text = (error as? OperatorError)?.description ?? (error as? TransferAbort)?.description ?? "\(error)"
            board.with { $0.failure = text }
        }
        await bag.closeAll()
        board.with { $0.finished = true }
    }

    private func say(_ s: String) { console.line(s) }

    /// Runs one step: prints `title`, records its duration under `name`.
    private func timed<T>(_ name: String, _ title: String, _ body: () async throws -> T) async throws -> T {
        let start = System.monotonicNanos()
        say("== \(name). \(title)")
        let r = try await body()
        let secs = Double(System.monotonicNanos() - start) / 1e9
        let from = (Double(start - startNanos) / 1e6).rounded() / 1000
        board.with { $0.steps.append(.init(name: name, seconds: (secs * 100).rounded() / 100, start: from)) }
        return r
    }

    private func checkpoint(_ what: String) throws {
        let (stop, late) = board.read { ($0.stopRequested, $0.deadlinePassed) }
        if stop { throw TransferAbort.interrupted }
        if late { throw TransferAbort.deadline(what) }
    }

    /// Waits until `done` holds, woken by each change of the board; prints `progress` once a second.
    /// With `bound` (what the platform reports by events: an event the broker lost is not waited
    /// for forever) it returns after that long whether or not `done` holds.
    private func wait(_ what: String, within bound: Duration? = nil, progress: ((TransferBoard.State) -> String)? = nil,
                      done: (TransferBoard.State) -> Bool) async throws {
        let end = bound.map { ContinuousClock.now + $0 }
        var last = ContinuousClock.now
        while end.map({ ContinuousClock.now < $0 }) ?? true {
            let (snapshot, generation) = board.snapshot()
            if done(snapshot) { progress.map { say($0(snapshot)) }; return }
            try checkpoint(what)
            if let progress, ContinuousClock.now - last >= .seconds(1) { last = .now; say(progress(snapshot)) }
            await board.nextChange(after: generation, within: .seconds(1))
        }
    }

    private func story() async throws {
        let o = options
        let run = o.runID ?? OperatorSession.randomToken(6)
        let timeout: Duration = .seconds(max(60, o.devices / 50))
        board.with { $0.runID = run }

        // The platform administrator, from escrowd's admin.conf.
        let path = o.adminConfig ?? ""
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw TransferAbort.failed("--admin-config \(path) cannot be read") }
        let conf: [String: String]
        do { conf = try KeyValueFile.parse(text) } catch { throw TransferAbort.failed("--admin-config \(path): \(error.message)") }
        guard let broker = conf["broker"], let user = conf["user"], let password = conf["password"] else {
            throw TransferAbort.failed("--admin-config \(path) needs broker, user and password")
        }
        let platform = AccountID(conf["account"] ?? "platform") ?? .platform
        let caFile = conf["ca"]

        let oem = AccountID("oem-\(run)")!, reseller = AccountID("reseller-\(run)")!, customer = AccountID("acme-\(run)")!
        let viaReseller = o.route == .reseller
        var roles: [(role: String, id: AccountID, kind: Account.Kind)] = [("oem", oem, .provisioner)]
        if viaReseller { roles.append(("reseller", reseller, .reseller)) }
        roles.append(("customer", customer, .customer))
        let customer2 = AccountID("shop-\(run)")!
        if o.hasLifecycle { roles.append(("customer2", customer2, .customer)) }
        board.with { b in for r in roles { b.accounts[r.role] = r.id.rawValue }; b.customer = customer }

        // a. Accounts, operators, event subscriptions.
        var sessions: [String: OperatorSession] = [:]
        try await timed("a", "accounts and operators (run \(run))") {
            say("  connecting to \(broker) as \(user)")
            let admin = try await OperatorSession.connect(.init(broker: broker, username: user, password: password, account: platform, timeout: timeout, caFile: caFile))
            bag.add(admin)
            for r in roles {
                _ = try await admin.call(.accountCreate, Commands.AccountCreate(id: r.id, name: "\(r.role.capitalized) \(run)", kind: r.kind))
                let username = "op-\(r.role)-\(run)", secret = OperatorSession.randomToken(24)
                _ = try await admin.call(.operatorCreate, Commands.OperatorCreate(username: username, password: secret, account: r.id))
                say("  account \(r.id) (\(r.kind.rawValue)\(r.kind == .customer ? ", standalone" : "")), operator \(username)")
                let session = try await login(broker: broker, user: username, password: secret, account: r.id, timeout: timeout, caFile: caFile)
                sessions[r.role] = session
                let events = try await session.events(in: r.id)
                let digest = self.digest, console = self.console, account = r.id, board = self.board, isCustomer = r.role == "customer"
                Task {
                    for await e in events {
                        if let line = digest.take(e, in: account) { console.line(line) }
                        if isCustomer, e.event?.type == .configApplied {
                            let n = digest.appliedDevices
                            board.with { $0.appliedEvents = n }
                        }
                        if isCustomer, e.event?.type == .deviceRetired {
                            let n = digest.retiredDevices
                            board.with { $0.retiredEvents = n }
                        }
                    }
                }
            }
        }
        let oemS = sessions["oem"]!, customerS = sessions["customer"]!
        let sender = viaReseller ? sessions["reseller"]! : oemS
        let holder = viaReseller ? reseller : oem
        try checkpoint("creating accounts")

        // b. Provisioning with identities, in batches.
        let n = o.devices
        let bundles: [Commands.DeviceBundle] = try await timed("b", "provision \(n) devices in \(oem)") {
            var all: [Commands.DeviceBundle] = []
            var start = 1
            while all.count < n {
                try checkpoint("provisioning")
                let count = min(Self.batch, n - all.count)
                let r = try await oemS.call(.deviceProvision, Commands.DeviceProvision(prefix: "sim-\(run)-", count: count, start: start, issueIdentity: true),
                                            as: Commands.DeviceProvisionResult.self)
                guard r.refused.isEmpty, r.bundles.count == count else {
                    throw TransferAbort.failed("device.provision returned \(r.bundles.count) bundles for \(count) devices; refused: \(r.refused.first?.reason ?? "-")")
                }
                all += r.bundles
                start += count
                say("  provisioned \(all.count)/\(n)")
            }
            return all
        }
        let ids = bundles.map(\.deviceId)
        board.with { $0.bundles = bundles }

        // c. The fleet connects in escrow mode (the engine loop starts it once it sees the bundles).
        let need = Int((Double(n) * 0.999).rounded(.up))
        try await timed("c", "connect \(n) devices in escrow mode\(o.brokerGiven && !o.brokerTLS ? "" : " (mTLS)")") {
            try await wait("connecting the fleet", progress: { "  connected \($0.connected)/\(n) (need \(need))" }, done: { $0.connected >= need })
        }

        // d. OEM -> reseller, approved with hold.
        if viaReseller {
            try await timed("d", "transfer \(oem) -> \(reseller), approve with hold") {
                let t = try await oemS.call(.transferRequest, Commands.TransferRequest(to: reseller, deviceIds: ids, note: "fleetsim \(run): OEM to reseller"),
                                            as: Commands.TransferResult.self)
                say("  requested \(t.transfer.id): \(t.decided.count) devices, \(t.refused.count) refused")
                let a = try await sessions["reseller"]!.call(.transferApprove, Commands.TransferApprove(transferId: t.transfer.id, action: .hold),
                                                             as: Commands.TransferResult.self)
                say("  \(reseller) approved \(a.decided.count) with hold (status \(a.transfer.status.rawValue))")
                guard a.decided.count == n else { throw TransferAbort.failed("the reseller could hold only \(a.decided.count) of \(n) devices") }
            }
            try checkpoint("the reseller transfer")
        }

        // e. -> customer: approve a share (activate), reject a share, leave the rest pending.
        let approveN = min(n, Int((Double(n) * o.approveShare).rounded()))
        let rejectN = min(n - approveN, Int((Double(n) * o.rejectShare).rounded()))
        let pendingN = n - approveN - rejectN
        let transferID: String = try await timed("e", "transfer \(holder) -> \(customer): activate \(approveN), reject \(rejectN), leave \(pendingN) pending") {
            let t = try await sender.call(.transferRequest, Commands.TransferRequest(to: customer, deviceIds: ids, note: "fleetsim \(run): to the customer"),
                                          as: Commands.TransferResult.self)
            say("  requested \(t.transfer.id): \(t.decided.count) devices")
            var lo = 0
            while lo < approveN {
                let hi = min(approveN, lo + Self.batch)
                let sent = System.monotonicNanos()
                let a = try await customerS.call(.transferApprove, Commands.TransferApprove(transferId: t.transfer.id, deviceIds: Array(ids[lo..<hi]), action: .activate),
                                                 as: Commands.TransferResult.self)
                let reply = System.monotonicNanos()
                board.with { $0.approvals.append(.init(range: lo..<hi, sentNanos: sent, replyNanos: reply, owner: customer)); $0.approvedCount = hi }
                say(String(format: "  %@ activated %d (%d..%d), reply after %.0f ms%@", customer.rawValue, a.decided.count, lo, hi - 1,
                           Double(reply - sent) / 1e6, a.refused.isEmpty ? "" : ", \(a.refused.count) refused: \(a.refused[0].reason)"))
                lo = hi
            }
            while lo < approveN + rejectN {
                let hi = min(approveN + rejectN, lo + Self.batch)
                let r = try await customerS.call(.transferReject, Commands.TransferReject(transferId: t.transfer.id, deviceIds: Array(ids[lo..<hi]),
                                                                                          reason: "fleetsim: not ordered"), as: Commands.TransferResult.self)
                say("  \(customer) rejected \(r.decided.count) (\(lo)..\(hi - 1))")
                lo = hi
            }
            return t.transfer.id
        }

        // f. Every approved device applies its configuration.
        try await timed("f", "wait for \(approveN) configurations applied") {
            try await wait("waiting for configurations", progress: { "  applied \($0.appliedByStage["activate"] ?? 0)/\(approveN) (device side)" },
                            done: { ($0.appliedByStage["activate"] ?? 0) >= approveN })
            // The platform's view: escrowd commits acks in batches and then emits config.applied,
            // so wait for those events (bounded: 20 s, an event the broker lost is not waited for
            // forever), then ask config.status once.
            try await wait("waiting for config.applied events", within: .seconds(20)) { $0.appliedEvents >= approveN }
            let st = try await customerS.call(.configStatus, Commands.ConfigStatus(), as: Commands.ConfigStatusResult.self)
            let applied = st.devices.filter { $0.state == .applied }.count
            say("  config.status in \(customer): \(applied)/\(approveN) applied")
            board.with { $0.appliedOnPlatform = applied }
        }

        // g. Close the request and verify on the platform's side (the device side is checked by the loop).
        try await timed("g", "cancel the pending rest and verify") {
            var problems: [String] = []
            if pendingN > 0 {
                let c = try await sender.call(.transferCancel, Commands.TransferRef(transferId: transferID), as: Commands.TransferResult.self)
                say("  \(holder) cancelled \(c.decided.count) pending devices of \(transferID)")
            }
            let show = try await sender.call(.transferShow, Commands.TransferRef(transferId: transferID), as: TransferView.self)
            let outcomes = ["activated": show.counts["approved"] ?? 0, "rejected": show.counts["rejected"] ?? 0, "cancelled": show.counts["cancelled"] ?? 0]
            board.with { $0.outcomes = outcomes }
            if outcomes != ["activated": approveN, "rejected": rejectN, "cancelled": pendingN] {
                problems.append("transfer \(transferID) counts \(show.counts) differ from activated \(approveN), rejected \(rejectN), cancelled \(pendingN)")
            }
            // `mode` is the last status or heartbeat the platform processed, which may trail the
            // acks (measured at 10,000 devices: up to one heartbeat interval). Wait up to 90 s.
            let expected = Set(ids[0..<approveN])
            var active: [DeviceView] = []
            var notNormal = 0
            let settle = ContinuousClock.now + .seconds(90)
            var lastSaid = ContinuousClock.now
            while true {
                active = try await listAll(customerS, state: .active)
                notNormal = active.filter { $0.mode != .normal }.count
                if notNormal == 0 && Set(active.map(\.id)) == expected { break }
                if ContinuousClock.now >= settle { break }
                if ContinuousClock.now - lastSaid >= .seconds(5) {
                    lastSaid = .now
                    say("  device.list: \(active.count - notNormal)/\(approveN) active devices report normal mode (waiting for statuses/heartbeats)")
                }
                try checkpoint("verifying device.list")
                try await Task.sleep(for: .seconds(1))
            }
            if Set(active.map(\.id)) != expected {
                problems.append("\(customer) lists \(active.count) active devices, expected the \(approveN) approved ones")
            }
            if notNormal > 0 { problems.append("\(notNormal) active devices of \(customer) do not report normal mode (device.list)") }
            let escrow = try await listAll(sender, state: .escrow)
            if Set(escrow.map(\.id)) != Set(ids[approveN...]) {
                problems.append("\(holder) holds \(escrow.count) escrow devices, expected the \(n - approveN) not activated")
            }
            let applied = board.read { $0.appliedOnPlatform }
            if applied < approveN { problems.append("config.status: only \(applied) of \(approveN) approved devices applied") }
            board.with { $0.problems += problems }
            say(problems.isEmpty ? "  platform view verified: \(approveN) active in \(customer), \(n - approveN) in escrow with \(holder)" : "  platform view: \(problems.count) problem(s)")
        }
        guard o.hasLifecycle else { return }
        try checkpoint("verifying the transfer")

        // h-k. Life after activation, on disjoint slices of the activated devices.
        let resellN = Int((Double(n) * o.resellShare).rounded()), returnN = Int((Double(n) * o.returnShare).rounded())
        let retireN = min(approveN - resellN - returnN, Int((Double(n) * o.retireShare).rounded()))
        let plan = TransferBoard.LifecyclePlan(resell: 0..<resellN, returned: resellN..<(resellN + returnN),
                                               retired: (resellN + returnN)..<(resellN + returnN + retireN),
                                               customer: customer, customer2: customer2, sender: holder)
        board.with { $0.lifecycle = plan }
        if !plan.resell.isEmpty {
            try await lifecycleTransfer("h", stage: "resell", ids: Array(ids[plan.resell]), first: plan.resell.lowerBound, from: customerS, fromID: customer,
                                        to: sessions["customer2"]!, toID: customer2, action: .activate, mode: .normal)
        }
        if !plan.returned.isEmpty {
            try await lifecycleTransfer("i", stage: "return", ids: Array(ids[plan.returned]), first: plan.returned.lowerBound, from: customerS, fromID: customer,
                                        to: sender, toID: holder, action: .hold, mode: .escrow)
        }
        if !plan.retired.isEmpty {
            try await timed("j", "retire: \(customer) retires \(retireN) devices") {
                var retired = 0
                board.with { $0.retiring = plan.retired }
                try await wait("arming the devices to retire", progress: { _ in "  \(retireN) devices will stay off once the broker cuts them off" },
                               done: { $0.retiringArmed >= plan.retired.upperBound })
                var lo = plan.retired.lowerBound
                while lo < plan.retired.upperBound {
                    try checkpoint("retiring")
                    let hi = min(plan.retired.upperBound, lo + Self.batch)
                    let sent = System.monotonicNanos()
                    let r = try await customerS.call(.deviceRetire, Commands.DeviceRetire(deviceIds: Array(ids[lo..<hi]), reason: "fleetsim \(run): end of life"),
                                                     as: Commands.DeviceRetireResult.self)
                    let reply = System.monotonicNanos()
                    retired += r.retired.count
                    board.with { $0.approvals.append(.init(range: lo..<hi, sentNanos: sent, replyNanos: reply, stage: "retire", owner: nil)); $0.decided["retire"] = retired }
                    say(String(format: "  retired %d (%d..%d), %d certificates revoked, reply after %.0f ms%@", r.retired.count, lo, hi - 1, r.revokedCertificates,
                               Double(reply - sent) / 1e6, r.refused.isEmpty ? "" : ", \(r.refused.count) refused: \(r.refused[0].reason)"))
                    lo = hi
                }
                // The retired events, then the broker closing each retired device's connection at
                // the revocation reload (each bounded, like config.applied).
                try await wait("waiting for device.retired events", within: .seconds(20)) { $0.retiredEvents >= retired }
                say("  device.retired events: \(board.read { $0.retiredEvents })/\(retired)")
                try await wait("waiting for the broker to cut off the retired devices", within: .seconds(20)) { ($0.appliedByStage["retire"] ?? 0) >= retired }
                let cutOff = board.read { $0.appliedByStage["retire"] ?? 0 }
                say("  cut off by the broker: \(cutOff)/\(retired) (they stay off: a retired device is refused from now on)")
                if cutOff < retired { board.with { $0.problems.append("\(retired - cutOff) of \(retired) retired devices were not cut off by the broker within 20 s") } }
            }
        }
        try await timed("k", "verify every account's devices and custody chains") {
            try await verifyLifecycle(plan, ids: ids, approveN: approveN, sessions: sessions, sender: sender)
        }
    }

    /// A resale or a return: `from` offers the devices to `to`, which approves them in batches
    /// with `action`; then waits until every approved device applied the receiver's configuration.
    private func lifecycleTransfer(_ name: String, stage: String, ids: [DeviceID], first: Int, from: OperatorSession, fromID: AccountID,
                                   to: OperatorSession, toID: AccountID, action: ApprovalAction, mode: DeviceMode) async throws {
        try await timed(name, "\(stage): \(fromID) -> \(toID), \(ids.count) devices approved with \(action.rawValue)") {
            let t = try await from.call(.transferRequest, Commands.TransferRequest(to: toID, deviceIds: ids, note: "fleetsim \(board.read { $0.runID }): \(stage)"),
                                        as: Commands.TransferResult.self)
            guard t.refused.isEmpty else {
                throw TransferAbort.failed("\(stage): transfer.request refused \(t.refused.count) of \(ids.count) devices: \(t.refused[0].reason)")
            }
            say("  requested \(t.transfer.id): \(t.decided.count) devices")
            var approved = 0
            var lo = 0
            while lo < ids.count {
                try checkpoint(stage)
                let hi = min(ids.count, lo + Self.batch)
                let sent = System.monotonicNanos()
                let a = try await to.call(.transferApprove, Commands.TransferApprove(transferId: t.transfer.id, deviceIds: Array(ids[lo..<hi]), action: action),
                                          as: Commands.TransferResult.self)
                let reply = System.monotonicNanos()
                approved += a.decided.count
                board.with {
                    $0.approvals.append(.init(range: (first + lo)..<(first + hi), sentNanos: sent, replyNanos: reply, stage: stage, owner: toID, mode: mode))
                    $0.decided[stage] = approved
                }
                say(String(format: "  %@ approved %d with %@, reply after %.0f ms%@", toID.rawValue, a.decided.count, action.rawValue, Double(reply - sent) / 1e6,
                           a.refused.isEmpty ? "" : ", \(a.refused.count) refused: \(a.refused[0].reason)"))
                lo = hi
            }
            try await wait("waiting for the \(stage) configurations", progress: { "  applied \($0.appliedByStage[stage] ?? 0)/\(approved) (\(mode.rawValue) mode, owner \(toID))" },
                           done: { ($0.appliedByStage[stage] ?? 0) >= approved })
        }
    }

    /// Step k: each account lists exactly the devices the lifecycle gave it, and a sample of each
    /// slice's custody chains verifies and ends with the step's decision.
    private func verifyLifecycle(_ plan: TransferBoard.LifecyclePlan, ids: [DeviceID], approveN: Int, sessions: [String: OperatorSession],
                                 sender: OperatorSession) async throws {
        var problems: [String] = []
        let customerS = sessions["customer"]!
        func check(_ what: String, _ listed: [DeviceView], _ expected: [DeviceID]) {
            if Set(listed.map(\.id)) != Set(expected) { problems.append("\(what): \(listed.count) listed, expected \(expected.count)") }
        }
        let taken = Set(plan.resell).union(plan.returned).union(plan.retired)
        check("\(plan.customer) active", try await listAll(customerS, state: .active), (0..<approveN).filter { !taken.contains($0) }.map { ids[$0] })
        check("\(plan.customer) retired", try await listAll(customerS, state: .retired), Array(ids[plan.retired]))
        if !plan.resell.isEmpty { check("\(plan.customer2) active", try await listAll(sessions["customer2"]!, state: .active), Array(ids[plan.resell])) }
        check("\(plan.sender) escrow", try await listAll(sender, state: .escrow), Array(ids[approveN...]) + Array(ids[plan.returned]))
        // Custody: up to 5 devices per slice, shown by their holder, verified here as well.
        let slices: [(Range<Int>, OperatorSession?, CustodyEntry.Decision, AccountID)] = [
            (plan.resell, sessions["customer2"], .activated, plan.customer2), (plan.returned, sender, .held, plan.sender),
            (plan.retired, customerS, .retired, plan.customer)]
        var chains = 0
        for (range, session, decision, holder) in slices where !range.isEmpty {
            guard let session else { continue }
            for i in range.prefix(5) {
                let shown = try await session.call(.deviceShow, Commands.DeviceShow(deviceId: ids[i]), as: Commands.DeviceShowResult.self)
                chains += 1
                let local = CustodyChain.verify(shown.custody)
                if !local.valid || !shown.verification.valid {
                    problems.append("custody of \(ids[i]) does not verify: \(local.problem ?? shown.verification.problem ?? "?")")
                } else if shown.custody.last?.decision != decision || shown.custody.last?.holder != holder {
                    problems.append("custody of \(ids[i]) ends with \(shown.custody.last.map { "\($0.decision.rawValue) by \($0.holder)" } ?? "nothing"), expected \(decision.rawValue) by \(holder)")
                }
            }
        }
        board.with { $0.problems += problems }
        say(problems.isEmpty ? "  lifecycle verified: every account lists its devices; \(chains) custody chains verify" : "  lifecycle: \(problems.count) problem(s)")
    }

    private func listAll(_ s: OperatorSession, state: DeviceView.State) async throws -> [DeviceView] {
        var out: [DeviceView] = []
        while true {
            let page = try await s.call(.deviceList, Commands.DeviceList(state: state, limit: 1000, offset: out.count), as: Commands.DeviceListResult.self)
            out += page.devices
            if page.devices.isEmpty || out.count >= page.total { return out }
        }
    }

    /// Logs in as a freshly created operator. Behind the broker escrowd manages the login is in force
    /// at `operator.create`'s reply (the first attempt succeeds); an external broker is only
    /// signalled, so a refused attempt is retried briefly.
    private func login(broker: String, user: String, password: String, account: AccountID, timeout: Duration, caFile: String?) async throws -> OperatorSession {
        var last: (any Error)?
        for _ in 0..<50 {
            do {
                let s = try await OperatorSession.connect(.init(broker: broker, username: user, password: password, account: account, timeout: timeout, caFile: caFile))
                bag.add(s)
                return s
            } catch {
                last = error
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        throw TransferAbort.failed("operator \(user) cannot log in: \(last.map { "\($0)" } ?? "?")")
    }
}
