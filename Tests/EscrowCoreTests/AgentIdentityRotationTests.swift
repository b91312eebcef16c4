import Foundation
import Testing
import EscrowCore

/// The agent's side of "credentials change on activation" (topics.md, `devices/{id}/csr`):
/// a CSR while in escrow, the certificate installed with the activation configuration, a reconnect.
@Suite("Agent state machine: identity rotation on activation")
struct AgentIdentityRotationTests {
    static let id: DeviceID = "sim-000001"
    static let csrTopic = "devices/sim-000001/csr"
    static let configTopic = "devices/sim-000001/config"
    static let ackTopic = "devices/sim-000001/config/ack"
    static let csrPEM = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
    static let certPEM = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"

    static func machine(_ state: AgentState = .factory(id), rotates: Bool = true) -> AgentMachine {
        AgentMachine(state: state, agentVersion: "1.2.3", bootedAt: Fx.t0, rotatesIdentity: rotates)
    }

    static func online(_ state: AgentState = .factory(id), rotates: Bool = true) -> AgentMachine {
        var m = machine(state, rotates: rotates)
        _ = m.handle(.boot)
        _ = m.handle(.connected)
        return m
    }

    static func activation(_ version: Int = 1, certificate: String? = certPEM, mode: DeviceMode = .normal) -> AgentMachine.Event {
        .message(topic: configTopic, payload: WireCodec.encode(DeviceConfig(version: version, mode: mode, heartbeatInterval: 60, owner: "acme",
                                                                            settings: [:], certificate: certificate)))
    }

    static func ack(_ version: Int, _ result: ConfigAck.Result, reason: String? = nil) -> Published {
        Published(topic: ackTopic, json: try! Fx.json(WireCodec.encode(ConfigAck(version: version, result: result, reason: reason))), qos: 1, retain: false)
    }

    // MARK: the request

    @Test("connected in escrow: ask the I/O layer for a key and CSR after the usual effects")
    func requestsOnConnect() {
        var m = Self.machine()
        _ = m.handle(.boot)
        let e = m.handle(.connected)
        #expect(e.last == .requestCertificate)
        #expect(e.prefix(3) == [.subscribe(Self.configTopic), e[1], .scheduleHeartbeat(seconds: DeviceConfig.defaultEscrowHeartbeat)])
    }

    @Test("the CSR goes out on devices/{id}/csr, QoS 1, not retained, and the request is persisted")
    func csrPublishedAndRecorded() throws {
        var m = Self.machine()
        _ = m.handle(.boot)
        _ = m.handle(.connected)
        let e = m.handle(.certificateRequestReady(csr: Self.csrPEM))
        let p = try #require(e.published.first)
        #expect(p.topic == Self.csrTopic && p.qos == 1 && !p.retain)
        #expect(try WireCodec.decode(CertificateRequest.self, from: WireCodec.encode(CertificateRequest(csr: Self.csrPEM))).csr == p.json["csr"]?.stringValue)
        var expected = AgentState.factory(Self.id)
        expected.certificateRequested = true
        #expect(e.withoutLogs.dropFirst() == [.persist(expected)])
        #expect(m.state.certificateRequested)
        #expect(m.phase == .online)
    }

    @Test("not asked again after a reconnect or a reboot once sent")
    func notResent() {
        var m = Self.online()
        _ = m.handle(.certificateRequestReady(csr: Self.csrPEM))
        _ = m.handle(.connectionLost)
        #expect(!m.handle(.connected).contains(.requestCertificate))
        var rebooted = Self.machine(m.state)
        _ = rebooted.handle(.boot)
        #expect(!rebooted.handle(.connected).contains(.requestCertificate))
    }

    @Test("never asked by agents without certificates, by activated devices that asked already, or once the issued identity is in force")
    func notAsked() {
        for (state, rotates) in [(AgentState.factory(Self.id), false),
                                 (AgentState(deviceId: Self.id, mode: .normal, owner: "acme", appliedVersion: 1, certificateRequested: true), true),
                                 (AgentState(deviceId: Self.id, mode: .normal, owner: "acme", appliedVersion: 1, identity: .issued), true),
                                 (AgentState(deviceId: Self.id, identity: .issued), true)] {
            var m = Self.machine(state, rotates: rotates)
            _ = m.handle(.boot)
            #expect(!m.handle(.connected).contains(.requestCertificate))
        }
    }

    @Test("a CSR that becomes ready while offline is dropped; it is asked for again on the next connect")
    func readyWhileOffline() {
        var m = Self.online()
        _ = m.handle(.connectionLost)
        #expect(m.handle(.certificateRequestReady(csr: Self.csrPEM)).isEmpty)
        #expect(!m.state.certificateRequested)
        #expect(m.handle(.connected).contains(.requestCertificate))
    }

    // MARK: the certificate

