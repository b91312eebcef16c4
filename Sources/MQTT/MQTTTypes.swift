/// MQTT protocol level spoken on the wire.
public enum MQTTVersion: Sendable, Equatable {
    case v311, v5
}

/// Delivery guarantee. QoS 2 is deliberately not offered: every consumer here is idempotent.
public enum QoS: Int, Sendable, Equatable {
    case atMostOnce = 0, atLeastOnce = 1
}

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

/// The MQTT 5 publish properties this system uses. MQTT 3.1.1 connections silently drop them.
public struct MQTTProperties: Sendable, Equatable {
    public var responseTopic: String?
    public var correlationData: [UInt8]?
    /// Name/value pairs in wire order; names may repeat.
    public var userProperties: [(String, String)]

    public init(responseTopic: String? = nil, correlationData: [UInt8]? = nil, userProperties: [(String, String)] = []) {
        self.responseTopic = responseTopic
        self.correlationData = correlationData
        self.userProperties = userProperties
    }

    public var isEmpty: Bool { responseTopic == nil && correlationData == nil && userProperties.isEmpty }

    /// The first value of the user property `name`.
    public func userProperty(_ name: String) -> String? {
        userProperties.first { $0.0 == name }?.1
    }

    public static func == (lhs: MQTTProperties, rhs: MQTTProperties) -> Bool {
        lhs.responseTopic == rhs.responseTopic
            && lhs.correlationData == rhs.correlationData
            && lhs.userProperties.count == rhs.userProperties.count
            && zip(lhs.userProperties, rhs.userProperties).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
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

/// Connection lifecycle, in order, on `MQTTClient.events`.
public enum MQTTConnectionEvent: Sendable, Equatable {
    case connected(sessionPresent: Bool)
    /// The connection went down (`reason` is libmosquitto's text); automatic reconnect follows if enabled.
    case disconnected(reason: String)
    /// Reconnect attempt `attempt` (1-based) will start after `delay`.
    case reconnecting(attempt: Int, delay: Duration)
}
