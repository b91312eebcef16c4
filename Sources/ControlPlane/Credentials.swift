import EscrowCore

/// Device identities and operator passwords: what the control plane needs from the
/// certificate machinery. `IdentityCredentials` implements it with OpenSSL (module Identity).
public protocol Credentials: Sendable {
    /// A new certificate authority for an account (ECDSA P-256): provisioners issue escrow
    /// identities with it, every account the identities of the devices activated in it.
    func newAuthority(for account: AccountID, kind: Account.Kind) throws -> (certificate: String, privateKey: String)
    /// Issues identities for devices, signed by the account's authority.
    func issue(_ devices: [DeviceID], authority: (certificate: String, privateKey: String)) throws -> [IssuedIdentity]
    /// Signs a device's certificate signing request with the new owner's authority.
    func sign(csr: String, device: DeviceID, authority: (certificate: String, privateKey: String)) throws -> IssuedIdentity
    /// Throws unless `csr` parses, is self-signed correctly, and names `device` as its CN.
    func validate(csr: String, device: DeviceID) throws
    /// The mosquitto password-file hash of an operator password.
    func passwordHash(_ password: String) -> String
    /// What a device trusts to verify the broker, and the URL it connects to.
    var brokerCA: String { get }
    var deviceBrokerURL: String { get }
}

public struct IssuedIdentity: Sendable {
    public var device: DeviceID
    public var certificate: String
    public var privateKey: String?
    public var fingerprint: String
    public var serial: String
    public init(device: DeviceID, certificate: String, privateKey: String?, fingerprint: String, serial: String) {
        self.device = device; self.certificate = certificate; self.privateKey = privateKey; self.fingerprint = fingerprint; self.serial = serial
    }
}
