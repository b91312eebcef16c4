import EscrowCore
import Foundation
import Identity
import Testing
import TestSupport
@testable import FleetEngine

/// The engine over mutual TLS against a real mosquitto TLS listener (certificate CN = username).
@Suite(.serialized) struct TLSFleetTests {
    /// A CA, a broker identity for 127.0.0.1, and a mosquitto with a TLS listener requiring client certificates.
    struct TLSBroker {
        let dir: TempDirectory
        let ca: CertificateAuthority
        let broker: MosquittoBroker
        var url: String { "mqtts://127.0.0.1:\(broker.tlsPort!)" }

        init() async throws {
            dir = try TempDirectory(prefix: "fleet-tls")
            ca = try CertificateAuthority.create(commonName: "Fleet Test CA")
            let key = try PrivateKey()
            let cert = try ca.issue(commonName: "fleet-broker", publicKey: key.publicKey(), validityDays: 30, serverNames: ["127.0.0.1"], isServer: true)
            try ca.certificate.pem().write(toFile: dir.file("ca.pem"), atomically: true, encoding: .utf8)
            try (cert.pem() + ca.certificate.pem()).write(toFile: dir.file("server.crt"), atomically: true, encoding: .utf8)
            try key.pem().write(toFile: dir.file("server.key"), atomically: true, encoding: .utf8)
            broker = try await MosquittoBroker(BrokerConfig(tls: .init(caFile: dir.file("ca.pem"), certFile: dir.file("server.crt"), keyFile: dir.file("server.key"))))
        }

        /// Writes bundles like `escrowctl device provision --out DIR`, signed by `issuer`.
        func bundles(_ ids: [String], issuer: CertificateAuthority? = nil, name: String = "bundles") throws -> String {
            let root = try dir.subdirectory(name)
            for identity in try (issuer ?? ca).issueDeviceIdentities(ids, validityDays: 30) {
                let d = root + "/" + identity.deviceID
                try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
                try identity.certificatePEM.write(toFile: d + "/device.crt", atomically: true, encoding: .utf8)
                try identity.privateKeyPEM.write(toFile: d + "/device.key", atomically: true, encoding: .utf8)
                try ca.certificate.pem().write(toFile: d + "/broker-ca.pem", atomically: true, encoding: .utf8)
                try "broker = \(url)\ndevice_id = \(identity.deviceID)\n".write(toFile: d + "/agent.conf", atomically: true, encoding: .utf8)
            }
            return root
        }
    }

    @Test func bundlesConnectOverMutualTLSAndHeartbeat() async throws {
        let tls = try await TLSBroker(); defer { tls.broker.stop() }
        let bundles = try tls.bundles((0..<40).map { String(format: "tls-%03d", $0) })
        let json = tls.dir.file("r.json")
        // No --broker and no --devices: both come from the bundles.
        let run = try await fleetsim(["connect", "--bundles", bundles, "--duration", "2.5", "--heartbeat", "0.5", "--qos", "1",
                                      "--tls-handshakes", "8", "--tls-identities", "parsed", "--quiet", "--report", json])
        let code = run.code, err = run.err
        #expect(code == 0, "\(err)")
        let report = try FleetReport.decode(Data(contentsOf: URL(fileURLWithPath: json)))
        #expect(report.peakConnected == 40 && report.targetDevices == 40)
        #expect(report.errors.values.reduce(0, +) == 0, "\(report.errors) \(report.problems)")
        #expect((report.counters["heartbeats"] ?? 0) >= 40)
        #expect(report.pubackLatencyMs.count > 0)
        #expect(report.settings["broker"] == tls.url)
    }

    @Test func untrustedIdentitiesAndWrongBrokerCAFailAsAuthWithTheOpenSSLReason() async throws {
        let tls = try await TLSBroker(); defer { tls.broker.stop() }
        // Device certificates from a CA the broker does not trust: the broker refuses the handshake.
        let stranger = try CertificateAuthority.create(commonName: "Stranger CA")
        let foreign = try tls.bundles(["bad-1", "bad-2", "bad-3"], issuer: stranger, name: "foreign")
        var run = try await fleetsim(["connect", "--bundles", foreign, "--duration", "8", "--quiet", "--backoff-base", "0.2", "--backoff-max", "0.5"])
        var code = run.code, err = run.err
        #expect(code == 1)
        #expect(err.last?.contains("not authorised") == true && err.last?.contains("TLS") == true, "\(err)")
        // The fleet trusts another CA than the broker's: certificate verification fails on our side.
        let good = try tls.bundles(["ok-1", "ok-2"], name: "good")
        try stranger.certificate.pem().write(toFile: tls.dir.file("stranger.pem"), atomically: true, encoding: .utf8)
        run = try await fleetsim(["connect", "--bundles", good, "--tls-ca", tls.dir.file("stranger.pem"), "--duration", "8", "--quiet",
                                  "--backoff-base", "0.2", "--backoff-max", "0.5"])
        code = run.code; err = run.err
        #expect(code == 1)
        #expect(err.last?.contains("certificate verify failed") == true, "\(err)")
    }

    @Test func aBundleWhoseKeyIsNotItsCertificatesIsRefusedBeforeAnyConnection() async throws {
        let tls = try await TLSBroker(); defer { tls.broker.stop() }
        let bundles = try tls.bundles(["mix-1", "mix-2"])
        try FileManager.default.removeItem(atPath: bundles + "/mix-2/device.key")
        try FileManager.default.copyItem(atPath: bundles + "/mix-1/device.key", toPath: bundles + "/mix-2/device.key")
        let run = try await fleetsim(["connect", "--bundles", bundles, "--duration", "5", "--quiet"])
        let code = run.code, err = run.err
        #expect(code == 64, "\(err)")
        #expect(err.joined().contains("mix-2") && err.joined().contains("does not belong to certificate mix-2"), "\(err)")
    }

    @Test func mqttsWithoutIdentitiesIsAUsageError() {
        var err: [String] = []
        let code = FleetMain.run(["connect", "--broker", "mqtts://127.0.0.1:8883"], stdout: { _ in }, stderr: { err.append($0) })
        #expect(code == 64 && err.first?.contains("--bundles") == true)
    }
}
