@testable import MQTT
import Foundation
import Testing
import TestSupport

@Suite("TLS with client certificates", .timeLimit(.minutes(1)))
struct TLSTests {
    static func broker() async throws -> (MosquittoBroker, TestCertificates) {
        let certs = try TestCertificates.shared()
        let tls = BrokerConfig.TLSListener(caFile: certs.caFile, certFile: certs.serverCertFile, keyFile: certs.serverKeyFile,
                                           requireCertificate: true, useIdentityAsUsername: true)
        // The certificate CN becomes the username: only "device-7" may use devices/device-7/#.
        let acl = "user device-7\ntopic readwrite devices/device-7/#\n"
        return (try await MosquittoBroker(BrokerConfig(acl: acl, tls: tls)), certs)
    }

    static func tlsOptions(_ broker: MosquittoBroker, _ tls: MQTTTLS) -> MQTTOptions {
        var options = MQTTOptions(clientID: uniqueID("tls"), host: "127.0.0.1", port: try! #require(broker.tlsPort))
        options.tls = tls
        options.reconnect = nil
        return options
    }

    @Test("a client certificate is accepted and its CN is the username")
    func accepted() async throws {
        let (broker, certs) = try await Self.broker()
        let cert = try certs.makeClient(commonName: "device-7")
        let client = try MQTTClient(Self.tlsOptions(broker, MQTTTLS(caFile: certs.caFile, certFile: cert.certFile, keyFile: cert.keyFile)))
        try await client.connect()
        try await client.subscribe("devices/device-7/#")
        try await client.publish("devices/device-7/heartbeat", bytes("up"))
        let message = try await firstElement(of: client.messages, "own heartbeat over TLS")
        #expect(message.payloadString == "up")
        // The ACL keys on the CN: another device's topic is denied.
        let denied = try await expectMQTTError("publish outside the CN's ACL") {
            try await client.publish("devices/device-8/heartbeat", bytes("x"))
        }
        #expect(denied.kind == .notAuthorized)
        await client.disconnect()
    }

    @Test("no client certificate is refused with .tls")
    func noCertificate() async throws {
        let (broker, certs) = try await Self.broker()
        let client = try MQTTClient(Self.tlsOptions(broker, MQTTTLS(caFile: certs.caFile)))
        let error = try await expectMQTTError("TLS connect without a client certificate") { try await client.connect() }
        #expect(error.kind == .tls, "\(error)")
    }

    @Test("a broker certificate from an untrusted CA is refused with .tls")
    func untrustedServer() async throws {
        let (broker, certs) = try await Self.broker()
        let otherCA = try TestCertificates(caName: "Someone Else")
        let cert = try certs.makeClient(commonName: "device-7")
        let client = try MQTTClient(Self.tlsOptions(broker, MQTTTLS(caFile: otherCA.caFile, certFile: cert.certFile, keyFile: cert.keyFile)))
        let error = try await expectMQTTError("TLS connect to an untrusted server") { try await client.connect() }
        #expect(error.kind == .tls, "\(error)")
    }
}
