import Foundation
import Testing
import EscrowCore
import ControlPlane
import Identity
import MQTT
import TestSupport
import Storage

/// Issue 13: presence from an older connection and bad CSRs change nothing (escrowd in-process,
/// its managed broker, real mutual TLS).
@Suite("Device messages that must change nothing: stale wills and bad CSRs", .serialized, .timeLimit(.minutes(3)))
struct StalePresenceTests {
    static func status(_ state: DeviceStatus.State, _ mode: DeviceMode, session: Int) -> [UInt8] {
        WireCodec.encode(DeviceStatus(state: state, mode: mode, configVersion: 1, agentVersion: "1.0.0", session: session))
    }

    /// The `devices` row's column, read from the real SQLite file with the sqlite3 CLI.
    @Test("a will from an older connection changes nothing")
    func staleWill() async throws {
        let p = try await HostileTenantTests.Platform()
        let oem = try await p.account("oem", kind: .provisioner)
        let dirs = try await p.provision(["dev-s"], by: oem, account: "oem")
        let device = try p.device(dirs["dev-s"]!, clientID: "dev-s")
        try await device.connect()
        let topic = "devices/dev-s/status"
        // Connection 200 is current (normal mode); then connection 100's will arrives late.
        try await device.publish(topic, Self.status(.online, .escrow, session: 100), qos: .atLeastOnce, retain: true)
        try await device.publish(topic, Self.status(.online, .normal, session: 200), qos: .atLeastOnce, retain: true)
        try await device.publish(topic, Self.status(.offline, .escrow, session: 100), qos: .atLeastOnce, retain: true)
        try await waitUntil("escrowd sees the stale will") { await p.daemon.service.counters.staleStatuses == 1 }
        await p.daemon.service.flushAcks()
        let show = try await oem.send("oem", "device.show", ["deviceId": "dev-s"]).result(Commands.DeviceShowResult.self)
        #expect(show.device.online && show.device.mode == .normal, "presence regressed: \(show.device)")
        #expect(try TestStore.deviceColumn(p.daemon.store, "presence_session", of: "dev-s") == "200")
        // The same session's own will applies (a real disconnect); a newer connection's status too.
        try await device.publish(topic, Self.status(.offline, .normal, session: 200), qos: .atLeastOnce, retain: true)
        try await waitUntil(timeout: .seconds(30), "the current connection's will is applied") {
            await p.daemon.service.flushAcks()
            return try await !oem.send("oem", "device.show", ["deviceId": "dev-s"]).result(Commands.DeviceShowResult.self).device.online
        }
        #expect(await p.daemon.service.counters.staleStatuses == 1)
        await device.disconnect()
        await oem.close()
        await p.close()
    }

    @Test("CSR errors: unparsable, wrong key type, wrong CN, another device's: invalid_argument, nothing stored")
    func csrErrors() async throws {
        let p = try await HostileTenantTests.Platform()
        let oem = try await p.account("oem", kind: .provisioner)
        let dirs = try await p.provision(["dev-c"], by: oem, account: "oem")
        let device = try p.device(dirs["dev-c"]!, clientID: "dev-c")
        try await device.connect()
        _ = try await device.subscribe([("devices/dev-c/error", .atLeastOnce)])
        let errors = device.messages

        let scratch = try TempDirectory(prefix: "csr")
        _ = try runCommand("/usr/bin/openssl", ["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=dev-c",
                                                "-keyout", scratch.file("rsa.key"), "-out", scratch.file("rsa.csr")])
        let rsa = try String(contentsOfFile: scratch.file("rsa.csr"), encoding: .utf8)
        let key = try PrivateKey()
        let cases: [(String, String)] = [
            ("not PEM at all", "hello"),
            ("garbage between the PEM markers", "-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgQ1NS\n-----END CERTIFICATE REQUEST-----\n"),
            ("an RSA key", rsa),
            ("another CN", try CertificateSigningRequest(key: key, commonName: "dev-other").pem()),
            ("a login's name as CN", try CertificateSigningRequest(key: key, commonName: "svc-escrowd").pem()),
        ]
        for (what, pem) in cases {
            try await device.publish("devices/dev-c/csr", WireCodec.encode(CertificateRequest(csr: pem)), qos: .atLeastOnce)
            let m = try await firstElement(of: errors, "the error for \(what)") { $0.topic == "devices/dev-c/error" }
            let report = try WireCodec.decode(DeviceErrorReport.self, from: m.payload)
            #expect(report.code == .invalidArgument, "\(what): \(report.code) \(report.message)")
            #expect(report.topic == "devices/dev-c/csr")
        }
        #expect(try TestStore.deviceColumn(p.daemon.store, "csr", of: "dev-c") == "NULL", "a refused CSR was stored")
        // Control: a valid CSR is stored and answered with no error.
        let good = try CertificateSigningRequest(key: key, commonName: "dev-c").pem()
        try await device.publish("devices/dev-c/csr", WireCodec.encode(CertificateRequest(csr: good)), qos: .atLeastOnce)
        try await waitUntil("the valid CSR is stored") { try TestStore.deviceColumn(p.daemon.store, "csr", of: "dev-c") != "NULL" }
        await device.disconnect()
        await oem.close()
        await p.close()
    }

    @Test("a device that never takes up its owner identity loses its escrow certificate after the grace period")
    func escrowGrace() async throws {
        let p = try await HostileTenantTests.Platform { $0.escrowGrace = .seconds(1); $0.reconcileInterval = .seconds(1) }
        let oem = try await p.account("oem", kind: .provisioner)
        let acme = try await p.account("acme", kind: .customer)
        let dirs = try await p.provision(["dev-gone", "dev-stays"], by: oem, account: "oem")
        let serial = try Certificate(pem: String(contentsOfFile: dirs["dev-gone"]! + "/device.crt", encoding: .utf8)).serialNumberHex
        let kept = try Certificate(pem: String(contentsOfFile: dirs["dev-stays"]! + "/device.crt", encoding: .utf8)).serialNumberHex
        let t = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": ids(["dev-gone"])]).result(Commands.TransferResult.self)
        _ = try await acme.send("acme", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "activate"]).result(Commands.TransferResult.self)
        let revokedFile = p.daemon.layout.revokedFile
        try await waitUntil("the lapsed escrow certificate is in the broker's revocation set") {
            ((try? String(contentsOfFile: revokedFile, encoding: .utf8)) ?? "").split(separator: "\n").contains { $0 == serial }
        }
        let revoked = try String(contentsOfFile: revokedFile, encoding: .utf8)
        #expect(!revoked.contains(kept), "a device still in escrow keeps its certificate")
        // The broker refuses it from then on.
        let device = try p.device(dirs["dev-gone"]!, clientID: "dev-gone")
        #expect(await brokerRefuses(device), "the lapsed escrow certificate still has rights at the broker")
        for op in [oem, acme] { await op.close() }
        await p.close()
    }
}
