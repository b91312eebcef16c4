import COpenSSL
import Dispatch
import POSIX
import Synchronization

/// What a device needs to authenticate to the broker: a client certificate
/// with `CN = deviceID`, its private key, and the certificate's fingerprint.
public struct DeviceIdentity: Sendable, Equatable {
    public let deviceID: String
    public let certificatePEM: String
    /// Unencrypted PKCS#8 PEM.
    public let privateKeyPEM: String
    /// SHA-256 of the DER certificate, lowercase hex without colons.
    public let fingerprint: String
    /// Certificate serial, lowercase hex: what a CRL names on revocation.
    public let serialNumber: String
}

extension CertificateAuthority {
    /// Generates a P-256 key and a client certificate `CN=deviceID`, all in-process.
    public func issueDeviceIdentity(deviceID: String, validityDays: Int = 3650) throws(IdentityError) -> DeviceIdentity {
        let key = try PrivateKey()
        let cert = try issue(commonName: deviceID, keyPointer: key.pointer, validityDays: validityDays,
                             serverNames: [], isServer: false)
        return DeviceIdentity(deviceID: deviceID, certificatePEM: try cert.pem(), privateKeyPEM: try key.pem(),
                              fingerprint: cert.sha256Fingerprint, serialNumber: cert.serialNumberHex)
    }

    /// Issues identities for `ids` on all cores (`BlockingWork.parallel`: threads of its own, never
    /// libdispatch's, which on Linux are the cooperative pool's);
    /// results are in the order of `ids`. Throws the first failure, if any.
    public func issueDeviceIdentities(_ ids: [String], validityDays: Int = 3650) throws(IdentityError) -> [DeviceIdentity] {
        var results = [Result<DeviceIdentity, IdentityError>?](repeating: nil, count: ids.count)
        results.withUnsafeMutableBufferPointer { buffer in
            let slots = Slots(buffer: buffer)
            BlockingWork.parallel(iterations: ids.count) { i in
                do throws(IdentityError) {
                    slots.buffer[i] = .success(try self.issueDeviceIdentity(deviceID: ids[i], validityDays: validityDays))
                } catch {
                    slots.buffer[i] = .failure(error)
                }
            }
        }
        return try results.map { r throws(IdentityError) in try r!.get() }
    }
}

/// `@unchecked Sendable`: each parallel iteration writes only its own
/// index, and the buffer outlives the (synchronous) parallel call.
private struct Slots<T>: @unchecked Sendable {
    let buffer: UnsafeMutableBufferPointer<T>
}
