import Glibc

/// How the engine connects and paces its devices.
public struct EngineConfiguration: Sendable {
    public var brokerHost: String = "127.0.0.1"
    public var brokerPort: UInt16 = 1883
    /// Source addresses assigned round-robin by device index; empty lets the kernel choose.
    public var sourceAddresses: [String] = []
    public var mqttVersion: MQTTVersion = .v311
    public var keepAlive: UInt16 = 60
    /// New TCP connects per second; 0 means unlimited.
    public var connectRate: Double = 0
    /// Connections allowed between TCP connect and CONNACK at once (the broker's backlog is 100).
    public var connectWindow: Int = 64
    /// Seconds from TCP connect to CONNACK before the attempt counts as a timeout.
    public var connectTimeout: Double = 10
    /// Reconnect backoff: full jitter over min(max, base * 2^attempt).
    public var backoffBase: Double = 1
    public var backoffMax: Double = 120
    /// Reconnect after a drop or failure (off for one-shot tests).
    public var reconnect: Bool = true
    public init() {}
}

/// A device's connection state as seen from outside the engine.
public enum ConnectionState: UInt8, Sendable {
    case idle, queued, connecting, awaitingConnAck, connected, backoff, stopped
}
