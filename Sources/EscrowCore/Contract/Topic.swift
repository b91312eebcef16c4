/// The MQTT topic tree of `topics.md`, as code: builders and one parser.
///
/// The tree is cut so a broker can enforce isolation with pattern ACLs:
/// a device touches only `devices/{its id}/...`, an account's operators only
/// `accounts/{their account}/...`.
public enum Topic: Equatable, Sendable {
    // Device <-> platform.
    case deviceStatus(DeviceID)
    case deviceHeartbeat(DeviceID)
    case deviceConfig(DeviceID)
    case deviceConfigAck(DeviceID)
    case deviceCSR(DeviceID)
    case deviceError(DeviceID)
    // Operator <-> platform.
    case accountCommand(AccountID, command: String)
    case accountReply(AccountID, requestID: String)
    case accountEvent(AccountID, type: EventType)

    public var path: String {
        switch self {
        case .deviceStatus(let d): return "devices/\(d)/status"
        case .deviceHeartbeat(let d): return "devices/\(d)/heartbeat"
        case .deviceConfig(let d): return "devices/\(d)/config"
        case .deviceConfigAck(let d): return "devices/\(d)/config/ack"
        case .deviceCSR(let d): return "devices/\(d)/csr"
        case .deviceError(let d): return "devices/\(d)/error"
        case .accountCommand(let a, let c): return "accounts/\(a)/cmd/\(c)"
        case .accountReply(let a, let r): return "accounts/\(a)/reply/\(r)"
        case .accountEvent(let a, let t): return "accounts/\(a)/events/\(t.rawValue)"
        }
    }

    /// Parses a concrete topic; nil when it is not part of the contract.
    /// The device of a `devices/{id}/heartbeat` path, without splitting it (the hot path of a
    /// large fleet); the same answer as `Topic(path:)` gives, as `TopicTests` checks.
    public static func heartbeatDevice(_ path: String) -> DeviceID? {
        let u = path.utf8
        guard u.count > 18, u.starts(with: "devices/".utf8), u.reversed().starts(with: "/heartbeat".utf8.reversed()) else { return nil }
        let start = u.index(u.startIndex, offsetBy: 8), end = u.index(u.endIndex, offsetBy: -10)
        guard start < end, !u[start..<end].contains(UInt8(ascii: "/")) else { return nil }
        return DeviceID(String(path[start..<end]))
    }

    public init?(path: String) {
        // Substrings, not Strings: this runs for every message the platform receives.
        let parts = path.split(separator: "/", maxSplits: 4, omittingEmptySubsequences: false)
        guard parts.count >= 3 else { return nil }
        switch parts[0] {
        case "devices":
            guard parts.count <= 4, let d = DeviceID(String(parts[1])) else { return nil }
            switch (parts[2], parts.count == 4 ? parts[3] : nil) {
            case ("status", nil): self = .deviceStatus(d)
            case ("heartbeat", nil): self = .deviceHeartbeat(d)
            case ("config", nil): self = .deviceConfig(d)
            case ("config", "ack"?): self = .deviceConfigAck(d)
            case ("csr", nil): self = .deviceCSR(d)
            case ("error", nil): self = .deviceError(d)
            default: return nil
            }
        case "accounts":
            // Command names and request ids follow the identifier grammar, so no wildcard
            // or stray level can parse as a concrete topic.
            guard parts.count == 4, let a = AccountID(String(parts[1])) else { return nil }
            let last = String(parts[3])
            guard Identifier.isValid(last) else { return nil }
            switch parts[2] {
            case "cmd": self = .accountCommand(a, command: last)
            case "reply": self = .accountReply(a, requestID: last)
            case "events":
                guard let t = EventType(rawValue: last) else { return nil }
                self = .accountEvent(a, type: t)
            default: return nil
            }
        default: return nil
        }
    }
}

/// Subscription filters used by the platform and by operators.
public enum TopicFilter {
    /// escrowd's shared subscriptions: several escrowd processes split the device load.
    public static let sharedGroup = "escrowd"
    public static func shared(_ filter: String) -> String { "$share/\(sharedGroup)/\(filter)" }
    public static let allStatus = "devices/+/status"
    public static let allHeartbeats = "devices/+/heartbeat"
    public static let allConfigAcks = "devices/+/config/ack"
    public static let allCSRs = "devices/+/csr"
    public static let allCommands = "accounts/+/cmd/+"
    public static func events(_ account: AccountID, type: EventType? = nil) -> String {
        "accounts/\(account)/events/\(type?.rawValue ?? "+")"
    }
    public static func replies(_ account: AccountID) -> String { "accounts/\(account)/reply/+" }
}
