@testable import MQTT
import Foundation
import Testing
import TestSupport

@Suite("TestSupport harness", .timeLimit(.minutes(1)))
struct TestSupportTests {
    @Test("waitUntil and firstElement fail naming what they awaited")
    func timeoutsNameTheirSubject() async throws {
        do {
            try await waitUntil(timeout: .milliseconds(50), "pigs fly") { false }
            Issue.record("waitUntil should have thrown")
        } catch let error as TestSupportError {
            #expect(error.description.contains("pigs fly"))
        }
        let (stream, continuation) = AsyncStream.makeStream(of: Int.self)
        continuation.yield(1)
        do {
            _ = try await firstElement(of: stream, timeout: .milliseconds(50), "an even number") { $0 % 2 == 0 }
            Issue.record("firstElement should have thrown")
        } catch let error as TestSupportError {
            #expect(error.description.contains("an even number"))
        }
        continuation.finish()
    }

    @Test("with persistence, retained messages survive a graceful restart but not SIGKILL")
    func persistence() async throws {
        let broker = try await MosquittoBroker(BrokerConfig(persistence: true))
        let port = broker.port
        let client = try await connectedClient(broker, "persist") { $0.reconnect = nil }
        try await client.publish("keep/me", bytes("1"), retain: true)
        await client.disconnect()

        try await broker.restart(graceful: true)
        #expect(broker.port == port)
        let after = try await connectedClient(broker, "persist-check")
        try await after.subscribe("keep/#")
        let kept = try await firstElement(of: after.messages, "retained message after graceful restart")
        #expect(kept.payloadString == "1")
        try await after.publish("keep/new", bytes("2"), retain: true)
        await after.disconnect()

        // autosave_interval is 1800 s: a SIGKILL loses everything since the last save (keep/new).
        try await broker.restart(graceful: false)
        let last = try await connectedClient(broker, "persist-kill")
        try await last.subscribe("keep/#")
        try await last.publish("keep/marker", bytes("m"))
        let seen = try await collect(2, from: last.messages, "retained keep/me then the marker")
        #expect(seen.map(\.topic) == ["keep/me", "keep/marker"])
        await last.disconnect()
    }

    @Test("kill(signal:) reaches the broker and stop() is idempotent")
    func signals() async throws {
        let broker = try await MosquittoBroker()
        let pid = try #require(broker.pid)
        #expect(pid > 0)
        broker.kill(signal: SIGTERM)
        try await waitUntil("the broker exits on SIGTERM") { !broker.isRunning }
        #expect(broker.logTail().contains("terminating"), "\(broker.logTail())")
        broker.stop()
        try await broker.restart()
        #expect(broker.isRunning)
    }
}
