import MQTTWire
import Testing

/// The one broker URL grammar (escrowd, escrowctl, the agent, fleetsim).
@Suite("Broker URLs")
struct BrokerURLTests {
    @Test("schemes, aliases, default ports, IPv6 and credentials")
    func accepted() throws {
        #expect(try BrokerURL.parse("mqtt://broker.example") == BrokerURL(host: "broker.example", port: 1883, tls: false))
        #expect(try BrokerURL.parse("mqtts://broker.example") == BrokerURL(host: "broker.example", port: 8883, tls: true))
        #expect(try BrokerURL.parse("tcp://10.0.0.1:1884").port == 1884)
        #expect(try BrokerURL.parse("ssl://h").tls && BrokerURL.parse("tls://h").tls)
        #expect(try BrokerURL.parse("mqtt://[::1]:1883") == BrokerURL(host: "::1", port: 1883, tls: false))
        let withLogin = try BrokerURL.parse("mqtt://op-acme:s%40cret@127.0.0.1:1883/")
        #expect(withLogin.username == "op-acme" && withLogin.password == "s@cret")
        #expect(try BrokerURL.parse("mqtt://[::1]:1883").description == "mqtt://[::1]:1883")
    }

    @Test("each refusal says what to write instead", arguments: [
        ("broker.example:1883", "unsupported scheme"),
        ("ws://h:1", "unsupported scheme 'ws'"),
        ("mqtt://", "missing host"),
        ("mqtt://h:1883/topic", "an MQTT URL has no path"),
        ("mqtt://h:1883?x=1", "query or fragment"),
        ("mqtt://h:0", "port 0 is not 1...65535"),
        ("not a url at all", "not a URL"),
    ])
    func refused(text: String, fragment: String) {
        do {
            _ = try BrokerURL.parse(text)
            Issue.record("\(text) was accepted")
        } catch {
            #expect(error.message.contains(fragment), "\(text): \(error.message)")
        }
    }
}
