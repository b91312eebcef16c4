@testable import MQTT
import Testing

@Suite("MQTTOptions.parse(url:)")
struct OptionsTests {
    @Test("mqtt:// with explicit and default port")
    func plain() throws {
        let explicit = try MQTTOptions.parse(url: "mqtt://broker.example:1884", clientID: "c1")
        #expect(explicit.host == "broker.example")
        #expect(explicit.port == 1884)
        #expect(explicit.clientID == "c1")
        #expect(explicit.tls == nil)
        #expect(explicit.version == .v5)
        #expect(explicit.reconnect == Backoff())
        let implicit = try MQTTOptions.parse(url: "mqtt://127.0.0.1", clientID: "c")
        #expect(implicit.port == 1883)
    }

    @Test("mqtts:// defaults to 8883 and verifies against the system CA bundle")
    func secure() throws {
        let options = try MQTTOptions.parse(url: "mqtts://localhost", clientID: "c")
        #expect(options.port == 8883)
        #expect(options.tls == MQTTTLS(caFile: MQTTOptions.systemCAFile))
        #expect(try MQTTOptions.parse(url: "mqtts://localhost:9999", clientID: "c").port == 9999)
    }

    @Test("credentials and IPv6 literals")
    func credentials() throws {
        let options = try MQTTOptions.parse(url: "mqtt://alice:s%40cret@[::1]:1999", clientID: "c")
        #expect(options.username == "alice")
        #expect(options.password == "s@cret")
        #expect(options.host == "::1")
        #expect(options.port == 1999)
    }

    @Test("bad URLs are invalidArgument with a hint", arguments: [
        "http://host:80", "mqtt://", "broker:1883", "mqtt://host:1883/path", "mqtt://host:0", "",
    ])
    func rejects(url: String) {
        #expect {
            _ = try MQTTOptions.parse(url: url, clientID: "c")
        } throws: { error in
            guard let error = error as? MQTTError else { return false }
            return error.kind == .invalidArgument && error.description.contains("mqtt")
        }
    }
}
