import Foundation
import EscrowCore
import MQTT
import Storage
import POSIX

/// After commit: the outbox (`OutboxPublisher`, a row deleted only after its PUBACK), configuration
/// pushes, reconciliation of what a broker lost, and the expiry sweeps.
extension ControlPlane {
    // MARK: publishing

    func publish(_ topic: String, _ payload: [UInt8], retain: Bool = false, properties: MQTTProperties = .init()) {
        do { _ = try client.publishNoWait(topic, payload, qos: .atLeastOnce, retain: retain, properties: properties) } catch {
            log(.warn, "publish to \(topic) failed: \(error)")
        }
    }
    func publish(_ o: Outbound) { publish(o.topic, o.payload, retain: o.retain) }

    /// Publishes committed outbox rows in order (QoS 1) and deletes each only after the broker's PUBACK
    /// for it and every row before it. What a crash leaves is published at the next start; what a
    /// lost connection leaves is sent again after the reconnect (at-least-once; an event keeps its id).
    func drainOutbox() throws {
        // Among escrowd sharing a ledger only the leader publishes: each row goes out once.
        guard leads else { return }
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

    /// Leadership gained: everything still in the outbox goes out (rows the previous leader sent
    /// but had not seen acknowledged go again: at least once, same event ids), then reconciliation.
    func tookTheLead() {
        outbox.restart()
        do { try drainOutbox() } catch { log(.warn, "could not publish the outbox: \(error)") }
        reconcile()
    }

    /// Another escrowd committed outbox rows (a notification to the leader).
    func publishOthersRows() {
        do { try drainOutbox() } catch { log(.warn, "could not publish the outbox: \(error)") }
    }

    /// Deletes the rows acknowledged so far (the contiguous prefix) and sends more.
    func outboxAcknowledged() {
        let (through, refused) = outbox.collect()
        for (id, error) in refused { log(.warn, "the broker refused outbox row \(id) (\(error)); it stays in the event log") }
        do {
            if let through { try ledger.deleteOutbox(through: through) }
            try drainOutbox()
        } catch {
            log(.warn, "could not publish the outbox: \(error)")
        }
    }

    func publishConfigs(_ devices: [DeviceID]) {
        let configs: [DeviceID: (payload: [UInt8], heartbeatInterval: Int?)]
        do { configs = try ledger.desiredConfigs(devices) } catch {
            log(.warn, "could not read \(devices.count) configurations to publish (reconciliation publishes them): \(error)")
            return
        }
        for d in devices {
            guard let (payload, interval) = configs[d] else { continue }
            lease.setInterval(d, interval) // the lease follows the configuration's heartbeat interval
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
            let lapsed = try ledger.db.transaction { try ledger.revokeLapsedEscrowIdentities(activatedBefore: cutoff, at: Date()) }
            guard !lapsed.isEmpty else { return }
            log(.warn, "revoked the escrow certificates of \(lapsed.count) devices active for over \(options.escrowGrace) without their owner-issued identity (\(lapsed.prefix(10).map(\.rawValue).joined(separator: ", "))\(lapsed.count > 10 ? ", ..." : "")); they need new bundles")
            _ = onAccessChanged(try accessSnapshot())
        } catch {
            log(.warn, "escrow-grace check skipped: \(error)")
        }
    }

    public func sweepExpired() {
        do {
            for id in try ledger.expiredOpenTransfers(now: Date()) {
                var effects = Effects()
                try ledger.db.transaction {
                    guard var t = try ledger.transfer(id) else { return }
                    let at = Date()
                    let transition = try t.apply(.expire(now: at), now: at)
                    try processor.apply(transition, of: t, action: nil, profile: nil, at: at, &effects)
                    try ledger.appendEvents(effects.events)
                }
                log(.info, "transfer \(id) expired")
                afterCommit(effects)
            }
        } catch {
            log(.warn, "expiry sweep failed: \(error)")
        }
    }
}
