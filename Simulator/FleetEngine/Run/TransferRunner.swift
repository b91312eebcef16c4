import EscrowCore
import Foundation
import Identity

/// `fleetsim transfer`: the engine loop on this thread, `TransferControl` as a task beside it.
///
/// The control task creates the accounts and provisions the devices; once their bundles exist,
/// this loop starts the fleet over mutual TLS and keeps it running, publishing the connected
/// count and how many approved devices applied their configuration. At the end it checks every
/// device's own state and measures the latencies from the devices' clocks.
public final class TransferRunner {
    public let options: FleetOptions
    private let console: Console
    private let intervals: IntervalJSON?

    public init(options: FleetOptions, output: @escaping (String) -> Void, intervals: IntervalJSON? = nil) {
        self.options = options
        console = Console(output)
        self.intervals = intervals
    }

    public func run(stop: StopFlag = StopFlag()) throws(FleetError) -> FleetReport {
        let o = options
        let started = Date()
        let startNanos = System.monotonicNanos()
        let board = TransferBoard()
        let digest = EventDigest()
        let control = TransferControl(options: o, board: board, console: console, digest: digest, startNanos: startNanos)
        Task { await control.run() }
        var nextFlush = startNanos + 1_000_000_000
        func elapsed() -> Double { Double(System.monotonicNanos() - startNanos) / 1e9 }
        func flushEvents() {
            let now = System.monotonicNanos()
            guard now >= nextFlush else { return }
            nextFlush = now + 1_000_000_000
            digest.flush().forEach(console.line)
        }
        func watchLimits() -> String? {
            if stop.isRequested { board.with { $0.stopRequested = true }; return "signal" }
            if elapsed() >= o.duration { board.with { $0.deadlinePassed = true }; return "duration" }
            return nil
        }

        // Until the devices exist.
        var bundles: [Commands.DeviceBundle]?
        var stoppedBy: String?
        while bundles == nil {
            let (b, finished) = board.read { ($0.bundles, $0.finished) }
            bundles = b
            if b != nil || finished { break }
            if let why = watchLimits() { stoppedBy = why; break }
            flushEvents()
            board.waitForChange(timeout: 0.02)
        }
        guard let bundles, stoppedBy == nil else {
            waitFinished(board, grace: 10, tick: flushEvents)
            return failedEarly(board, started: started, stoppedBy: stoppedBy ?? "error", elapsed: elapsed())
        }

        // The fleet: one AgentBehavior and one TLS identity per provisioned device.
        let first = bundles[0]
        var host = o.brokerHost, port = o.brokerPort, tlsOn = o.brokerTLS
        if !o.brokerGiven { (host, port, tlsOn) = try FleetOptions.parseBroker(first.brokerURL) }
        var tls: TLSSettings?
        var identities: [DeviceTLSIdentity] = []
        if tlsOn {
            let ca: String
            if let p = o.tlsCA { ca = try DeviceBundles.read(p) } else { ca = first.brokerCA }
            tls = try TLSSetup.settings(caPEM: ca, host: host, maxHandshakes: o.tlsHandshakes)
            do { identities = try bundles.map { b throws(IdentityError) in try DeviceTLSIdentity(certificatePEM: b.certificate, privateKeyPEM: b.privateKey) } } catch {
                throw .runtime("a provisioned identity cannot be read: \(error.description)")
            }
        }
        var runOptions = o
        (runOptions.brokerHost, runOptions.brokerPort, runOptions.brokerTLS) = (host, port, tlsOn)
        let helper = FleetRunner(options: runOptions, output: console.line)
        let behaviors = bundles.map {
            AgentBehavior(id: $0.deviceId, heartbeatInterval: o.heartbeat, heartbeatJitter: o.heartbeatJitter, heartbeatQoS: o.qos)
        }
        _ = System.raiseFileLimit()
        let baseline = ProcessStats.rssKB()
        let engine: Engine<AgentBehavior>
        do { engine = try Engine(configuration: helper.engineConfiguration(tls: tls), behaviors: behaviors, identities: identities) } catch let e as FleetError {
            board.with { $0.stopRequested = true }; throw e
        } catch {
            board.with { $0.stopRequested = true }; throw .runtime("cannot start the engine: \(error)")
        }
        console.line("  starting \(bundles.count) devices against \(runOptions.brokerURL)\(tls == nil ? "" : " (mutual TLS, \(o.tlsHandshakes) handshakes at once)")")
        let m = engine.metrics
        engine.startAll()
        let t0 = engine.now
        // Samples are timed from the start of the run (like the steps), engine times from t0.
        let offset = elapsed()
        var peak = 0, peakRSS = baseline
        var allConnectedAt: Double?
        let resourceEvery = FleetRunner.resourceInterval(duration: o.duration)
        // Resources are sampled at the engine's start just before the loop (as in FleetRunner).
        var nextSample = o.sampleInterval, nextResource = resourceEvery, nextBoard = 0.0
        func sample(_ t: Double) {
            // Taken before the optional call: `intervals?.write(m.sample(...))` would skip the sample.
            let s = m.sample(t: t + offset, connected: engine.connectedCount)
            intervals?.write(s, start: started, phase: nil)
        }
        var problems: [String] = []
        m.sampleResources(t: offset, connected: 0)
        var approvals: [TransferBoard.Approval] = []
        var applied = AppliedTimes()
        while true {
            engine.poll(maxWait: min(0.05, o.sampleInterval / 2))
            let t = engine.now - t0
            peak = max(peak, engine.connectedCount)
            if allConnectedAt == nil && engine.connectedCount == engine.deviceCount { allConnectedAt = t }
            if t >= nextBoard {
                nextBoard = t + 0.1
                approvals = board.read { $0.approvals }
                let byStage = applied.update(approvals, engine.behaviors, time: engine.time(ofMonotonic:))
                // Devices about to be retired stay off once the broker cuts them off (their
                // reconnects would only be refused); the control task waits for this before retiring.
                let (retiring, armed) = board.read { ($0.retiring, $0.retiringArmed) }
                if retiring.upperBound > armed {
                    for i in max(armed, retiring.lowerBound)..<retiring.upperBound { engine.switchOffAtNextLoss(i) }
                    board.with { $0.retiringArmed = retiring.upperBound }
                }
                let connected = engine.connectedCount
                // Written (and the control task woken) only when something moved.
                let (finished, same) = board.read { ($0.finished, $0.connected == connected && $0.appliedByStage == byStage) }
                if finished { break }
                if !same {
                    board.with { b in b.connected = connected; b.appliedByStage = byStage }
                }
            }
            if stoppedBy == nil, let why = watchLimits() {
                stoppedBy = why
                let until = engine.now + 15 // let the control task close its sessions
                engine.run(timeout: 15) { board.read { $0.finished } || engine.now > until }
                break
            }
            if let fatal = helper.fatalCondition(engine, t: t), board.read({ $0.approvals.isEmpty }) {
                problems.append(fatal)
                board.with { $0.stopRequested = true }
                engine.run(timeout: 15) { board.read { $0.finished } }
                break
            }
            flushEvents()
            if t >= nextSample {
                while nextSample <= t { nextSample += o.sampleInterval }
                sample(t)
            }
            if t >= nextResource {
                nextResource += resourceEvery
                m.sampleResources(t: t + offset, connected: engine.connectedCount)
                peakRSS = max(peakRSS, m.resources.last!.rssKB)
            }
        }
        digest.flush().forEach(console.line)
        let t = engine.now - t0
        sample(t)
        m.sampleResources(t: t + offset, connected: engine.connectedCount)
        peakRSS = max(peakRSS, m.resources.last!.rssKB)
        let final = engine.connectedCount
        let shared = board.read { $0 }
        approvals = shared.approvals

        // Latencies from the devices' clocks, and the device side of the verification.
        _ = applied.update(approvals, engine.behaviors, time: engine.time(ofMonotonic:))
        var approvalToApplied = Histogram(), sentToApplied = Histogram(), pushToAck = Histogram()
        var appliedOnDevices = 0, appliedBeforeReply = 0
        let acks = digest.ackNanos, retiredAt = digest.retiredNanos
        var stageLatency: [String: Histogram] = [:], stageCommand: [String: Histogram] = [:], stageApplied: [String: Int] = [:]
        var cutOffLatency = Histogram(), stageBeforeReply: [String: Int] = [:]
        for (k, a) in approvals.enumerated() {
            let reply = engine.time(ofMonotonic: a.replyNanos), sent = engine.time(ofMonotonic: a.sentNanos)
            if a.stage != "activate" {
                stageCommand[a.stage, default: Histogram()].record(Self.micros(reply - sent))
                for (j, i) in a.range.enumerated() {
                    if a.owner == nil {
                        if let at = retiredAt[engine.behaviors[i].id] { stageLatency[a.stage, default: Histogram()].record(UInt64(at &- a.sentNanos) / 1000) }
                    }
                    let at = applied.times[k][j]
                    guard at >= 0 else { continue }
                    stageApplied[a.stage, default: 0] += 1
                    if at < reply { stageBeforeReply[a.stage, default: 0] += 1 }
                    if a.owner == nil { cutOffLatency.record(Self.micros(at - sent)) } else { stageLatency[a.stage, default: Histogram()].record(Self.micros(at - sent)) }
                }
                continue
            }
            for (j, i) in a.range.enumerated() {
                let b = engine.behaviors[i], at = applied.times[k][j]
                guard at >= 0 else { continue }
                appliedOnDevices += 1
                if at < reply { appliedBeforeReply += 1 }
                approvalToApplied.record(Self.micros(at - reply))
                sentToApplied.record(Self.micros(at - sent))
                if let ack = acks[b.id], b.configReceivedAt >= 0 {
                    pushToAck.record(Self.micros(engine.time(ofMonotonic: ack) - b.configReceivedAt))
                }
            }
        }
        var lifecycle: [TransferReport.LifecycleStage]?
        if let plan = shared.lifecycle {
            let stages: [(String, Range<Int>, AccountID)] = [("resell", plan.resell, plan.customer2), ("return", plan.returned, plan.sender), ("retire", plan.retired, plan.customer)]
            lifecycle = stages.filter { !$0.1.isEmpty && shared.decided[$0.0] != nil }.map { name, range, to in
                let retire = name == "retire"
                return TransferReport.LifecycleStage(
                    name: name, from: plan.customer.rawValue, to: to.rawValue, devices: range.count, decided: shared.decided[name] ?? 0,
                    appliedOnDevices: retire ? 0 : stageApplied[name] ?? 0, commandMs: HistogramSummary(stageCommand[name] ?? Histogram()),
                    latencyMs: HistogramSummary(stageLatency[name] ?? Histogram()),
                    cutOff: retire ? stageApplied[name] ?? 0 : nil, cutOffMs: retire ? HistogramSummary(cutOffLatency) : nil,
                    beforeReply: stageBeforeReply[name] ?? 0)
            }
        }
        var verification = shared.problems
        if let failure = shared.failure { verification.insert(failure, at: 0) }
        if stoppedBy == "signal" && shared.failure == nil { verification.insert("interrupted before the story ended", at: 0) }
        if shared.failure == nil && stoppedBy == nil, let customer = shared.customer {
            let approvedN = shared.approvedCount
            var wrongApproved = 0, wrongRest = 0
            var wrongLifecycle = 0
            let plan = shared.lifecycle
            for i in 0..<engine.deviceCount {
                let s = engine.behaviors[i].machine.state
                if let plan, plan.resell.contains(i) || plan.returned.contains(i) || plan.retired.contains(i) {
                    // A retired device keeps what it had (the broker cuts it off); the others carry their new owner's configuration.
                    let (mode, owner) = plan.resell.contains(i) ? (DeviceMode.normal, plan.customer2) : (.escrow, plan.sender)
                    if !plan.retired.contains(i) && (s.mode != mode || s.owner != owner) { wrongLifecycle += 1 }
                } else if i < approvedN {
                    if s.mode != .normal || s.owner != customer { wrongApproved += 1 }
                } else if s.mode != .escrow {
                    wrongRest += 1
                }
            }
            if wrongApproved > 0 { verification.append("device side: \(wrongApproved) of \(approvedN) approved devices are not in normal mode owned by \(customer)") }
            if wrongRest > 0 { verification.append("device side: \(wrongRest) devices left in escrow report another mode") }
            if wrongLifecycle > 0 { verification.append("device side: \(wrongLifecycle) resold or returned devices do not carry their new owner's configuration") }
            if wrongApproved == 0 && wrongRest == 0 && wrongLifecycle == 0 {
                let moved = plan.map { $0.resell.count + $0.returned.count + $0.retired.count } ?? 0
                console.line("  device side verified: \(approvedN - moved) in normal mode owned by \(customer), \(engine.deviceCount - approvedN) in escrow"
                             + (plan.map { ", \($0.resell.count) resold to \($0.customer2), \($0.returned.count) back in escrow with \($0.sender)" } ?? ""))
            }
        }
        engine.stopAll()
        for (cause, detail) in engine.lastErrorDetail.sorted(by: { $0.key.rawValue < $1.key.rawValue }) where !problems.contains(where: { $0.contains(detail) }) {
            problems.append("last \(cause.rawValue) error: \(detail)")
        }
        let verified = verification.isEmpty
        let transfer = TransferReport(
            runID: shared.runID, accounts: shared.accounts, route: o.route.rawValue, devices: bundles.count, outcomes: shared.outcomes,
            appliedOnDevices: appliedOnDevices, appliedOnPlatform: shared.appliedOnPlatform, verified: verified,
            verificationProblems: verification, steps: shared.steps,
            approvalToAppliedMs: HistogramSummary(approvalToApplied), approveSentToAppliedMs: HistogramSummary(sentToApplied),
            pushToAckMs: HistogramSummary(pushToAck), appliedBeforeReply: appliedBeforeReply, lifecycle: lifecycle)
        var report = FleetReport(
            scenario: .transfer, startedAt: started, elapsedSeconds: (elapsed() * 100).rounded() / 100,
            stoppedBy: verified ? "verification passed" : (stoppedBy == "signal" ? "signal" : "error"),
            settings: helper.settings().merging(["approve": "\(o.approveShare)", "reject": "\(o.rejectShare)", "via": o.route.rawValue,
                                                  "adminConfig": o.adminConfig ?? ""]
                                                 .merging(o.hasLifecycle ? ["resell": "\(o.resellShare)", "return": "\(o.returnShare)", "retire": "\(o.retireShare)"] : [:]) { $1 }) { $1 },
            targetDevices: bundles.count, peakConnected: peak, finalConnected: final,
            timeToAllConnected: allConnectedAt.map { ($0 * 1000).rounded() / 1000 }, stormRecoverySeconds: nil,
            counters: FleetRunner.counters(m), errors: Dictionary(uniqueKeysWithValues: m.errors.map { ($0.key.rawValue, $0.value) }),
            connectLatencyMs: HistogramSummary(m.connectLatency), pubackLatencyMs: HistogramSummary(m.pubackLatency),
            recoveryMs: HistogramSummary(m.recoveryTime), samples: m.samples, resources: m.resources,
            baselineRSSKB: baseline, peakRSSKB: peakRSS,
            rssPerDeviceKB: peak > 0 ? (Double(peakRSS - baseline) / Double(peak) * 100).rounded() / 100 : nil,
            workers: 1, problems: problems, sampleIntervalSeconds: o.sampleInterval)
        report.transfer = transfer
        let samples = m.samples
        func errors(at time: Double) -> Int { samples.last { $0.t <= time }?.errors ?? 0 }
        report.phases = transfer.phases(connect: report.connectLatencyMs) { errors(at: $1) - errors(at: $0) }
        return report
    }

