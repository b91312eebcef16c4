import MQTTWire
import EscrowCore
import Foundation

/// A simulated device running the same `AgentMachine` as `escrow-agent`.
///
/// Engine callbacks become machine events (`onConnected` -> `.boot` once, then `.connected`;
/// `onMessage` -> `.message`; the heartbeat timer -> `.heartbeatDue`; `onDisconnected` ->
/// `.connectionLost`) and the machine's effects become `DeviceAction`s. A simulated device's
/// flash is instant: `.persist` is applied in memory and answered with `.persisted` at once, so
/// the ack follows the persist exactly as on a real agent. Identity rotation stays off
/// (`rotatesIdentity: false`): a configuration's certificate is ignored.
public struct AgentBehavior: DeviceBehavior, Sendable {
    public static let agentVersion = "fleetsim/2"

    public private(set) var machine: AgentMachine
    /// +/- fraction of jitter applied to every heartbeat interval after the first.
    public var heartbeatJitter: Double
    /// QoS of heartbeats (the machine sends them at QoS 0; `--qos 1` raises it).
    public var heartbeatQoS: QoS
    /// Heartbeat interval in seconds until the first configuration arrives (`--heartbeat`);
    /// afterwards the configuration's interval (whole seconds) is used.
    public var initialHeartbeat: Double
    /// Engine time (s) a normal-mode configuration was persisted (-1: never). Read by `transfer`.
    public private(set) var normalAppliedAt: Double = -1
    /// Engine time (s) the last configuration (any mode) was persisted (-1: never). Read by the
    /// transfer scenario's lifecycle steps, with the machine's owner and mode.
    public private(set) var appliedAt: Double = -1
    /// Engine time (s) the last connection was lost (-1: never). Read by the retire step: a
    /// retired device is cut off by the broker.
    public private(set) var disconnectedAt: Double = -1
    /// Engine time (s) the configuration being applied arrived (-1: none yet).
    public private(set) var configReceivedAt: Double = -1
    /// The current heartbeat timer's token; bumped on every schedule and cancel, so a stale
    /// timer (cancelled while pending) is recognised and ignored. Never `loadTimer`.
    private var heartbeatToken: UInt8 = 0
    /// Extra traffic (`--publish-rate`, `--subscribe`); nil: only what the machine does.
    public var load: DeviceLoad?
    private var loadPacer = Pacer(interval: 0, first: 0)
    /// The timer token of load messages (heartbeat tokens skip it).
    static let loadTimer: UInt8 = 255

    public init(machine: AgentMachine, initialHeartbeat: Double? = nil, heartbeatJitter: Double = 0.2, heartbeatQoS: QoS = .atMostOnce) {
        self.machine = machine
        self.machine.beginSession()
        self.initialHeartbeat = initialHeartbeat ?? Double(machine.state.heartbeatInterval)
        self.heartbeatJitter = heartbeatJitter
        self.heartbeatQoS = heartbeatQoS
    }

    /// A factory-fresh device in escrow mode.
    public init(id: DeviceID, heartbeatInterval: Double? = nil, heartbeatJitter: Double = 0.2, heartbeatQoS: QoS = .atMostOnce) {
        self.init(machine: AgentMachine(state: .factory(id), agentVersion: Self.agentVersion),
                  initialHeartbeat: heartbeatInterval, heartbeatJitter: heartbeatJitter, heartbeatQoS: heartbeatQoS)
    }

    public var id: DeviceID { machine.id }

    public func connectSpec(keepAlive: UInt16, version: MQTTVersion) -> MQTTPacket.Connect {
        let will = machine.will
        return MQTTPacket.Connect(version: version, clientID: id.rawValue, cleanStart: true, keepAlive: keepAlive,
                                  will: .init(topic: will.topic, payload: will.payload, qos: .atLeastOnce, retain: true))
    }

    public mutating func onConnected(now: Double) -> [DeviceAction] {
        if machine.phase == .booting { _ = machine.handle(.boot) } // its `.connect` is the engine's job
        var actions = perform(machine.handle(.connected), now: now, context: .connect)
        if let load {
            if let s = load.subscription { actions.append(.subscribe(filter: s, qos: load.qos)) }
            if load.publishInterval > 0 {
                // The first load message lands anywhere in one interval, like the first heartbeat.
                let first = Double.random(in: 0...load.publishInterval)
                loadPacer = Pacer(interval: load.publishInterval, first: now + first)
                actions.append(.schedule(timer: Self.loadTimer, after: first))
            }
        }
        return actions
    }

