/// Protocol level in CONNECT: 4 is MQTT 3.1.1, 5 is MQTT 5.0.
public enum MQTTVersion: UInt8, Sendable, Codable, CaseIterable {
    case v311 = 4
    case v5 = 5

    public init?(label: String) {
        switch label {
        case "3.1.1", "311", "4": self = .v311
        case "5", "5.0": self = .v5
        default: return nil
        }
    }
    public var label: String { self == .v311 ? "3.1.1" : "5" }
}

public enum QoS: UInt8, Sendable, Codable, Comparable {
    case atMostOnce = 0, atLeastOnce = 1, exactlyOnce = 2
    public static func < (a: QoS, b: QoS) -> Bool { a.rawValue < b.rawValue }
}

/// One MQTT control packet as a value. `encode(into:)` appends its exact wire bytes;
/// `decode` turns one complete packet (fixed header byte + body) back into a value.
public enum MQTTPacket: Equatable, Sendable {
    case connect(Connect)
    case connack(ConnAck)
    case publish(Publish)
    case puback(PubAck)
    case subscribe(Subscribe)
    case suback(SubAck)
    case unsubscribe(Unsubscribe)
    case unsuback(UnsubAck)
    case pingreq
    case pingresp
    case disconnect(Disconnect)

    public struct Will: Equatable, Sendable {
        public var topic: String
        public var payload: [UInt8]
        public var qos: QoS
        public var retain: Bool
        public var properties: MQTTProperties
        public init(topic: String, payload: [UInt8], qos: QoS = .atLeastOnce, retain: Bool = true, properties: MQTTProperties = []) {
            self.topic = topic; self.payload = payload; self.qos = qos; self.retain = retain; self.properties = properties
        }
    }

    public struct Connect: Equatable, Sendable {
        public var version: MQTTVersion
        public var clientID: String
        public var cleanStart: Bool
        public var keepAlive: UInt16
        public var will: Will?
        public var username: String?
        public var password: [UInt8]?
        public var properties: MQTTProperties
        public init(version: MQTTVersion = .v311, clientID: String, cleanStart: Bool = true, keepAlive: UInt16 = 60,
                    will: Will? = nil, username: String? = nil, password: [UInt8]? = nil, properties: MQTTProperties = []) {
            self.version = version; self.clientID = clientID; self.cleanStart = cleanStart; self.keepAlive = keepAlive
            self.will = will; self.username = username; self.password = password; self.properties = properties
        }
    }

    public struct ConnAck: Equatable, Sendable {
        public var sessionPresent: Bool
        /// 3.1.1 return code (0 accepted, 1-5 refused) or v5 reason code (0 success, >= 0x80 failure).
        public var code: UInt8
        public var properties: MQTTProperties
        public init(sessionPresent: Bool = false, code: UInt8 = 0, properties: MQTTProperties = []) {
            self.sessionPresent = sessionPresent; self.code = code; self.properties = properties
        }
        /// True when the code means the client is not authorised (3.1.1: 4, 5; v5: 0x86, 0x87, 0x8C).
        public var isAuthFailure: Bool { [4, 5, 0x86, 0x87, 0x8C].contains(code) }
    }

    public struct Publish: Equatable, Sendable {
        public var topic: String
        public var payload: [UInt8]
        public var qos: QoS
        public var retain: Bool
        public var dup: Bool
        /// Present exactly when qos > 0.
        public var packetID: UInt16?
        public var properties: MQTTProperties
        public init(topic: String, payload: [UInt8], qos: QoS = .atMostOnce, retain: Bool = false, dup: Bool = false,
                    packetID: UInt16? = nil, properties: MQTTProperties = []) {
            self.topic = topic; self.payload = payload; self.qos = qos; self.retain = retain; self.dup = dup
            self.packetID = packetID; self.properties = properties
        }
    }

    public struct PubAck: Equatable, Sendable {
        public var packetID: UInt16
        public var reason: UInt8
        public var properties: MQTTProperties
        public init(packetID: UInt16, reason: UInt8 = 0, properties: MQTTProperties = []) {
            self.packetID = packetID; self.reason = reason; self.properties = properties
        }
    }

