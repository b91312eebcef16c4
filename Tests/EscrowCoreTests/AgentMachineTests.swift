import Foundation
import Testing
import EscrowCore

@Suite("Agent state machine")
struct AgentMachineTests {
    static let id: DeviceID = "sim-000001"
    static let booted = Fx.t0
    static let configTopic = "devices/sim-000001/config"
    static let ackTopic = "devices/sim-000001/config/ack"
    static let statusTopic = "devices/sim-000001/status"

    static func machine(_ state: AgentState = .factory(id)) -> AgentMachine {
        AgentMachine(state: state, agentVersion: "1.2.3", bootedAt: booted)
    }

    static func online(_ state: AgentState = .factory(id)) -> AgentMachine {
        var m = machine(state)
        _ = m.handle(.boot, now: booted)
        _ = m.handle(.connected, now: booted)
        return m
    }

    static func config(_ version: Int, mode: DeviceMode = .normal, heartbeat: Int = 60, owner: AccountID = "acme",
                       settings: [String: JSONValue] = ["led": .string("green")]) -> [UInt8] {
        WireCodec.encode(DeviceConfig(version: version, mode: mode, heartbeatInterval: heartbeat, owner: owner, settings: settings))
    }

    static func configMessage(_ version: Int, mode: DeviceMode = .normal, heartbeat: Int = 60) -> AgentMachine.Event {
        .message(topic: configTopic, payload: config(version, mode: mode, heartbeat: heartbeat))
    }

    static func ack(_ version: Int, _ result: ConfigAck.Result, reason: String? = nil) -> Published {
        Published(topic: ackTopic, json: try! Fx.json(WireCodec.encode(ConfigAck(version: version, result: result, reason: reason))), qos: 1, retain: false)
    }

    static func status(_ state: DeviceStatus.State, mode: DeviceMode, version: Int) -> Published {
        Published(topic: statusTopic, json: try! Fx.json(WireCodec.encode(DeviceStatus(state: state, mode: mode, configVersion: version, agentVersion: "1.2.3"))), qos: 1, retain: true)
    }

    /// The only rejection reason an ack carries for `payload` (nil when it was not rejected).
    static func rejection(_ payload: [UInt8], from state: AgentState = .factory(id)) -> (Published, AgentMachine)? {
        var m = online(state)
        let effects = m.handle(.message(topic: configTopic, payload: payload))
        guard let p = effects.published.first, p.json["result"] == .string("rejected") else { return nil }
        return (p, m)
    }

    // MARK: boot and connect

    @Test("boot asks to connect")
    func boot() {
        var m = Self.machine()
        let e = m.handle(.boot, now: Self.booted)
        #expect(e.withoutLogs == [.connect])
        #expect(m.phase == .connecting)
    }

    @Test("connected: subscribe to config, publish retained online status, schedule heartbeat")
    func connected() {
        var m = Self.machine()
        _ = m.handle(.boot)
        let e = m.handle(.connected)
        #expect(m.phase == .online)
        #expect(e.count == 3)
        #expect(e.first == .subscribe(Self.configTopic))
        #expect(e.published == [Self.status(.online, mode: .escrow, version: 0)])
        #expect(e.last == .scheduleHeartbeat(seconds: DeviceConfig.defaultEscrowHeartbeat))
    }

    @Test("the will message says offline, with the mode and version in force")
    func will() throws {
        let m = Self.online(AgentState(deviceId: Self.id, mode: .normal, owner: "acme", appliedVersion: 4, heartbeatInterval: 30))
        #expect(m.will.topic == Self.statusTopic)
        #expect(try Fx.json(m.will.payload) == Self.status(.offline, mode: .normal, version: 4).json)
    }

    // MARK: heartbeats

