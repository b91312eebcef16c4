import FleetEngine
import MQTTWire
import EscrowCore

/// A hand-written virtual escrow device, a fixture of the engine and codec tests (fleetsim runs
/// `AgentBehavior`, the real agent's state machine). It follows the wire contract (EscrowCore):
/// will `devices/{id}/status` offline (retained, QoS 1); on connect a retained online status,
/// a QoS 1 subscription to `devices/{id}/config`, and heartbeats with jitter; a configuration
/// with a higher version is applied and acknowledged on `devices/{id}/config/ack`, and a
/// mode change re-publishes the status.
public struct EscrowDeviceBehavior: DeviceBehavior, Sendable {
    public static let heartbeatTimer: UInt8 = 1
    public static let agentVersion = "fleetsim/1"

    public let id: DeviceID
    public private(set) var mode: DeviceMode = .escrow
    public private(set) var appliedVersion = 0
    /// Seconds between heartbeats (initially the simulator's `--heartbeat`, then the config's).
    public private(set) var heartbeatInterval: Double
    public var heartbeatJitter: Double
    public var heartbeatQoS: QoS
    public private(set) var seq = 0
    private var startedAt: Double = -1
    public var username: String?
    public var password: [UInt8]?

    public init(id: DeviceID, heartbeatInterval: Double = Double(DeviceConfig.defaultEscrowHeartbeat),
                heartbeatJitter: Double = 0.2, heartbeatQoS: QoS = .atMostOnce) {
        self.id = id; self.heartbeatInterval = heartbeatInterval
        self.heartbeatJitter = heartbeatJitter; self.heartbeatQoS = heartbeatQoS
    }

    /// The will and offline status payload: exactly `{"schema":1,"state":"offline"}`.
    public static let offlinePayload: [UInt8] = WireCodec.encode(DeviceStatus(state: .offline))

    public func connectSpec(keepAlive: UInt16, version: MQTTVersion) -> MQTTPacket.Connect {
        MQTTPacket.Connect(version: version, clientID: id.rawValue, cleanStart: true, keepAlive: keepAlive,
                           will: .init(topic: Topic.deviceStatus(id).path, payload: Self.offlinePayload, qos: .atLeastOnce, retain: true),
                           username: username, password: password)
    }

    public mutating func onConnected(now: Double) -> [DeviceAction] {
        if startedAt < 0 { startedAt = now }
        return [
            .subscribe(filter: Topic.deviceConfig(id).path, qos: .atLeastOnce),
            statusAction(),
            // The first heartbeat lands anywhere in one interval, so a fleet that connects at once does not beat in step.
            .schedule(timer: Self.heartbeatTimer, after: Double.random(in: 0...heartbeatInterval)),
        ]
    }

    public mutating func onTimer(_ timer: UInt8, now: Double) -> [DeviceAction] {
        guard timer == Self.heartbeatTimer else { return [] }
        seq += 1
        let hb = Heartbeat(seq: seq, mode: mode, uptime: Int(now - startedAt), configVersion: appliedVersion)
        return [
            .publish(topic: Topic.deviceHeartbeat(id).path, payload: Self.encode(hb), qos: heartbeatQoS, retain: false),
            .note(.heartbeat),
            .schedule(timer: Self.heartbeatTimer, after: jittered(heartbeatInterval)),
        ]
    }

    public mutating func onMessage(_ message: IncomingMessage, now: Double) -> [DeviceAction] {
        guard message.topic == Topic.deviceConfig(id).path, !message.payload.isEmpty else { return [] }
        let config: DeviceConfig
        do { config = try WireCodec.decode(DeviceConfig.self, from: message.payload) } catch {
            // Without a readable version there is nothing to acknowledge; count it.
            return [.note(.configRejected)]
        }
        guard config.version > appliedVersion else { return [.note(.configIgnored)] }
        let ackTopic = Topic.deviceConfigAck(id).path
        guard DeviceConfig.heartbeatRange.contains(config.heartbeatInterval) else {
            let ack = ConfigAck(version: config.version, result: .rejected,
                                reason: "heartbeatInterval \(config.heartbeatInterval) outside \(DeviceConfig.heartbeatRange)")
            return [.publish(topic: ackTopic, payload: WireCodec.encode(ack), qos: .atLeastOnce, retain: false), .note(.configRejected)]
        }
        appliedVersion = config.version
        heartbeatInterval = Double(config.heartbeatInterval)
        mode = config.mode
        return [
            .publish(topic: ackTopic, payload: WireCodec.encode(ConfigAck(version: config.version, result: .applied)),
                     qos: .atLeastOnce, retain: false),
            statusAction(),
            .note(.configApplied),
        ]
    }

    private func statusAction() -> DeviceAction {
        .publish(topic: Topic.deviceStatus(id).path, payload: Self.onlineStatus(mode: mode, configVersion: appliedVersion),
                 qos: .atLeastOnce, retain: true)
    }

    private func jittered(_ interval: Double) -> Double {
        guard heartbeatJitter > 0 else { return interval }
        return Swift.max(0.01, interval * (1 + Double.random(in: -heartbeatJitter...heartbeatJitter)))
    }

    /// The heartbeat's wire JSON written by hand (same bytes as `WireCodec.encode`, sorted keys):
    /// heartbeats are the hot path and a JSONEncoder per beat would dominate the simulator's CPU.
    /// The online status's wire JSON, by hand for the same reason (sent on every connect).
    public static func onlineStatus(mode: DeviceMode, configVersion: Int) -> [UInt8] {
        Array("{\"agentVersion\":\"\(agentVersion)\",\"configVersion\":\(configVersion),\"mode\":\"\(mode.rawValue)\",\"schema\":\(WireCodec.schemaVersion),\"state\":\"online\"}".utf8)
    }

    public static func encode(_ hb: Heartbeat) -> [UInt8] {
        Array("{\"configVersion\":\(hb.configVersion),\"mode\":\"\(hb.mode.rawValue)\",\"schema\":\(hb.schema),\"seq\":\(hb.seq),\"uptime\":\(hb.uptime)}".utf8)
    }
}