    static func micros(_ seconds: Double) -> UInt64 { UInt64(max(0, seconds) * 1e6) }

    /// Per approval batch and device: the engine time the device applied the receiver's
    /// configuration (its mode, owned by the receiver), -1 until then. Recorded when first seen,
    /// so a later step (a resale after the activation) does not move an earlier step's time.
    /// For a retirement (no owner): the engine time the broker cut the device off (its connection
    /// lost after the command was sent).
    struct AppliedTimes {
        var times: [[Double]] = []
        /// Per batch, how many devices have a time: a full batch is not looked at again.
        var recorded: [Int] = []
        /// Records what is new; returns the applied (or cut-off) count per stage.
        mutating func update(_ approvals: [TransferBoard.Approval], _ behaviors: [AgentBehavior], time: (UInt64) -> Double) -> [String: Int] {
            while times.count < approvals.count { times.append(Array(repeating: -1, count: approvals[times.count].range.count)); recorded.append(0) }
            var byStage: [String: Int] = [:]
            for (k, a) in approvals.enumerated() {
                if recorded[k] < a.range.count {
                    let sent = time(a.sentNanos)
                    for (j, i) in a.range.enumerated() where times[k][j] < 0 {
                        if let owner = a.owner {
                            let b = behaviors[i]
                            if b.appliedAt >= 0, b.machine.state.owner == owner, b.machine.state.mode == a.mode { times[k][j] = b.appliedAt }
                        } else if behaviors[i].disconnectedAt >= sent {
                            times[k][j] = behaviors[i].disconnectedAt
                        }
                        if times[k][j] >= 0 { recorded[k] += 1 }
                    }
                }
                byStage[a.stage, default: 0] += recorded[k]
            }
            return byStage
        }
    }

