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
        /// The I/O layer prepared the pending key and its CSR (PEM) asked for by `.requestCertificate`.
        case certificateRequestReady(csr: String)
        /// The certificate of a configuration does not fit the pending key (answer to `.persistIdentity`).
        case certificateRejected(reason: String)
        case stop
    }

    public enum Effect: Equatable, Sendable {
        case connect
        case subscribe(String)
        case publish(topic: String, payload: [UInt8], qos: Int, retain: Bool)
        case persist(AgentState)
        /// Install `certificate` with the pending key as the current identity, then write the state,
        /// as one step; answer `.persisted`, `.certificateRejected` or `.persistFailed`.
        case persistIdentity(AgentState, certificate: String)
        /// Create (or reuse) the pending key and build a CSR for it (CN = device id);
        /// answer `.certificateRequestReady`.
        case requestCertificate
        /// Close the connection and connect again with `state.identity` (a new identity is in force).
        case reconnect
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
    /// Asks for an owner-issued identity while in escrow (`escrow-agent` over mutual TLS); off for
    /// agents without certificates (plain MQTT, simulated fleets), which ignore a configuration's certificate.
    public let rotatesIdentity: Bool
    /// The connection in force, as carried by its status and will (`DeviceStatus.session`);
    /// nil until `beginSession` (then no session is sent).
    public private(set) var session: Int?

    public init(state: AgentState, agentVersion: String = "1.0.0", bootedAt: Date = Date(), rotatesIdentity: Bool = false) {
        self.state = state; self.agentVersion = agentVersion; self.bootedAt = bootedAt; self.rotatesIdentity = rotatesIdentity
    }

    /// True when the agent should (still) send a CSR for its owner-issued identity: in escrow, and
    /// also after an activation that reached it without a certificate (it was offline, or the
    /// platform had no CSR on file), so that no device keeps its escrow identity once active.
    /// And after a change of owner on an issued identity (`DeviceConfig.renewIdentity`).
    var needsCertificate: Bool {
        rotatesIdentity && (state.identity == .factory || state.renewalRequested) && !state.certificateRequested
    }

    /// Starts a new connection's session: call before building the CONNECT (its will) for every
    /// connection. Strictly increasing: the Unix time in milliseconds, or one more than the last.
    public mutating func beginSession(now: Date = Date()) {
        let millis = Int((now.timeIntervalSince1970 * 1000).rounded(.down))
        session = max(millis, (session ?? 0) + 1)
    }

    public var id: DeviceID { state.deviceId }
    public var statusTopic: String { Topic.deviceStatus(id).path }
    public var configTopic: String { Topic.deviceConfig(id).path }

    /// The will message the connection must carry: it marks the device offline.
    public var will: (topic: String, payload: [UInt8]) {
        (statusTopic, WireCodec.encode(DeviceStatus(state: .offline, mode: state.mode, configVersion: state.appliedVersion, agentVersion: agentVersion, session: session)))
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
            let effects: [Effect] = [.subscribe(configTopic), statusEffect(), .scheduleHeartbeat(seconds: state.heartbeatInterval)]
            return needsCertificate ? effects + [.requestCertificate] : effects
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
        case (.online, .certificateRequestReady(let csr)) where needsCertificate:
            state.certificateRequested = true
            return [.publish(topic: Topic.deviceCSR(id).path, payload: WireCodec.encode(CertificateRequest(csr: csr)), qos: 1, retain: false),
                    .persist(state),
                    .log("sent a certificate signing request for the identity to use after activation")]
        case (_, .certificateRequestReady):
            return [] // offline or no longer needed: asked again after the next connect if still needed
        case (.applying(let config), .persisted):
            let modeChanged = state.mode != config.mode
            let newIdentity = rotatesIdentity && config.certificate != nil && (state.identity != .issued || state.renewalRequested)
            state = Self.applied(config, to: state, rotatesIdentity: rotatesIdentity)
            if newIdentity {
                // The old connection's identity is about to be revoked: ack, then reconnect with the new one.
                // If this ack is lost, the retained configuration re-delivered on the new connection is re-acked.
                let wasUp = linkUp
                phase = .connecting
                linkUp = false
                var effects: [Effect] = []
                if wasUp {
                    effects.append(.publish(topic: Topic.deviceConfigAck(id).path, payload: WireCodec.encode(ConfigAck(version: config.version, result: .applied)), qos: 1, retain: false))
                }
                return effects + [.log("applied configuration version \(config.version) (\(config.mode.rawValue) mode, owner \(config.owner)); reconnecting with the identity issued by \(config.owner)"),
                                  .reconnect]
            }
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
            // A new owner asked for a new identity: ask now, not only at the next connect. (An
            // activation that found no CSR is asked again at the next connect: a CSR sent at this
            // connect may still be on its way, and a second one would get a second certificate.)
            if needsCertificate && state.renewalRequested { effects.append(.requestCertificate) }
            return effects
        case (.applying(let config), .persistFailed(let reason)):
            phase = linkUp ? .online : .connecting
            guard linkUp else { return [.log("could not persist configuration \(config.version): \(reason)")] }
            return [.publish(topic: Topic.deviceConfigAck(id).path,
                             payload: WireCodec.encode(ConfigAck(version: config.version, result: .rejected, reason: "storage: \(reason)")), qos: 1, retain: false),
                    .log("could not persist configuration \(config.version): \(reason)")]
        case (.applying(let config), .certificateRejected(let reason)):
            phase = linkUp ? .online : .connecting
            let line = "rejected configuration version \(config.version): its certificate \(reason)"
            guard linkUp else { return [.log(line)] }
            return [.publish(topic: Topic.deviceConfigAck(id).path,
                             payload: WireCodec.encode(ConfigAck(version: config.version, result: .rejected, reason: "invalid_argument: certificate \(reason)")), qos: 1, retain: false),
                    .scheduleHeartbeat(seconds: state.heartbeatInterval),
                    .log(line)]
        case (_, .persisted), (_, .persistFailed), (_, .certificateRejected):
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
    /// With `rotatesIdentity`, a configuration carrying a certificate makes the issued identity current.
    public static func applied(_ config: DeviceConfig, to state: AgentState, rotatesIdentity: Bool = false) -> AgentState {
        var s = state
        if rotatesIdentity, config.certificate != nil {
            s.identity = .issued
            s.certificateRequested = false
            s.renewalRequested = false
        } else if rotatesIdentity, config.renewIdentity == true, s.identity == .issued {
            // A change of owner: the key the previous owner's certificate names is to be replaced.
            if !s.renewalRequested { s.certificateRequested = false }
            s.renewalRequested = true
        } else if rotatesIdentity, config.mode == .normal, s.identity == .factory {
            // Active on the escrow identity: the platform had no (valid) CSR on file; ask (again).
            s.certificateRequested = false
        }
        s.mode = config.mode
        s.owner = config.owner
        s.appliedVersion = config.version
        s.heartbeatInterval = config.heartbeatInterval
        s.settings = config.settings
        return s
    }

    private func statusEffect() -> Effect {
        .publish(topic: statusTopic,
                 payload: WireCodec.encode(DeviceStatus(state: .online, mode: state.mode, configVersion: state.appliedVersion, agentVersion: agentVersion, session: session)),
                 qos: 1, retain: true)
    }

    private mutating func receiveConfig(_ payload: [UInt8]) -> [Effect] {
        let ackTopic = Topic.deviceConfigAck(id).path
        switch ConfigValidation.check(payload, appliedVersion: state.appliedVersion, currentMode: state.mode, currentOwner: state.owner) {
        case .stale(let version):
            // A retained re-delivery or a replay: harmless, confirm what is in force.
            return [.publish(topic: ackTopic, payload: WireCodec.encode(ConfigAck(version: state.appliedVersion, result: .applied)), qos: 1, retain: false),
                    .log("ignoring configuration version \(version); version \(state.appliedVersion) is in force")]
        case .reject(let version, let reason):
            return [.publish(topic: ackTopic, payload: WireCodec.encode(ConfigAck(version: version, result: .rejected, reason: reason)), qos: 1, retain: false),
                    .log("rejected configuration version \(version): \(reason)")]
        case .apply(let config):
            phase = .applying(config)
            let next = Self.applied(config, to: state, rotatesIdentity: rotatesIdentity)
            if rotatesIdentity, let certificate = config.certificate {
                return [.cancelHeartbeat, .persistIdentity(next, certificate: certificate)]
            }
            return [.cancelHeartbeat, .persist(next)]
        }
    }
}
