import Foundation
import EscrowCore
import MQTT
import Storage
import POSIX

/// `escrowd`'s service: consumes device and operator messages, keeps the ledger, publishes
/// replies, events and configurations. One actor owns the ledger, so every change is serial.
public actor ControlPlane {
    public struct Options: Sendable {
        /// Where the ledger lives: an SQLite file (the default) or a PostgreSQL database.
        public var store: StoreLocation
        /// The SQLite file, when the ledger is one.
        public var databasePath: String? { if case .sqlite(let path) = store { path } else { nil } }
        /// The broker confirms each reload on `BrokerNames.reloadTopic` (a managed broker with the
        /// plugin): a command that changed access is answered once its reload is confirmed.
        public var confirmsReloads = false
        /// How long such a reply waits for the confirmation before it is sent anyway (with a warning).
        public var reloadConfirmationTimeout: Duration = .seconds(5)
        /// Re-publish unacknowledged configurations this often (also at start-up and after a reconnect).
        public var reconcileInterval: Duration = .seconds(30)
        /// Persist devices' last-seen times at least this often.
        public var lastSeenFlushInterval: Duration = .seconds(5)
        /// A device counts as offline after this many heartbeat intervals of its configuration
        /// without a word from it (`PresenceLease`), plus `lastSeenFlushInterval` and 1 s.
        public var presenceLeaseIntervals: Double = 3
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
        /// Heartbeats on a plain-TCP connection of their own, read in 64 KiB chunks
        /// (`HeartbeatConnection`). Ignored when the client uses TLS: then they are taken inline from
        /// the main client (`MQTTClient.consumeInline`).
        public var heartbeatConnection = true
        public init(databasePath: String) { store = .sqlite(path: databasePath) }
        public init(store: StoreLocation) { self.store = store }
    }

    /// What the broker must know about accounts and operators (for ACL and password files).
    public struct AccessSnapshot: Sendable {
        public var accounts: [Account]
        public var operators: [(username: String, account: AccountID, passwordHash: String, role: Commands.OperatorRole)]
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
    /// Rewrites the broker's access files and reloads it; returns the reload's token when the
    /// broker confirms reloads (`Options.confirmsReloads`), else nil.
    let onAccessChanged: @Sendable (AccessSnapshot) -> UInt64?
    var tally = Counters()
    let latencies = LatencyRecorder()
    var onlineCount: Int { lease.onlineCount }
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
    let ingest = HeartbeatIngest()
    var presence: [DeviceID: DeviceStatus] = [:]
    /// Who is online: statuses, heartbeats and leases (see `PresenceLease`).
    var lease: PresenceLease
    /// Presence changes a failed flush could not commit: retried first by the next one.
    var unsavedPresence: [PresenceLease.Change] = []
    /// Last-seen times taken at a tick and not yet written (see `flushLastSeen(continuing:)`).
    var lastSeenBacklog: [DeviceID: Date] = [:]
    /// The newest connection session seen per device (`DeviceStatus.session`).
    var sessions: [DeviceID: Int] = [:]
    var pendingAcks: [(DeviceID, ConfigAck)] = []
    /// Replies held until the broker confirms the reload that puts their change in force.
    var heldReplies: [HeldReply] = []
    /// The highest reload token the broker confirmed.
    var confirmedReload: UInt64 = 0
    /// device.online / device.offline events, committed (numbered) with the next presence flush.
    var pendingPresenceEvents: [Event] = []
    let outbox = OutboxPublisher()
    var heartbeats: HeartbeatConnection?
    var tasks: [Task<Void, Never>] = []
    /// Who runs the background jobs among escrowd sharing a PostgreSQL ledger; nil (SQLite: one
    /// escrowd per data directory): this one.
    nonisolated let leadership: PostgresLeaderLease?

    /// True when this escrowd runs the background jobs that must run once.
    public var leads: Bool { leadership?.isLeader ?? true }

    /// Gives the background jobs up (a drill, or before stopping): another escrowd takes them.
    public nonisolated func resignLeadership() { leadership?.stop() }

    public init(options: Options, client: MQTTClient, credentials: (any Credentials)? = nil, log: Log,
                onAccessChanged: @escaping @Sendable (AccessSnapshot) -> UInt64? = { _ in nil }) throws {
        self.options = options
        self.client = client
        self.log = log
        self.ledger = try Ledger(store: options.store)
        self.processor = CommandProcessor(ledger: ledger, credentials: credentials, now: { Date() }, newID: {
            String(UUID().uuidString.lowercased().prefix(13))
        })
        self.onAccessChanged = onAccessChanged
        self.lease = PresenceLease(intervals: options.presenceLeaseIntervals, grace: options.lastSeenFlushInterval.seconds + 1)
        // On PostgreSQL several escrowd may share the ledger: one of them leads the background jobs.
        if case .postgres(let url) = options.store { leadership = try PostgresLeaderLease(url: url) } else { leadership = nil }
        leadership?.onChange { [log, weak self] leads in
            log(.info, leads ? "leading: the outbox and the background jobs (expiry sweep, reconciliation, event retention, access refresh) run in this escrowd"
                             : "no longer leading (stopped, or the lease's ledger connection was lost); another escrowd sharing the ledger takes the outbox and the background jobs")
            if leads { Task { await self?.tookTheLead() } }
        }
        leadership?.onOutboxRows { [weak self] in Task { await self?.publishOthersRows() } }
        leadership?.start()
    }

    /// Fault injection for tests and drills: makes the database refuse writes as a read-only
    /// disk does (SQLITE_READONLY), or lifts that. A tmpfs cannot be remounted read-only while
    /// escrowd holds its files open, so this is how the read-only promise is exercised.
    /// Where this actor's methods run: true on the ledger thread (the executor rule's test).
    public func runsOnBlockingThread() -> Bool { BlockingWork.mayBlockHere }

    public func injectReadOnlyStorage(_ on: Bool) throws {
        try ledger.db.refuseWrites(on)
    }

    /// The current access snapshot (what the broker's ACL and password files must say).
    public func accessSnapshot() throws -> AccessSnapshot {
        AccessSnapshot(accounts: try ledger.accounts().filter { $0.id != .platform },
                       operators: try ledger.operators().map { ($0.username, $0.account, $0.passwordHash, $0.role) },
                       authoritiesList: try ledger.authorities(), revokedSerials: try ledger.revokedSerials())
    }

    /// Subscribes, recovers what a crash left behind, and processes messages until cancelled.
    public func run() async throws {
        ingest.setKnown(Set(try ledger.allDeviceIDs()))
        sessions = try ledger.presenceSessions()
        // Devices recorded online get a fresh lease: their retained status follows, and one that
        // is gone is marked offline when the lease ends.
        let started = PresenceLease.now()
        for (d, online, interval) in try ledger.leaseState() {
            lease.setInterval(d, interval)
            if online { lease.assumeOnline(d, at: started) }
        }
        // Heartbeats never enter the message stream: parsed and coalesced per device where they are
        // read, so memory is bounded by the fleet and commands never wait behind them.
        let hot = self.ingest, hotClient = self.client
        let share = options.sharedSubscriptions
        func f(_ s: String) -> String { share ? TopicFilter.shared(s) : s }
        var filters: [(String, QoS)] = [
            // Status is retained: a plain subscription re-delivers every device's presence after a
            // restart (shared subscriptions receive no retained messages).
            (TopicFilter.allStatus, .atLeastOnce),
            (f(TopicFilter.allConfigAcks), .atLeastOnce),
            (f(TopicFilter.allCSRs), .atLeastOnce),
            (f(TopicFilter.allCommands), .atLeastOnce),
        ]
        let o = client.options
        if options.heartbeatConnection, o.tls == nil {
            let connection = try HeartbeatConnection(
                settings: .init(host: o.host, port: o.port, clientID: o.clientID + "-heartbeats", username: o.username,
                                password: o.password, filter: f(TopicFilter.allHeartbeats)),
                log: log) { [weak hotClient] device, payload, topic in
                    guard let hotClient else { return }
                    hot.receive(device, payload: payload, topic: topic, client: hotClient)
                }
            heartbeats = connection
            connection.start()
            if !(await connection.firstSubscription(timeout: .seconds(10))) {
                log(.warn, "the heartbeat connection has no subscription yet after 10 s; it keeps trying (see the lines above)")
            }
        } else {
            // Over TLS: on the main client's network thread.
            client.consumeInline { [weak hotClient] message in
                guard let d = Topic.heartbeatDevice(message.topic), let hotClient else { return false }
                hot.receive(d, message, client: hotClient)
                return true
            }
            filters.append((f(TopicFilter.allHeartbeats), .atMostOnce))
        }
        // Every replica hears every reload confirmation: a plain subscription, never shared.
        if options.confirmsReloads { filters.append((BrokerNames.reloadTopic, .atLeastOnce)) }
        _ = try await client.subscribe(filters)
        pruneEvents()
        try drainOutbox()
        reconcile()
        log(.info, "serving \(ingest.knownCount) devices; subscribed to device and command topics")
        startTimers()
        // Everything but heartbeats (taken where they are read, above) goes to the actor in the one
        // order the connection saw it: a reconnect's outbox re-send and reconciliation run before
        // any message of the new connection.
        // The client's connect before run() is on the stream too: its outbox drain and
        // reconciliation were just done above, so only later connections count as reconnects.
        let client = self.client
        let connectedAtStart = client.isConnected
        let pump = Task.detached { [weak self] in
            var initialConnect = connectedAtStart
            for await delivery in client.deliveries {
                guard let self else { return }
                switch delivery {
                case .message(let message): await self.handle(message)
                case .event(.connected):
                    if initialConnect { initialConnect = false } else { await self.reconnected() }
                case .event: break
                }
            }
        }
        await pump.value
        stop()
    }

    public func stop() {
        heartbeats?.stop()
        heartbeats = nil
        for t in tasks { t.cancel() }
        tasks.removeAll()
        flushAcks()
        flushAllLastSeen()
        leadership?.stop()
    }

    deinit { leadership?.stop() }

    func startTimers() {
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
        // The jobs that must run once among escrowd sharing a ledger run on the leader only.
        tasks.append(every(options.reconcileInterval) { if await $0.leads { await $0.reconcile() } })
        tasks.append(every(options.expirySweepInterval) { if await $0.leads { await $0.sweepExpired() } })
        tasks.append(every(.seconds(60)) { await $0.logStats() })
        tasks.append(every(.seconds(3600)) { if await $0.leads { await $0.pruneEvents() } })
        // CRLs carry a validity period: rewrite the broker's access files daily so they never lapse.
        tasks.append(every(.seconds(24 * 3600)) { if await $0.leads { await $0.refreshAccess() } })
    }

    var lastStats = Counters()

    /// One line a minute for operators reading the log: load and what changed since the last line.
    func logStats() {
        let c = counters
        let online = lease.onlineCount
        log(.info, "stats: \(ingest.knownCount) devices, \(online) online; last minute: \(c.heartbeats - lastStats.heartbeats) heartbeats, \(c.commands - lastStats.commands) commands (\(c.commandErrors - lastStats.commandErrors) refused), \(c.acks - lastStats.acks) acks, \(c.configsPublished - lastStats.configsPublished) configurations published, \(c.deviceErrors - lastStats.deviceErrors) device errors")
        lastStats = c
    }

    /// Daily: fresh CRLs for the broker, and replies older than 7 days forgotten.
    func refreshAccess() {
        rewriteBrokerAccess()
        try? ledger.pruneReplies(olderThan: Date().addingTimeInterval(-7 * 24 * 3600))
    }

    /// Forgets stored events older than `eventRetention`.
    func pruneEvents() {
        pruneEvents(olderThan: Date().addingTimeInterval(-Double(options.eventRetention.components.seconds)))
    }

    /// Forgets stored events older than `cutoff` (their numbers are never handed out again).
    public func pruneEvents(olderThan cutoff: Date) {
        do {
            let n = try ledger.db.transaction { try ledger.pruneEvents(olderThan: cutoff) }
            if n > 0 { log(.info, "forgot \(n) stored events older than \(cutoff.formatted(.iso8601)) (event retention)") }
        } catch {
            log(.warn, "event retention: could not prune stored events: \(error)")
        }
    }

    func reconnected() {
        log(.info, "broker connection re-established; re-sending unacknowledged events and reconciling configurations")
        // PUBACKs of what was in flight may never come: send every remaining row again (duplicates
        // are allowed and carry the same event id).
        outbox.restart()
        do { try drainOutbox() } catch { log(.warn, "could not publish the outbox: \(error)") }
        reconcile()
    }
}
