import Foundation
import Testing
import EscrowCore
import Identity
import MQTT
import OperatorCLI
import TestSupport

/// Issue 15, re-bundle: a device whose identity files were lost gets a fresh bundle from its
/// holder; the old certificate is refused at the broker, the new one works, for escrow and active
/// devices alike, and the custody chain records it and still verifies.
@Suite("Re-bundle: new identity files, the old ones refused", .serialized, .timeLimit(.minutes(3)))
struct RebundleTests {
    /// Writes the bundle into a fresh directory (a device wiped and reinstalled) and returns its agent.conf.
    static func install(_ b: Commands.DeviceBundle, into dir: TempDirectory) throws -> String {
        let d = try DeviceBundleWriter.write(b, into: dir.path)
        try (DeviceBundleWriter.agentConf(b) + "backoff_initial = 1\nbackoff_max = 2\n").write(toFile: d + "/agent.conf", atomically: true, encoding: .utf8)
        return d + "/agent.conf"
    }

    @Test("an escrow device: the provisioner re-bundles it; the lost bundle is refused, the new one connects in escrow")
    func escrowDevice() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let files = try TempDirectory(prefix: "rebundle-old")
        let confs = try await platform.provision(["reb-0001"], by: oem, account: "oem", into: files)
        let oldDir = files.path + "/reb-0001"
        let old = try AgentProcess(config: confs["reb-0001"]!)
        try await waitUntil(timeout: .seconds(15), "the device is online") {
            try await oem.send("oem", "device.list", ["online": true]).result(Commands.DeviceListResult.self).total == 1
        }
        old.process.signal(SIGKILL); old.process.waitForExit(timeout: .seconds(5)) // its files are "lost"
        let oldCert = try String(contentsOfFile: oldDir + "/device.crt", encoding: .utf8)
        let oldKey = try String(contentsOfFile: oldDir + "/device.key", encoding: .utf8)

        let r = try await oem.send("oem", "device.rebundle", ["deviceIds": ids(["reb-0001", "ghost"])]).result(Commands.DeviceRebundleResult.self)
        #expect(r.bundles.map(\.deviceId) == ["reb-0001"] && r.revokedCertificates == 1)
        #expect(r.refused.map(\.reason) == ["device ghost is not a device of oem"])
        let bundle = try #require(r.bundles.first)
        #expect(try Certificate(pem: bundle.certificate).issuerCommonName == "EscrowFleet provisioner oem")
        #expect(try await ResaleReturnTests.refused(oldDir, "lost", certificate: oldCert, key: oldKey, port: platform.escrowd.devicePort),
                "the lost bundle is still accepted")

        let fresh = try TempDirectory(prefix: "rebundle-new")
        let agent = try AgentProcess(config: try Self.install(bundle, into: fresh))
        defer { agent.process.terminate() }
        try await waitUntil(timeout: .seconds(15), "the re-bundled device is online in escrow with its new fingerprint") {
            let d = try await oem.send("oem", "device.show", ["deviceId": "reb-0001"]).result(Commands.DeviceShowResult.self).device
            return d.online && d.mode == .escrow && d.fingerprint == bundle.fingerprint
        }
        let show = try await oem.send("oem", "device.show", ["deviceId": "reb-0001"]).result(Commands.DeviceShowResult.self)
        #expect(show.custody.map(\.decision) == [.provisioned, .rebundled] && show.verification.valid, "\(show.custody)")
        #expect(await oem.events(of: .deviceRebundled).contains { $0.details["fingerprint"] == .string(bundle.fingerprint) })
        await platform.close()
    }

    @Test("an active device: its owner re-bundles it; the owner-issued identity is refused, the new bundle comes back in normal mode")
    func activeDevice() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let acme = try await platform.account("acme", kind: .customer)
        let files = try TempDirectory(prefix: "rebundle-act")
        let confs = try await platform.provision(["reb-0002"], by: oem, account: "oem", into: files)
        let dir = files.path + "/reb-0002"
        let old = try await ResaleReturnTests.startEscrowAgent(confs["reb-0002"]!, watchedBy: oem)
        defer { old.process.terminate() }
        let issued = try await ResaleReturnTests.activate("reb-0002", from: oem, to: acme, "acme", agent: old, dir: dir)
        let issuedKey = try String(contentsOfFile: dir + "/state/identity.key", encoding: .utf8)
        old.process.signal(SIGKILL); old.process.waitForExit(timeout: .seconds(5))

        let r = try await acme.send("acme", "device.rebundle", ["deviceIds": ids(["reb-0002"])]).result(Commands.DeviceRebundleResult.self)
        let bundle = try #require(r.bundles.first)
        #expect(try Certificate(pem: bundle.certificate).issuerCommonName == "EscrowFleet customer acme")
        #expect(try await ResaleReturnTests.refused(dir, "issued", certificate: issued.pem(), key: issuedKey, port: platform.escrowd.devicePort),
                "the lost owner-issued identity is still accepted")

        let fresh = try TempDirectory(prefix: "rebundle-act-new")
        let agent = try AgentProcess(config: try Self.install(bundle, into: fresh))
        defer { agent.process.terminate() }
        try await waitUntil(timeout: .seconds(20), "the re-bundled device applies its configuration and is back in normal mode") {
            let d = try await acme.send("acme", "device.show", ["deviceId": "reb-0002"]).result(Commands.DeviceShowResult.self).device
            return d.online && d.mode == .normal && d.fingerprint == bundle.fingerprint && d.configState == .applied
        }
        let show = try await acme.send("acme", "device.show", ["deviceId": "reb-0002"]).result(Commands.DeviceShowResult.self)
        #expect(show.custody.map(\.decision) == [.provisioned, .activated, .rebundled] && show.verification.valid, "\(show.custody)")
        // The other device's owner cannot re-bundle it.
        let foreign = try await oem.send("oem", "device.rebundle", ["deviceIds": ids(["reb-0002"])])
        #expect(!foreign.ok && foreign.error?.code == .notFound)
        await platform.close()
    }
}
