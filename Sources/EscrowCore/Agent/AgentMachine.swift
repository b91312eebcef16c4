import Foundation

/// The device agent as a pure state machine: `(state, event) -> (state, effects)`.
///
/// Used twice: by `escrow-agent` over libmosquitto, and by `fleetsim` for thousands of
/// virtual devices. The I/O layer executes the effects in order and feeds back events.
public struct AgentMachine: Equatable, Sendable {
    public enum Phase: Equatable, Sendable {
        case booting
        case connecting
        /// Connected, in the mode of `state.mode` (escrow or normal).
        case online
        /// A valid configuration is being persisted; its ack follows `.persisted`.
        case applying(DeviceConfig)
        case stopped
    }

    public enum Event: Equatable, Sendable {
        case boot
        case connected
        case connectionLost
        case message(topic: String, payload: [UInt8])
        case heartbeatDue
        /// The I/O layer wrote the state asked for by `.persist` (or failed to).
        case persisted
        case persistFailed(reason: String)
        case stop
    }

    public enum Effect: Equatable, Sendable {
        case connect
        case subscribe(String)
        case publish(topic: String, payload: [UInt8], qos: Int, retain: Bool)
        case persist(AgentState)
        case scheduleHeartbeat(seconds: Int)
        case cancelHeartbeat
        case disconnect
        case log(String)
    }

    public private(set) var phase: Phase = .booting
    public private(set) var state: AgentState
    public private(set) var heartbeatSeq = 0
    private var linkUp = false
    public let agentVersion: String
    private let bootedAt: Date

    public init(state: AgentState, agentVersion: String = "1.0.0", bootedAt: Date = Date()) {
        self.state = state; self.agentVersion = agentVersion; self.bootedAt = bootedAt
    }

    public var id: DeviceID { state.deviceId }
    public var statusTopic: String { Topic.deviceStatus(id).path }
    public var configTopic: String { Topic.deviceConfig(id).path }

    /// The will message the connection must carry: it marks the device offline.
    public var will: (topic: String, payload: [UInt8]) {
        (statusTopic, WireCodec.encode(DeviceStatus(state: .offline, mode: state.mode, configVersion: state.appliedVersion, agentVersion: agentVersion)))
    }

