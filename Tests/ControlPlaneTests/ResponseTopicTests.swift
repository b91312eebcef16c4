import Foundation
import Testing
import EscrowCore
import MQTT
import TestSupport

@Suite("MQTT 5 request/response", .timeLimit(.minutes(1)))
struct ResponseTopicTests {
    @Test("the reply reaches the fixed reply topic and, with correlation data, a response topic in the same account only")
    func responseTopics() async throws {
        let p = try await PlatformFixture()
        _ = try await p.operators.send(.platform, "account.create", ["id": "acme", "name": "Acme", "kind": "customer"]).result(Account.self)
        let watcher = try MQTTClient(MQTTOptions(clientID: "reply-watcher", port: p.broker.port))
        try await watcher.connect()
        _ = try await watcher.subscribe([("accounts/+/reply/#", .atLeastOnce)])
        let requester = try MQTTClient(MQTTOptions(clientID: "requester", port: p.broker.port))
        try await requester.connect()

        func ask(_ id: String, responseTopic: String) async throws {
            let env = CommandEnvelope(requestId: id, args: [:])
            try await requester.publish("accounts/acme/cmd/profile.list", WireCodec.encode(env),
                                        properties: MQTTProperties(responseTopic: responseTopic, correlationData: Array(id.utf8)))
        }
        // A response topic inside the account's reply tree: the reply goes there, correlated, and to the fixed topic.
        try await ask("r-own", responseTopic: "accounts/acme/reply/inbox-7")
        // A response topic in another account: ignored (escrowd is privileged); the fixed topic only.
        try await ask("r-steer", responseTopic: "accounts/platform/reply/stolen")
        // The fixed topic itself as response topic: one reply, correlated.
        try await ask("r-fixed", responseTopic: "accounts/acme/reply/r-fixed")
        try await ask("r-sentinel", responseTopic: "accounts/acme/reply/r-sentinel")
        let seen = try await collect(5, from: watcher.messages, timeout: .seconds(10), "the replies")
        let topics = seen.map(\.topic)
        #expect(topics.filter { $0 == "accounts/acme/reply/r-own" }.count == 1)
        #expect(topics.filter { $0 == "accounts/acme/reply/inbox-7" }.count == 1)
        #expect(seen.first { $0.topic == "accounts/acme/reply/inbox-7" }?.properties.correlationData == Array("r-own".utf8))
        #expect(topics.contains("accounts/acme/reply/r-steer"))
        #expect(!topics.contains("accounts/platform/reply/stolen"), "never steered into another account")
        #expect(topics.filter { $0 == "accounts/acme/reply/r-fixed" }.count == 1, "published once")
        #expect(seen.first { $0.topic == "accounts/acme/reply/r-fixed" }?.properties.correlationData == Array("r-fixed".utf8))
        #expect(topics.last == "accounts/acme/reply/r-sentinel")
        await watcher.disconnect(); await requester.disconnect()
        await p.shutdown()
    }
}
