import Foundation
import Testing
import Identity

@Suite("Device identity issue rate", .timeLimit(.minutes(2)))
struct IssueRateTests {
    @Test func issues2000IdentitiesInParallelAndReportsTheRate() throws {
        let ca = try CertificateAuthority.create(commonName: "Rate CA")
        let ids = (0..<2000).map { String(format: "dev-%05d", $0) }
        let clock = ContinuousClock()
        var batch: [DeviceIdentity] = []
        let parallel = try clock.measure { batch = try ca.issueDeviceIdentities(ids) }
        let serialIDs = Array(ids.prefix(200))
        var serial: [DeviceIdentity] = []
        let sequential = try clock.measure { serial = try serialIDs.map { try ca.issueDeviceIdentity(deviceID: $0) } }
        let pSec = Double(parallel.components.seconds) + Double(parallel.components.attoseconds) / 1e18
        let sSec = Double(sequential.components.seconds) + Double(sequential.components.attoseconds) / 1e18
        print("IDENTITY ISSUE RATE: parallel \(Int(Double(ids.count) / pSec))/s (2000 in \(String(format: "%.2f", pSec)) s, \(ProcessInfo.processInfo.activeProcessorCount) cores); sequential \(Int(Double(serialIDs.count) / sSec))/s")
        #expect(batch.map(\.deviceID) == ids)
        #expect(Set(batch.map(\.fingerprint)).count == ids.count)
        #expect(Set(batch.map(\.serialNumber)).count == ids.count)
        #expect(serial.count == serialIDs.count)
        // Every concurrently signed certificate verifies and carries its own CN and key.
        for (i, identity) in batch.enumerated() where i % 50 == 0 || i == batch.count - 1 {
            let cert = try Certificate(pem: identity.certificatePEM)
            #expect(cert.commonName == ids[i])
            #expect(cert.verify(signedBy: ca))
            #expect(try cert.publicKey().matches(PrivateKey(pem: identity.privateKeyPEM).publicKey()))
        }
        let allVerify = try batch.allSatisfy { try Certificate(pem: $0.certificatePEM).verify(signedBy: ca) }
        #expect(allVerify)
    }
}
