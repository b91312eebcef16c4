import Foundation
import EscrowCore
import MQTT

/// Runs an `AgentMachine` over libmosquitto: the thin I/O layer that executes its effects.
public actor AgentRuntime {
    public let settings: AgentSettings
    private var machine: AgentMachine
    private let stateFile: StateFile
    private var client: MQTTClient?
    private var heartbeat: Task<Void, Never>?
    private var finished = false
    private let log: @Sendable (String) -> Void

    public init(settings: AgentSettings, agentVersion: String = "1.0.0", log: @escaping @Sendable (String) -> Void) throws(AgentError) {
        self.settings = settings
        self.log = log
        stateFile = StateFile(directory: settings.stateDirectory)
        do { try FileManager.default.createDirectory(atPath: settings.stateDirectory, withIntermediateDirectories: true) } catch {
            throw .storage("cannot create state directory \(settings.stateDirectory): \(error.localizedDescription)")
        }
        let state: AgentState
        do { state = try stateFile.load(default: .factory(settings.deviceID)) } catch let e as AgentError { throw e } catch {
            throw .storage("\(error)")
        }
        guard state.deviceId == settings.deviceID else {
            throw .corruptState("state belongs to device \(state.deviceId), not \(settings.deviceID)")
        }
        machine = AgentMachine(state: state, agentVersion: agentVersion)
    }

    public var mode: DeviceMode { machine.state.mode }
    public var state: AgentState { machine.state }

    /// Connects and serves until `stop()`; throws only for failures the agent cannot retry.
    public func run() async throws(AgentError) {
        var options: MQTTOptions
        do { options = try MQTTOptions.parse(url: settings.broker, clientID: settings.deviceID.rawValue) } catch {
            throw .usage("broker '\(settings.broker)': \(error)")
        }
        options.version = settings.mqttVersion == "3.1.1" ? .v311 : .v5
        options.cleanSession = true
        options.keepAlive = settings.keepAlive
        options.reconnect = Backoff(initial: .seconds(settings.backoffInitial), maximum: .seconds(settings.backoffMaximum))
        let will = machine.will
        options.will = MQTTWill(topic: will.topic, payload: will.payload, qos: .atLeastOnce, retain: true)
        if settings.broker.hasPrefix("mqtts://"), let ca = settings.brokerCA {
            options.tls = MQTTTLS(caFile: ca, certFile: settings.certificate, keyFile: settings.privateKey)
        }
        let client: MQTTClient
        do { client = try MQTTClient(options) } catch { throw .usage("\(error)") }
        self.client = client

        execute(machine.handle(.boot))
        try await firstConnect(client, options: options)
        let events = client.events
        let eventTask = Task { [weak self] in
            for await e in events {
                guard let self else { return }
                switch e {
                case .connected: await self.feed(.connected)
                case .disconnected(let reason): await self.lost(reason)
                case .reconnecting(let attempt, let delay): await self.note("reconnecting (attempt \(attempt)) in \(delay)")
                }
            }
        }
        feed(.connected)
        for await m in client.messages {
            feed(.message(topic: m.topic, payload: m.payload))
            if finished { break }
        }
        eventTask.cancel()
    }

    private func firstConnect(_ client: MQTTClient, options: MQTTOptions) async throws(AgentError) {
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
                case .refused, .notAuthorized, .tls: throw .refused(e.description)
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
