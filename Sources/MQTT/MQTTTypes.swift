import MQTTWire

/// TLS settings; the peer certificate and host name are always verified.
public struct MQTTTLS: Sendable, Equatable {
    /// CA bundle (PEM) that signed the broker certificate.
    public var caFile: String
    /// Client certificate (PEM); with `use_identity_as_username` its CN becomes the username.
    public var certFile: String?
    public var keyFile: String?

    public init(caFile: String, certFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }
}

/// Last will: published by the broker when the connection dies without a DISCONNECT.
public struct MQTTWill: Sendable, Equatable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: QoS
    public var retain: Bool

    public init(topic: String, payload: [UInt8], qos: QoS = .atLeastOnce, retain: Bool = false) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
    }
}

/// An incoming message; the payload was copied out of libmosquitto before its callback returned.
public struct MQTTMessage: Sendable, Equatable {
    public let topic: String
    public let payload: [UInt8]
    public let qos: QoS
    public let retain: Bool
    public let properties: MQTTProperties

    public init(topic: String, payload: [UInt8], qos: QoS, retain: Bool, properties: MQTTProperties = .init()) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
    }

    /// The payload decoded as UTF-8 (lossy).
    public var payloadString: String { String(decoding: payload, as: UTF8.self) }
}

/// What `MQTTClient.deliveries` carries: incoming messages and connection events, in the one order
/// the network thread saw them (a message received before a disconnect comes before it; a
/// `connected` comes before the first message of that connection).
public enum MQTTDelivery: Sendable, Equatable {
    case message(MQTTMessage)
    case event(MQTTConnectionEvent)

    public var message: MQTTMessage? { if case .message(let m) = self { m } else { nil } }
    public var event: MQTTConnectionEvent? { if case .event(let e) = self { e } else { nil } }
}

/// Connection lifecycle, in order, on `MQTTClient.deliveries`.
public enum MQTTConnectionEvent: Sendable, Equatable {
    case connected(sessionPresent: Bool)
    /// The connection went down (`reason` is libmosquitto's text); automatic reconnect follows if enabled.
    case disconnected(reason: String)
    /// Reconnect attempt `attempt` (1-based) will start after `delay`.
    case reconnecting(attempt: Int, delay: Duration)
}
