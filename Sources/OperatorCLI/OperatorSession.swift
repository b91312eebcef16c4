import EscrowCore
import Foundation
import MQTT

/// Why an operator command could not be completed. Every error `OperatorSession` throws is one of these.
public enum OperatorError: Error, Sendable, CustomStringConvertible {
    /// The broker could not be reached, refused the login, or rejected a publish.
    case connection(MQTTError)
    /// The broker's ACL does not let this user use `topic` (the account is outside the user's reach).
    case notAuthorized(topic: String)
    /// No reply within the timeout: escrowd may be down or overloaded.
    case noReply(command: String, account: AccountID, after: Duration, requestId: String)
    /// The connection dropped while a reply was awaited.
    case connectionLost(String)
    /// escrowd answered `ok: false`.
    case command(WireError)
    /// escrowd's reply could not be read (a version mismatch between escrowctl and escrowd).
    case badReply(String)
    /// A caller-side mistake (an invalid request id or account).
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .connection(let e): return e.description
        case .notAuthorized(let t): return "not authorized to use \(t)"
        case .noReply(let c, let a, let d, let r): return "no reply to \(c) (request id \(r)) in account \(a) within \(d.seconds) s"
        case .connectionLost(let r): return "connection to the broker lost: \(r)"
        case .command(let w): return w.description
        case .badReply(let m): return "unreadable reply: \(m)"
        case .invalidArgument(let m): return m
        }
    }
}

/// An event received on `accounts/{account}/events/{type}`; `event` is nil when the payload could not be
/// decoded (then `problem` says why), so raw consumers still see every message.
public struct ReceivedEvent: Sendable {
    public let topic: String
    public let payload: [UInt8]
    public let event: Event?
    public let problem: String?
}

