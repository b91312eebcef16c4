@testable import MQTT
import Foundation
import Testing
import TestSupport

@Suite("Connecting", .timeLimit(.minutes(1)))
struct ConnectTests {
    @Test("connects with MQTT 3.1.1 and 5", arguments: [MQTTVersion.v311, .v5])
    func connects(version: MQTTVersion) async throws {
        let broker = try await MosquittoBroker()
        let client = try MQTTClient(options(broker, "connect", version: version))
        #expect(!client.isConnected)
        try await client.connect()
        #expect(client.isConnected)
        let event = try await firstElement(of: client.deliveries, "connected event")
        #expect(event == .event(.connected(sessionPresent: false)))
        await client.disconnect()
        #expect(!client.isConnected)
    }

    @Test("a closed port is .unreachable and carries the errno text")
    func unreachable() async throws {
        let port = try freePort()
        let client = try MQTTClient(MQTTOptions(clientID: uniqueID("closed"), port: port))
        let error = try await expectMQTTError("connect to a closed port") { try await client.connect(timeout: .seconds(5)) }
        #expect(error.kind == .unreachable)
        #expect(error.message.contains("Connection refused"), "\(error)")
        #expect(error.description.contains("\(port)"), "\(error)")
    }

    @Test("a broker that never answers is .timeout, and connect can be retried")
    func timeout() async throws {
        let blackhole = try BlackholeListener()
        let client = try MQTTClient(MQTTOptions(clientID: uniqueID("hung"), port: blackhole.port))
        let error = try await expectMQTTError("connect to a silent listener") { try await client.connect(timeout: .milliseconds(300)) }
        #expect(error.kind == .timeout)
        let again = try await expectMQTTError("second connect") { try await client.connect(timeout: .milliseconds(100)) }
        #expect(again.kind == .timeout)
    }

    @Test("username/password accepted and refused", arguments: [MQTTVersion.v311, .v5])
    func passwords(version: MQTTVersion) async throws {
        let broker = try await MosquittoBroker(BrokerConfig(allowAnonymous: false, passwords: ["alice": "secret"]))
        let good = try await connectedClient(broker, "alice", version: version) {
            $0.username = "alice"
            $0.password = "secret"
        }
        #expect(good.isConnected)
        await good.disconnect()

        for (user, password) in [("alice", "wrong"), ("mallory", "secret")] {
            var bad = options(broker, "bad", version: version)
            bad.username = user
            bad.password = password
            let client = try MQTTClient(bad)
            let error = try await expectMQTTError("connect with bad credentials") { try await client.connect() }
            #expect(error.kind == .refused, "\(error)")
            #expect(error.code != 0)
            #expect(error.message.lowercased().contains("not authori") || error.message.lowercased().contains("bad user"),
                    "\(error)")
        }

        let anonymous = try MQTTClient(options(broker, "anon", version: version))
        let error = try await expectMQTTError("anonymous connect") { try await anonymous.connect() }
        #expect(error.kind == .refused, "\(error)")
    }

    @Test("operations before connect and after disconnect fail with .disconnected")
    func notConnected() async throws {
        let broker = try await MosquittoBroker()
        let client = try MQTTClient(options(broker, "idle"))
        let early = try await expectMQTTError("publish before connect") { try await client.publish("t", bytes("x")) }
        #expect(early.kind == .disconnected)
        try await client.connect()
        await client.disconnect()
        await client.disconnect() // idempotent
        let late = try await expectMQTTError("subscribe after disconnect") { _ = try await client.subscribe("t") }
        #expect(late.kind == .disconnected)
        let reconnect = try await expectMQTTError("connect after disconnect") { try await client.connect() }
        #expect(reconnect.kind == .disconnected)
        // Streams are finished.
        for await _ in client.deliveries {}
    }

    @Test("invalid arguments are reported before any I/O")
    func invalidArguments() async throws {
        var tls = MQTTOptions(clientID: "x")
        tls.tls = MQTTTLS(caFile: "/nonexistent/ca.pem")
        #expect(throws: MQTTError.self) { _ = try MQTTClient(tls) }
        var persistent = MQTTOptions(clientID: "")
        persistent.cleanSession = false
        #expect { _ = try MQTTClient(persistent) } throws: { ($0 as? MQTTError)?.kind == .invalidArgument }

        let broker = try await MosquittoBroker()
        let client = try await connectedClient(broker, "badtopic")
        let error = try await expectMQTTError("publish to a wildcard") { try await client.publish("a/#", bytes("x")) }
        #expect(error.kind == .invalidArgument, "\(error)")
        #expect(error.message == "Invalid function arguments provided.", "carries mosquitto_strerror text: \(error)")
        await client.disconnect()
    }
}
