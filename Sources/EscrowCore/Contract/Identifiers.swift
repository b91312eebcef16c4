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