/// One operator's MQTT connection to escrowd: sends commands and awaits their replies, and streams events.
///
/// Each command subscribes to its own reply topic `accounts/{account}/reply/{requestId}` before publishing,
/// sets the MQTT 5 response topic and correlation data, and waits at most `timeout`. Safe to use from
/// several tasks at once (replies are routed by topic). Call `close()` when done.
public actor OperatorSession {
    public struct Configuration: Sendable, Equatable {
        /// `mqtt://host:port` (or `mqtts://`); credentials given here win over ones in the URL.
        public var broker: String
        public var username: String?
        public var password: String?
        /// The account acted in when a call names none.
        public var account: AccountID
        /// Bound on connecting and on each command's round trip.
        public var timeout: Duration
        /// nil: `USERNAME:escrowctl-RANDOM`; on the platform's broker no other login may use it.
        public var clientID: String?
        /// With `mqtts://`: the CA that signed the broker's certificate (default: the system's CAs).
        public var caFile: String?

        public init(broker: String = "mqtt://127.0.0.1:1883", username: String? = nil, password: String? = nil,
                    account: AccountID, timeout: Duration = .seconds(10), clientID: String? = nil,
                    caFile: String? = nil) {
            self.broker = broker; self.username = username; self.password = password
            self.account = account; self.timeout = timeout; self.caFile = caFile; self.clientID = clientID
        }
    }

    /// The largest reply accepted (a 1,000-device provisioning reply with bundles is about 2 MB).
    public static let maxReplyBytes = 64 * 1024 * 1024

    private struct Waiter {
        var continuation: CheckedContinuation<MQTTMessage?, Never>
        var timer: Task<Void, Never>
    }
    private struct Sink {
        var prefix: String
        var types: Set<EventType>?
        var continuation: AsyncStream<ReceivedEvent>.Continuation
    }

    public nonisolated let configuration: Configuration
    private let client: MQTTClient
    private var expecting: Set<String> = []
    private var early: [String: MQTTMessage] = [:]
    private var waiters: [String: Waiter] = [:]
    private var sinks: [Int: Sink] = [:]
    private var nextSink = 0
    private var pump: Task<Void, Never>?
    /// Why the connection ended, once it has.
    public private(set) var disconnectReason: String?

    private init(configuration: Configuration, client: MQTTClient) {
        self.configuration = configuration
        self.client = client
    }

    /// Connects (MQTT 5, clean session, no automatic reconnect) within `configuration.timeout`.
    public static func connect(_ configuration: Configuration) async throws -> OperatorSession {
        var options: MQTTOptions
        do { options = try MQTTOptions.parse(url: configuration.broker, clientID: configuration.clientID ?? "") } catch let e as MQTTError {
            throw OperatorError.connection(e)
        } catch { throw OperatorError.invalidArgument("\(error)") }
        options.version = .v5
        options.cleanSession = true
        options.reconnect = nil
        options.keepAlive = 30
        if let u = configuration.username { options.username = u }
        if let p = configuration.password { options.password = p }
        if configuration.clientID == nil {
            options.clientID = BrokerNames.clientID(options.username ?? "anonymous", suffix: "escrowctl-" + randomToken(12))
        }
        if let ca = configuration.caFile, options.tls != nil { options.tls = MQTTTLS(caFile: ca) }
        let client: MQTTClient
        do {
            client = try MQTTClient(options)
            try await client.connect(timeout: configuration.timeout)
        } catch let e as MQTTError { throw OperatorError.connection(e) } catch { throw OperatorError.connectionLost("\(error)") }
        let session = OperatorSession(configuration: configuration, client: client)
        await session.startPump()
        return session
    }

    private func startPump() {
        let messages = client.messages
        pump = Task { [weak self] in
            for await m in messages { await self?.deliver(m) }
            await self?.ended()
        }
    }

    /// Sends one command and returns escrowd's reply, successful or not (see `call` for typed results).
    /// `requestId` makes a retry idempotent: escrowd answers a replayed id with its first reply.
    public func send(_ command: CommandName, args: JSONValue, in account: AccountID? = nil, requestId: String? = nil) async throws -> CommandReply {
        let account = account ?? configuration.account
        let rid = requestId ?? Self.randomToken(20)
        guard Identifier.isValid(rid) else { throw OperatorError.invalidArgument("request id '\(rid.prefix(80))' must match [A-Za-z0-9._-]{1,64}") }
        if let reason = disconnectReason { throw OperatorError.connectionLost(reason) }
        let replyTopic = Topic.accountReply(account, requestID: rid).path
        expecting.insert(replyTopic)
        defer { expecting.remove(replyTopic); early[replyTopic] = nil }
        do {
            let granted = try await client.subscribe([(replyTopic, .atLeastOnce)])
            if (granted.first ?? 0x80) >= 0x80 { throw OperatorError.notAuthorized(topic: replyTopic) }
            let envelope = CommandEnvelope(requestId: rid, args: args)
            try await client.publish(Topic.accountCommand(account, command: command.rawValue).path, WireCodec.encode(envelope),
                                     qos: .atLeastOnce, properties: MQTTProperties(responseTopic: replyTopic, correlationData: Array(rid.utf8)))
        } catch let e as MQTTError {
            if e.kind == .notAuthorized { throw OperatorError.notAuthorized(topic: Topic.accountCommand(account, command: command.rawValue).path) }
            throw OperatorError.connection(e)
        }
        let message = await awaitMessage(on: replyTopic, timeout: configuration.timeout)
        if disconnectReason == nil { try? await client.unsubscribe([replyTopic]) }
        guard let message else {
            if let reason = disconnectReason { throw OperatorError.connectionLost(reason) }
            throw OperatorError.noReply(command: command.rawValue, account: account, after: configuration.timeout, requestId: rid)
        }
        // Replies come from escrowd (trusted) and carry up to 1,000 device bundles: allow far more than a command.
        do { return try WireCodec.decode(CommandReply.self, from: message.payload, limit: Self.maxReplyBytes) } catch {
            throw OperatorError.badReply("escrowd's reply to \(command.rawValue) on \(replyTopic): \(error.description)")
        }
    }

    /// Sends a command with typed arguments and returns its result as JSON; `ok: false` throws `.command`.
    public func call<Args: Encodable & Sendable>(_ command: CommandName, _ args: Args, in account: AccountID? = nil, requestId: String? = nil) async throws -> JSONValue {
        let json: JSONValue
        do { json = try JSONValue(encoding: args) } catch { throw OperatorError.invalidArgument("cannot encode \(command.rawValue) arguments: \(error)") }
        let reply = try await send(command, args: json, in: account, requestId: requestId)
        guard reply.ok else { throw OperatorError.command(reply.error ?? WireError(.internalError, "escrowd answered ok: false without an error")) }
        return reply.result ?? .null
    }

    /// Sends a command with typed arguments and decodes its typed result.
    public func call<Args: Encodable & Sendable, Result: Decodable>(_ command: CommandName, _ args: Args, as: Result.Type,
                                                                   in account: AccountID? = nil, requestId: String? = nil) async throws -> Result {
        try Self.decodeResult(try await call(command, args, in: account, requestId: requestId), as: Result.self, command: command)
    }

    /// Decodes a command's result JSON, turning a mismatch into `.badReply`.
    public static func decodeResult<Result: Decodable>(_ json: JSONValue, as: Result.Type, command: CommandName) throws -> Result {
        do { return try json.decode(Result.self) } catch {
            throw OperatorError.badReply("result of \(command.rawValue) is not what this escrowctl expects: \(WireCodec.describe(error))")
        }
    }

    /// Subscribes to the account's events (all types, or only `types`) and streams them until `close()`
    /// or the connection ends. Finishing the stream early stops delivery to it.
    public func events(_ types: Set<EventType>? = nil, in account: AccountID? = nil) async throws -> AsyncStream<ReceivedEvent> {
        let account = account ?? configuration.account
        let filters = types.map { $0.sorted { $0.rawValue < $1.rawValue }.map { TopicFilter.events(account, type: $0) } } ?? [TopicFilter.events(account)]
        let (stream, continuation) = AsyncStream.makeStream(of: ReceivedEvent.self, bufferingPolicy: .unbounded)
        let id = nextSink
        nextSink += 1
        sinks[id] = Sink(prefix: "accounts/\(account)/events/", types: types, continuation: continuation)
        continuation.onTermination = { [weak self] _ in Task { await self?.removeSink(id) } }
        do {
            let granted = try await client.subscribe(filters.map { ($0, QoS.atLeastOnce) })
            if let i = granted.firstIndex(where: { $0 >= 0x80 }) { removeSink(id); throw OperatorError.notAuthorized(topic: filters[i]) }
        } catch let e as MQTTError { removeSink(id); throw OperatorError.connection(e) }
        if disconnectReason != nil { continuation.finish() }
        return stream
    }

    /// Disconnects; pending calls fail with `.connectionLost` and event streams finish.
    public func close() async {
        if disconnectReason == nil { disconnectReason = "closed" }
        await client.disconnect()
        ended()
    }

    /// `[a-z0-9]{count}` from the system's random source (request ids, client ids).
    public nonisolated static func randomToken(_ count: Int) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        var g = SystemRandomNumberGenerator()
        return String((0..<count).map { _ in alphabet[Int(g.next(upperBound: UInt(alphabet.count)))] })
    }

    // MARK: routing

    private func deliver(_ m: MQTTMessage) {
        if let w = waiters.removeValue(forKey: m.topic) {
            w.timer.cancel()
            w.continuation.resume(returning: m)
            return
        }
        if expecting.contains(m.topic) {
            if early[m.topic] == nil { early[m.topic] = m }
            return
        }
        for sink in sinks.values where m.topic.hasPrefix(sink.prefix) {
            var event: Event?, problem: String?
            do { event = try WireCodec.decode(Event.self, from: m.payload) } catch { problem = error.description }
            if let types = sink.types, let t = event?.type, !types.contains(t) { continue }
            sink.continuation.yield(ReceivedEvent(topic: m.topic, payload: m.payload, event: event, problem: problem))
        }
    }

    private func awaitMessage(on topic: String, timeout: Duration) async -> MQTTMessage? {
        if let m = early.removeValue(forKey: topic) { return m }
        if disconnectReason != nil { return nil }
        return await withCheckedContinuation { (c: CheckedContinuation<MQTTMessage?, Never>) in
            let timer = Task { [weak self] in
                try? await Task.sleep(for: timeout)
                await self?.expire(topic)
            }
            waiters[topic] = Waiter(continuation: c, timer: timer)
        }
    }

    private func expire(_ topic: String) {
        waiters.removeValue(forKey: topic)?.continuation.resume(returning: nil)
    }

    private func removeSink(_ id: Int) {
        sinks.removeValue(forKey: id)?.continuation.finish()
    }

    private func ended() {
        if disconnectReason == nil { disconnectReason = "the broker closed the connection" }
        for (_, w) in waiters { w.timer.cancel(); w.continuation.resume(returning: nil) }
        waiters = [:]
        for (_, s) in sinks { s.continuation.finish() }
        sinks = [:]
    }
}