    public mutating func handle(_ event: Event, now: Date = Date()) -> [Effect] {
        switch (phase, event) {
        case (.stopped, _):
            return []
        case (_, .stop):
            phase = .stopped
            return [.cancelHeartbeat, .publish(topic: statusTopic, payload: will.payload, qos: 1, retain: true), .disconnect]
        case (.booting, .boot):
            phase = .connecting
            return [.log("booting in \(state.mode.rawValue) mode, configuration version \(state.appliedVersion)"), .connect]
        case (.booting, _):
            return []
        case (.connecting, .connected):
            phase = .online
            linkUp = true
            return [.subscribe(configTopic), statusEffect(), .scheduleHeartbeat(seconds: state.heartbeatInterval)]
        case (.online, .connectionLost), (.applying, .connectionLost):
            // A configuration being persisted still completes; its ack goes out after reconnecting
            // through the retained configuration's re-delivery (equal version -> re-ack).
            linkUp = false
            if case .applying = phase { return [.cancelHeartbeat] }
            phase = .connecting
            return [.cancelHeartbeat, .log("connection lost; reconnecting with backoff")]
        case (.connecting, .connectionLost):
            return []
        case (.online, .heartbeatDue):
            heartbeatSeq += 1
            let hb = Heartbeat(seq: heartbeatSeq, mode: state.mode, uptime: max(0, Int(now.timeIntervalSince(bootedAt))), configVersion: state.appliedVersion)
            return [.publish(topic: Topic.deviceHeartbeat(id).path, payload: WireCodec.encode(hb), qos: 0, retain: false),
                    .scheduleHeartbeat(seconds: state.heartbeatInterval)]
        case (_, .heartbeatDue):
            return []
        case (.online, .message(let topic, let payload)), (.connecting, .message(let topic, let payload)):
            // A message proves the link is up even if `.connected` has not been fed yet
            // (a retained configuration can overtake the connection event after a reconnect).
            guard topic == configTopic else { return [.log("ignoring message on unexpected topic \(topic)")] }
            return receiveConfig(payload)
        case (_, .message):
            return [] // configuration re-delivered after reconnect will be handled then
        case (.applying(let config), .persisted):
            let modeChanged = state.mode != config.mode
            state = Self.applied(config, to: state)
            guard linkUp else {
                // Persisted while offline: the ack follows the retained re-delivery after reconnecting.
                phase = .connecting
                return [.log("applied configuration version \(config.version) while offline")]
            }
            phase = .online
            var effects: [Effect] = [
                .publish(topic: Topic.deviceConfigAck(id).path, payload: WireCodec.encode(ConfigAck(version: config.version, result: .applied)), qos: 1, retain: false),
                .log("applied configuration version \(config.version) (\(config.mode.rawValue) mode, owner \(config.owner))"),
            ]
            if modeChanged { effects.append(statusEffect()) }
            effects.append(.scheduleHeartbeat(seconds: state.heartbeatInterval))
            return effects
        case (.applying(let config), .persistFailed(let reason)):
            phase = linkUp ? .online : .connecting
            guard linkUp else { return [.log("could not persist configuration \(config.version): \(reason)")] }
            return [.publish(topic: Topic.deviceConfigAck(id).path,
                             payload: WireCodec.encode(ConfigAck(version: config.version, result: .rejected, reason: "storage: \(reason)")), qos: 1, retain: false),
                    .log("could not persist configuration \(config.version): \(reason)")]
        case (_, .persisted), (_, .persistFailed):
            return []
        case (.applying, .connected) where !linkUp:
            // Reconnected before the write finished: re-subscribe and announce the state in force;
            // the ack follows `.persisted` (heartbeats resume then).
            linkUp = true
            return [.subscribe(configTopic), statusEffect()]
        case (.online, .connected), (.applying, .connected):
            return []
        case (.online, .boot), (.connecting, .boot), (.applying, .boot):
            return []
        }
    }

    /// The state after applying `config`: what a reboot comes back to.
    public static func applied(_ config: DeviceConfig, to state: AgentState) -> AgentState {
        var s = state
        s.mode = config.mode
        s.owner = config.owner
        s.appliedVersion = config.version
        s.heartbeatInterval = config.heartbeatInterval
        s.settings = config.settings
        return s
    }

    private func statusEffect() -> Effect {
        .publish(topic: statusTopic,
                 payload: WireCodec.encode(DeviceStatus(state: .online, mode: state.mode, configVersion: state.appliedVersion, agentVersion: agentVersion)),
                 qos: 1, retain: true)
    }

    private mutating func receiveConfig(_ payload: [UInt8]) -> [Effect] {
        let ackTopic = Topic.deviceConfigAck(id).path
        switch ConfigValidation.check(payload, appliedVersion: state.appliedVersion, currentMode: state.mode) {
        case .stale(let version):
            // A retained re-delivery or a replay: harmless, confirm what is in force.
            return [.publish(topic: ackTopic, payload: WireCodec.encode(ConfigAck(version: state.appliedVersion, result: .applied)), qos: 1, retain: false),
                    .log("ignoring configuration version \(version); version \(state.appliedVersion) is in force")]
        case .reject(let version, let reason):
            return [.publish(topic: ackTopic, payload: WireCodec.encode(ConfigAck(version: version, result: .rejected, reason: reason)), qos: 1, retain: false),
                    .log("rejected configuration version \(version): \(reason)")]
        case .apply(let config):
            phase = .applying(config)
            return [.cancelHeartbeat, .persist(Self.applied(config, to: state))]
        }
    }
}
