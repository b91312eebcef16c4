import Foundation
import Testing
import EscrowCore
import EscrowAgent
import ControlPlane
import MQTT
import TestSupport

/// A real Mosquitto, a real SQLite file, and the control plane running in-process.
final class PlatformFixture: @unchecked Sendable {
    let broker: MosquittoBroker
    let dir: TempDirectory
    let escrowd: MQTTClient
    let service: ControlPlane
    let operators: OperatorProbe
    private var serviceTask: Task<Void, any Error>?
    private var agents: [AgentRuntime] = []
    private var agentTasks: [Task<Void, Never>] = []

    init(sweep: Duration = .milliseconds(100)) async throws {
        broker = try MosquittoBroker(BrokerConfig(maxQueuedMessages: 100_000))
        dir = try TempDirectory(prefix: "cp")
        escrowd = try MQTTClient(MQTTOptions(clientID: "escrowd-test", port: broker.port))
        var options = ControlPlane.Options(databasePath: dir.file("escrow.db"))
        options.expirySweepInterval = sweep
        options.reconcileInterval = .seconds(2)
        service = try ControlPlane(options: options, client: escrowd, log: .silent)
        try await escrowd.connect()
        let service = self.service
        serviceTask = Task { try await service.run() }
        operators = try await OperatorProbe(port: broker.port)
        // The service is ready once it answers a command.
        try await waitUntil("escrowd answers") {
            (try? await self.operators.send(.platform, "account.list", [:], timeout: .milliseconds(500))) != nil
        }
    }

    /// Starts an `escrow-agent` runtime (library) for a device, over plain MQTT.
    @discardableResult
    func startAgent(_ id: String) throws -> AgentRuntime {
        var s = AgentSettings(broker: broker.url, deviceID: DeviceID(id)!, stateDirectory: try dir.subdirectory("agent-\(id)"))
        s.backoffInitial = 1; s.backoffMaximum = 2
        let runtime = try AgentRuntime(settings: s, log: { _ in })
        agents.append(runtime)
        agentTasks.append(Task { try? await runtime.run() })
        return runtime
    }

    func shutdown() async {
        for a in agents { await a.stop() }
        for t in agentTasks { t.cancel() }
        await operators.close()
        await escrowd.disconnect()
        serviceTask?.cancel()
        broker.stop()
    }
}

/// An operator's view of the broker: sends commands, collects replies and events.
actor OperatorProbe {
    let client: MQTTClient
    private var replies: [String: CommandReply] = [:]
    private(set) var events: [Event] = []
    private var pump: Task<Void, Never>?
    private var counter = 0

    init(port: Int) async throws {
        client = try MQTTClient(MQTTOptions(clientID: "operator-probe-\(UUID().uuidString.prefix(8))", port: port))
        try await client.connect()
        _ = try await client.subscribe([("accounts/+/reply/+", .atLeastOnce), ("accounts/+/events/+", .atLeastOnce)])
        let messages = client.messages
        pump = Task { [weak self] in
            for await m in messages { await self?.take(m) }
        }
    }

    private func take(_ m: MQTTMessage) {
        switch Topic(path: m.topic) {
        case .accountReply?:
            if let r = try? WireCodec.decode(CommandReply.self, from: m.payload) { replies[r.requestId] = r }
        case .accountEvent(let account, _)?:
            if var e = try? WireCodec.decode(Event.self, from: m.payload) {
                // Record the topic's account: the test checks events reach the right account only.
                e.details["_topicAccount"] = .string(account.rawValue)
                events.append(e)
            }
        default: break
        }
    }

    func nextRequestID() -> String { counter += 1; return "req-\(counter)-\(UUID().uuidString.prefix(6))" }

    /// Sends a command and waits for its reply.
    func send(_ account: AccountID, _ command: String, _ args: [String: JSONValue], requestID: String? = nil,
              timeout: Duration = .seconds(10)) async throws -> CommandReply {
        let id = requestID ?? nextRequestID()
        replies[id] = nil
        let env = CommandEnvelope(requestId: id, args: .object(args))
        try await client.publish(Topic.accountCommand(account, command: command).path, WireCodec.encode(env))
        return try await reply(id, timeout: timeout)
    }

    func sendRaw(_ account: AccountID, _ command: String, payload: [UInt8]) async throws {
        try await client.publish(Topic.accountCommand(account, command: command).path, payload)
    }

    func reply(_ id: String, timeout: Duration = .seconds(10)) async throws -> CommandReply {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let r = replies[id] { return r }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TestSupportError("no reply to \(id) within \(timeout)")
    }

    func events(of type: EventType) -> [Event] { events.filter { $0.type == type } }
    func clearEvents() { events.removeAll() }

    func close() async {
        pump?.cancel()
        await client.disconnect()
    }
}

extension CommandReply {
    /// The typed result of a successful reply; records a test failure otherwise.
    func result<T: Decodable>(_ type: T.Type, sourceLocation: SourceLocation = #_sourceLocation) throws -> T {
        guard ok, let result else {
            throw TestSupportError("command failed: \(error.map { "\($0.code.rawValue): \($0.message)" } ?? "no result")")
        }
        return try result.decode(T.self)
    }
}

func ids(_ xs: [String]) -> JSONValue { .array(xs.map { .string($0) }) }
