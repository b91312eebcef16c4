@testable import MQTT
import Foundation
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
        let broker = try MosquittoBroker()
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
