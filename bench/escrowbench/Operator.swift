import Foundation
import EscrowCore
import MQTT

/// An operator's connection: sends commands, waits for replies, counts events by type.
actor Operator {
    let client: MQTTClient
    private var replies: [String: (CommandReply, ContinuousClock.Instant)] = [:]
    private(set) var eventCounts: [EventType: Int] = [:]
    private(set) var lastEventAt: [EventType: ContinuousClock.Instant] = [:]
    private var counter = 0
    private var pump: Task<Void, Never>?

    init(port: Int, eventFilters: [String]) async throws {
        var options = MQTTOptions(clientID: "bench-operator-\(UUID().uuidString.prefix(6))", port: port)
        options.keepAlive = 300
        client = try MQTTClient(options)
        try await client.connect()
        _ = try await client.subscribe([("accounts/+/reply/+", .atLeastOnce)] + eventFilters.map { ($0, QoS.atLeastOnce) })
        let messages = client.messages
        pump = Task { [weak self] in
            for await m in messages { await self?.take(m) }
        }
    }

    private func take(_ m: MQTTMessage) {
        let now = ContinuousClock.now
        switch Topic(path: m.topic) {
        case .accountReply?:
            if let r = try? WireCodec.decode(CommandReply.self, from: m.payload, limit: .max) { replies[r.requestId] = (r, now) }
        case .accountEvent(_, let type)?:
            eventCounts[type, default: 0] += 1
            lastEventAt[type] = now
        default: break
        }
    }

    func events(_ type: EventType) -> Int { eventCounts[type] ?? 0 }
    func lastEvent(_ type: EventType) -> ContinuousClock.Instant? { lastEventAt[type] }

    /// Sends a command; returns the reply and the instant it was received.
    func send(_ account: AccountID, _ command: String, _ args: [String: JSONValue],
              timeout: Duration = .seconds(60)) async throws -> (reply: CommandReply, at: ContinuousClock.Instant) {
        counter += 1
        let id = "bench-\(counter)-\(UUID().uuidString.prefix(8))"
        let env = CommandEnvelope(requestId: id, args: .object(args))
        _ = try client.publishNoWait(Topic.accountCommand(account, command: command).path, WireCodec.encode(env))
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let r = replies.removeValue(forKey: id) { return r }
            try await Task.sleep(for: .milliseconds(1))
        }
        throw BenchError("no reply to \(account)/\(command) within \(timeout)")
    }

    /// `send`, then the typed result; a failed reply throws.
    func run<T: Decodable>(_ account: AccountID, _ command: String, _ args: [String: JSONValue], as: T.Type,
                           timeout: Duration = .seconds(60)) async throws -> T {
        let (r, _) = try await send(account, command, args, timeout: timeout)
        return try r.typed(T.self, command)
    }

    func close() async {
        pump?.cancel()
        await client.disconnect()
    }
}

extension CommandReply {
    func typed<T: Decodable>(_ t: T.Type, _ command: String) throws -> T {
        guard ok, let result else {
            throw BenchError("\(command) failed: \(error.map { "\($0.code.rawValue): \($0.message)" } ?? "no result")")
        }
        return try result.decode(T.self)
    }
}

func idList(_ xs: [String]) -> JSONValue { .array(xs.map { .string($0) }) }