    public struct Subscribe: Equatable, Sendable {
        public var packetID: UInt16
        public var filters: [(filter: String, qos: QoS)]
        public var properties: MQTTProperties
        public init(packetID: UInt16, filters: [(filter: String, qos: QoS)], properties: MQTTProperties = []) {
            self.packetID = packetID; self.filters = filters; self.properties = properties
        }
        public static func == (a: Subscribe, b: Subscribe) -> Bool {
            a.packetID == b.packetID && a.properties == b.properties
                && a.filters.map(\.filter) == b.filters.map(\.filter) && a.filters.map(\.qos) == b.filters.map(\.qos)
        }
    }

    public struct SubAck: Equatable, Sendable {
        public var packetID: UInt16
        public var codes: [UInt8]
        public var properties: MQTTProperties
        public init(packetID: UInt16, codes: [UInt8], properties: MQTTProperties = []) {
            self.packetID = packetID; self.codes = codes; self.properties = properties
        }
    }

    public struct Unsubscribe: Equatable, Sendable {
        public var packetID: UInt16
        public var filters: [String]
        public var properties: MQTTProperties
        public init(packetID: UInt16, filters: [String], properties: MQTTProperties = []) {
            self.packetID = packetID; self.filters = filters; self.properties = properties
        }
    }

    public struct UnsubAck: Equatable, Sendable {
        public var packetID: UInt16
        public var codes: [UInt8]
        public var properties: MQTTProperties
        public init(packetID: UInt16, codes: [UInt8] = [], properties: MQTTProperties = []) {
            self.packetID = packetID; self.codes = codes; self.properties = properties
        }
    }

    public struct Disconnect: Equatable, Sendable {
        public var reason: UInt8
        public var properties: MQTTProperties
        public init(reason: UInt8 = 0, properties: MQTTProperties = []) { self.reason = reason; self.properties = properties }
    }
}

// MARK: - Encoding

extension MQTTPacket {
    /// Appends this packet's wire bytes for the given protocol version (CONNECT carries its own).
    public func encode(into out: inout [UInt8], version: MQTTVersion = .v311) {
        var body: [UInt8] = []
        let v5 = version == .v5
        let header: UInt8
        switch self {
        case .connect(let c):
            header = 0x10
            WireBytes.appendString("MQTT", to: &body)
            body.append(c.version.rawValue)
            var flags: UInt8 = c.cleanStart ? 0x02 : 0
            if let w = c.will { flags |= 0x04 | (w.qos.rawValue << 3) | (w.retain ? 0x20 : 0) }
            if c.password != nil { flags |= 0x40 }
            if c.username != nil { flags |= 0x80 }
            body.append(flags)
            WireBytes.appendU16(c.keepAlive, to: &body)
            if c.version == .v5 { c.properties.encode(into: &body) }
            WireBytes.appendString(c.clientID, to: &body)
            if let w = c.will {
                if c.version == .v5 { w.properties.encode(into: &body) }
                WireBytes.appendString(w.topic, to: &body)
                WireBytes.appendBinary(w.payload, to: &body)
            }
            if let u = c.username { WireBytes.appendString(u, to: &body) }
            if let p = c.password { WireBytes.appendBinary(p, to: &body) }
        case .connack(let a):
            header = 0x20
            body.append(a.sessionPresent ? 1 : 0)
            body.append(a.code)
            if v5 { a.properties.encode(into: &body) }
        case .publish(let p):
            header = 0x30 | (p.dup ? 0x08 : 0) | (p.qos.rawValue << 1) | (p.retain ? 0x01 : 0)
            WireBytes.appendString(p.topic, to: &body)
            if p.qos != .atMostOnce { WireBytes.appendU16(p.packetID ?? 0, to: &body) }
            if v5 { p.properties.encode(into: &body) }
            body.append(contentsOf: p.payload)
        case .puback(let a):
            header = 0x40
            WireBytes.appendU16(a.packetID, to: &body)
            // v5 (3.4.2.1): reason and properties may be omitted when success with no properties.
            if v5 && (a.reason != 0 || !a.properties.isEmpty) {
                body.append(a.reason)
                if !a.properties.isEmpty { a.properties.encode(into: &body) }
            }
        case .subscribe(let s):
            header = 0x82
            WireBytes.appendU16(s.packetID, to: &body)
            if v5 { s.properties.encode(into: &body) }
            for f in s.filters { WireBytes.appendString(f.filter, to: &body); body.append(f.qos.rawValue) }
        case .suback(let s):
            header = 0x90
            WireBytes.appendU16(s.packetID, to: &body)
            if v5 { s.properties.encode(into: &body) }
            body.append(contentsOf: s.codes)
        case .unsubscribe(let u):
            header = 0xA2
            WireBytes.appendU16(u.packetID, to: &body)
            if v5 { u.properties.encode(into: &body) }
            for f in u.filters { WireBytes.appendString(f, to: &body) }
        case .unsuback(let u):
            header = 0xB0
            WireBytes.appendU16(u.packetID, to: &body)
            if v5 { u.properties.encode(into: &body); body.append(contentsOf: u.codes) }
        case .pingreq: header = 0xC0
        case .pingresp: header = 0xD0
        case .disconnect(let d):
            header = 0xE0
            if v5 && (d.reason != 0 || !d.properties.isEmpty) {
                body.append(d.reason)
                if !d.properties.isEmpty { d.properties.encode(into: &body) }
            }
        }
        out.append(header)
        WireBytes.appendVarInt(body.count, to: &out)
        out.append(contentsOf: body)
    }

