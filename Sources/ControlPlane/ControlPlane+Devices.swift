import Foundation
import EscrowCore
import MQTT
import Storage
import POSIX

/// Device traffic other than heartbeats (those are `HeartbeatIngest`'s): presence by status and
/// will (batched with its events), configuration acks (batched), CSRs, and the last-seen flush.
extension ControlPlane {
    // MARK: devices

    func deviceError(_ d: DeviceID, topic: String, _ e: WireError) {
        tally.deviceErrors += 1
        publish(Topic.deviceError(d).path, WireCodec.encode(DeviceErrorReport(code: e.code, message: e.message, topic: topic)))
    }

    func status(_ d: DeviceID, _ m: MQTTMessage) {
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
            if let change = lease.status(d, online: s.state == .online, at: PresenceLease.now()),
               let owner = try? ledger.owner(of: d) {
                pendingPresenceEvents.append(Self.presenceEvent(change, owner: owner, status: s))
                if pendingPresenceEvents.count >= 2_000 { flushAcks() }
            }
        } catch {
            deviceError(d, topic: m.topic, error)
        }
    }

    func ack(_ d: DeviceID, _ m: MQTTMessage) {
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

    func csr(_ d: DeviceID, _ m: MQTTMessage) {
        do {
            let r = try WireCodec.decode(CertificateRequest.self, from: m.payload, limit: WireCodec.maxDevicePayloadBytes)
            guard ingest.isKnown(d) else { return deviceError(d, topic: m.topic, WireError(.notFound, "device \(d) is not provisioned")) }
            try processor.validateCSR(r.csr, device: d)
            var effects = Effects()
            let rotated = try ledger.db.transaction {
                try ledger.db.execute("UPDATE devices SET csr = ? WHERE id = ?", [.text(r.csr), .text(d.rawValue)])
                let rotated = try processor.rotateActiveIdentity(d, &effects)
                try ledger.appendEvents(effects.events)
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
            try ledger.db.transaction {
                let at = Date()
                for (d, s) in statuses {
                    try ledger.recordPresence(d, online: s.state == .online, mode: s.mode, agentVersion: s.agentVersion, session: s.session, at: at)
                }
                try ledger.readingAhead(acks.map(\.0), configurations: true) { try recordAcks(acks, at: at, &events, &revoked) }
                try ledger.appendEvents(presenceEvents + events)
            }
            pendingAcks.removeFirst(acks.count)
            pendingPresenceEvents.removeFirst(presenceEvents.count)
            for d in statuses.keys where presence[d] == statuses[d] { presence[d] = nil }
            // Rewrites the CRLs and reloads the broker: from now on it refuses the escrow certificates.
            if revoked { rewriteBrokerAccess() }
            try drainOutbox()
        } catch {
            // Keep the batch: it is retried at the next flush (and devices re-ack on reconciliation).
            log(.warn, "could not commit \(acks.count) acks: \(error)")
        }
    }

    /// The batch's acks into the ledger (rows read ahead), in order; the events they make.
    private func recordAcks(_ acks: [(DeviceID, ConfigAck)], at: Date, _ events: inout [Event], _ revoked: inout Bool) throws {
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
    }

    /// Presence changes committed per turn (see `flushLastSeen`).
    static let presenceChunk = 1_000
    /// Last-seen rows written per transaction (see `flushLastSeen`).
    /// Smaller on PostgreSQL: each chunk's commit waits for the server's WAL flush, and a command
    /// waits behind at most one chunk (BENCHMARKS section 11).
    var lastSeenChunk: Int { ledger.db.dialect == .postgres ? 1_000 : 4_000 }

    /// The `device.online` / `device.offline` event of a presence change.
    static func presenceEvent(_ change: PresenceLease.Change, owner: AccountID, status: DeviceStatus? = nil, at: Date = Date()) -> Event {
        var details: [String: JSONValue] = ["reason": .string(change.reason.rawValue)]
        if let status {
            details["mode"] = status.mode.map { .string($0.rawValue) } ?? .null
            details["configVersion"] = status.configVersion.map { .number(Double($0)) } ?? .null
            details["agentVersion"] = status.agentVersion.map { .string($0) } ?? .null
        }
        return Event(type: change.online ? .deviceOnline : .deviceOffline, at: at, account: owner, deviceId: change.device, details: details)
    }

    /// Persists the heartbeats' last-seen times, and presence by lease: a heartbeat brings back a
    /// device whose lease had run out, silence past its lease marks it offline (in the same
    /// transactions, with their events). The timer's tick.
    public func flushLastSeen() { flushLastSeen(continuing: false) }

    /// Everything at once (stopping): the tick's batch and the whole backlog.
    func flushAllLastSeen() {
        flushLastSeen(continuing: false)
        var turns = 0
        while !lastSeenBacklog.isEmpty, turns < 1_000 { flushLastSeen(continuing: true); turns += 1 }
    }

    /// At most `lastSeenChunk` rows per transaction: the rest of the batch taken at the tick waits
    /// in `lastSeenBacklog` and is written by flushes queued behind whatever waits for the actor, so
    /// a command never waits for one 20,000-row transaction. Heartbeats arriving meanwhile wait for
    /// the next tick (`continuing` flushes take nothing new).
    func flushLastSeen(continuing: Bool) {
        if !continuing {
            // A tick: what an unfinished backlog still holds is merged with the new batch (newer wins).
            for (d, at) in ingest.take() { lastSeenBacklog[d] = at }
        }
        var batch: [DeviceID: Date] = [:]
        batch.reserveCapacity(min(lastSeenBacklog.count, lastSeenChunk))
        for (d, at) in lastSeenBacklog.prefix(lastSeenChunk) { batch[d] = at }
        for d in batch.keys { lastSeenBacklog[d] = nil }
        let more = !lastSeenBacklog.isEmpty
        var changes = unsavedPresence
        let monotonic = PresenceLease.WallToMonotonic()
        for (d, at) in batch {
            if let c = lease.heard(d, at: monotonic(at)) { changes.append(c) }
        }
        // Leases are walked once per tick, not per chunk.
        if !continuing { changes += lease.expire(now: PresenceLease.now()) }
        guard !batch.isEmpty || !changes.isEmpty else { return }
        // Presence changes commit (and publish their events) at most `presenceChunk` per turn of
        // the actor: a fleet that all comes online by heartbeat at once (or whose leases all end)
        // must not hold commands behind one transaction of 20,000 events.
        let now = Array(changes.prefix(Self.presenceChunk)), later = Array(changes.dropFirst(Self.presenceChunk))
        do {
            try ledger.db.transaction {
                for (d, at) in batch { try ledger.recordLastSeen(d, at: at) }
                let at = Date()
                var events: [Event] = []
                for c in now {
                    guard let owner = try ledger.setOnline(c.device, c.online) else { continue }
                    events.append(Self.presenceEvent(c, owner: owner, at: at))
                }
                try ledger.appendEvents(events)
            }
            unsavedPresence = later
            if !later.isEmpty || more {
                // The rest after whatever else is waiting for the actor (commands first).
                Task { [weak self] in await self?.flushLastSeen(continuing: true) }
            }
            if !now.isEmpty {
                let ended = now.filter { !$0.online }.count
                if ended > 0 { log(.info, "\(ended) devices silent past their lease are offline") }
                try drainOutbox()
            }
        } catch {
            ingest.restore(batch) // newer heartbeats win; written at the next tick
            unsavedPresence = changes // their events are written by the next flush that commits
            log(.warn, "could not persist last-seen times and presence: \(error)")
        }
    }
}