    public mutating func onMessage(_ message: IncomingMessage, now: Double) -> [DeviceAction] {
        // A load message (on the extra subscription) is measured, not given to the machine.
        if load?.subscription != nil, let sent = LoadMessage.sentAt(message.payload) { return [.measure(.fanout, seconds: now - sent)] }
        let wasApplying = isApplying
        let effects = machine.handle(.message(topic: message.topic, payload: message.payload))
        if !wasApplying && isApplying { configReceivedAt = now }
        return perform(effects, now: now, context: .message)
    }

    public mutating func onTimer(_ timer: UInt8, now: Double) -> [DeviceAction] {
        if timer == Self.loadTimer, let load { return loadMessages(load, now: now) }
        guard timer == heartbeatToken else { return [] }
        let effects = machine.handle(.heartbeatDue)
        guard !effects.isEmpty else { return [] }
        return perform(effects, now: now, context: .heartbeat) + [.note(.heartbeat)]
    }

    public mutating func onDisconnected(now: Double) {
        disconnectedAt = now
        _ = perform(machine.handle(.connectionLost), now: now, context: .message)
        machine.beginSession() // the next CONNECT's will belongs to a new connection
    }

    private var isApplying: Bool {
        if case .applying = machine.phase { return true }
        return false
    }

    enum Context { case connect, message, heartbeat }

    /// Executes the machine's effects: I/O effects become actions, persistence is instant.
    private mutating func perform(_ effects: [AgentMachine.Effect], now: Double, context: Context) -> [DeviceAction] {
        var actions: [DeviceAction] = []
        actions.reserveCapacity(effects.count + 1)
        var queue = effects[...]
        while let effect = queue.popFirst() {
            switch effect {
            case .connect, .requestCertificate, .log:
                // The engine connects; identity rotation is off; logs are not kept per device.
                if case .log(let line) = effect { note(for: line).map { actions.append(.note($0)) } }
            case .subscribe(let filter):
                actions.append(.subscribe(filter: filter, qos: .atLeastOnce))
            case .publish(let topic, let payload, let qos, let retain):
                let q: QoS = qos >= 1 ? .atLeastOnce : (context == .heartbeat ? heartbeatQoS : .atMostOnce)
                actions.append(.publish(topic: topic, payload: payload, qos: q, retain: retain))
            case .persist, .persistIdentity:
                // Instant flash: the machine already holds the new state; confirm the write.
                let applying: DeviceConfig? = if case .applying(let c) = machine.phase { c } else { nil }
                queue = machine.handle(.persisted)[...] + queue
                if let applying {
                    actions.append(.note(.configApplied))
                    appliedAt = now
                    if applying.mode == .normal { normalAppliedAt = now }
                }
            case .scheduleHeartbeat(let seconds):
                bumpHeartbeatToken()
                let base = machine.state.appliedVersion == 0 ? initialHeartbeat : Double(seconds)
                // The first beat after a connect lands anywhere in one interval, so a fleet that
                // connects at once does not beat in step.
                let after = context == .connect ? Double.random(in: 0...base) : jittered(base)
                actions.append(.schedule(timer: heartbeatToken, after: after))
            case .cancelHeartbeat:
                bumpHeartbeatToken()
            case .reconnect, .disconnect:
                actions.append(.disconnect)
            }
        }
        return actions
    }

    private mutating func bumpHeartbeatToken() {
        heartbeatToken = heartbeatToken == Self.loadTimer - 1 ? 0 : heartbeatToken + 1
    }

    /// The load messages due now (catching up if the timer fired late) and the next timer.
    private mutating func loadMessages(_ load: DeviceLoad, now: Double) -> [DeviceAction] {
        let (n, after) = loadPacer.fire(now: now)
        let message = DeviceAction.publish(topic: load.topic, payload: LoadMessage.payload(sentAt: now, size: load.payloadBytes), qos: load.qos, retain: false)
        return Array(repeating: message, count: n) + [.schedule(timer: Self.loadTimer, after: after)]
    }

    /// The report's outcome for a configuration the machine did not apply (its log line says which).
    private func note(for line: String) -> DeviceNote? {
        if line.hasPrefix("rejected configuration") { return .configRejected }
        if line.hasPrefix("ignoring configuration") { return .configIgnored }
        return nil
    }

    private func jittered(_ interval: Double) -> Double {
        guard heartbeatJitter > 0 else { return interval }
        return Swift.max(0.01, interval * (1 + Double.random(in: -heartbeatJitter...heartbeatJitter)))
    }
}
