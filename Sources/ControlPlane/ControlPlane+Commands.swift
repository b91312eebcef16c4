import Foundation
import EscrowCore
import MQTT
import Storage
import POSIX

/// The command line of the straight line: a message is decoded and validated (Ingest), the
/// `CommandProcessor` decides (pure), the ledger commits it in one transaction with its stored
/// reply and events (outbox rows), and only then is the reply published.
extension ControlPlane {
    // MARK: dispatch

    /// Handles one incoming message. Never throws: bad input is answered, not fatal.
    public func handle(_ m: MQTTMessage) {
        if m.topic == BrokerNames.reloadTopic { return reloadConfirmed(m.payload) }
        guard let topic = Topic(path: m.topic) else { return }
        switch topic {
        case .accountCommand(let account, let command): handleCommand(account: account, command: command, message: m)
        case .deviceHeartbeat(let d): ingest.receive(d, m, client: client)
        case .deviceStatus(let d): status(d, m)
        case .deviceConfigAck(let d): ack(d, m)
        case .deviceCSR(let d): csr(d, m)
        case .deviceConfig, .deviceError, .accountReply, .accountEvent: return
        }
    }

    // MARK: commands

    func handleCommand(account: AccountID, command: String, message m: MQTTMessage) {
        tally.commands += 1
        let clock = ContinuousClock(), start = clock.now
        let code = executeCommand(account: account, command: command, message: m)
        let elapsed = start.duration(to: clock.now)
        latencies.command(command, code: code, seconds: elapsed.seconds)
    }

    /// Decodes, runs and answers one command; returns its result code ("ok" or the contract's error code).
    func executeCommand(account: AccountID, command: String, message m: MQTTMessage) -> String {
        let sender = Self.sender(of: m)
        let envelope: CommandEnvelope
        do {
            envelope = try WireCodec.decode(CommandEnvelope.self, from: m.payload)
        } catch {
            // Answered on the reply topic whenever the request id can still be read.
            return fail(account: account, command: command, requestID: CommandEnvelope.readableRequestID(from: m.payload), error: error, response: m.properties, sender: sender)
        }
        guard Identifier.isValid(envelope.requestId) else {
            return fail(account: account, command: command, requestID: nil,
                        error: WireError(.invalidArgument, "requestId must match [A-Za-z0-9._-]{1,64}"), response: m.properties, sender: sender)
        }
        guard case .object = envelope.args else {
            return fail(account: account, command: command, requestID: envelope.requestId,
                        error: WireError(.malformed, "args: expected a JSON object (use {} for a command without arguments)"), response: m.properties, sender: sender)
        }
        do {
            if let stored = try ledger.storedReply(account: account, requestID: envelope.requestId) {
                log(.debug, "replay of \(account)/\(envelope.requestId): returning the first reply")
                reply(account: account, requestID: envelope.requestId, payload: stored, response: m.properties)
                return "ok"
            }
            var effects = Effects()
            let clock = ContinuousClock(), began = clock.now
            defer { latencies.commit(seconds: began.duration(to: clock.now).seconds) }
            var replayed = false
            let payload: [UInt8] = try ledger.db.transaction {
                // Again under the writer lock: another escrowd sharing the ledger may have answered
                // this request id between the lookup above and now.
                if let stored = try ledger.storedReply(account: account, requestID: envelope.requestId) {
                    replayed = true
                    return stored
                }
                processor.actor = sender
                defer { processor.actor = nil }
                let outcome = try processor.execute(account: account, command: command, args: envelope.args)
                let bytes = WireCodec.encode(CommandReply(requestId: envelope.requestId, result: outcome.result))
                if outcome.mutating {
                    // Device private keys go to the operator once and are never stored: a replayed
                    // provisioning reply lists the bundles without their keys.
                    let stored = command == CommandName.deviceProvision.rawValue
                        ? WireCodec.encode(CommandReply(requestId: envelope.requestId, result: Self.withoutPrivateKeys(outcome.result))) : bytes
                    try ledger.storeReply(account: account, requestID: envelope.requestId, command: command, reply: stored, at: Date())
                    try ledger.appendAudit(account: account, at: Date(), operator: sender, command: command, requestID: envelope.requestId, code: nil)
                    try ledger.appendEvents(outcome.effects.events)
                    try ledger.enqueue(outcome.effects.clearRetained.map { Outbound(topic: $0, payload: [], retain: true) })
                }
                effects = outcome.effects
                return bytes
            }
            if replayed {
                log(.debug, "replay of \(account)/\(envelope.requestId) answered by another escrowd: returning its reply")
                reply(account: account, requestID: envelope.requestId, payload: payload, response: m.properties)
                return "ok"
            }
            // Committed: now the world may hear of it. A change of the broker's access files is
            // answered once the broker confirms the reload that puts it in force (a new login
            // works, a removed one is refused, a revoked certificate has no rights).
            if effects.accessChanged {
                let token = afterCommit(effects)
                replyOnceInForce(token, account: account, requestID: envelope.requestId, payload: payload, response: m.properties)
            } else {
                reply(account: account, requestID: envelope.requestId, payload: payload, response: m.properties)
                afterCommit(effects)
            }
            return "ok"
        } catch {
            return fail(account: account, command: command, requestID: envelope.requestId, error: error, response: m.properties, sender: sender)
        }
    }

