import Foundation
import EscrowCore
#if canImport(Glibc)
import Glibc
#endif

/// Presence by lease: a device counts as online while it is heard from (a heartbeat, an online
/// status) at least once every `intervals` heartbeat intervals of its configuration, and offline
/// when that lease runs out, when its retained status says so (a clean stop, or the broker's will
/// after a lost connection), or both. A clean DISCONNECT without an offline status, a will the
/// broker never sent, a status lost with a broker: the lease still ends.
///
/// A value with no clock and no I/O (times are seconds on any monotonic scale): `ControlPlane`
/// feeds it and turns what it returns into `device.online` / `device.offline` events.
///
/// Heartbeats bring back a device whose lease ran out, and a device never heard of (a client that
/// heartbeats without a status), but not one whose own status said offline: a heartbeat read on
/// the heartbeat connection may be processed after an offline status read on the other one,
/// although the device sent it first; a device that reconnects publishes its online status anyway.
struct PresenceLease {
    enum Presence: Equatable {
        /// Heard from at `heardAt`; offline once `heardAt + lease` has passed.
        case online(heardAt: Double)
        /// Its lease ran out: heartbeats bring it back.
        case expired
        /// Its status said offline: only an online status brings it back.
        case offlineByStatus
    }
    /// Why a device changed presence: the `reason` of its `device.online` / `device.offline` event.
    enum Reason: String {
        /// Its retained status (online on connect; offline on a clean stop, or the will).
        case status
        /// A heartbeat after its lease had run out (or from a device without a status).
        case heartbeat
        /// Nothing from it for `intervals` heartbeat intervals.
        case leaseExpired = "lease_expired"
    }
    struct Change: Equatable {
        var device: DeviceID
        var online: Bool
        var reason: Reason
    }

    /// How many heartbeat intervals of silence end the lease.
    let intervals: Double
    /// Added to every lease: the time a heartbeat may spend between the device and this value
    /// (escrowd reads heartbeats in batches, `lastSeenFlushInterval`).
    let grace: Double
    /// The interval of a device whose configuration names none (escrow devices).
    let defaultInterval: Int

    private(set) var presence: [DeviceID: Presence] = [:]
    private var heartbeatIntervals: [DeviceID: Int] = [:]

    init(intervals: Double = 3, grace: Double = 5, defaultInterval: Int = DeviceConfig.defaultEscrowHeartbeat) {
        precondition(intervals > 0 && grace >= 0 && defaultInterval > 0)
        self.intervals = intervals; self.grace = grace; self.defaultInterval = defaultInterval
    }

    /// Seconds of silence after which `device` counts as offline.
    func lease(_ device: DeviceID) -> Double {
        Double(heartbeatIntervals[device] ?? defaultInterval) * intervals + grace
    }

    /// The heartbeat interval of the device's newest configuration (nil: the default).
    mutating func setInterval(_ device: DeviceID, _ seconds: Int?) {
        heartbeatIntervals[device] = seconds
    }

    /// Its retained status arrived at `now`. Returns the change, if its presence changed.
    mutating func status(_ device: DeviceID, online: Bool, at now: Double) -> Change? {
        let was = isOnline(device)
        presence[device] = online ? .online(heardAt: now) : .offlineByStatus
        return was == online ? nil : Change(device: device, online: online, reason: .status)
    }

    /// A heartbeat (or any other message) from the device, received at `at`.
    mutating func heard(_ device: DeviceID, at: Double) -> Change? {
        switch presence[device] {
        case .online(let heardAt):
            if at > heardAt { presence[device] = .online(heardAt: at) }
            return nil
        case .expired, nil:
            presence[device] = .online(heardAt: at)
            return Change(device: device, online: true, reason: .heartbeat)
        case .offlineByStatus:
            return nil
        }
    }

    /// Ends every lease that ran out by `now`, in device order.
    mutating func expire(now: Double) -> [Change] {
        var changes: [Change] = []
        for (d, p) in presence {
            guard case .online(let heardAt) = p, now - heardAt > lease(d) else { continue }
            presence[d] = .expired
            changes.append(Change(device: d, online: false, reason: .leaseExpired))
        }
        return changes.sorted { $0.device.rawValue < $1.device.rawValue }
    }

    /// Starts the lease of a device recorded online (escrowd's start-up: it was online when the
    /// previous process stopped; its retained status follows, and if nothing follows, the lease ends).
    mutating func assumeOnline(_ device: DeviceID, at now: Double) {
        presence[device] = .online(heardAt: now)
    }

    /// A device that no longer exists here (retired, deleted): nothing to track.
    mutating func forget(_ device: DeviceID) {
        presence[device] = nil
        heartbeatIntervals[device] = nil
    }

    func isOnline(_ device: DeviceID) -> Bool {
        if case .online = presence[device] { return true }
        return false
    }
    /// The monotonic time `ControlPlane` feeds it (CLOCK_MONOTONIC seconds: wall-clock steps never
    /// end a lease). One vDSO call, no allocation: the last-seen flush converts 20,000 times with it.
    static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
    /// Converts wall-clock times (heartbeats' receive times) to the monotonic scale: one offset
    /// per batch, read once.
    struct WallToMonotonic {
        let offset = PresenceLease.now() - Date().timeIntervalSince1970
        func callAsFunction(_ date: Date) -> Double { date.timeIntervalSince1970 + offset }
    }

    var onlineCount: Int { presence.values.count { if case .online = $0 { true } else { false } } }
}
