import TestSupport
import Foundation
import Testing
@testable import Identity

@Suite("Identity: keys, CAs, certificates, CSRs", .timeLimit(.minutes(1)))
struct IdentityTests {
    @Test func privateKeyRoundTripsThroughPKCS8PEM() throws {
        let key = try PrivateKey()
        let pem = try key.pem()
        #expect(pem.hasPrefix("-----BEGIN PRIVATE KEY-----"))
        let again = try PrivateKey(pem: pem)
        #expect(try again.pem() == pem)
        #expect(try again.publicKey().matches(key.publicKey()))
    }

    @Test func publicKeyRoundTripsAndHoldsNoPrivatePart() throws {
        let key = try PrivateKey()
        let pub = try key.publicKey()
        let pem = try pub.pem()
        #expect(pem.hasPrefix("-----BEGIN PUBLIC KEY-----"))
        #expect(try PublicKey(pem: pem).matches(pub))
        #expect(throws: IdentityError.self) { try PrivateKey(pem: pem) }
    }

    @Test func garbagePEMIsAnOpenSSLErrorWithText() throws {
        do {
            _ = try Certificate(pem: "not a certificate")
            Issue.record("expected failure")
        } catch {
            guard case .openSSL(let op, let message) = error else { Issue.record("\(error)"); return }
            #expect(op == "PEM_read_bio_X509")
            #expect(message.contains("no start line"))
        }
    }

    @Test func certificateAuthorityHasCAExtensions() throws {
        let dir = try TempDirectory(); defer { dir.remove() }
        let ca = try CertificateAuthority.create(commonName: "Test CA", validityYears: 2)
        #expect(ca.commonName == "Test CA")
        #expect(ca.certificate.issuerCommonName == "Test CA")
        let days = ca.certificate.notAfter.timeIntervalSinceNow / 86400
        #expect(days > 729 && days < 731)
        let text = try openssl("x509", "-noout", "-text", "-in", dir.write("ca.pem", ca.certificate.pem())).output
        #expect(text.contains("CA:TRUE"))
        #expect(text.contains("Certificate Sign, CRL Sign"))
        #expect(text.contains("ASN1 OID: prime256v1"))
        #expect(text.contains("ecdsa-with-SHA256"))
    }

    @Test func certificateAuthoritySavesKeyWith0600AndLoadsBack() throws {
        let dir = try TempDirectory(); defer { dir.remove() }
        let ca = try CertificateAuthority.create(commonName: "Saved CA")
        try ca.save(certificatePath: dir.file("ca.pem"), keyPath: dir.file("ca.key"))
        let attrs = try FileManager.default.attributesOfItem(atPath: dir.file("ca.key"))
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        let loaded = try CertificateAuthority.load(certificatePath: dir.file("ca.pem"), keyPath: dir.file("ca.key"))
        #expect(loaded.certificate.sha256Fingerprint == ca.certificate.sha256Fingerprint)
        let device = try loaded.issueDeviceIdentity(deviceID: "dev-1")
        #expect(try Certificate(pem: device.certificatePEM).verify(signedBy: ca))
    }

    @Test func mismatchedCAKeyIsRefused() throws {
        let a = try CertificateAuthority.create(commonName: "A")
        #expect(throws: IdentityError.self) { try CertificateAuthority(certificate: a.certificate, key: PrivateKey()) }
    }

    @Test func certificateRoundTripsAndReportsFields() throws {
        let ca = try CertificateAuthority.create(commonName: "Issuer")
        let key = try PrivateKey()
        let cert = try ca.issue(commonName: "device-42", publicKey: key.publicKey(), validityDays: 10)
        let again = try Certificate(pem: cert.pem())
        #expect(again.commonName == "device-42")
        #expect(again.issuerCommonName == "Issuer")
        #expect(again.sha256Fingerprint == cert.sha256Fingerprint)
        #expect(again.sha256Fingerprint.count == 64)
        #expect(again.serialNumberHex.count == 32) // 128-bit serial
        let days = again.notAfter.timeIntervalSinceNow / 86400
        #expect(days > 9.9 && days < 10.1)
        #expect(try again.publicKey().matches(key.publicKey()))
    }

    @Test func fingerprintMatchesOpenSSLCLI() throws {
        let dir = try TempDirectory(); defer { dir.remove() }
        let ca = try CertificateAuthority.create(commonName: "FP CA")
        let id = try ca.issueDeviceIdentity(deviceID: "fp-device")
        let out = try openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", dir.write("d.pem", id.certificatePEM)).output
        // "sha256 Fingerprint=AB:CD:..." (the label's case varies by version)
        let value = out.split(separator: "=").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
        #expect(value.replacingOccurrences(of: ":", with: "").lowercased() == id.fingerprint)
    }

    @Test func verifyAcceptsTheIssuerAndRejectsOthers() throws {
        let right = try CertificateAuthority.create(commonName: "Right CA")
        let wrong = try CertificateAuthority.create(commonName: "Wrong CA")
        let sameName = try CertificateAuthority.create(commonName: "Right CA") // same CN, other key
        let cert = try Certificate(pem: right.issueDeviceIdentity(deviceID: "d1").certificatePEM)
        #expect(cert.verify(signedBy: right))
        #expect(cert.verify(signedBy: right.certificate))
        #expect(!cert.verify(signedBy: wrong))
        #expect(!cert.verify(signedBy: sameName))
    }

    @Test func csrRoundTripsAndVerifies() throws {
        let key = try PrivateKey()
        let csr = try CertificateSigningRequest(key: key, commonName: "dev-csr")
        let pem = try csr.pem()
        #expect(pem.hasPrefix("-----BEGIN CERTIFICATE REQUEST-----"))
        let again = try CertificateSigningRequest(pem: pem)
        #expect(again.commonName == "dev-csr")
        #expect(again.verifySignature())
        #expect(try again.publicKey().matches(key.publicKey()))
    }