    private func waitFinished(_ board: TransferBoard, grace: Double, tick: () -> Void) {
        let deadline = Date().addingTimeInterval(grace)
        while !board.read({ $0.finished }) && Date() < deadline { tick(); board.waitForChange(timeout: 0.02) }
    }

    /// The report of a run that ended before any device existed.
    private func failedEarly(_ board: TransferBoard, started: Date, stoppedBy: String, elapsed: Double) -> FleetReport {
        let s = board.read { $0 }
        var problems = s.problems
        if let f = s.failure { problems.insert(f, at: 0) }
        if stoppedBy == "signal" { problems.insert("interrupted before the devices were provisioned", at: 0) }
        if stoppedBy == "duration" && s.failure == nil { problems.insert("--duration ended before the devices were provisioned", at: 0) }
        let empty = HistogramSummary(Histogram())
        var report = FleetReport(
            scenario: .transfer, startedAt: started, elapsedSeconds: (elapsed * 100).rounded() / 100, stoppedBy: stoppedBy == "signal" ? "signal" : "error",
            settings: ["adminConfig": options.adminConfig ?? ""], targetDevices: options.devices, peakConnected: 0, finalConnected: 0,
            timeToAllConnected: nil, stormRecoverySeconds: nil, counters: [:], errors: [:],
            connectLatencyMs: empty, pubackLatencyMs: empty, recoveryMs: empty, samples: [], resources: [],
            baselineRSSKB: ProcessStats.rssKB(), peakRSSKB: ProcessStats.rssKB(), rssPerDeviceKB: nil, workers: 1, problems: [])
        report.transfer = TransferReport(runID: s.runID, accounts: s.accounts, route: options.route.rawValue, devices: options.devices, outcomes: s.outcomes,
                                         appliedOnDevices: 0, appliedOnPlatform: 0, verified: false, verificationProblems: problems, steps: s.steps,
                                         approvalToAppliedMs: empty, approveSentToAppliedMs: empty, pushToAckMs: empty, appliedBeforeReply: 0)
        return report
    }
}
