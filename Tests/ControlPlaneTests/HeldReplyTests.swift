import Foundation
import Synchronization
import Testing
import EscrowCore
import ControlPlane
import MQTT
import TestSupport

/// Replies to access changes wait for the broker's reload confirmation (`BrokerNames.reloadTopic`).
/// Here the test plays the broker plugin: a real Mosquitto without the plugin, so the test itself
/// publishes (or withholds) the confirmation; the reloads are counted by `onAccessChanged`.
@Suite("Replies held until the broker confirms its reload", .timeLimit(.minutes(2)))
struct HeldReplyTests {
    /// The tokens handed out by `onAccessChanged` (one per broker reload escrowd asked for).
    final class Reloads: Sendable {
        private let tokens = Mutex<[UInt64]>([])
        func next() -> UInt64 { tokens.withLock { $0.append(UInt64($0.count + 1)); return UInt64($0.count) } }
        var issued: [UInt64] { tokens.withLock { $0 } }
    }

    /// escrowd's log lines.
    final class Lines: Sendable {
        private let lines = Mutex<[String]>([])
        func add(_ l: String) { lines.withLock { $0.append(l) } }
        var all: [String] { lines.withLock { $0 } }
    }

    struct Stage {
        let broker: MosquittoBroker, dir: TempDirectory, client: MQTTClient, service: ControlPlane
        let task: Task<Void, any Error>, operators: OperatorProbe, reloads: Reloads, lines: Lines

        func close() async {
            await operators.close(); await client.disconnect(); task.cancel(); broker.stop()
        }
        /// Publishes a reload confirmation as the broker plugin would.
        func confirm(_ token: UInt64) async throws {
            _ = try await operators.client.publish(BrokerNames.reloadTopic, Array(String(token).utf8), qos: .atLeastOnce)
        }
    }

    static func stage(timeout: Duration) async throws -> Stage {
        let broker = try await MosquittoBroker(BrokerConfig())
        let dir = try TempDirectory(prefix: "held")
        let client = try MQTTClient(MQTTOptions(clientID: "escrowd-held", port: broker.port))
        var options = ControlPlane.Options(store: try await TestStore.make(sqliteFile: dir.path + "/escrow.db"))
        options.confirmsReloads = true
        options.reloadConfirmationTimeout = timeout
        let reloads = Reloads()
        let lines = Lines()
        let log = Log(component: "escrowd", sink: { lines.add($0) })
        let service = try ControlPlane(options: options, client: client, log: log, onAccessChanged: { _ in reloads.next() })
        try await client.connect()
        let task = Task { try await service.run() }
        let operators = try await OperatorProbe(port: broker.port)
        try await waitUntil(timeout: .seconds(30), "escrowd answers") {
            (try? await operators.send(.platform, "account.list", [:], timeout: .milliseconds(500))) != nil
        }
        return Stage(broker: broker, dir: dir, client: client, service: service, task: task, operators: operators, reloads: reloads, lines: lines)
    }

    @Test("the reply waits for the confirmation of its reload, then comes at once")
    func confirmationReleasesTheReply() async throws {
        let s = try await Self.stage(timeout: .seconds(60))
        let before = s.reloads.issued.count
        let answered = Atomic<Bool>(false)
        let reply = Task {
            let r = try await s.operators.send(.platform, "account.create", ["id": "acme", "name": "Acme", "kind": "customer"], timeout: .seconds(50))
            answered.store(true, ordering: .sequentiallyConsistent)
            return r
        }
        try await waitUntil("escrowd reloads the broker for account.create") { s.reloads.issued.count > before }
        let token = try #require(s.reloads.issued.last)
        // A later command's reply has come back: an unheld reply to account.create, published
        // before it on the same connection, would have come first.
        _ = try await s.operators.send(.platform, "account.list", [:], timeout: .seconds(20)).result(Commands.AccountListResult.self)
        let early = answered.load(ordering: .sequentiallyConsistent)
        #expect(!early, "account.create was answered before its reload was confirmed")
        // An older token does not release it; its own does.
        try await s.confirm(token - 1)
        try await s.confirm(token)
        let r = try await reply.value
        #expect(r.error == nil, "\(String(describing: r.error))")
        #expect(s.reloads.issued.count == before + 1, "no extra reload: \(s.reloads.issued)")
        #expect(!s.lines.all.contains { $0.contains("did not confirm") })
        await s.close()
    }

    @Test("an unconfirmed reload is asked for once more halfway, and the reply still comes at the timeout, with a warning")
    func noConfirmationAsksAgainThenAnswers() async throws {
        let s = try await Self.stage(timeout: .seconds(2))
        let before = s.reloads.issued.count
        let r = try await s.operators.send(.platform, "account.create", ["id": "beta", "name": "Beta", "kind": "customer"], timeout: .seconds(30))
        #expect(r.error == nil, "\(String(describing: r.error))")
        #expect(s.reloads.issued.count == before + 2, "the reload and one more: \(s.reloads.issued)")
        let log = s.lines.all
        #expect(log.contains { $0.contains("reloading the broker once more") } && log.contains { $0.contains("did not confirm reload") }, "\(log.suffix(10))")
        await s.close()
    }
}