    @Test func signingACSRChecksTheCommonName() throws {
        let ca = try CertificateAuthority.create(commonName: "Owner CA")
        let key = try PrivateKey()
        let csr = try CertificateSigningRequest(key: key, commonName: "dev-7")
        #expect(throws: IdentityError.commonNameMismatch(expected: "dev-8", actual: "dev-7")) {
            try ca.sign(csr: csr, commonName: "dev-8")
        }
        let cert = try ca.sign(csr: csr, commonName: "dev-7")
        #expect(cert.commonName == "dev-7")
        #expect(cert.verify(signedBy: ca))
        #expect(try cert.publicKey().matches(key.publicKey()))
    }

    @Test func tamperedCSRIsRefused() throws {
        let ca = try CertificateAuthority.create(commonName: "Owner CA")
        let pem = try CertificateSigningRequest(key: PrivateKey(), commonName: "dev-t").pem()
        let body = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        var der = [UInt8](Data(base64Encoded: body)!)
        der[der.count - 3] ^= 0x01 // inside the signature
        let tampered = "-----BEGIN CERTIFICATE REQUEST-----\n\(Data(der).base64EncodedString(options: .lineLength64Characters))\n-----END CERTIFICATE REQUEST-----\n"
        let csr = try CertificateSigningRequest(pem: tampered)
        #expect(!csr.verifySignature())
        #expect(throws: IdentityError.invalidCSRSignature(commonName: "dev-t")) { try ca.sign(csr: csr, commonName: "dev-t") }
    }

    @Test func openSSLVerifyAcceptsDeviceCertificateForClientAuth() throws {
        let dir = try TempDirectory(); defer { dir.remove() }
        let ca = try CertificateAuthority.create(commonName: "Verify CA")
        let other = try CertificateAuthority.create(commonName: "Other CA")
        let id = try ca.issueDeviceIdentity(deviceID: "dev-v")
        let cert = try dir.write("d.pem", id.certificatePEM)
        let ok = try openssl("verify", "-purpose", "sslclient", "-CAfile", dir.write("ca.pem", ca.certificate.pem()), cert)
        #expect(ok.status == 0, "\(ok.output)")
        let bad = try openssl("verify", "-CAfile", dir.write("other.pem", other.certificate.pem()), cert)
        #expect(bad.status != 0)
        let text = try openssl("x509", "-noout", "-text", "-in", cert).output
        #expect(text.contains("TLS Web Client Authentication"))
        #expect(text.contains("CA:FALSE"))
        // The key matches the certificate.
        let keyPub = try openssl("pkey", "-pubout", "-in", dir.write("d.key", id.privateKeyPEM)).output
        let certPub = try openssl("x509", "-noout", "-pubkey", "-in", cert).output
        #expect(keyPub == certPub)
    }

    @Test func serverCertificateCarriesSubjectAltNames() throws {
        let dir = try TempDirectory(); defer { dir.remove() }
        let ca = try CertificateAuthority.create(commonName: "Server CA")
        let cert = try ca.issue(commonName: "broker", publicKey: PrivateKey().publicKey(), validityDays: 30,
                                serverNames: ["broker.example", "127.0.0.1", "::1"], isServer: true)
        let path = try dir.write("s.pem", cert.pem())
        let text = try openssl("x509", "-noout", "-text", "-in", path).output
        #expect(text.contains("DNS:broker.example"))
        #expect(text.contains("IP Address:127.0.0.1"))
        #expect(text.contains("IP Address:0:0:0:0:0:0:0:1"))
        #expect(text.contains("TLS Web Server Authentication"))
        let v = try openssl("verify", "-purpose", "sslserver", "-verify_hostname", "broker.example",
                            "-CAfile", dir.write("ca.pem", ca.certificate.pem()), path)
        #expect(v.status == 0, "\(v.output)")
        #expect(throws: IdentityError.self) {
            try ca.issue(commonName: "b", publicKey: PrivateKey().publicKey(), validityDays: 1, serverNames: ["a,b"], isServer: true)
        }
    }

    @Test func crlRevokesForOpenSSLVerify() throws {
        let dir = try TempDirectory(); defer { dir.remove() }
        let ca = try CertificateAuthority.create(commonName: "CRL CA")
        let revoked = try ca.issueDeviceIdentity(deviceID: "dev-r")
        let kept = try ca.issueDeviceIdentity(deviceID: "dev-k")
        let crl = try dir.write("crl.pem", ca.crl(revokedSerials: [revoked.serialNumber]))
        let caFile = try dir.write("ca.pem", ca.certificate.pem())
        let text = try openssl("crl", "-noout", "-text", "-in", crl).output
        #expect(text.uppercased().contains(revoked.serialNumber.uppercased()))
        let r = try openssl("verify", "-crl_check", "-CAfile", caFile, "-CRLfile", crl, dir.write("r.pem", revoked.certificatePEM))
        #expect(r.status != 0)
        #expect(r.output.contains("certificate revoked"))
        let k = try openssl("verify", "-crl_check", "-CAfile", caFile, "-CRLfile", crl, dir.write("k.pem", kept.certificatePEM))
        #expect(k.status == 0, "\(k.output)")
        #expect(throws: IdentityError.self) { try ca.crl(revokedSerials: ["xyz"]) }
    }

    @Test func bundleParsing() throws {
        let a = try CertificateAuthority.create(commonName: "A"), b = try CertificateAuthority.create(commonName: "B")
        let all = try Certificate.all(pem: a.certificate.pem() + b.certificate.pem())
        #expect(all.map(\.commonName) == ["A", "B"])
    }
}
