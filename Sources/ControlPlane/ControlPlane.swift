import Foundation
import EscrowCore
import MQTT
import Storage
import POSIX

/// `escrowd`'s service: consumes device and operator messages, keeps the ledger, publishes
/// replies, events and configurations. One actor owns the ledger, so every change is serial.
public actor ControlPlane {
    public struct Options: Sendable {
        /// SQLite database file.
        public var databasePath: String
        /// Re-publish unacknowledged configurations this often (also at start-up and after a reconnect).
        public var reconcileInterval: Duration = .seconds(30)
        /// Persist devices' last-seen times at least this often.
        public var lastSeenFlushInterval: Duration = .seconds(5)
        /// Commit batched config acks and presence this often.
        public var ackFlushInterval: Duration = .milliseconds(100)
        /// Look for expired transfer requests this often.
        public var expirySweepInterval: Duration = .seconds(1)
        /// Use `$share/escrowd/...` for device and command topics so several instances split the load.
        public var sharedSubscriptions = true
        /// An active device still on its escrow identity this long after activation (it never came
        /// back to take up its owner-issued one) has its escrow certificate revoked: its provisioner
        /// held that key. Checked with each reconciliation. The device then needs a new bundle.
        public var escrowGrace: Duration = .seconds(30 * 86_400)
        /// Stored events (`events.since`) older than this are forgotten; checked hourly and at start-up.
        public var eventRetention: Duration = .seconds(30 * 86_400)
        public init(databasePath: String) { self.databasePath = databasePath }
    }

    /// What the broker must know about accounts and operators (for ACL and password files).
    public struct AccessSnapshot: Sendable {
        public var accounts: [Account]
        public var operators: [(username: String, account: AccountID, passwordHash: String)]
        public var authoritiesList: [(account: AccountID, certificate: String, privateKey: String)]
        /// Revoked certificate serials (lowercase hex) per issuing account: the broker's CRLs.
        public var revokedSerials: [AccountID: [String]] = [:]
    }

    public struct Counters: Sendable, Equatable {
        public var heartbeats = 0
        public var commands = 0
        public var commandErrors = 0
        public var deviceErrors = 0
        public var acks = 0
        public var configsPublished = 0
        /// Statuses (mostly wills) from an older connection than one already seen, ignored.
        public var staleStatuses = 0
    }

    let options: Options
    let client: MQTTClient
    let log: Log
    let ledger: Ledger
    var processor: CommandProcessor
    let onAccessChanged: @Sendable (AccessSnapshot) -> Void
    private var tally = Counters()
    let latencies = LatencyRecorder()
    var onlineCount: Int { online.values.filter { $0 }.count }
    public var counters: Counters {
        var c = tally
        c.heartbeats = ingest.heartbeats
        c.deviceErrors += ingest.errors
        return c
    }

    /// The ledger's thread: every method of this actor (and so every SQLite call, fsync and
    /// signature) runs on it, never on the cooperative pool (the executor rule).
    private nonisolated let executor = ThreadExecutor(name: "escrowd-ledger")
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    // Soft state, committed in batches.
    private let ingest = HeartbeatIngest()
    private var presence: [DeviceID: DeviceStatus] = [:]
    private var online: [DeviceID: Bool] = [:]
    /// The newest connection session seen per device (`DeviceStatus.session`).
    private var sessions: [DeviceID: Int] = [:]
    private var pendingAcks: [(DeviceID, ConfigAck)] = []
    /// device.online / device.offline events, committed (numbered) with the next presence flush.
    private var pendingPresenceEvents: [Event] = []
    private let outbox = OutboxPublisher()
    private var tasks: [Task<Void, Never>] = []

    public init(options: Options, client: MQTTClient, credentials: (any Credentials)? = nil, log: Log,
                onAccessChanged: @escaping @Sendable (AccessSnapshot) -> Void = { _ in }) throws {
        self.options = options
        self.client = client
        self.log = log
        self.ledger = try Ledger(path: options.databasePath)
        self.processor = CommandProcessor(ledger: ledger, credentials: credentials, now: { Date() }, newID: {
            String(UUID().uuidString.lowercased().prefix(13))
        })
        self.onAccessChanged = onAccessChanged
    }

    /// Fault injection for tests and drills: makes the database refuse writes as a read-only
    /// disk does (SQLITE_READONLY), or lifts that. A tmpfs cannot be remounted read-only while
    /// escrowd holds its files open, so this is how the read-only promise is exercised.
    /// Where this actor's methods run: true on the ledger thread (the executor rule's test).
    public func runsOnBlockingThread() -> Bool { BlockingWork.mayBlockHere }

    public func injectReadOnlyStorage(_ on: Bool) throws {
        try ledger.db.execute("PRAGMA query_only = \(on ? 1 : 0)")
    }

    /// The current access snapshot (what the broker's ACL and password files must say).
    public func accessSnapshot() throws -> AccessSnapshot {
        AccessSnapshot(accounts: try ledger.accounts().filter { $0.id != .platform },
                       operators: try ledger.operators().map { ($0.username, $0.account, $0.passwordHash) },
                       authoritiesList: try ledger.authorities(), revokedSerials: try ledger.revokedSerials())
    }

    /// Subscribes, recovers what a crash left behind, and processes messages until cancelled.
    public func run() async throws {
        ingest.setKnown(Set(try ledger.allDeviceIDs()))
        sessions = try ledger.presenceSessions()
        // Heartbeats never enter the message stream: parsed and coalesced per device on the MQTT
        // network thread, so memory is bounded by the fleet and commands never wait behind them.
        let hot = self.ingest, hotClient = self.client
        client.consumeInline { [weak hotClient] message in
            guard let d = Topic.heartbeatDevice(message.topic), let hotClient else { return false }
            hot.receive(d, message, client: hotClient)
            return true
        }
        let share = options.sharedSubscriptions
        func f(_ s: String) -> String { share ? TopicFilter.shared(s) : s }
        // Status is retained: a plain subscription re-delivers every device's presence after a restart
        // (shared subscriptions receive no retained messages).
        _ = try await client.subscribe([
            (TopicFilter.allStatus, .atLeastOnce),
            (f(TopicFilter.allHeartbeats), .atMostOnce),
            (f(TopicFilter.allConfigAcks), .atLeastOnce),
            (f(TopicFilter.allCSRs), .atLeastOnce),
            (f(TopicFilter.allCommands), .atLeastOnce),
        ])
        pruneEvents()
        try drainOutbox()
        reconcile()
        log(.info, "serving \(ingest.knownCount) devices; subscribed to device and command topics")
        startTimers()
        let events = client.events
        let eventTask = Task { [weak self] in
            for await e in events {
                guard let self else { return }
                if case .connected = e { await self.reconnected() }
            }
        }
        tasks.append(eventTask)
        // The pump runs off the actor: heartbeats (when a client did not take them inline) are
        // recorded where they arrive, everything else is handed to the actor in order.
        let ingest = self.ingest, client = self.client
        let pump = Task.detached { [weak self] in
            for await message in client.messages {
                if case .deviceHeartbeat(let d)? = Topic(path: message.topic) {
                    ingest.receive(d, message, client: client)
                    continue
                }
                guard let self else { return }
                await self.handle(message)
            }
        }
        await pump.value
        stop()
    }

    public func stop() {
        for t in tasks { t.cancel() }
        tasks.removeAll()
        flushAcks()
        flushLastSeen()
    }

    private func startTimers() {
        func every(_ d: Duration, _ body: @escaping @Sendable (ControlPlane) async -> Void) -> Task<Void, Never> {
            Task { [weak self] in
                // Fixed deadlines, so the period does not stretch by the time each run takes.
                let clock = ContinuousClock()
                var next = clock.now + d
                while !Task.isCancelled {
                    try? await Task.sleep(until: next, clock: clock)
                    guard let self, !Task.isCancelled else { return }
                    await body(self)
                    next += d
                    if next < clock.now { next = clock.now + d }
                }
            }
        }
        tasks.append(every(options.ackFlushInterval) { await $0.flushAcks() })
        tasks.append(every(options.lastSeenFlushInterval) { await $0.flushLastSeen() })
        tasks.append(every(options.reconcileInterval) { await $0.reconcile() })
        tasks.append(every(options.expirySweepInterval) { await $0.sweepExpired() })
        tasks.append(every(.seconds(60)) { await $0.logStats() })
        tasks.append(every(.seconds(3600)) { await $0.pruneEvents() })
        // CRLs carry a validity period: rewrite the broker's access files daily so they never lapse.
        tasks.append(every(.seconds(24 * 3600)) { await $0.refreshAccess() })
    }

    private var lastStats = Counters()

    /// One line a minute for operators reading the log: load and what changed since the last line.
    func logStats() {
        let c = counters
        let online = online.values.filter { $0 }.count
        log(.info, "stats: \(ingest.knownCount) devices, \(online) online; last minute: \(c.heartbeats - lastStats.heartbeats) heartbeats, \(c.commands - lastStats.commands) commands (\(c.commandErrors - lastStats.commandErrors) refused), \(c.acks - lastStats.acks) acks, \(c.configsPublished - lastStats.configsPublished) configurations published, \(c.deviceErrors - lastStats.deviceErrors) device errors")
        lastStats = c
    }

    /// Daily: fresh CRLs for the broker, and replies older than 7 days forgotten.
    func refreshAccess() {
        if let snap = try? accessSnapshot() { onAccessChanged(snap) }
        try? ledger.pruneReplies(olderThan: Date().addingTimeInterval(-7 * 24 * 3600))
    }

    /// Forgets stored events older than `eventRetention`.
    func pruneEvents() {
        pruneEvents(olderThan: Date().addingTimeInterval(-Double(options.eventRetention.components.seconds)))
    }

    /// Forgets stored events older than `cutoff` (their numbers are never handed out again).
    public func pruneEvents(olderThan cutoff: Date) {
        do {
            let n = try ledger.db.transaction { _ in try ledger.pruneEvents(olderThan: cutoff) }
            if n > 0 { log(.info, "forgot \(n) stored events older than \(cutoff.formatted(.iso8601)) (event retention)") }
        } catch {
            log(.warn, "event retention: could not prune stored events: \(error)")
        }
    }

    private func reconnected() {
        log(.info, "broker connection re-established; re-sending unacknowledged events and reconciling configurations")
        // PUBACKs of what was in flight may never come: send every remaining row again (duplicates
        // are allowed and carry the same event id).
        outbox.restart()
        do { try drainOutbox() } catch { log(.warn, "could not publish the outbox: \(error)") }
        reconcile()
    }

    // MARK: dispatch

    /// Handles one incoming message. Never throws: bad input is answered, not fatal.
    public func handle(_ m: MQTTMessage) {
        guard let topic = Topic(path: m.topic) else { return }
        switch topic {
        case .accountCommand(let account, let command): handleCommand(account: account, command: command, message: m)
        case .deviceHeartbeat(let d): ingest.receive(d, m, client: client)
        case .deviceStatus(let d): status(d, m)
        case .deviceConfigAck(let d): ack(d, m)
        case .deviceCSR(let d): csr(d, m)
        case .deviceConfig, .deviceError, .accountReply, .accountEvent: return
        }
    }

    // MARK: commands

    private func handleCommand(account: AccountID, command: String, message m: MQTTMessage) {
        tally.commands += 1
        let clock = ContinuousClock(), start = clock.now
        let code = executeCommand(account: account, command: command, message: m)
        let elapsed = start.duration(to: clock.now)
        latencies.command(command, code: code, seconds: elapsed.seconds)
    }

    /// Decodes, runs and answers one command; returns its result code ("ok" or the contract's error code).
    private func executeCommand(account: AccountID, command: String, message m: MQTTMessage) -> String {
        let envelope: CommandEnvelope
        do {
            envelope = try WireCodec.decode(CommandEnvelope.self, from: m.payload)
        } catch {
            // Answered on the reply topic whenever the request id can still be read.
            return fail(account: account, command: command, requestID: CommandEnvelope.readableRequestID(from: m.payload), error: error, response: m.properties)
        }
        guard Identifier.isValid(envelope.requestId) else {
            return fail(account: account, command: command, requestID: nil,
                        error: WireError(.invalidArgument, "requestId must match [A-Za-z0-9._-]{1,64}"), response: m.properties)
        }
        guard case .object = envelope.args else {
            return fail(account: account, command: command, requestID: envelope.requestId,
                        error: WireError(.malformed, "args: expected a JSON object (use {} for a command without arguments)"), response: m.properties)
        }
        do {
            if let stored = try ledger.storedReply(account: account, requestID: envelope.requestId) {
                log(.debug, "replay of \(account)/\(envelope.requestId): returning the first reply")
                reply(account: account, requestID: envelope.requestId, payload: stored, response: m.properties)
                return "ok"
            }
            var effects = Effects()
            let clock = ContinuousClock(), began = clock.now
            defer { latencies.commit(seconds: began.duration(to: clock.now).seconds) }
            let payload: [UInt8] = try ledger.db.transaction { _ in
                let outcome = try processor.execute(account: account, command: command, args: envelope.args)
                let bytes = WireCodec.encode(CommandReply(requestId: envelope.requestId, result: outcome.result))
                if outcome.mutating {
                    // Device private keys go to the operator once and are never stored: a replayed
                    // provisioning reply lists the bundles without their keys.
                    let stored = command == CommandName.deviceProvision.rawValue
                        ? WireCodec.encode(CommandReply(requestId: envelope.requestId, result: Self.withoutPrivateKeys(outcome.result))) : bytes
                    try ledger.storeReply(account: account, requestID: envelope.requestId, command: command, reply: stored, at: Date())
                    for e in outcome.effects.events { try ledger.appendEvent(e) }
                    for topic in outcome.effects.clearRetained { try ledger.enqueue(Outbound(topic: topic, payload: [], retain: true)) }
                }
                effects = outcome.effects
                return bytes
            }
            // Committed: now the world may hear of it.
            reply(account: account, requestID: envelope.requestId, payload: payload, response: m.properties)
            afterCommit(effects)
            return "ok"
        } catch {
            return fail(account: account, command: command, requestID: envelope.requestId, error: error, response: m.properties)
        }
    }

    private func afterCommit(_ effects: Effects) {
        ingest.addKnown(effects.configs)
        // Access first: a configuration may carry a certificate from an authority the broker must
        // trust, and a retired device's retained topics are cleared once its revocation is on file.
        if effects.accessChanged, let snap = try? accessSnapshot() { onAccessChanged(snap) }
        do { try drainOutbox() } catch {
            // The rows stay: the next drain (another commit, a flush, a restart) publishes them.
            log(.warn, "could not publish the outbox: \(error)")
        }
        publishConfigs(effects.configs)
        ingest.addKnown(effects.provisioned)
    }

    @discardableResult
    private func fail(account: AccountID, command: String, requestID: String?, error: any Error, response: MQTTProperties) -> String {
        tally.commandErrors += 1
        let wire = Self.wireError(error)
        log(.info, "command \(account)/\(command.prefix(64)) failed: \(wire)",
            ["account": account.rawValue, "command": String(command.prefix(64)), "requestId": requestID ?? "", "code": wire.code.rawValue])
        if let requestID {
            reply(account: account, requestID: requestID, payload: WireCodec.encode(CommandReply(requestId: requestID, error: wire)), response: response)
        } else if let rt = response.responseTopic, rt.hasPrefix("accounts/\(account)/reply/") {
            publish(rt, WireCodec.encode(CommandReply(requestId: "", error: wire)), properties: .init(correlationData: response.correlationData))
        }
        let event = Event(type: .commandFailed, at: Date(), account: account, details: [
            "command": .string(String(command.prefix(64))), "requestId": requestID.map(JSONValue.string) ?? .null,
            "code": .string(wire.code.rawValue), "message": .string(wire.message),
        ])
        publish(Outbound.event(event))
        return wire.code.rawValue
    }

    static func withoutPrivateKeys(_ result: JSONValue) -> JSONValue {
        guard case .object(var o) = result, case .array(let bundles)? = o["bundles"] else { return result }
        o["bundles"] = .array(bundles.map { b in
            guard case .object(var bo) = b else { return b }
            bo["privateKey"] = ""
            return .object(bo)
        })
        o["privateKeysOmitted"] = true
        return .object(o)
    }

    static func wireError(_ error: any Error) -> WireError {
        switch error {
        case let e as WireError: return e
        case let e as DomainError: return e.wire
        case let e as SQLiteError where e.isFull || e.isReadOnly || e.isIOError || e.isBusy:
            return WireError(.storageUnavailable, "the control plane cannot write its database (\(e.message)); nothing was changed, retry later")
        case let e as SQLiteError where e.isConstraint:
            return WireError(.conflict, "the change conflicts with existing state; nothing was changed")
        default: return WireError(.internalError, "unexpected error: \(error)")
        }
    }

    private func reply(account: AccountID, requestID: String, payload: [UInt8], response: MQTTProperties) {
        // Always on the fixed reply topic (MQTT 3.1.1 clients); with the correlation data when the
        // MQTT 5 response topic is that same topic, so the reply is published once.
        let standard = Topic.accountReply(account, requestID: requestID).path
        let correlated = response.responseTopic == standard ? MQTTProperties(correlationData: response.correlationData) : MQTTProperties()
        publish(standard, payload, properties: correlated)
        // Another response topic is honoured only inside the same account's reply tree: the
        // control plane is privileged and must not be steered into another account's topics.
        if let rt = response.responseTopic, rt != standard, rt.hasPrefix("accounts/\(account)/reply/") {
            publish(rt, payload, properties: .init(correlationData: response.correlationData))
        }
    }

    // MARK: publishing

    private func publish(_ topic: String, _ payload: [UInt8], retain: Bool = false, properties: MQTTProperties = .init()) {
        do { _ = try client.publishNoWait(topic, payload, qos: .atLeastOnce, retain: retain, properties: properties) } catch {
            log(.warn, "publish to \(topic) failed: \(error)")
        }
    }
    private func publish(_ o: Outbound) { publish(o.topic, o.payload, retain: o.retain) }

    /// Publishes committed outbox rows in order (QoS 1) and deletes each only after the broker's PUBACK
    /// for it and every row before it. What a crash leaves is published at the next start; what a
    /// lost connection leaves is sent again after the reconnect (at-least-once; an event keeps its id).
    private func drainOutbox() throws {
        while outbox.inFlightCount < OutboxPublisher.maxInFlight {
            let batch = try ledger.outbox(after: outbox.sentThrough, limit: min(5_000, OutboxPublisher.maxInFlight - outbox.inFlightCount))
            guard !batch.isEmpty else { return }
            for (id, o) in batch {
                let report = outbox.send(id)
                client.publish(o.topic, o.payload, retain: o.retain) { [weak self] result in
                    if report(result) { Task { await self?.outboxAcknowledged() } }
                }
            }
        }
    }

    /// Deletes the rows acknowledged so far (the contiguous prefix) and sends more.
    private func outboxAcknowledged() {
        let (through, refused) = outbox.collect()
        for (id, error) in refused { log(.warn, "the broker refused outbox row \(id) (\(error)); it stays in the event log") }
        do {
            if let through { try ledger.deleteOutbox(through: through) }
            try drainOutbox()
        } catch {
            log(.warn, "could not publish the outbox: \(error)")
        }
    }

    private func publishConfigs(_ devices: [DeviceID]) {
        for d in devices {
            guard let payload = try? ledger.desiredConfigPayload(d) else { continue }
            publish(Topic.deviceConfig(d).path, payload, retain: true)
            tally.configsPublished += 1
        }
    }

    /// Re-publishes every configuration not yet acknowledged: heals a broker that lost retained messages.
    public func reconcile() {
        do {
            let pending = try ledger.unconverged()
            if !pending.isEmpty { log(.info, "reconciling \(pending.count) unacknowledged configurations") }
            publishConfigs(pending)
        } catch {
            log(.warn, "reconciliation skipped: \(error)")
        }
        revokeLapsedEscrowIdentities()
    }

    /// Revokes the escrow certificates of devices active for longer than `escrowGrace` without
    /// taking up an owner-issued identity (see `Options.escrowGrace`).
    func revokeLapsedEscrowIdentities() {
        let cutoff = Date().addingTimeInterval(-Double(options.escrowGrace.components.seconds))
        do {
            let lapsed = try ledger.db.transaction { _ in try ledger.revokeLapsedEscrowIdentities(activatedBefore: cutoff, at: Date()) }
            guard !lapsed.isEmpty else { return }
            log(.warn, "revoked the escrow certificates of \(lapsed.count) devices active for over \(options.escrowGrace) without their owner-issued identity (\(lapsed.prefix(10).map(\.rawValue).joined(separator: ", "))\(lapsed.count > 10 ? ", ..." : "")); they need new bundles")
            onAccessChanged(try accessSnapshot())
        } catch {
            log(.warn, "escrow-grace check skipped: \(error)")
        }
    }

    public func sweepExpired() {
        do {
            for id in try ledger.expiredOpenTransfers(now: Date()) {
                var effects = Effects()
                try ledger.db.transaction { _ in
                    guard var t = try ledger.transfer(id) else { return }
                    let at = Date()
                    let transition = try t.apply(.expire(now: at), now: at)
                    try processor.apply(transition, of: t, action: nil, profile: nil, at: at, &effects)
                    for e in effects.events { try ledger.appendEvent(e) }
                }
                log(.info, "transfer \(id) expired")
                afterCommit(effects)
            }
        } catch {
            log(.warn, "expiry sweep failed: \(error)")
        }
    }

    // MARK: devices

    private func deviceError(_ d: DeviceID, topic: String, _ e: WireError) {
        tally.deviceErrors += 1
        publish(Topic.deviceError(d).path, WireCodec.encode(DeviceErrorReport(code: e.code, message: e.message, topic: topic)))
    }

    private func status(_ d: DeviceID, _ m: MQTTMessage) {
        guard !m.payload.isEmpty else { return } // a cleared retained status
        do {
            let s = try WireCodec.decode(DeviceStatus.self, from: m.payload, limit: WireCodec.maxDevicePayloadBytes)
            guard ingest.isKnown(d) else { return deviceError(d, topic: m.topic, WireError(.notFound, "device \(d) is not provisioned")) }
            if let session = s.session {
                // A will (or status) from an older connection than one already seen: stale, ignore it.
                if let newest = sessions[d], session < newest { tally.staleStatuses += 1; return }
                sessions[d] = session
            }
            presence[d] = s
            let isOnline = s.state == .online
            if online[d] != isOnline {
                online[d] = isOnline
                if let owner = try? ledger.owner(of: d) {
                    pendingPresenceEvents.append((Event(type: isOnline ? .deviceOnline : .deviceOffline, at: Date(), account: owner, deviceId: d,
                                                 details: ["mode": s.mode.map { .string($0.rawValue) } ?? .null,
                                                           "configVersion": s.configVersion.map { .number(Double($0)) } ?? .null,
                                                           "agentVersion": s.agentVersion.map { .string($0) } ?? .null])))
                    if pendingPresenceEvents.count >= 2_000 { flushAcks() }
                }
            }
        } catch {
            deviceError(d, topic: m.topic, error)
        }
    }

    private func ack(_ d: DeviceID, _ m: MQTTMessage) {
        do {
            let a = try WireCodec.decode(ConfigAck.self, from: m.payload, limit: WireCodec.maxDevicePayloadBytes)
            guard ingest.isKnown(d) else { return deviceError(d, topic: m.topic, WireError(.notFound, "device \(d) is not provisioned")) }
            tally.acks += 1
            pendingAcks.append((d, a))
            if pendingAcks.count >= 2_000 { flushAcks() }
        } catch {
            deviceError(d, topic: m.topic, error)
        }
    }

    private func csr(_ d: DeviceID, _ m: MQTTMessage) {
        do {
            let r = try WireCodec.decode(CertificateRequest.self, from: m.payload, limit: WireCodec.maxDevicePayloadBytes)
            guard ingest.isKnown(d) else { return deviceError(d, topic: m.topic, WireError(.notFound, "device \(d) is not provisioned")) }
            try processor.validateCSR(r.csr, device: d)
            var effects = Effects()
            let rotated = try ledger.db.transaction { _ in
                try ledger.db.execute("UPDATE devices SET csr = ? WHERE id = ?", [.text(r.csr), .text(d.rawValue)])
                let rotated = try processor.rotateActiveIdentity(d, &effects)
                for e in effects.events { try ledger.appendEvent(e) }
                return rotated
            }
            if rotated { log(.info, "device \(d) is active on an identity its owner did not issue: sent it the owner's certificate") }
            afterCommit(effects)
        } catch {
            deviceError(d, topic: m.topic, Self.wireError(error))
        }
    }

    /// Commits batched acks and presence; emits config events after the commit.
    public func flushAcks() {
        guard !pendingAcks.isEmpty || !presence.isEmpty || !pendingPresenceEvents.isEmpty else { return }
        let acks = pendingAcks, statuses = presence, presenceEvents = pendingPresenceEvents
        var events: [Event] = []
        var revoked = false
        let clock = ContinuousClock(), began = clock.now
        defer { latencies.commit(seconds: began.duration(to: clock.now).seconds) }
        do {
            try ledger.db.transaction { _ in
                let at = Date()
                for (d, s) in statuses {
                    try ledger.recordPresence(d, online: s.state == .online, mode: s.mode, agentVersion: s.agentVersion, session: s.session, at: at)
                }
                for (d, a) in acks {
                    guard let r = try ledger.recordAck(d, a) else { continue }
                    if a.result == .applied, try ledger.confirmIdentity(d, appliedVersion: a.version, at: at) {
                        revoked = true
                        log(.info, "device \(d) applied its owner-issued identity; its escrow certificate is revoked")
                    }
                    switch r.state {
                    case .applied: events.append(Event(type: .configApplied, at: at, account: r.owner, deviceId: d, details: ["version": .number(Double(a.version)), "mode": r.mode.map { .string($0.rawValue) } ?? .null]))
                    case .rejected: events.append(Event(type: .configRejected, at: at, account: r.owner, deviceId: d, details: ["version": .number(Double(a.version)), "reason": .string(a.reason ?? "")]))
                    default: break
                    }
                }
                for e in presenceEvents + events { try ledger.appendEvent(e) }
            }
            pendingAcks.removeFirst(acks.count)
            pendingPresenceEvents.removeFirst(presenceEvents.count)
            for d in statuses.keys where presence[d] == statuses[d] { presence[d] = nil }
            // Rewrites the CRLs and reloads the broker: from now on it refuses the escrow certificates.
            if revoked, let snap = try? accessSnapshot() { onAccessChanged(snap) }
            try drainOutbox()
        } catch {
            // Keep the batch: it is retried at the next flush (and devices re-ack on reconciliation).
            log(.warn, "could not commit \(acks.count) acks: \(error)")
        }
    }

    public func flushLastSeen() {
        let batch = ingest.take()
        guard !batch.isEmpty else { return }
        do {
            try ledger.db.transaction { _ in
                for (d, at) in batch { try ledger.recordLastSeen(d, at: at) }
            }
        } catch {
            ingest.restore(batch)
            log(.warn, "could not persist last-seen times: \(error)")
        }
    }
}