    @Test("heartbeats: QoS 0, not retained, seq increments, uptime from boot, then reschedule")
    func heartbeats() throws {
        var m = Self.online()
        let e1 = m.handle(.heartbeatDue, now: Self.booted.addingTimeInterval(300))
        let e2 = m.handle(.heartbeatDue, now: Self.booted.addingTimeInterval(600.9))
        for (i, e) in [e1, e2].enumerated() {
            let p = try #require(e.published.first)
            #expect(p.topic == "devices/sim-000001/heartbeat")
            #expect(p.qos == 0 && !p.retain)
            #expect(p.json["seq"] == .number(Double(i + 1)))
            #expect(p.json["mode"] == .string("escrow"))
            #expect(p.json["configVersion"] == .number(0))
            #expect(e.last == .scheduleHeartbeat(seconds: 300))
        }
        #expect(e1.published[0].json["uptime"] == .number(300))
        #expect(e2.published[0].json["uptime"] == .number(600))
        #expect(m.heartbeatSeq == 2)
        #expect(try WireCodec.decode(Heartbeat.self, from: WireCodec.encode(Heartbeat(seq: 1, mode: .escrow, uptime: 0, configVersion: 0))).seq == 1)
    }

    @Test("a clock behind boot time reports uptime 0")
    func uptimeNeverNegative() {
        var m = Self.online()
        let e = m.handle(.heartbeatDue, now: Self.booted.addingTimeInterval(-50))
        #expect(e.published.first?.json["uptime"] == .number(0))
    }

    // MARK: configuration

    @Test("a valid configuration: persist, then ack applied, status with the new mode, new heartbeat")
    func activation() throws {
        var m = Self.online()
        let e = m.handle(Self.configMessage(1, heartbeat: 60))
        let config = DeviceConfig(version: 1, mode: .normal, heartbeatInterval: 60, owner: "acme", settings: ["led": .string("green")])
        #expect(m.phase == .applying(config))
        let expected = AgentState(deviceId: Self.id, mode: .normal, owner: "acme", appliedVersion: 1, heartbeatInterval: 60, settings: ["led": .string("green")])
        #expect(e == [.cancelHeartbeat, .persist(expected)])
        #expect(m.state == .factory(Self.id), "nothing is in force before it is persisted")
        let done = m.handle(.persisted)
        #expect(m.phase == .online)
        #expect(m.state == expected)
        #expect(done.published == [Self.ack(1, .applied), Self.status(.online, mode: .normal, version: 1)])
        #expect(done.last == .scheduleHeartbeat(seconds: 60))
    }

    @Test("a configuration that keeps the mode acks without a new status")
    func sameMode() {
        var m = Self.online(AgentState(deviceId: Self.id, mode: .normal, owner: "acme", appliedVersion: 1, heartbeatInterval: 60))
        _ = m.handle(Self.configMessage(2, heartbeat: 120))
        let done = m.handle(.persisted)
        #expect(done.published == [Self.ack(2, .applied)])
        #expect(done.last == .scheduleHeartbeat(seconds: 120))
        #expect(m.state.appliedVersion == 2)
    }

    @Test("an escrow configuration may change an escrow device's heartbeat and owner (hold)")
    func escrowToEscrow() {
        var m = Self.online()
        _ = m.handle(.message(topic: Self.configTopic, payload: Self.config(1, mode: .escrow, heartbeat: 600, owner: "reseller", settings: [:])))
        let done = m.handle(.persisted)
        #expect(done.published == [Self.ack(1, .applied)])
        #expect(m.state.owner == "reseller")
        #expect(m.state.mode == .escrow)
    }

    @Test("an equal or older version re-acks the version in force and changes nothing", arguments: [1, 2, 3])
    func stale(_ version: Int) {
        let state = AgentState(deviceId: Self.id, mode: .normal, owner: "acme", appliedVersion: 3, heartbeatInterval: 60)
        var m = Self.online(state)
        let e = m.handle(Self.configMessage(version))
        #expect(e.published == [Self.ack(3, .applied)])
        #expect(m.phase == .online)
        #expect(m.state == state)
    }

    @Test("a duplicate delivery while applying is dropped")
    func duplicateWhileApplying() {
        var m = Self.online()
        _ = m.handle(Self.configMessage(1))
        #expect(m.handle(Self.configMessage(1)).isEmpty)
        #expect(m.handle(Self.configMessage(2)).isEmpty)
        #expect(m.handle(.persisted).published.first == Self.ack(1, .applied))
    }