    @Test("an activation carrying a certificate: install it with the state, ack, then reconnect with it")
    func installAndReconnect() {
        var m = Self.online(AgentState(deviceId: Self.id, certificateRequested: true))
        let e = m.handle(Self.activation())
        let expected = AgentState(deviceId: Self.id, mode: .normal, owner: "acme", appliedVersion: 1, heartbeatInterval: 60, identity: .issued)
        #expect(e == [.cancelHeartbeat, .persistIdentity(expected, certificate: Self.certPEM)])
        #expect(m.state.identity == .factory, "nothing is in force before it is persisted")
        let done = m.handle(.persisted)
        #expect(m.state == expected)
        #expect(done.published == [Self.ack(1, .applied)])
        #expect(done.last == .reconnect)
        #expect(m.phase == .connecting)
        // The new connection announces normal mode and re-acks the retained re-delivery.
        let up = m.handle(.connected)
        #expect(up.published.first?.json["mode"] == .string("normal"))
        #expect(!up.contains(.requestCertificate))
        #expect(m.handle(Self.activation()).published == [Self.ack(1, .applied)])
    }

    @Test("installed while offline: no ack, still reconnect with the new identity")
    func installOffline() {
        var m = Self.online()
        _ = m.handle(Self.activation())
        _ = m.handle(.connectionLost)
        let done = m.handle(.persisted)
        #expect(done.published.isEmpty)
        #expect(done.last == .reconnect)
        #expect(m.state.identity == .issued)
    }

    @Test("a certificate that does not fit the pending key: rejected, previous configuration and identity stay")
    func certificateRejected() {
        var m = Self.online()
        _ = m.handle(Self.activation())
        let e = m.handle(.certificateRejected(reason: "does not certify this device's pending key"))
        #expect(e.published == [Self.ack(1, .rejected, reason: "invalid_argument: certificate does not certify this device's pending key")])
        #expect(m.state == .factory(Self.id))
        #expect(m.phase == .online)
        #expect(e.contains(.scheduleHeartbeat(seconds: DeviceConfig.defaultEscrowHeartbeat)))
    }

    @Test("a later configuration re-carrying the installed certificate applies without another reconnect")
    func repushedCertificate() {
        let issued = AgentState(deviceId: Self.id, mode: .normal, owner: "acme", appliedVersion: 1, heartbeatInterval: 60, identity: .issued)
        var m = Self.online(issued)
        let e = m.handle(Self.activation(2))
        guard case .persistIdentity(let s, _)? = e.last else { Issue.record("expected persistIdentity, got \(e)"); return }
        #expect(s.identity == .issued && s.appliedVersion == 2)
        let done = m.handle(.persisted)
        #expect(!done.contains(.reconnect))
        #expect(done.published == [Self.ack(2, .applied)])
        #expect(m.phase == .online)
    }

    @Test("agents that do not rotate ignore a configuration's certificate")
    func ignoredWithoutRotation() {
        var m = Self.online(rotates: false)
        let e = m.handle(Self.activation())
        guard case .persist(let s)? = e.last else { Issue.record("expected persist, got \(e)"); return }
        #expect(s.identity == .factory)
        #expect(!m.handle(.persisted).contains(.reconnect))
    }

    @Test("state files written before identity rotation still load (factory identity, nothing requested)")
    func oldStateFile() throws {
        let old = #"{"schema":1,"deviceId":"sim-000001","mode":"normal","owner":"acme","appliedVersion":3,"heartbeatInterval":60,"settings":{}}"#
        let s = try WireCodec.decode(AgentState.self, from: Array(old.utf8))
        #expect(s.identity == .factory && !s.certificateRequested && s.appliedVersion == 3)
        let round = try WireCodec.decode(AgentState.self, from: WireCodec.encode(AgentState(deviceId: Self.id, identity: .issued, certificateRequested: true)))
        #expect(round.identity == .issued && round.certificateRequested)
    }

    @Test("active on the factory identity: the agent sends its CSR from normal mode")
    func lateActivationAsks() throws {
        // Activated while offline, without a certificate: applied, then asked for on the next connect.
        var m = Self.online()
        #expect(m.handle(.certificateRequestReady(csr: Self.csrPEM)).published.first?.topic == Self.csrTopic)
        _ = m.handle(Self.activation(1, certificate: nil))
        _ = m.handle(.persisted)
        #expect(m.state.mode == .normal && m.state.identity == .factory)
        #expect(!m.state.certificateRequested, "an activation without a certificate asks again")
        _ = m.handle(.connectionLost)
        let reconnect = m.handle(.connected)
        #expect(reconnect.last == .requestCertificate)
        let sent = m.handle(.certificateRequestReady(csr: Self.csrPEM))
        #expect(sent.published.first?.topic == Self.csrTopic)
        // The certificate then arrives in a later configuration and is installed as usual.
        let install = m.handle(Self.activation(2))
        #expect(install.contains { if case .persistIdentity = $0 { true } else { false } })
        // A device that never connected before its activation asks on its first connection too.
        var fresh = Self.machine(AgentState(deviceId: Self.id, mode: .normal, appliedVersion: 1))
        _ = fresh.handle(.boot)
        #expect(fresh.handle(.connected).last == .requestCertificate)
        // An issued identity never asks.
        var issued = Self.machine(AgentState(deviceId: Self.id, mode: .normal, appliedVersion: 1, identity: .issued))
        _ = issued.handle(.boot)
        #expect(issued.handle(.connected).last != .requestCertificate)
    }
}
