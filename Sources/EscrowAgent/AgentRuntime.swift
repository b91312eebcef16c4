import Foundation
import EscrowCore
import MQTT
import Identity
import POSIX

/// Runs an `AgentMachine` over libmosquitto: the thin I/O layer that executes its effects.
public actor AgentRuntime {
    public let settings: AgentSettings
    /// The agent's own thread: state-file writes (fsync) and key and CSR generation block it, never
    /// the cooperative pool (the executor rule).
    private nonisolated let executor = ThreadExecutor(name: "escrow-agent")
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    private var machine: AgentMachine
    private let stateFile: StateFile
    private var client: MQTTClient?
    private var heartbeat: Task<Void, Never>?
    private var finished = false
    /// Set by `.reconnect`: the message loop ends and `run()` connects again with the new identity.
    private var switchingIdentity = false
    private let log: @Sendable (String) -> Void
    private let files: IdentityFiles

    public init(settings: AgentSettings, agentVersion: String = "1.0.0", log: @escaping @Sendable (String) -> Void) throws(AgentError) {
        self.settings = settings
        self.log = log
        stateFile = StateFile(directory: settings.stateDirectory)
        do { try FileManager.default.createDirectory(atPath: settings.stateDirectory, withIntermediateDirectories: true) } catch {
            throw .storage("cannot create state directory \(settings.stateDirectory): \(error.localizedDescription)")
        }
        var state: AgentState
        do { state = try stateFile.load(default: .factory(settings.deviceID)) } catch let e as AgentError { throw e } catch {
            throw .storage("\(error)")
        }
        guard state.deviceId == settings.deviceID else {
            throw .corruptState("state belongs to device \(state.deviceId), not \(settings.deviceID)")
        }
        files = IdentityFiles(directory: settings.stateDirectory)
        if state.identity == .factory || state.renewalRequested, state.certificateRequested, !FileManager.default.fileExists(atPath: files.pendingKey) {
            state.certificateRequested = false // the key behind the CSR is gone: send a new one
        }
        if state.identity == .issued, !files.hasIssuedIdentity {
            throw .identity("the state says the issued identity is in use, but \(files.certificate) or \(files.key) is missing")
        }
        // A bundle whose certificate names another device would connect as that device (the broker
        // takes the CN as the username): refuse it before connecting.
        if let path = settings.certificate, FileManager.default.fileExists(atPath: path) {
            let cert: Certificate
            do { cert = try Certificate(pem: try String(contentsOfFile: path, encoding: .utf8)) } catch {
                throw .identity("\(path) is not a readable PEM certificate (\(error))")
            }
            guard cert.commonName == settings.deviceID.rawValue else {
                throw .identity("\(path) is the certificate of '\(cert.commonName)', but device_id is \(settings.deviceID): use the bundle made for this device")
            }
        }
        let rotates = (try? BrokerURL.parse(settings.broker))?.tls == true && settings.certificate != nil
        machine = AgentMachine(state: state, agentVersion: agentVersion, rotatesIdentity: rotates)
    }

    public var mode: DeviceMode { machine.state.mode }
    public var state: AgentState { machine.state }

    /// Connects and serves until `stop()`; throws only for failures the agent cannot retry.
    /// Connects again (new client) when a configuration installs a new identity.
    public func run() async throws(AgentError) {
        execute(machine.handle(.boot))
        var afterSwitch = false
        while !finished {
            let options = try connectionOptions()
            let client: MQTTClient
            do { client = try MQTTClient(options) } catch { throw .usage("\(error)") }
            self.client = client
            try await firstConnect(client, options: options, retryRefusals: afterSwitch)
            feed(.connected)
            // Messages and connection events in the one order the connection saw them, so the
            // state machine never takes a message of a connection it has not yet been told about.
            var first = true
            for await delivery in client.deliveries {
                if switchingIdentity { break }
                switch delivery {
                case .message(let m): feed(.message(topic: m.topic, payload: m.payload))
                case .event(.connected):
                    // The first is the connect `firstConnect` awaited, already fed above.
                    if first { first = false } else { feed(.connected) }
                case .event(.disconnected(let reason)): lost(reason)
                case .event(.reconnecting(let attempt, let delay)): note("reconnecting (attempt \(attempt)) in \(delay)")
                }
                if finished || switchingIdentity { break }
            }
            guard switchingIdentity, !finished else { return }
            // Clean DISCONNECT: queued messages (the ack) go out first, and the will is not published.
            await client.disconnect()
            switchingIdentity = false
            afterSwitch = true
            log("reconnecting with the \(machine.state.identity.rawValue) identity")
        }
    }

    /// The connection options for the identity in force.
    private func connectionOptions() throws(AgentError) -> MQTTOptions {
        var options: MQTTOptions
        do { options = try MQTTOptions.parse(url: settings.broker, clientID: settings.deviceID.rawValue) } catch {
            throw .usage("broker '\(settings.broker)': \(error)")
        }
        options.version = settings.mqttVersion == "3.1.1" ? .v311 : .v5
        options.cleanSession = true
        options.keepAlive = settings.keepAlive
        options.reconnect = Backoff(initial: .seconds(settings.backoffInitial), maximum: .seconds(settings.backoffMaximum))
        machine.beginSession()
        let will = machine.will
        options.will = MQTTWill(topic: will.topic, payload: will.payload, qos: .atLeastOnce, retain: true)
        if (try? BrokerURL.parse(settings.broker))?.tls == true, let ca = settings.brokerCA {
            switch machine.state.identity {
            case .factory: options.tls = MQTTTLS(caFile: ca, certFile: settings.certificate, keyFile: settings.privateKey)
            case .issued: options.tls = MQTTTLS(caFile: ca, certFile: files.certificate, keyFile: files.key)
            }
        }
        return options
    }

    /// `retryRefusals`: right after switching identity, a refusal may only mean the broker has not
    /// reloaded its trust files yet, so it is retried like an unreachable broker.
    private func firstConnect(_ client: MQTTClient, options: MQTTOptions, retryRefusals: Bool = false) async throws(AgentError) {
        var attempt = 0
        var rng = SystemRandomNumberGenerator()
        let backoff = options.reconnect ?? Backoff()
        while true {
            do {
                try await client.connect()
                log("connected to \(settings.broker) as \(settings.deviceID)")
                return
            } catch let e as MQTTError {
                switch e.kind {
                case .refused, .notAuthorized, .tls: if !retryRefusals { throw .refused(e.description) }
                default: break
                }
                attempt += 1
                if settings.connectAttempts > 0 && attempt >= settings.connectAttempts { throw .unreachable(e.description) }
                let delay = backoff.delay(attempt: attempt - 1, random: &rng)
                log("cannot reach \(settings.broker) (\(e.message)); retrying in \(delay)")
                try? await Task.sleep(for: delay)
                if finished { throw .unreachable("stopped while connecting") }
            } catch {
                throw .unreachable("\(error)")
            }
        }
    }

    /// Stops cleanly: marks the device offline, disconnects.
    public func stop() async {
        guard !finished else { return }
        execute(machine.handle(.stop))
        finished = true
        if let client { await client.disconnect() }
    }

    private func note(_ s: String) { log(s) }
    private func lost(_ reason: String) { log("disconnected: \(reason)"); feed(.connectionLost) }

    private func feed(_ event: AgentMachine.Event) { execute(machine.handle(event)) }

    private func execute(_ effects: [AgentMachine.Effect]) {
        for effect in effects {
            switch effect {
            case .connect: break // run() connects; the MQTT client reconnects by itself afterwards
            case .subscribe(let filter):
                guard let client else { continue }
                Task { _ = try? await client.subscribe([(filter, .atLeastOnce)]) }
            case .publish(let topic, let payload, let qos, let retain):
                guard let client else { continue }
                do { _ = try client.publishNoWait(topic, payload, qos: qos == 0 ? .atMostOnce : .atLeastOnce, retain: retain) } catch {
                    log("publish to \(topic) failed: \(error)")
                }
            case .persist(let state):
                // Synchronous: the ack that follows must never precede the durable write.
                do {
                    try stateFile.save(state)
                    execute(machine.handle(.persisted))
                } catch {
                    execute(machine.handle(.persistFailed(reason: "\(error)")))
                }
            case .persistIdentity(let state, let certificate):
                // Identity files first, state last: a crash in between leaves the old state, which
                // re-applies the re-delivered configuration and rewrites the same files.
                do throws(IdentityInstallError) {
                    try files.install(certificate: certificate, deviceID: settings.deviceID)
                    do { try stateFile.save(state) } catch { throw .storage("\(error)") }
                    files.removePendingKey()
                    execute(machine.handle(.persisted))
                } catch {
                    switch error {
                    case .mismatch(let reason): execute(machine.handle(.certificateRejected(reason: reason)))
                    case .storage(let reason): execute(machine.handle(.persistFailed(reason: reason)))
                    }
                }
            case .requestCertificate:
                do {
                    let csr = try files.certificateRequest(deviceID: settings.deviceID)
                    execute(machine.handle(.certificateRequestReady(csr: csr)))
                } catch {
                    log("cannot prepare a certificate signing request: \(error)")
                }
            case .reconnect:
                // Always follows a configuration message: run()'s message loop sees the flag and reconnects.
                switchingIdentity = true
            case .scheduleHeartbeat(let seconds):
                heartbeat?.cancel()
                heartbeat = Task { [weak self] in
                    try? await Task.sleep(for: .seconds(seconds))
                    guard !Task.isCancelled, let self else { return }
                    await self.feed(.heartbeatDue)
                }
            case .cancelHeartbeat:
                heartbeat?.cancel(); heartbeat = nil
            case .disconnect:
                break // stop() disconnects after the offline status is queued
            case .log(let line):
                log(line)
            }
        }
    }
}
