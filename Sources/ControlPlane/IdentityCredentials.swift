import Foundation
import EscrowCore
import Identity
import Broker

/// `Credentials` over OpenSSL: per-provisioner CAs, device identities, CSR signing and
/// mosquitto password hashes.
public struct IdentityCredentials: Credentials {
    public let brokerCA: String
    public let deviceBrokerURL: String

    public init(brokerCA: String, deviceBrokerURL: String) {
        self.brokerCA = brokerCA; self.deviceBrokerURL = deviceBrokerURL
    }

    public func newAuthority(for account: AccountID, kind: Account.Kind) throws -> (certificate: String, privateKey: String) {
        let ca = try CertificateAuthority.create(commonName: "EscrowFleet \(kind.rawValue) \(account)")
        return (try ca.certificate.pem(), try ca.key.pem())
    }

    public func issue(_ devices: [DeviceID], authority: (certificate: String, privateKey: String)) throws -> [IssuedIdentity] {
        let ca = try CertificateAuthority(certificatePEM: authority.certificate, keyPEM: authority.privateKey)
        return try ca.issueDeviceIdentities(devices.map(\.rawValue)).map {
            IssuedIdentity(device: DeviceID($0.deviceID)!, certificate: $0.certificatePEM, privateKey: $0.privateKeyPEM,
                           fingerprint: $0.fingerprint, serial: $0.serialNumber)
        }
    }

    public func sign(csr: String, device: DeviceID, authority: (certificate: String, privateKey: String)) throws -> IssuedIdentity {
        let ca = try CertificateAuthority(certificatePEM: authority.certificate, keyPEM: authority.privateKey)
        let cert = try ca.sign(csr: CertificateSigningRequest(pem: csr), commonName: device.rawValue)
        return IssuedIdentity(device: device, certificate: try cert.pem(), privateKey: nil, fingerprint: cert.sha256Fingerprint, serial: cert.serialNumberHex)
    }

    public func validate(csr: String, device: DeviceID) throws {
        let request: CertificateSigningRequest
        do { request = try CertificateSigningRequest(pem: csr) } catch {
            throw WireError(.invalidArgument, "csr: not a readable PEM certificate signing request (\(error))")
        }
        guard request.requestsP256Key else { throw WireError(.invalidArgument, "csr: the key must be ECDSA P-256") }
        guard request.verifySignature() else { throw WireError(.invalidArgument, "csr: the signature does not verify") }
        guard request.commonName == device.rawValue else {
            throw WireError(.invalidArgument, "csr: its CN is '\(request.commonName)', expected the device id \(device)")
        }
    }

    public func passwordHash(_ password: String) -> String { MosquittoPassword.hash(password: password) }
}
