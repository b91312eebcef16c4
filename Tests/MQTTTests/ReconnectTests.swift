@testable import MQTT
import Foundation
import Testing
import TestSupport

@Suite("Automatic reconnect", .timeLimit(.minutes(1)))
struct ReconnectTests {
    @Test("after a broker restart on the same port the client reconnects and its subscriptions are restored")
    func brokerRestart() async throws {
        let broker = try await MosquittoBroker()
        let client = try await connectedClient(broker, "survivor")
        try await client.subscribe([("fleet/#", .atLeastOnce)])
        try await broker.restart()

        // One ordered stream: the reconnect attempt, then the connection, then its first message.
        let deliveries = client.deliveries
        let reconnecting = try await firstElement(of: deliveries, "reconnecting event") {
            if case .event(.reconnecting) = $0 { return true } else { return false }
        }
        guard case .event(.reconnecting(let attempt, let delay)) = reconnecting else { return }
        #expect(attempt == 1)
        #expect(delay >= .zero && delay <= .milliseconds(50))
        let next = try await firstElement(of: deliveries, "connected event after restart") { if case .event(.reconnecting) = $0 { false } else { true } }
        #expect(next == .event(.connected(sessionPresent: false)), "the connection comes before anything received on it")
        #expect(client.isConnected)

        // Non-persistent broker: the subscription can only exist because the client re-sent it.
        // A retained message proves it without racing the re-SUBSCRIBE.
        let publisher = try await connectedClient(broker, "publisher")
        try await publisher.publish("fleet/dev1/config", bytes("v2"), retain: true)
        let delivery = try await firstElement(of: deliveries, "message after reconnect")
        let message = try #require(delivery.message, "the next delivery is the message, got \(delivery)")
        #expect(message.topic == "fleet/dev1/config")
        #expect(message.payloadString == "v2")
        await publisher.disconnect()
        await client.disconnect()
    }

    @Test("a QoS 1 publish made while the broker is down completes after it returns")
    func publishAcrossOutage() async throws {
        let broker = try await MosquittoBroker()
        let client = try await connectedClient(broker, "outage")
        broker.stop()
        try await waitUntil("the client notices the broker is gone") { !client.isConnected }
        let pending = Task { try await client.publish("outage/t", bytes("queued")) }
        try await waitUntil("the publish is queued") { client.connection.pendingPublishCount == 1 }
        try await broker.restart()
        _ = try await pending.value
        await client.disconnect()
    }

    @Test("a pending QoS 1 publish fails with .disconnected when the client disconnects")
    func pendingFailsOnDisconnect() async throws {
        let broker = try await MosquittoBroker()
        let client = try await connectedClient(broker, "pending") {
            $0.reconnect = Backoff(initial: .seconds(30), maximum: .seconds(30))
        }
        broker.stop(graceful: false)
        try await waitUntil("the client notices the broker is gone") { !client.isConnected }
        let pending = Task { try await client.publish("pending/t", bytes("never")) }
        // Wait until the publish is registered with libmosquitto before disconnecting.
        try await waitUntil("the publish is pending") { client.connection.pendingPublishCount == 1 }
        await client.disconnect()
        let error = try await expectMQTTError("pending publish") { _ = try await pending.value }
        #expect(error.kind == .disconnected)
    }

    @Test("events report disconnect and numbered reconnect attempts while the broker stays down")
    func attemptsGrow() async throws {
        let broker = try await MosquittoBroker()
        let client = try await connectedClient(broker, "attempts")
        broker.stop()
        let events = try await collect(4, from: client.deliveries, "events while down") { _ in true }.compactMap(\.event)
        #expect(events[0] == .connected(sessionPresent: false))
        guard case .disconnected = events[1] else { Issue.record("expected .disconnected, got \(events[1])"); return }
        var attempts: [Int] = []
        for event in events[2...] {
            if case .reconnecting(let attempt, let delay) = event {
                attempts.append(attempt)
                #expect(delay <= .milliseconds(400))
            }
        }
        #expect(attempts == [1, 2])
        await client.disconnect()
    }
}
