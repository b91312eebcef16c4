import Foundation
import EscrowCore
import MQTT

/// An operator's view of the broker: sends commands, collects replies and events.
public actor OperatorProbe {
    public nonisolated let client: MQTTClient
    private var replies: [String: CommandReply] = [:]
    private var waiters: [String: (token: Int, continuation: CheckedContinuation<CommandReply?, Never>)] = [:]
    private var nextToken = 0
    public private(set) var events: [Event] = []
    /// Every event received that does not have its contract shape (`EventType.shape`).
    public private(set) var shapeProblems: [String] = []
    private var pump: Task<Void, Never>?
    private var counter = 0

    /// Connects and subscribes to the replies and events of `accounts` (all accounts by default).
    public init(port: Int, username: String? = nil, password: String? = nil, accounts: [AccountID]? = nil) async throws {
        var options = MQTTOptions(clientID: BrokerNames.clientID(username ?? "anonymous", suffix: "probe-\(UUID().uuidString.prefix(8))"), port: port)
        options.username = username
        options.password = password
        client = try MQTTClient(options)
        try await client.connect()
        let scopes = accounts.map { $0.map(\.rawValue) } ?? ["+"]
        _ = try await client.subscribe(scopes.flatMap { [("accounts/\($0)/reply/+", QoS.atLeastOnce), ("accounts/\($0)/events/+", QoS.atLeastOnce)] })
        let messages = client.messages
        pump = Task { [weak self] in
            for await m in messages { await self?.take(m) }
        }
    }

    private func take(_ m: MQTTMessage) {
        switch Topic(path: m.topic) {
        case .accountReply?:
            if let r = try? WireCodec.decode(CommandReply.self, from: m.payload) {
                replies[r.requestId] = r
                waiters.removeValue(forKey: r.requestId)?.continuation.resume(returning: r)
            }
        case .accountEvent(let account, _)?:
            if var e = try? WireCodec.decode(Event.self, from: m.payload) {
                if let problem = e.shapeProblem { shapeProblems.append(problem) }
                // Record the topic's account: the test checks events reach the right account only.
                e.details["_topicAccount"] = .string(account.rawValue)
                events.append(e)
            }
        default: break
        }
    }

    public func nextRequestID() -> String { counter += 1; return "req-\(counter)-\(UUID().uuidString.prefix(6))" }

    /// Sends a command and waits for its reply.
    public func send(_ account: AccountID, _ command: String, _ args: [String: JSONValue], requestID: String? = nil,
              timeout: Duration = .seconds(30)) async throws -> CommandReply {
        let id = requestID ?? nextRequestID()
        replies[id] = nil
        let env = CommandEnvelope(requestId: id, args: .object(args))
        try await client.publish(Topic.accountCommand(account, command: command).path, WireCodec.encode(env))
        return try await reply(id, timeout: timeout)
    }

    public func sendRaw(_ account: AccountID, _ command: String, payload: [UInt8]) async throws {
        try await client.publish(Topic.accountCommand(account, command: command).path, payload)
    }

    /// The reply to `id`, awaited (woken by its arrival), or an error after `timeout`.
    public func reply(_ id: String, timeout: Duration = .seconds(30)) async throws -> CommandReply {
        if let r = replies[id] { return r }
        nextToken += 1
        let token = nextToken
        let timer = Task { [weak self] in
            guard (try? await Task.sleep(for: timeout)) != nil else { return } // cancelled: answered in time
            await self?.expire(id, token: token)
        }
        defer { timer.cancel() }
        // Registered before this actor runs anything else, so the reply or the timer finds it.
        let reply = await withCheckedContinuation { waiters[id] = (token, $0) }
        guard let reply else { throw TestSupportError("no reply to \(id) within \(timeout)") }
        return reply
    }

    /// Only the waiter that armed this timer: a later wait for the same request id keeps its own.
    private func expire(_ id: String, token: Int) {
        guard waiters[id]?.token == token else { return }
        waiters.removeValue(forKey: id)?.continuation.resume(returning: nil)
    }

    public func events(of type: EventType) -> [Event] { events.filter { $0.type == type } }
    public func clearEvents() { events.removeAll() }

    public func close() async {
        pump?.cancel()
        await client.disconnect()
    }
}

extension CommandReply {
    /// The typed result of a successful reply; records a test failure otherwise.
    public func result<T: Decodable>(_ type: T.Type) throws -> T {
        guard ok, let result else {
            throw TestSupportError("command failed: \(error.map { "\($0.code.rawValue): \($0.message)" } ?? "no result")")
        }
        return try result.decode(T.self)
    }
}

public func ids(_ xs: [String]) -> JSONValue { .array(xs.map { .string($0) }) }
