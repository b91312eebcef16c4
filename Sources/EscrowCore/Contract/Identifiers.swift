/// Identifiers that appear in topics. Their grammar keeps topics safe:
/// no `/`, `+`, `#`, spaces or control characters, at most 64 characters.
/// One type per kind of thing named, so a device id never passes for an account id.
public struct TypedID<Kind: IdentifierKind>: Hashable, Comparable, Codable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let rawValue: String
    public init?(_ raw: String) {
        guard Identifier.isValid(raw) else { return nil }
        rawValue = raw
    }
    public init(stringLiteral value: String) {
        precondition(Identifier.isValid(value), "invalid \(Kind.noun) literal \(value)")
        rawValue = value
    }
    public var description: String { rawValue }
    public static func < (l: Self, r: Self) -> Bool { l.rawValue < r.rawValue }
    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        guard let id = Self(raw) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "invalid \(Kind.noun) '\(raw.prefix(80))': expected [A-Za-z0-9._-]{1,64}"))
        }
        self = id
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer(); try c.encode(rawValue)
    }
}

/// What a `TypedID` names; only its noun, for messages.
public protocol IdentifierKind { static var noun: String { get } }
public enum DeviceIDKind: IdentifierKind { public static var noun: String { "device id" } }
public enum AccountIDKind: IdentifierKind { public static var noun: String { "account id" } }

public typealias DeviceID = TypedID<DeviceIDKind>
public typealias AccountID = TypedID<AccountIDKind>

extension TypedID where Kind == AccountIDKind {
    /// The platform administrators' pseudo-account: creates accounts and operators.
    public static var platform: AccountID { "platform" }
}

public enum Identifier {
    /// `[A-Za-z0-9._-]{1,64}`, and not `.` or `..`.
    public static func isValid(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 64, s != ".", s != ".." else { return false }
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                continue
            default: return false
            }
        }
        return true
    }
}

/// The broker's one namespace of usernames. Operators, services and devices share it (a device's
/// certificate CN is its username), so the three kinds can never collide: operators are `op-*`,
/// services (`escrowd`) are `svc-*`, and device ids may start with neither. The broker plugin and
/// the ACL file rely on it, and the generated files are checked for duplicates before every reload.
public enum BrokerNames {
    public static let operatorPrefix = "op-"
    public static let servicePrefix = "svc-"
    /// The platform administrator, created by `escrowd` itself.
    public static let administrator = "op-admin"
    /// The control plane's default login.
    public static let controlPlane = "svc-escrowd"
    /// Where the broker plugin confirms each reload (the token escrowd wrote before the SIGHUP),
    /// once the new password, ACL and trust files are in force. Only the control plane may read it.
    public static let reloadTopic = "escrow/broker/reloaded"

    /// Why `username` cannot be given to a new operator, or nil when it can.
    public static func operatorNameProblem(_ username: String) -> String? {
        guard Identifier.isValid(username) else { return "operator usernames match [A-Za-z0-9._-]{1,64}" }
        if username.hasPrefix(servicePrefix) { return "'\(servicePrefix)*' names are reserved for platform services" }
        guard username.hasPrefix(operatorPrefix), username.count > operatorPrefix.count else {
            return "operator usernames start with '\(operatorPrefix)' (device ids never do, so the two cannot collide)"
        }
        if username == administrator { return "'\(administrator)' is the platform administrator's reserved name" }
        return nil
    }

    /// True when `id` lies in the operators' or services' part of the namespace.
    public static func isReservedForLogins(_ id: String) -> Bool {
        id.hasPrefix(operatorPrefix) || id.hasPrefix(servicePrefix)
    }

    /// A client id a login may use on the operator listener: the username itself, or
    /// `USERNAME:SUFFIX` (`:` never occurs in a username). The broker plugin refuses any other, so
    /// no login can take over another's session by reusing its client id.
    public static func clientID(_ username: String, suffix: String? = nil) -> String {
        suffix.map { "\(username):\($0)" } ?? username
    }
    public static func isClientID(_ clientID: String, of username: String) -> Bool {
        clientID == username || clientID.hasPrefix(username + ":")
    }
}
