import Foundation

/// `accounts/{accountId}/cmd/{command}`, operator to platform, QoS 1.
///
/// The account in the topic is the account acted in; the broker's ACL decides who may publish
/// there, so nothing in the payload can widen an operator's reach.
public struct CommandEnvelope: VersionedPayload, Codable, Sendable {
    public var schema: Int = WireCodec.schemaVersion
    /// Client-chosen idempotency key, `[A-Za-z0-9._-]{1,64}`; a replay returns the first reply.
    public var requestId: String
    /// The command's arguments (see `CommandName` and topics.md).
    public var args: JSONValue
    public init(requestId: String, args: JSONValue = .object([:])) { self.requestId = requestId; self.args = args }

    /// The request id of an envelope that does not decode (no `schema`, no `args`, a wrong type
    /// elsewhere), when it can still be read: its error is then answered on
    /// `accounts/{accountId}/reply/{requestId}`. Invalid UTF-8 elsewhere in the payload does not
    /// hide it (read leniently); nil for payloads over the size limit or too deeply nested (never
    /// parsed), not a JSON object, or without a valid `requestId`.
    public static func readableRequestID(from bytes: [UInt8]) -> String? {
        struct Probe: Decodable {
            var requestId: String?
            init(from decoder: any Decoder) throws {
                let c = try decoder.container(keyedBy: CodingKeys.self)
                requestId = try? c.decodeIfPresent(String.self, forKey: .requestId)
            }
            enum CodingKeys: String, CodingKey { case requestId }
        }
        guard bytes.count <= WireCodec.maxPayloadBytes, (try? WireCodec.checkNesting(Data(bytes))) != nil else { return nil }
        let lenient = Data(String(decoding: bytes, as: UTF8.self).utf8)
        guard let id = (try? WireCodec.decoder.decode(Probe.self, from: lenient))?.requestId, Identifier.isValid(id) else { return nil }
        return id
    }
}

/// `accounts/{accountId}/reply/{requestId}` (and the MQTT 5 response topic when given), QoS 1.
public struct CommandReply: VersionedPayload, Codable, Equatable, Sendable {
    public var schema: Int = WireCodec.schemaVersion
    public var requestId: String
    public var ok: Bool
    public var result: JSONValue?
    public var error: WireError?
    public init(requestId: String, result: JSONValue) { self.requestId = requestId; ok = true; self.result = result; error = nil }
    public init(requestId: String, error: WireError) { self.requestId = requestId; ok = false; result = nil; self.error = error }
}

/// Every command the platform understands.
public enum CommandName: String, CaseIterable, Sendable {
    /// What `accounts/platform/cmd/...` accepts; every other command there is `forbidden`.
    public static let platformCommands: Set<CommandName> = [.accountCreate, .accountList, .accountShow, .accountDelete,
                                                            .operatorCreate, .operatorList, .operatorPasswd, .operatorDelete,
                                                            .eventsSince, .auditList]

    case accountCreate = "account.create"
    case accountList = "account.list"
    case accountShow = "account.show"
    case accountDelete = "account.delete"
    case operatorCreate = "operator.create"
    case operatorList = "operator.list"
    case operatorPasswd = "operator.passwd"
    case operatorDelete = "operator.delete"
    case deviceProvision = "device.provision"
    case deviceList = "device.list"
    case deviceShow = "device.show"
    case deviceRetire = "device.retire"
    case deviceRebundle = "device.rebundle"
    case transferRequest = "transfer.request"
    case transferList = "transfer.list"
    case transferShow = "transfer.show"
    case transferApprove = "transfer.approve"
    case transferReject = "transfer.reject"
    case transferCancel = "transfer.cancel"
    case profilePut = "profile.put"
    case profileList = "profile.list"
    case profileShow = "profile.show"
    case profileDelete = "profile.delete"
    case configPush = "config.push"
    case configStatus = "config.status"
    case eventsSince = "events.since"
    case auditList = "audit.list"
}

