/// MQTT 5 properties (spec 2.2.2): an ordered list of (identifier, typed value).
///
/// The value type is fixed by the identifier; `encode` and `decode` enforce it.
public struct MQTTProperties: Equatable, Sendable, ExpressibleByArrayLiteral {
    public enum Value: Equatable, Sendable {
        case byte(UInt8)
        case u16(UInt16)
        case u32(UInt32)
        case varInt(Int)
        case string(String)
        case binary([UInt8])
        case pair(String, String)
    }
    public struct Property: Equatable, Sendable {
        public var id: UInt8
        public var value: Value
        public init(_ id: UInt8, _ value: Value) { self.id = id; self.value = value }
    }

    // Identifiers used by this codebase (spec table 2-4).
    public static let payloadFormatIndicator: UInt8 = 0x01
    public static let messageExpiryInterval: UInt8 = 0x02
    public static let contentType: UInt8 = 0x03
    public static let responseTopic: UInt8 = 0x08
    public static let correlationData: UInt8 = 0x09
    public static let subscriptionIdentifier: UInt8 = 0x0B
    public static let sessionExpiryInterval: UInt8 = 0x11
    public static let assignedClientIdentifier: UInt8 = 0x12
    public static let serverKeepAlive: UInt8 = 0x13
    public static let reasonString: UInt8 = 0x1F
    public static let receiveMaximum: UInt8 = 0x21
    public static let topicAliasMaximum: UInt8 = 0x22
    public static let topicAlias: UInt8 = 0x23
    public static let userProperty: UInt8 = 0x26
    public static let maximumPacketSize: UInt8 = 0x27

    enum Kind { case byte, u16, u32, varInt, string, binary, pair }

    static func kind(of id: UInt8) -> Kind? {
        switch id {
        case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A: return .byte
        case 0x13, 0x21, 0x22, 0x23: return .u16
        case 0x02, 0x11, 0x18, 0x27: return .u32
        case 0x0B: return .varInt
        case 0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F: return .string
        case 0x09, 0x16: return .binary
        case 0x26: return .pair
        default: return nil
        }
    }

    public var entries: [Property]
    public init(_ entries: [Property] = []) { self.entries = entries }
    public init(arrayLiteral elements: Property...) { entries = elements }

    public var isEmpty: Bool { entries.isEmpty }

    /// The first value for an identifier.
    public subscript(id: UInt8) -> Value? { entries.first { $0.id == id }?.value }

    /// Appends `length varint + properties`.
    public func encode(into out: inout [UInt8]) {
        var body: [UInt8] = []
        for p in entries {
            body.append(p.id)
            switch p.value {
            case .byte(let b): body.append(b)
            case .u16(let v): WireBytes.appendU16(v, to: &body)
            case .u32(let v): WireBytes.appendU32(v, to: &body)
            case .varInt(let v): WireBytes.appendVarInt(v, to: &body)
            case .string(let s): WireBytes.appendString(s, to: &body)
            case .binary(let b): WireBytes.appendBinary(b, to: &body)
            case .pair(let k, let v): WireBytes.appendString(k, to: &body); WireBytes.appendString(v, to: &body)
            }
        }
        WireBytes.appendVarInt(body.count, to: &out)
        out.append(contentsOf: body)
    }

    static func decode(_ c: inout ByteCursor) throws(CodecError) -> MQTTProperties {
        let length = try c.varInt("property length")
        var sub = ByteCursor(try c.take(length, "properties"))
        var out: [Property] = []
        while !sub.isAtEnd {
            let id = try sub.u8("property identifier")
            guard let kind = kind(of: id) else { throw .unknownProperty(id) }
            let value: Value
            switch kind {
            case .byte: value = .byte(try sub.u8("property value"))
            case .u16: value = .u16(try sub.u16("property value"))
            case .u32: value = .u32(try sub.u32("property value"))
            case .varInt: value = .varInt(try sub.varInt("property value"))
            case .string: value = .string(try sub.string("property value"))
            case .binary: value = .binary(try sub.binary("property value"))
            case .pair: value = .pair(try sub.string("property key"), try sub.string("property value"))
            }
            out.append(Property(id, value))
        }
        return MQTTProperties(out)
    }
}

// The properties request/response and tracing use, by name (what the libmosquitto client maps).
extension MQTTProperties {
    public init(responseTopic: String? = nil, correlationData: [UInt8]? = nil, userProperties: [(String, String)] = []) {
        var entries: [Property] = []
        if let responseTopic { entries.append(Property(Self.responseTopic, .string(responseTopic))) }
        if let correlationData { entries.append(Property(Self.correlationData, .binary(correlationData))) }
        entries += userProperties.map { Property(Self.userProperty, .pair($0.0, $0.1)) }
        self.init(entries)
    }

    public var responseTopic: String? {
        if case .string(let s)? = self[Self.responseTopic] { return s }
        return nil
    }

    public var correlationData: [UInt8]? {
        if case .binary(let b)? = self[Self.correlationData] { return b }
        return nil
    }

    /// Name/value pairs in wire order; names may repeat.
    public var userProperties: [(String, String)] {
        entries.compactMap { if case .pair(let k, let v) = $0.value, $0.id == Self.userProperty { return (k, v) }; return nil }
    }

    /// The first value of the user property `name`.
    public func userProperty(_ name: String) -> String? {
        userProperties.first { $0.0 == name }?.1
    }
}
