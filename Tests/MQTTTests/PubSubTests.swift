@testable import MQTT
import Foundation
import Testing
import TestSupport

@Suite("Publish and subscribe", .timeLimit(.minutes(1)))
struct PubSubTests {
    @Test("QoS 0 and QoS 1 round trips", arguments: [MQTTVersion.v311, .v5], [QoS.atMostOnce, .atLeastOnce])
    func roundTrip(version: MQTTVersion, qos: QoS) async throws {
        let broker = try await MosquittoBroker()
        let client = try await connectedClient(broker, "rt", version: version)
        let granted = try await client.subscribe([("rt/#", qos)])
        #expect(granted == [Int(qos.rawValue)])
        try await client.publish("rt/a", bytes("hello"), qos: qos)
        let message = try await firstElement(of: client.messages, "message on rt/a")
        #expect(message.topic == "rt/a")
        #expect(message.payloadString == "hello")
        #expect(message.qos == qos)
        #expect(!message.retain)
        await client.disconnect()
    }

    @Test("subscribe returns codes per filter in order; unsubscribe stops delivery")
    func subscribeCodes() async throws {
        let broker = try await MosquittoBroker()
        let client = try await connectedClient(broker, "codes")
        let granted = try await client.subscribe([("a/1", .atLeastOnce), ("a/0", .atMostOnce), ("a/2", .atLeastOnce)])
        #expect(granted == [1, 0, 1])
        try await client.unsubscribe(["a/1"])
        try await client.publish("a/1", bytes("dropped"))
        try await client.publish("a/2", bytes("kept"))
        let message = try await firstElement(of: client.messages, "first message after unsubscribe")
        #expect(message.topic == "a/2", "a/1 was unsubscribed, so a/2 must arrive first")
        await client.disconnect()
    }

    @Test("a retained message reaches a late subscriber")
    func retained() async throws {
        let broker = try await MosquittoBroker()
        let publisher = try await connectedClient(broker, "retain-pub")
        try await publisher.publish("config/dev1", bytes("{\"v\":1}"), retain: true)
        await publisher.disconnect()

        let late = try await connectedClient(broker, "retain-sub", version: .v311)
        try await late.subscribe("config/+")
        let message = try await firstElement(of: late.messages, "retained config/dev1")
        #expect(message.topic == "config/dev1")
        #expect(message.retain)
        #expect(message.payloadString == "{\"v\":1}")
        await late.disconnect()
    }

    @Test("MQTT 5 request/response keeps response topic, correlation data and user properties")
    func requestResponse() async throws {
        let broker = try await MosquittoBroker()
        let responder = try await connectedClient(broker, "responder")
        let requester = try await connectedClient(broker, "requester")
        try await responder.subscribe("req/echo")
        try await requester.subscribe("resp/requester")

        let correlation: [UInt8] = [0, 1, 2, 0xFF, 0x80]
        let request = MQTTProperties(responseTopic: "resp/requester", correlationData: correlation,
                                     userProperties: [("trace", "t-1"), ("trace", "t-2"), ("kind", "echo")])
        try await requester.publish("req/echo", bytes("ping"), properties: request)

        let incoming = try await firstElement(of: responder.messages, "request on req/echo")
        #expect(incoming.properties == request)
        #expect(incoming.properties.userProperty("kind") == "echo")
        let reply = MQTTProperties(correlationData: incoming.properties.correlationData, userProperties: [("status", "ok")])
        try await responder.publish(try #require(incoming.properties.responseTopic), bytes("pong"), properties: reply)

        let response = try await firstElement(of: requester.messages, "response on resp/requester")
        #expect(response.payloadString == "pong")
        #expect(response.properties.correlationData == correlation)
        #expect(response.properties.userProperties.map { "\($0.0)=\($0.1)" } == ["status=ok"])
        await responder.disconnect()
        await requester.disconnect()
    }

    @Test("an MQTT 3.1.1 publisher drops properties silently")
    func v311DropsProperties() async throws {
        let broker = try await MosquittoBroker()
        let sub = try await connectedClient(broker, "v5sub")
        try await sub.subscribe("p/t")
        let pub = try await connectedClient(broker, "v3pub", version: .v311)
        try await pub.publish("p/t", bytes("x"), properties: MQTTProperties(responseTopic: "r"))
        let message = try await firstElement(of: sub.messages, "message on p/t")
        #expect(message.properties.isEmpty)
        await pub.disconnect()
        await sub.disconnect()
    }

    @Test("an ACL-denied QoS 1 publish is .notAuthorized (135) on MQTT 5, silently dropped on 3.1.1")
    func deniedPublish() async throws {
        let broker = try await MosquittoBroker(BrokerConfig(acl: "topic readwrite allowed/#\n"))
        let v5 = try await connectedClient(broker, "acl5")
        try await v5.publish("allowed/x", bytes("ok"))
        let error = try await expectMQTTError("denied publish") { try await v5.publish("denied/x", bytes("no")) }
        #expect(error.kind == .notAuthorized, "\(error)")
        #expect(error.code == 135)
        #expect(error.description.contains("denied/x"))
        #expect(error.message.lowercased().contains("not authori"), "\(error)")

        let v3 = try await connectedClient(broker, "acl3", version: .v311)
        try await v3.publish("denied/x", bytes("no"))
        await v3.disconnect()
        await v5.disconnect()
    }

    @Test("publishNoWait queues thousands of QoS 1 messages, all delivered in order")
    func bulk() async throws {
        let broker = try await MosquittoBroker(BrokerConfig(maxQueuedMessages: 20_000))
        let sub = try await connectedClient(broker, "bulk-sub")
        try await sub.subscribe("bulk/#")
        let pub = try await connectedClient(broker, "bulk-pub") { $0.maxInflight = 100 }
        let count = 5_000
        var mids = Set<Int32>()
        for i in 0..<count {
            mids.insert(try pub.publishNoWait("bulk/\(i % 7)", bytes("\(i)")))
        }
        #expect(mids.count == count)
        let received = try await collect(count, from: sub.messages, timeout: .seconds(30), "bulk messages")
        #expect(received.map(\.payloadString) == (0..<count).map { "\($0)" })
        await pub.disconnect()
        await sub.disconnect()
    }
}
