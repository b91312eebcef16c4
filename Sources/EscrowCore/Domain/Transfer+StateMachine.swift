import Foundation

extension Transfer {
    /// What can happen to a transfer request.
    public enum Event: Equatable, Sendable {
        /// `devices == nil` means every pending device.
        case approve(devices: [DeviceID]?, action: ApprovalAction, by: AccountID)
        case reject(devices: [DeviceID]?, reason: String, by: AccountID)
        case cancel(by: AccountID)
        case expire(now: Date)
    }

    /// What the control plane must do after a transition. The I/O layer executes these.
    public enum Effect: Equatable, Sendable {
        case activate(DeviceID, newOwner: AccountID)
        case hold(DeviceID, newOwner: AccountID)
        case release(DeviceID)            // back to the sender's free escrow pool
        case notify(EventType, accounts: [AccountID], devices: [DeviceID])
    }

    /// Per-device result for devices named in an event that could not be decided.
    public struct Refusal: Equatable, Sendable, Codable {
        public var deviceId: DeviceID
        public var reason: String
        public init(deviceId: DeviceID, reason: String) { self.deviceId = deviceId; self.reason = reason }
    }

    public struct Transition: Equatable, Sendable {
        public var effects: [Effect] = []
        public var refused: [Refusal] = []
        public var decided: [DeviceID] = []
    }

    /// The transfer state machine: `(state, event) -> (state, effects)`.
    /// Throws when the whole event is illegal (wrong account, closed request); refuses per
    /// device when only some devices are not pending (never silently drops them).
    public mutating func apply(_ event: Event, now: Date) throws(DomainError) -> Transition {
        var t = Transition()
        switch event {
        case .expire(let at):
            guard isOpen, at >= expiresAt else { return t }
            let pend = pendingDevices
            for d in pend { items[d] = .expired; t.effects.append(.release(d)) }
            t.decided = pend
            t.effects.append(.notify(.transferExpired, accounts: [from, to], devices: pend))
            return t

        case .cancel(let by):
            guard by == from else { throw .forbidden("only the sending account \(from) may cancel transfer \(id)") }
            guard isOpen else { throw .conflict(closedMessage + "; only a pending request can be cancelled") }
            try ensureNotExpired(now)
            let pend = pendingDevices
            for d in pend { items[d] = .cancelled; t.effects.append(.release(d)) }
            t.decided = pend
            t.effects.append(.notify(.transferCancelled, accounts: [from, to], devices: pend))
            return t

        case .approve(let devices, let action, let by):
            guard by == to else { throw .forbidden("only the receiving account \(to) may approve transfer \(id)") }
            guard isOpen else { throw .conflict(closedMessage) }
            try ensureNotExpired(now)
            let (chosen, refused) = select(devices)
            t.refused = refused
            for d in chosen {
                items[d] = .approved(action)
                t.effects.append(action == .activate ? .activate(d, newOwner: to) : .hold(d, newOwner: to))
            }
            t.decided = chosen
            if !chosen.isEmpty {
                t.effects.append(.notify(.transferApproved, accounts: [from, to], devices: chosen))
            }
            return t

        case .reject(let devices, let reason, let by):
            guard by == to else { throw .forbidden("only the receiving account \(to) may reject transfer \(id)") }
            guard isOpen else { throw .conflict(closedMessage) }
            try ensureNotExpired(now)
            let (chosen, refused) = select(devices)
            t.refused = refused
            for d in chosen { items[d] = .rejected(reason: reason); t.effects.append(.release(d)) }
            t.decided = chosen
            if !chosen.isEmpty {
                t.effects.append(.notify(.transferRejected, accounts: [from, to], devices: chosen))
            }
            return t
        }
    }

    /// Why a closed request cannot be decided; an expired one says so, with when.
    private var closedMessage: String {
        status == .expired ? "transfer \(id) expired at \(expiresAt); nothing is pending: ask the sender for a new request"
                           : "transfer \(id) is \(status.rawValue); nothing is pending"
    }

    private func ensureNotExpired(_ now: Date) throws(DomainError) {
        if now >= expiresAt { throw .conflict("transfer \(id) expired at \(expiresAt); ask the sender for a new request") }
    }

    private func select(_ devices: [DeviceID]?) -> ([DeviceID], [Refusal]) {
        guard let devices else { return (pendingDevices, []) }
        var chosen: [DeviceID] = []
        var refused: [Refusal] = []
        var seen = Set<DeviceID>()
        for d in devices where seen.insert(d).inserted {
            switch items[d] {
            case nil: refused.append(.init(deviceId: d, reason: "device \(d) is not part of transfer \(id)"))
            case .pending?: chosen.append(d)
            case let other?: refused.append(.init(deviceId: d, reason: "device \(d) is already \(other.name)"))
            }
        }
        return (chosen, refused)
    }
}

/// Rules for opening a transfer request.
public enum TransferPolicy {
    public struct Candidate: Equatable, Sendable {
        public var id: DeviceID
        public var owner: AccountID
        public var pendingTransfer: String?
        /// Decommissioned (`device.retire`): never transferred again.
        public var retired: Bool
        public init(id: DeviceID, owner: AccountID, pendingTransfer: String?, retired: Bool = false) {
            self.id = id; self.owner = owner; self.pendingTransfer = pendingTransfer; self.retired = retired
        }
    }

    /// Splits requested devices into eligible ones and per-device refusals.
    /// `known` holds what the store knows of the requested ids (unknown ids are absent).
    public static func eligibility(requester: AccountID, to: AccountID, requested: [DeviceID],
                                   known: [DeviceID: Candidate]) throws(DomainError) -> (eligible: [DeviceID], refused: [Transfer.Refusal]) {
        guard requester != to else { throw .invalid("an account cannot transfer devices to itself") }
        guard !requested.isEmpty else { throw .invalid("name at least one device") }
        guard requested.count <= Transfer.maxDevicesPerRequest else {
            throw .invalid("a request holds at most \(Transfer.maxDevicesPerRequest) devices; split it")
        }
        var eligible: [DeviceID] = []
        var refused: [Transfer.Refusal] = []
        var seen = Set<DeviceID>()
        for d in requested where seen.insert(d).inserted {
            guard let c = known[d], c.owner == requester else {
                // Unknown and foreign devices look the same: never leak another account's ids.
                refused.append(.init(deviceId: d, reason: "device \(d) is not a device of \(requester)"))
                continue
            }
            if c.retired { refused.append(.init(deviceId: d, reason: "device \(d) is retired; a retired device is read-only and cannot be transferred")); continue }
            if let p = c.pendingTransfer { refused.append(.init(deviceId: d, reason: "device \(d) is already in pending transfer \(p)")); continue }
            eligible.append(d)
        }
        return (eligible, refused)
    }
}
