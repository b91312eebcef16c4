@testable import MQTT
import Foundation
import Synchronization
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// libmosquitto's own `mosquitto_loop` uses `select()` and refuses a socket numbered 1024 or more
/// (MOSQ_ERR_INVAL, "Invalid function arguments provided"), which any busy process reaches (a console
/// with many sessions, a test process beside fleetsim). The client's loop polls instead.
@Suite("A client whose socket is numbered above 1024")
struct HighDescriptorTests {
    @Test("connects, subscribes, publishes and receives with every descriptor below 1100 taken", arguments: [MQTTVersion.v311, .v5])
    func highSocket(version: MQTTVersion) async throws {
        let broker = try await MosquittoBroker()
        // Take every free descriptor up to 1100, so the client's socket must land above it.
        var held: [Int32] = []
        defer { for fd in held { close(fd) } }
        while held.last.map({ $0 < 1100 }) ?? true {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            try #require(fd >= 0, "open: \(String(cString: strerror(errno)))")
            held.append(fd)
        }
        let client = try await connectedClient(broker, "highfd", version: version)
        let messages = client.messages
        _ = try await client.subscribe([("high/#", .atLeastOnce)])
        try await client.publish("high/a", Array("over 1024".utf8), qos: .atLeastOnce)
        let m = try await firstElement(of: messages, "the message back on a socket above 1024") { $0.topic == "high/a" }
        #expect(m.payloadString == "over 1024")
        await client.disconnect()
    }
}

@Suite("Inline consumers")
struct InlineConsumerTests {
    @Test("messages the consumer takes never reach the stream; the rest arrive in order", arguments: [MQTTVersion.v311, .v5])
    func takesSome(version: MQTTVersion) async throws {
        let broker = try await MosquittoBroker()
        let client = try await connectedClient(broker, "inline", version: version)
        let taken = Mutex<[String]>([])
        client.consumeInline { m in
            guard m.topic.hasPrefix("hot/") else { return false }
            taken.withLock { $0.append(m.payloadString) }
            return true
        }
        let messages = client.messages
        _ = try await client.subscribe([("hot/#", .atMostOnce), ("cold/#", .atLeastOnce)])
        for i in 0..<200 { try await client.publish("hot/\(i % 7)", Array("h\(i)".utf8), qos: .atMostOnce) }
        for i in 0..<5 { try await client.publish("cold/x", Array("c\(i)".utf8), qos: .atLeastOnce) }
        let cold = try await collect(5, from: messages, timeout: .seconds(10), "cold messages")
        #expect(cold.map(\.payloadString) == (0..<5).map { "c\($0)" }, "only cold ones on the stream, in order")
        try await waitUntil("every hot message seen inline") { taken.withLock { $0.count } == 200 }
        #expect(taken.withLock { $0 } == (0..<200).map { "h\($0)" })
        client.consumeInline(nil)
        try await client.publish("hot/late", Array("late".utf8), qos: .atLeastOnce)
        #expect(try await firstElement(of: messages, "the hot message once the consumer is removed").topic == "hot/late")
        await client.disconnect()
    }
}
