import MQTTWire
import Glibc
import Identity

/// Closing and reconnecting with backoff.
extension Engine {
    // MARK: Closing

    func fail(_ d: Int, cause: ErrorCause, detail: String, now: UInt64) {
        metrics.count(cause)
        lastErrorDetail[cause] = detail
        closeConnection(d, now: now, graceful: false)
        if configuration.reconnect { scheduleReconnect(d, now: now) } else { slots[d].state = .stopped }
    }

    func closeConnection(_ d: Int, now: UInt64, graceful: Bool) {
        let state = slots[d].state
        if state == .connecting || state == .awaitingConnAck { connectsInFlight -= 1 }
        if state == .connected {
            connectedCount -= 1
            metrics.disconnects += 1
            slots[d].lostAt = now
            if graceful {
                scratch.removeAll(keepingCapacity: true)
                MQTTPacket.disconnect(.init()).encode(into: &scratch, version: configuration.mqttVersion)
                if let session = slots[d].tls {
                    try? session.write(scratch)
                    session.close() // close_notify after the DISCONNECT
                    scratch.removeAll(keepingCapacity: true)
                    session.takeOutgoing(into: &scratch)
                }
                _ = scratch.withUnsafeBytes { write(slots[d].fd, $0.baseAddress, $0.count) }
            }
            behaviors[d].onDisconnected(now: seconds(now))
        }
        if slots[d].fd >= 0 { close(slots[d].fd); slots[d].fd = -1 }
        slots[d].generation &+= 1
        slots[d].tls = nil
        slots[d].outbox = []
        slots[d].inflight = []
        slots[d].pingOutstanding = false
        slots[d].wantsWrite = false
        slots[d].reader = PacketReader(version: configuration.mqttVersion)
        slots[d].state = .idle
    }

    func scheduleReconnect(_ d: Int, now: UInt64) {
        if !offAtNextLoss.isEmpty, offAtNextLoss.remove(Int32(d)) != nil { slots[d].state = .stopped; return }
        slots[d].attempt = min(slots[d].attempt + 1, 30)
        if slots[d].lostAt == 0 { slots[d].lostAt = now }
        slots[d].state = .backoff
        let delay = Backoff.delay(attempt: Int(slots[d].attempt), base: configuration.backoffBase, max: configuration.backoffMax)
        addTimer(d, .reconnect, after: delay, now: now)
    }
}