    /// Returns the token of the broker reload it started, when the broker confirms reloads.
    @discardableResult
    func afterCommit(_ effects: Effects) -> UInt64? {
        for d in effects.retired { lease.forget(d) }
        ingest.addKnown(effects.configs)
        // Access first: a configuration may carry a certificate from an authority the broker must
        // trust, and a retired device's retained topics are cleared once its revocation is on file.
        let token = effects.accessChanged ? rewriteBrokerAccess() : nil
        do { try drainOutbox() } catch {
            // The rows stay: the next drain (another commit, a flush, a restart) publishes them.
            log(.warn, "could not publish the outbox: \(error)")
        }
        publishConfigs(effects.configs)
        ingest.addKnown(effects.provisioned)
        return token
    }

    /// Writes the broker's access files from the ledger and reloads it (`onAccessChanged`);
    /// returns the reload's token when the broker confirms reloads.
    @discardableResult
    func rewriteBrokerAccess() -> UInt64? {
        guard let snap = try? accessSnapshot() else { return nil }
        return onAccessChanged(snap)
    }

    // MARK: replies held until a reload is in force

    struct HeldReply {
        var token: UInt64
        var account: AccountID
        var requestID: String
        var payload: [UInt8]
        var response: MQTTProperties
    }

    /// Replies now when there is nothing to wait for (no token, or already confirmed); otherwise
    /// holds the reply until the broker confirms `token`, or `reloadConfirmationTimeout` passes.
    func replyOnceInForce(_ token: UInt64?, account: AccountID, requestID: String, payload: [UInt8], response: MQTTProperties) {
        guard let token, token > confirmedReload else {
            return reply(account: account, requestID: requestID, payload: payload, response: response)
        }
        heldReplies.append(HeldReply(token: token, account: account, requestID: requestID, payload: payload, response: response))
        let timeout = options.reloadConfirmationTimeout
        Task { [weak self] in
            // Halfway, a reload still unconfirmed is signalled once more (mosquitto 2.0.11 loses a
            // SIGHUP that arrives during a reload); at the end the reply goes out regardless.
            try? await Task.sleep(for: timeout / 2)
            await self?.signalAgainIfUnconfirmed(token)
            try? await Task.sleep(for: timeout / 2)
            await self?.releaseHeldReplies(through: token, confirmed: false)
        }
    }

    /// Rewrites the access files under a new token and reloads the broker again, when `token` has
    /// replies waiting and no confirmation yet.
    func signalAgainIfUnconfirmed(_ token: UInt64) {
        guard token > confirmedReload, heldReplies.contains(where: { $0.token == token }) else { return }
        log(.info, "no confirmation of broker reload \(token) yet; reloading the broker once more")
        rewriteBrokerAccess()
    }

    /// A reload confirmation from the broker plugin: its payload is the token of the latest
    /// reload whose files are now in force.
    func reloadConfirmed(_ payload: [UInt8]) {
        guard let token = UInt64(String(decoding: payload, as: UTF8.self)) else {
            if !payload.isEmpty { log(.warn, "ignoring a reload confirmation that is not a token (\(payload.count) bytes)") }
            return
        }
        confirmedReload = max(confirmedReload, token)
        releaseHeldReplies(through: confirmedReload, confirmed: true)
    }

