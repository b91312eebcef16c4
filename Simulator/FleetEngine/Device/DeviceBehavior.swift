import MQTTWire

/// The seam between the engine (sockets, MQTT, timers) and what a device *does*.
///
/// A behaviour is a plain value, one per device, stored inline by `Engine`. The engine calls it
/// on events and executes the `DeviceAction`s it returns; the behaviour never touches I/O.
/// That is the shape of EscrowCore's pure `AgentMachine` ((state, event) -> (state, effects)):
/// `AgentBehavior` adapts it and is what every scenario runs.
public protocol DeviceBehavior {
    /// What to send in CONNECT (client id, will, credentials). Asked before every connect.
    func connectSpec(keepAlive: UInt16, version: MQTTVersion) -> MQTTPacket.Connect
    /// CONNACK accepted. `sessionPresent` is false with the engine's clean starts.
    mutating func onConnected(now: Double) -> [DeviceAction]
    /// A PUBLISH arrived from the broker (already acknowledged by the engine if QoS 1).
    mutating func onMessage(_ message: IncomingMessage, now: Double) -> [DeviceAction]
    /// A timer set with `.schedule` fired (timers are cancelled when the connection ends).
    mutating func onTimer(_ timer: UInt8, now: Double) -> [DeviceAction]
    /// The connection ended (any cause); the engine will reconnect with backoff unless stopped.
    mutating func onDisconnected(now: Double)
}

extension DeviceBehavior {
    public mutating func onDisconnected(now: Double) {}
}

public struct IncomingMessage: Equatable, Sendable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: QoS
    public var retain: Bool
    public init(topic: String, payload: [UInt8], qos: QoS = .atMostOnce, retain: Bool = false) {
        self.topic = topic; self.payload = payload; self.qos = qos; self.retain = retain
    }
}

/// An effect requested by a behaviour; the engine performs it.
public enum DeviceAction: Equatable, Sendable {
    case publish(topic: String, payload: [UInt8], qos: QoS, retain: Bool)
    case subscribe(filter: String, qos: QoS)
    /// Fires `onTimer(timer)` after `after` seconds, on this connection only.
    case schedule(timer: UInt8, after: Double)
    /// Sends DISCONNECT and closes (no will); the engine reconnects with backoff.
    case disconnect
    /// A countable outcome for the report (config applied/ignored/rejected...).
    case note(DeviceNote)
    /// A latency the behaviour measured itself (e.g. `fanout`, from a load message's send time).
    case measure(LatencyKind, seconds: Double)
}

public enum DeviceNote: String, Sendable, Codable {
    case configApplied, configIgnored, configRejected, heartbeat
}
