@testable import MQTT
import Foundation
import POSIX
import Testing
import TestSupport

@Suite("Last will", .timeLimit(.minutes(1)))
struct WillTests {
    @Test("the will is published when a client's connection drops without DISCONNECT")
    func droppedConnection() async throws {
        let broker = try await MosquittoBroker()
        let observer = try await connectedClient(broker, "observer")
        try await observer.subscribe("status/+")
        let device = try await connectedClient(broker, "device") {
            $0.will = MQTTWill(topic: "status/dev1", payload: bytes("offline"))
            $0.reconnect = nil
        }
        device.connection.dropConnectionForTesting()
        let will = try await firstElement(of: observer.messages, "will on status/dev1")
        #expect(will.topic == "status/dev1")
        #expect(will.payloadString == "offline")
        // reconnect == nil: the lost connection ends the client and its streams.
        var events: [MQTTConnectionEvent] = []
        for await case .event(let event) in device.deliveries { events.append(event) }
        #expect(events.first == .connected(sessionPresent: false))
        #expect(events.count >= 2)
        #expect(!device.isConnected)
        await observer.disconnect()
    }

    @Test("the will is published when the client process is killed with SIGKILL")
    func killedProcess() async throws {
        let broker = try await MosquittoBroker()
        let observer = try await connectedClient(broker, "observer")
        try await observer.subscribe("status/#")
        let childID = uniqueID("child")
        let scratch = try TempDirectory(prefix: "will-child")
        let child = try ChildProcess.spawn(
            try #require(locateExecutable("mosquitto_sub"), "mosquitto_sub missing: apt-get install -y mosquitto-clients"),
            ["-h", "127.0.0.1", "-p", "\(broker.port)", "-i", childID, "-V", "mqttv5", "-t", "nothing",
             "--will-topic", "status/\(childID)", "--will-payload", "gone", "--will-qos", "1"],
            stdout: scratch.file("out"))
        try await waitUntil(timeout: .seconds(10), "the broker logs mosquitto_sub \(childID) as connected") {
            broker.logTail(lines: 200).contains(" as \(childID) ")
        }
        child.signal(SIGKILL)
        let will = try await firstElement(of: observer.messages, "will of the killed mosquitto_sub")
        #expect(will.topic == "status/\(childID)")
        #expect(will.payloadString == "gone")
        await observer.disconnect()
    }

    @Test("a clean disconnect does not publish the will")
    func cleanDisconnect() async throws {
        let broker = try await MosquittoBroker()
        let observer = try await connectedClient(broker, "observer")
        try await observer.subscribe("status/+")
        let device = try await connectedClient(broker, "device") {
            $0.will = MQTTWill(topic: "status/dev2", payload: bytes("offline"))
        }
        await device.disconnect()
        // The broker handles the DISCONNECT before this later publish, so a will would arrive first.
        let marker = try await connectedClient(broker, "marker")
        try await marker.publish("status/marker", bytes("after"))
        let first = try await firstElement(of: observer.messages, "first status message")
        #expect(first.topic == "status/marker")
        await marker.disconnect()
        await observer.disconnect()
    }
}
