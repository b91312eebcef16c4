import Foundation
import EscrowCore
import Identity

/// The agent's own key material in the state directory:
/// `next.key` (0600) is the pending key whose CSR was sent while in escrow;
/// `identity.crt` / `identity.key` (0600) are the identity issued for the owner on activation.
struct IdentityFiles: Sendable {
    let pendingKey: String
    let certificate: String
    let key: String

    init(directory: String) {
        pendingKey = directory + "/next.key"
        certificate = directory + "/identity.crt"
        key = directory + "/identity.key"
    }

    var hasIssuedIdentity: Bool {
        FileManager.default.fileExists(atPath: certificate) && FileManager.default.fileExists(atPath: key)
    }

    /// A PEM CSR (CN = device id) for the pending key, created on first use and reused after.
    func certificateRequest(deviceID: DeviceID) throws -> String {
        let key: PrivateKey
        if let pem = try? String(contentsOfFile: pendingKey, encoding: .utf8) {
            key = try PrivateKey(pem: pem)
        } else {
            key = try PrivateKey()
            try StateFile.writeAtomically(Array(try key.pem().utf8), to: pendingKey, mode: 0o600)
        }
        return try CertificateSigningRequest(key: key, commonName: deviceID.rawValue).pem()
    }

    /// Checks that `certificate` names the device and certifies the pending key (or the issued key,
    /// for a re-pushed configuration), then writes it with that key as the current identity.
    func install(certificate pem: String, deviceID: DeviceID) throws(IdentityInstallError) {
        let cert: Certificate
        do { cert = try Certificate(pem: pem) } catch { throw .mismatch("is not a PEM certificate") }
        guard cert.commonName == deviceID.rawValue else { throw .mismatch("names '\(cert.commonName)', not \(deviceID)") }
        guard let certified = try? cert.publicKey() else { throw .mismatch("has no readable public key") }
        for path in [pendingKey, key] {
            guard let keyPEM = try? String(contentsOfFile: path, encoding: .utf8),
                  let candidate = try? PrivateKey(pem: keyPEM), let pub = try? candidate.publicKey(), pub.matches(certified) else { continue }
            do {
                if path != key { try StateFile.writeAtomically(Array(keyPEM.utf8), to: key, mode: 0o600) }
                try StateFile.writeAtomically(Array(pem.utf8), to: certificate, mode: 0o600)
            } catch {
                throw .storage("\(error)")
            }
            return
        }
        throw .mismatch("does not certify this device's pending key")
    }

    /// After the issued identity is in force, the pending key has been copied to `identity.key`.
    func removePendingKey() {
        if FileManager.default.fileExists(atPath: key) { try? FileManager.default.removeItem(atPath: pendingKey) }
    }
}

enum IdentityInstallError: Error {
    /// The certificate does not fit (reason completes "its certificate ...").
    case mismatch(String)
    case storage(String)
}
