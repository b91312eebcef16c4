/// Why bytes from the wire could not be turned into an MQTT packet.
///
/// Every decoder in this module throws only this type; malformed input never traps.
public enum CodecError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The packet ended before a field it announced.
    case truncated(String)
    /// The remaining-length or another variable byte integer is longer than 4 bytes.
    case malformedVarInt
    /// The first byte names a packet type this codec does not handle, or has reserved flags set wrongly.
    case invalidPacketType(UInt8)
    /// A field holds a value the specification forbids (named in the message).
    case invalid(String)
    /// A string is not UTF-8.
    case invalidUTF8
    /// The packet is larger than the reader's limit.
    case tooLarge(Int)
    /// A v5 property identifier this codec does not know.
    case unknownProperty(UInt8)

    public var description: String {
        switch self {
        case .truncated(let f): return "truncated packet: missing \(f)"
        case .malformedVarInt: return "malformed variable byte integer (more than 4 bytes)"
        case .invalidPacketType(let b): return "invalid packet type/flags byte 0x\(String(b, radix: 16))"
        case .invalid(let m): return "invalid packet: \(m)"
        case .invalidUTF8: return "string is not valid UTF-8"
        case .tooLarge(let n): return "packet of \(n) bytes exceeds the limit"
        case .unknownProperty(let p): return "unknown MQTT 5 property 0x\(String(p, radix: 16))"
        }
    }
}