    /// Sends the held replies whose token is at most `token`, in the order they were held.
    func releaseHeldReplies(through token: UInt64, confirmed: Bool) {
        let due = heldReplies.filter { $0.token <= token }
        guard !due.isEmpty else { return }
        heldReplies.removeAll { $0.token <= token }
        if !confirmed {
            log(.warn, "the broker did not confirm reload \(token) within \(options.reloadConfirmationTimeout); answering \(due.count) command(s) anyway (their change may not be in force yet)")
        }
        for r in due { reply(account: r.account, requestID: r.requestID, payload: r.payload, response: r.response) }
    }

    /// Who sent a command, as the broker vouches for it: the last `escrow-operator` user property
    /// (the EscrowFleet broker plugin appends the authenticated username after any the client
    /// sent). Nil when the broker does not stamp commands.
    static func sender(of m: MQTTMessage) -> String? {
        m.properties.userProperties.last { $0.0 == operatorProperty }?.1
    }
    /// The user property the broker plugin stamps (`ESCROW_BROKER_PLUGIN_OPERATOR_PROPERTY`).
    static let operatorProperty = "escrow-operator"

    @discardableResult
    func fail(account: AccountID, command: String, requestID: String?, error: any Error, response: MQTTProperties, sender: String? = nil) -> String {
        tally.commandErrors += 1
        let wire = Self.wireError(error)
        // A refused attempt to change something is audited too (read-only commands are not).
        if CommandName(rawValue: command).flatMap({ CommandSchema.byName[$0]?.readOnly }) != true {
            do { try ledger.appendAudit(account: account, at: Date(), operator: sender, command: command, requestID: requestID, code: wire.code) } catch {
                log(.warn, "could not record the refused \(command.prefix(64)) in the audit log: \(error)")
            }
        }
        log(.info, "command \(account)/\(command.prefix(64)) failed: \(wire)",
            ["account": account.rawValue, "command": String(command.prefix(64)), "requestId": requestID ?? "", "code": wire.code.rawValue])
        if let requestID {
            reply(account: account, requestID: requestID, payload: WireCodec.encode(CommandReply(requestId: requestID, error: wire)), response: response)
        } else if let rt = response.responseTopic, rt.hasPrefix("accounts/\(account)/reply/") {
            publish(rt, WireCodec.encode(CommandReply(requestId: "", error: wire)), properties: .init(correlationData: response.correlationData))
        }
        let event = Event(type: .commandFailed, at: Date(), account: account, details: [
            "command": .string(String(command.prefix(64))), "requestId": requestID.map(JSONValue.string) ?? .null,
            "code": .string(wire.code.rawValue), "message": .string(wire.message),
        ])
        publish(Outbound.event(event))
        return wire.code.rawValue
    }

    static func withoutPrivateKeys(_ result: JSONValue) -> JSONValue {
        guard case .object(var o) = result, case .array(let bundles)? = o["bundles"] else { return result }
        o["bundles"] = .array(bundles.map { b in
            guard case .object(var bo) = b else { return b }
            bo["privateKey"] = ""
            return .object(bo)
        })
        o["privateKeysOmitted"] = true
        return .object(o)
    }

    static func wireError(_ error: any Error) -> WireError {
        switch error {
        case let e as WireError: return e
        case let e as DomainError: return e.wire
        case let e as any StorageFailure where e.isUnavailable:
            return WireError(.storageUnavailable, "the control plane cannot write its database (\(e.message)); nothing was changed, retry later")
        case let e as any StorageFailure where e.isConstraint:
            return WireError(.conflict, "the change conflicts with existing state; nothing was changed")
        default: return WireError(.internalError, "unexpected error: \(error)")
        }
    }

    func reply(account: AccountID, requestID: String, payload: [UInt8], response: MQTTProperties) {
        // Always on the fixed reply topic (MQTT 3.1.1 clients); with the correlation data when the
        // MQTT 5 response topic is that same topic, so the reply is published once.
        let standard = Topic.accountReply(account, requestID: requestID).path
        let correlated = response.responseTopic == standard ? MQTTProperties(correlationData: response.correlationData) : MQTTProperties()
        publish(standard, payload, properties: correlated)
        // Another response topic is honoured only inside the same account's reply tree: the
        // control plane is privileged and must not be steered into another account's topics.
        if let rt = response.responseTopic, rt != standard, rt.hasPrefix("accounts/\(account)/reply/") {
            publish(rt, payload, properties: .init(correlationData: response.correlationData))
        }
    }
}
