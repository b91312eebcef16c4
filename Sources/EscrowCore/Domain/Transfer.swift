import Foundation

/// What an approval does with a device.
public enum ApprovalAction: String, Codable, Sendable, CaseIterable {
    /// Create the device record in the receiving account and push its initial configuration.
    case activate
    /// The receiving account becomes the new escrow owner (a reseller), free to transfer onward.
    case hold
}

/// One device's outcome within a transfer request.
public enum ItemOutcome: Equatable, Sendable, Codable {
    case pending
    case approved(ApprovalAction)
    case rejected(reason: String)
    case cancelled
    case expired

    public var name: String {
        switch self {
        case .pending: "pending"
        case .approved: "approved"
        case .rejected: "rejected"
        case .cancelled: "cancelled"
        case .expired: "expired"
        }
    }
    public var isPending: Bool { self == .pending }
}

/// A device transfer request: a batch of escrow devices offered by one account to another.
public struct Transfer: Equatable, Sendable {
    public enum Status: String, Codable, Sendable, CaseIterable {
        case pending
        case partiallyApproved = "partially_approved"
        case approved, rejected, cancelled, expired, completed
    }

    public var id: String
    public var from: AccountID
    public var to: AccountID
    public var note: String?
    public var createdAt: Date
    public var expiresAt: Date
    /// Device order is the order requested.
    public var items: [DeviceID: ItemOutcome]
    public var order: [DeviceID]

    public static let defaultLifetime: TimeInterval = 7 * 24 * 3600
    public static let maxDevicesPerRequest = 20_000

    public init(id: String, from: AccountID, to: AccountID, note: String?, createdAt: Date,
                expiresAt: Date, devices: [DeviceID]) {
        self.id = id; self.from = from; self.to = to; self.note = note
        self.createdAt = createdAt; self.expiresAt = expiresAt
        self.order = devices
        self.items = Dictionary(uniqueKeysWithValues: devices.map { ($0, .pending) })
    }

    /// The request's status follows from its devices' outcomes.
    public var status: Status {
        let outcomes = order.map { items[$0] ?? .pending }
        let pending = outcomes.filter(\.isPending).count
        let approved = outcomes.filter { if case .approved = $0 { true } else { false } }.count
        if pending > 0 { return approved > 0 ? .partiallyApproved : .pending }
        if approved == outcomes.count { return .approved }
        if approved > 0 { return .completed }
        if outcomes.allSatisfy({ $0 == .cancelled }) { return .cancelled }
        if outcomes.allSatisfy({ $0 == .expired }) { return .expired }
        if outcomes.allSatisfy({ if case .rejected = $0 { true } else { false } }) { return .rejected }
        return .completed
    }

    public var isOpen: Bool { order.contains { items[$0] == .pending } }
    public var pendingDevices: [DeviceID] { order.filter { items[$0] == .pending } }
}