/// `accounts/{accountId}/events/{type}`, platform to the account's operators, QoS 1.
public enum EventType: String, Codable, Sendable, CaseIterable {
    case accountCreated = "account.created"
    case accountDeleted = "account.deleted"
    case profileDeleted = "profile.deleted"
    case deviceProvisioned = "device.provisioned"
    case transferRequested = "transfer.requested"
    case transferApproved = "transfer.approved"
    case transferRejected = "transfer.rejected"
    case transferCancelled = "transfer.cancelled"
    case transferExpired = "transfer.expired"
    case transferCompleted = "transfer.completed"
    case deviceHeld = "device.held"
    case deviceActivated = "device.activated"
    case deviceRetired = "device.retired"
    case deviceRebundled = "device.rebundled"
    case deviceOnline = "device.online"
    case deviceOffline = "device.offline"
    case configPushed = "config.pushed"
    case configApplied = "config.applied"
    case configRejected = "config.rejected"
    case commandFailed = "command.failed"

    /// The one definition of each event's shape (topics.md, Events, is held against it): the
    /// `details` keys it always carries, those it may carry, and whether it names a device and a
    /// transfer.
    public var shape: (required: [String], optional: [String], device: Bool, transfer: Bool) {
        let batch = (["count", "deviceIds"], ["truncated"])
        switch self {
        case .accountCreated: return (["id", "name", "kind"], ["managedBy"], false, false)
        case .accountDeleted: return (["id", "name", "kind", "operatorsRemoved"], ["managedBy"], false, false)
        case .profileDeleted: return (["name", "version"], [], false, false)
        case .deviceProvisioned: return (batch.0, batch.1, false, false)
        case .transferRequested: return (["from", "to", "count", "expiresAt"], ["note"], false, true)
        case .transferApproved: return (["action"] + batch.0, batch.1, false, true)
        case .transferRejected: return (["reason"] + batch.0, batch.1, false, true)
        case .transferCancelled, .transferExpired: return (batch.0, batch.1, false, true)
        case .transferCompleted: return (["status", "counts"], [], false, true)
        case .deviceHeld: return (["from"], [], true, true)
        case .deviceActivated: return (["from", "profile", "configVersion"], [], true, true)
        case .deviceRetired: return (["previousState"], ["reason"], true, false)
        case .deviceRebundled: return (["fingerprint"], ["previousFingerprint"], true, false)
        case .deviceOnline: return (["reason"], ["mode", "configVersion", "agentVersion"], true, false)
        case .deviceOffline: return (["reason"], ["mode", "configVersion", "agentVersion"], true, false)
        case .configPushed: return (["version"], ["profile"], true, false)
        case .configApplied: return (["version"], ["mode"], true, false)
        case .configRejected: return (["version", "reason"], [], true, false)
        case .commandFailed: return (["command", "code", "message"], ["requestId"], false, false)
        }
    }
}

extension Event {
    /// What in this event differs from `type.shape`, or nil when it conforms.
    public var shapeProblem: String? {
        let s = type.shape
        let keys = Set(details.keys)
        if let missing = s.required.first(where: { !keys.contains($0) }) { return "\(type.rawValue): details.\(missing) is missing" }
        if let extra = keys.subtracting(s.required + s.optional).sorted().first { return "\(type.rawValue): details.\(extra) is not in the contract" }
        if (deviceId != nil) != s.device { return "\(type.rawValue): deviceId is \(deviceId == nil ? "missing" : "unexpected")" }
        if (transferId != nil) != s.transfer { return "\(type.rawValue): transferId is \(transferId == nil ? "missing" : "unexpected")" }
        return nil
    }
}

public struct Event: VersionedPayload, Codable, Equatable, Sendable {
    public var schema: Int = WireCodec.schemaVersion
    public var type: EventType
    public var at: Date
    public var account: AccountID
    public var deviceId: DeviceID?
    public var transferId: String?
    public var details: [String: JSONValue]
    /// The event's place in its account's log: 1, 2, 3, ... with no gap (`events.since`). Absent only
    /// on `command.failed`, which is not stored.
    public var seq: Int?
    /// Unique per event copy: `{account}-{seq}`. A consumer that sees an id twice has a redelivery.
    public var id: String?
    /// Absent values are omitted, never sent as `null` (topics.md, Conventions): a `null` in
    /// `details` is dropped here, once for every event.
    public init(type: EventType, at: Date, account: AccountID, deviceId: DeviceID? = nil,
                transferId: String? = nil, details: [String: JSONValue] = [:]) {
        self.type = type; self.at = at; self.account = account; self.deviceId = deviceId
        self.transferId = transferId; self.details = details.filter { $0.value != .null }
    }
}