    /// The packet's wire bytes.
    public func encoded(version: MQTTVersion = .v311) -> [UInt8] {
        var out: [UInt8] = []
        encode(into: &out, version: version)
        return out
    }
}

// MARK: - Decoding

extension MQTTPacket {
    /// Decodes one packet from its fixed-header byte and body (the bytes after remaining length).
    public static func decode(header: UInt8, body: ArraySlice<UInt8>, version: MQTTVersion = .v311) throws(CodecError) -> MQTTPacket {
        var c = ByteCursor(body)
        let v5 = version == .v5
        let flags = header & 0x0F
        func requireFlags(_ expected: UInt8) throws(CodecError) {
            guard flags == expected else { throw .invalidPacketType(header) }
        }
        func requireEnd(_ name: String) throws(CodecError) {
            guard c.isAtEnd else { throw .invalid("\(c.remaining) trailing bytes in \(name)") }
        }
        switch header >> 4 {
        case 1:
            try requireFlags(0)
            let name = try c.string("protocol name")
            guard name == "MQTT" else { throw .invalid("protocol name '\(name)'") }
            let level = try c.u8("protocol level")
            guard let ver = MQTTVersion(rawValue: level) else { throw .invalid("protocol level \(level)") }
            let f = try c.u8("connect flags")
            guard f & 0x01 == 0 else { throw .invalid("reserved connect flag set") }
            let keepAlive = try c.u16("keep alive")
            let props = ver == .v5 ? try MQTTProperties.decode(&c) : []
            let clientID = try c.string("client identifier")
            var will: Will?
            if f & 0x04 != 0 {
                let wp = ver == .v5 ? try MQTTProperties.decode(&c) : []
                let topic = try c.string("will topic")
                let payload = try c.binary("will payload")
                guard let q = QoS(rawValue: (f >> 3) & 0x03) else { throw .invalid("will QoS 3") }
                will = Will(topic: topic, payload: payload, qos: q, retain: f & 0x20 != 0, properties: wp)
            } else if f & 0x38 != 0 {
                throw .invalid("will QoS/retain set without will flag")
            }
            let username = f & 0x80 != 0 ? try c.string("username") : nil
            let password = f & 0x40 != 0 ? try c.binary("password") : nil
            try requireEnd("CONNECT")
            return .connect(Connect(version: ver, clientID: clientID, cleanStart: f & 0x02 != 0, keepAlive: keepAlive,
                                    will: will, username: username, password: password, properties: props))
        case 2:
            try requireFlags(0)
            let ackFlags = try c.u8("connack flags")
            guard ackFlags & 0xFE == 0 else { throw .invalid("reserved connack flags") }
            let code = try c.u8("connack code")
            let props = v5 && !c.isAtEnd ? try MQTTProperties.decode(&c) : []
            try requireEnd("CONNACK")
            return .connack(ConnAck(sessionPresent: ackFlags & 1 != 0, code: code, properties: props))
        case 3:
            guard let qos = QoS(rawValue: (flags >> 1) & 0x03) else { throw .invalid("PUBLISH QoS 3") }
            let topic = try c.string("topic name")
            var packetID: UInt16?
            if qos != .atMostOnce {
                let id = try c.u16("packet identifier")
                guard id != 0 else { throw .invalid("packet identifier 0") }
                packetID = id
            }
            let props = v5 ? try MQTTProperties.decode(&c) : []
            return .publish(Publish(topic: topic, payload: c.rest(), qos: qos, retain: flags & 1 != 0,
                                    dup: flags & 0x08 != 0, packetID: packetID, properties: props))
        case 4:
            try requireFlags(0)
            let id = try c.u16("packet identifier")
            let reason = v5 && !c.isAtEnd ? try c.u8("reason code") : 0
            let props = v5 && !c.isAtEnd ? try MQTTProperties.decode(&c) : []
            try requireEnd("PUBACK")
            return .puback(PubAck(packetID: id, reason: reason, properties: props))
        case 8:
            try requireFlags(2)
            let id = try c.u16("packet identifier")
            let props = v5 ? try MQTTProperties.decode(&c) : []
            var filters: [(filter: String, qos: QoS)] = []
            while !c.isAtEnd {
                let f = try c.string("topic filter")
                let o = try c.u8("subscription options")
                guard let q = QoS(rawValue: o & 0x03) else { throw .invalid("subscription QoS 3") }
                filters.append((f, q))
            }
            guard !filters.isEmpty else { throw .invalid("SUBSCRIBE without filters") }
            return .subscribe(Subscribe(packetID: id, filters: filters, properties: props))
        case 9:
            try requireFlags(0)
            let id = try c.u16("packet identifier")
            let props = v5 ? try MQTTProperties.decode(&c) : []
            return .suback(SubAck(packetID: id, codes: c.rest(), properties: props))
        case 10:
            try requireFlags(2)
            let id = try c.u16("packet identifier")
            let props = v5 ? try MQTTProperties.decode(&c) : []
            var filters: [String] = []
            while !c.isAtEnd { filters.append(try c.string("topic filter")) }
            guard !filters.isEmpty else { throw .invalid("UNSUBSCRIBE without filters") }
            return .unsubscribe(Unsubscribe(packetID: id, filters: filters, properties: props))
        case 11:
            try requireFlags(0)
            let id = try c.u16("packet identifier")
            let props = v5 ? try MQTTProperties.decode(&c) : []
            return .unsuback(UnsubAck(packetID: id, codes: v5 ? c.rest() : [], properties: props))
        case 12:
            try requireFlags(0); try requireEnd("PINGREQ"); return .pingreq
        case 13:
            try requireFlags(0); try requireEnd("PINGRESP"); return .pingresp
        case 14:
            try requireFlags(0)
            let reason = v5 && !c.isAtEnd ? try c.u8("reason code") : 0
            let props = v5 && !c.isAtEnd ? try MQTTProperties.decode(&c) : []
            try requireEnd("DISCONNECT")
            return .disconnect(Disconnect(reason: reason, properties: props))
        default:
            throw .invalidPacketType(header)
        }
    }

    /// Decodes exactly one complete packet from `bytes` (fixed header included).
    public static func decode(_ bytes: [UInt8], version: MQTTVersion = .v311) throws(CodecError) -> MQTTPacket {
        var reader = PacketReader(version: version)
        reader.append(bytes)
        guard let p = try reader.next() else { throw .truncated("packet body") }
        guard reader.bufferedByteCount == 0 else { throw .invalid("trailing bytes after packet") }
        return p
    }
}