    @Test("malformed configurations are rejected with a reason; the previous configuration stays", arguments: [
        ("{", "malformed"),
        (#"{"version":5,"mode":"normal"}"#, "schema"),
        (#"{"schema":2,"version":5,"mode":"normal","heartbeatInterval":60,"owner":"acme","settings":{}}"#, "unsupported_schema"),
        (#"{"schema":1,"version":5,"mode":"normal","owner":"acme","settings":{}}"#, "heartbeatInterval"),
        (#"{"schema":1,"version":5,"mode":"normal","heartbeatInterval":60,"owner":"a b","settings":{}}"#, "owner"),
        (#"{"schema":1,"version":5,"mode":"turbo","heartbeatInterval":60,"owner":"acme","settings":{}}"#, "mode"),
    ])
    func malformed(_ text: String, _ reasonMentions: String) throws {
        let (ack, m) = try #require(Self.rejection(Fx.bytes(text)))
        #expect(ack.topic == Self.ackTopic && ack.qos == 1 && !ack.retain)
        let reason = try #require(ack.json["reason"]?.stringValue)
        #expect(reason.contains(reasonMentions), "\(reason)")
        #expect(m.state == .factory(Self.id))
        #expect(m.phase == .online)
        let expectedVersion: Double = text.contains("\"version\":5") ? 5 : 0
        #expect(ack.json["version"] == .number(expectedVersion))
    }

    @Test("a configuration over 64 KiB is rejected as too_large")
    func oversized() throws {
        let big = String(repeating: "x", count: ConfigValidation.maxConfigBytes)
        let payload = Self.config(1, settings: ["blob": .string(big)])
        #expect(payload.count > ConfigValidation.maxConfigBytes)
        let (ack, m) = try #require(Self.rejection(payload))
        #expect(ack.json["reason"]?.stringValue?.hasPrefix("too_large") == true)
        #expect(ack.json["version"] == .number(0))
        #expect(m.state.appliedVersion == 0)
    }

    @Test("heartbeat interval limits: 5 and 86400 apply, 4 and 86401 are rejected", arguments: [(4, false), (5, true), (86_400, true), (86_401, false), (0, false), (-60, false)])
    func heartbeatRange(_ seconds: Int, _ ok: Bool) {
        var m = Self.online()
        let e = m.handle(Self.configMessage(1, heartbeat: seconds))
        if ok {
            #expect(e.contains(.cancelHeartbeat))
            #expect(m.phase != .online)
        } else {
            #expect(e.published.first?.json["result"] == .string("rejected"))
            #expect(e.published.first?.json["reason"]?.stringValue?.contains("heartbeatInterval") == true)
            #expect(m.phase == .online)
        }
    }

    @Test("an activated device refuses to return to escrow")
    func noReturnToEscrow() throws {
        let state = AgentState(deviceId: Self.id, mode: .normal, owner: "acme", appliedVersion: 2, heartbeatInterval: 60)
        let (ack, m) = try #require(Self.rejection(Self.config(3, mode: .escrow), from: state))
        #expect(ack.json["version"] == .number(3))
        #expect(ack.json["reason"]?.stringValue?.contains("escrow") == true)
        #expect(m.state == state)
    }

    @Test("a failed write acks rejected with the storage reason and keeps the previous state")
    func persistFailed() {
        var m = Self.online()
        _ = m.handle(Self.configMessage(1))
        let e = m.handle(.persistFailed(reason: "disk full"))
        #expect(e.published == [Self.ack(1, .rejected, reason: "storage: disk full")])
        #expect(m.phase == .online)
        #expect(m.state == .factory(Self.id))
        // The retained configuration is tried again on its next delivery.
        #expect(m.handle(Self.configMessage(1)).contains(.cancelHeartbeat))
    }

    @Test("messages on other topics are ignored")
    func otherTopic() {
        var m = Self.online()
        let e = m.handle(.message(topic: "devices/other/config", payload: Self.config(1)))
        #expect(e.withoutLogs.isEmpty)
        #expect(m.phase == .online)
    }

    // MARK: connection loss

    @Test("connection lost while online: cancel heartbeat, reconnect; connected again re-subscribes")
    func reconnect() {
        var m = Self.online()
        let lost = m.handle(.connectionLost)
        #expect(lost.withoutLogs == [.cancelHeartbeat])
        #expect(m.phase == .connecting)
        #expect(m.handle(.heartbeatDue).isEmpty)
        let again = m.handle(.connected)
        #expect(again.first == .subscribe(Self.configTopic))
        #expect(m.phase == .online)
    }

    @Test("lost while applying, persisted while offline: no publish; after reconnect the retained copy is re-acked")
    func persistedOffline() {
        var m = Self.online()
        _ = m.handle(Self.configMessage(1))
        #expect(m.handle(.connectionLost).published.isEmpty)
        let done = m.handle(.persisted)
        #expect(done.published.isEmpty)
        #expect(done.withoutLogs.isEmpty)
        #expect(m.phase == .connecting)
        #expect(m.state.appliedVersion == 1)
        let up = m.handle(.connected)
        #expect(up.first == .subscribe(Self.configTopic))
        #expect(up.published == [Self.status(.online, mode: .normal, version: 1)])
        #expect(up.last == .scheduleHeartbeat(seconds: 60))
        #expect(m.handle(Self.configMessage(1)).published == [Self.ack(1, .applied)])
    }

    @Test("lost while applying, persist failed while offline: no publish; the retained copy is applied again")
    func persistFailedOffline() {
        var m = Self.online()
        _ = m.handle(Self.configMessage(1))
        _ = m.handle(.connectionLost)
        #expect(m.handle(.persistFailed(reason: "io")).published.isEmpty)
        #expect(m.phase == .connecting)
        _ = m.handle(.connected)
        #expect(m.handle(Self.configMessage(1)).contains(.cancelHeartbeat))
    }

    @Test("lost while applying, reconnected before persisted: re-subscribe, then ack once persisted")
    func reconnectedWhileApplying() {
        var m = Self.online()
        _ = m.handle(Self.configMessage(1))
        _ = m.handle(.connectionLost)
        let up = m.handle(.connected)
        #expect(up.first == .subscribe(Self.configTopic))
        #expect(up.published == [Self.status(.online, mode: .escrow, version: 0)])
        let done = m.handle(.persisted)
        #expect(m.phase == .online)
        #expect(done.published == [Self.ack(1, .applied), Self.status(.online, mode: .normal, version: 1)])
        #expect(done.last == .scheduleHeartbeat(seconds: 60))
    }

    // MARK: stop

    @Test("stop from any phase: cancel heartbeat, retained offline status, disconnect; then inert", arguments: [0, 1, 2, 3])
    func stop(_ steps: Int) {
        var m = Self.machine()
        let path: [AgentMachine.Event] = [.boot, .connected, Self.configMessage(1)]
        for e in path.prefix(steps) { _ = m.handle(e) }
        let e = m.handle(.stop)
        #expect(m.phase == .stopped)
        #expect(e.count == 3)
        #expect(e.first == .cancelHeartbeat)
        #expect(e.published == [Self.status(.offline, mode: .escrow, version: 0)])
        #expect(e.last == .disconnect)
        for event in Self.allEvents { #expect(m.handle(event).isEmpty || event == .stop) }
    }

    // MARK: exhaustive table

    static let allEvents: [AgentMachine.Event] = [
        .boot, .connected, .connectionLost, configMessage(1), .heartbeatDue, .persisted, .persistFailed(reason: "x"), .stop,
    ]

    enum PhaseName: String, CaseIterable, Sendable { case booting, connecting, online, applying, stopped }

    static func machine(in phase: PhaseName) -> AgentMachine {
        var m = machine()
        let path: [AgentMachine.Event]
        switch phase {
        case .booting: path = []
        case .connecting: path = [.boot]
        case .online: path = [.boot, .connected]
        case .applying: path = [.boot, .connected, configMessage(1)]
        case .stopped: path = [.stop]
        }
        for e in path { _ = m.handle(e) }
        return m
    }

    static func name(_ p: AgentMachine.Phase) -> PhaseName {
        switch p {
        case .booting: .booting
        case .connecting: .connecting
        case .online: .online
        case .applying: .applying
        case .stopped: .stopped
        }
    }

    /// Expected next phase for (phase, event) in the order of `allEvents`.
    static let table: [PhaseName: [PhaseName]] = [
        .booting: [.connecting, .booting, .booting, .booting, .booting, .booting, .booting, .stopped],
        // A configuration can overtake `.connected` after a reconnect: it is applied, and acked once the link is confirmed.
        .connecting: [.connecting, .online, .connecting, .applying, .connecting, .connecting, .connecting, .stopped],
        .online: [.online, .online, .connecting, .applying, .online, .online, .online, .stopped],
        .applying: [.applying, .applying, .applying, .applying, .applying, .online, .online, .stopped],
        .stopped: [.stopped, .stopped, .stopped, .stopped, .stopped, .stopped, .stopped, .stopped],
    ]

    @Test("every (phase, event) pair", arguments: PhaseName.allCases)
    func everyPair(_ phase: PhaseName) {
        for (i, event) in Self.allEvents.enumerated() {
            var m = Self.machine(in: phase)
            #expect(Self.name(m.phase) == phase)
            let effects = m.handle(event)
            #expect(Self.name(m.phase) == Self.table[phase]![i], "\(phase) + \(event)")
            if phase == .stopped { #expect(effects.isEmpty) }
            // Only a connected agent publishes, except the offline status on stop.
            if phase == .booting || phase == .connecting, event != .stop, event != .connected || phase == .booting {
                #expect(effects.published.isEmpty, "\(phase) + \(event)")
            }
        }
    }

    @Test("the agent state survives its own encoding, with the schema field")
    func agentStateCodable() throws {
        let s = AgentState(deviceId: Self.id, mode: .normal, owner: "acme", appliedVersion: 7, heartbeatInterval: 30, settings: ["a": .array([.number(1)])])
        let bytes = WireCodec.encode(s)
        #expect(try Fx.json(bytes)["schema"] == .number(1))
        #expect(try WireCodec.decode(AgentState.self, from: bytes) == s)
        #expect(AgentState.factory(Self.id) == AgentState(deviceId: Self.id, mode: .escrow, owner: nil, appliedVersion: 0, heartbeatInterval: 300, settings: [:]))
    }
}

@Suite("Config validation")
struct ConfigValidationTests {
    @Test("limits")
    func limits() {
        #expect(ConfigValidation.maxConfigBytes == 64 * 1024)
        #expect(DeviceConfig.heartbeatRange == 5...86_400)
    }

    @Test("problem() refuses version 0, out-of-range heartbeats and normal -> escrow")
    func problems() {
        let ok = DeviceConfig(version: 1, mode: .normal, heartbeatInterval: 60, owner: "acme")
        #expect(ConfigValidation.problem(in: ok, currentMode: .escrow) == nil)
        #expect(ConfigValidation.problem(in: ok, currentMode: .normal) == nil)
        var v0 = ok; v0.version = 0
        #expect(ConfigValidation.problem(in: v0, currentMode: .escrow)?.hasPrefix("invalid_argument") == true)
        var hb = ok; hb.heartbeatInterval = 3
        #expect(ConfigValidation.problem(in: hb, currentMode: .escrow)?.contains("5...86400") == true)
        var esc = ok; esc.mode = .escrow
        #expect(ConfigValidation.problem(in: esc, currentMode: .normal) != nil)
        #expect(ConfigValidation.problem(in: esc, currentMode: .escrow) == nil)
        // Back to escrow only with a change of owner (a return), never under the same owner.
        #expect(ConfigValidation.problem(in: esc, currentMode: .normal, currentOwner: "acme") != nil)
        var returned = esc; returned.owner = "oem"
        #expect(ConfigValidation.problem(in: returned, currentMode: .normal, currentOwner: "acme") == nil)
    }

    @Test("a change of owner on an issued identity: renewIdentity makes a CSR at once; the certificate that answers it reconnects")
    func renewal() throws {
        let issued = AgentState(deviceId: AgentMachineTests.id, mode: .normal, owner: "shopa", appliedVersion: 3, heartbeatInterval: 60, identity: .issued)
        var m = AgentMachine(state: issued, agentVersion: "1.2.3", bootedAt: AgentMachineTests.booted, rotatesIdentity: true)
        _ = m.handle(.boot, now: AgentMachineTests.booted)
        let connected = m.handle(.connected, now: AgentMachineTests.booted)
        #expect(!connected.contains(.requestCertificate), "an issued identity asks for nothing by itself")
        var sold = DeviceConfig(version: 4, mode: .normal, heartbeatInterval: 60, owner: "shopb")
        sold.renewIdentity = true
        guard case .persist(let next)? = m.handle(.message(topic: AgentMachineTests.configTopic, payload: WireCodec.encode(sold))).last else {
            Issue.record("expected a plain persist"); return
        }
        #expect(next.renewalRequested && !next.certificateRequested && next.identity == .issued)
        let after = m.handle(.persisted)
        #expect(after.contains(.requestCertificate), "asked at once, not at the next connect: \(after)")
        let sent = m.handle(.certificateRequestReady(csr: "CSR"))
        #expect(sent.contains { if case .publish(let t, _, _, _) = $0 { t == "devices/sim-000001/csr" } else { false } })
        // The answer: a configuration with the new owner's certificate.
        var answer = DeviceConfig(version: 5, mode: .normal, heartbeatInterval: 60, owner: "shopb", certificate: "PEM")
        answer.renewIdentity = nil
        guard case .persistIdentity(let installed, "PEM")? = m.handle(.message(topic: AgentMachineTests.configTopic, payload: WireCodec.encode(answer))).last else {
            Issue.record("expected the certificate to be installed"); return
        }
        #expect(!installed.renewalRequested && installed.identity == .issued)
        #expect(m.handle(.persisted).contains(.reconnect), "the new identity is taken up by reconnecting")
    }

    @Test("check() verdicts")
    func verdicts() {
        let c = DeviceConfig(version: 2, mode: .normal, heartbeatInterval: 60, owner: "acme")
        #expect(ConfigValidation.check(WireCodec.encode(c), appliedVersion: 1, currentMode: .escrow) == .apply(c))
        #expect(ConfigValidation.check(WireCodec.encode(c), appliedVersion: 2, currentMode: .normal) == .stale(version: 2))
        #expect(ConfigValidation.check(WireCodec.encode(c), appliedVersion: 9, currentMode: .normal) == .stale(version: 2))
        if case .reject(let v, _) = ConfigValidation.check(Fx.bytes("[]"), appliedVersion: 0, currentMode: .escrow) { #expect(v == 0) } else { Issue.record("expected reject") }
    }

    @Test("status and will carry the connection's session, new on every connection")
    func sessions() throws {
        var m = AgentMachine(state: .factory("dev-s"), agentVersion: "1.0.0")
        #expect(try Fx.json(m.will.payload)["session"] == nil, "no session before the first connection")
        m.beginSession(now: Date(timeIntervalSince1970: 1_000))
        let first = try #require(m.session)
        #expect(first == 1_000_000)
        #expect(try Fx.json(m.will.payload)["session"]?.intValue == first)
        _ = m.handle(.boot)
        let online = try #require(m.handle(.connected).published.first { $0.topic == "devices/dev-s/status" })
        #expect(online.json["session"]?.intValue == first, "the online status names the same connection as its will")
        // A clock that goes backwards still gives a newer session.
        m.beginSession(now: Date(timeIntervalSince1970: 999))
        #expect(m.session == first + 1)
        m.beginSession(now: Date(timeIntervalSince1970: 2_000))
        #expect(m.session == 2_000_000)
    }
}
