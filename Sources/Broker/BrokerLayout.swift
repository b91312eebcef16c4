import Foundation
import POSIX
import Identity
#if canImport(Glibc)
import Glibc
#endif

/// Where the managed broker's files live inside a data directory.
public struct BrokerLayout: Sendable, Equatable {
    public let dataDirectory: String

    public init(dataDirectory: String) { self.dataDirectory = dataDirectory }

    public var directory: String { dataDirectory + "/broker" }
    public var configFile: String { directory + "/mosquitto.conf" }
    public var aclFile: String { directory + "/acl" }
    public var passwordFile: String { directory + "/passwd" }
    public var certsDirectory: String { directory + "/certs" }
    /// The device-trust bundle: every provisioner CA and every per-owner CA.
    public var caBundle: String { certsDirectory + "/ca.pem" }
    /// One CRL per CA in `caBundle`, concatenated (mosquitto refuses certs of a CA without one).
    public var crlFile: String { certsDirectory + "/crl.pem" }
    public var serverCertificate: String { certsDirectory + "/server.pem" }
    public var serverKey: String { certsDirectory + "/server.key" }
    /// Trailing slash: mosquitto concatenates `persistence_location` and the file name.
    public var persistenceDirectory: String { directory + "/persistence/" }
    public var logFile: String { directory + "/mosquitto.log" }
    /// Written by `ManagedBroker`, used to kill a broker orphaned by a crashed supervisor.
    public var pidFile: String { directory + "/mosquitto.pid" }
    /// mosquitto's stdout/stderr (config errors are printed there before logging starts).
    public var stderrFile: String { directory + "/mosquitto.stderr" }

    /// Creates `broker/`, `broker/certs/` (0700) and `broker/persistence/`.
    public func createDirectories() throws(BrokerError) {
        for (dir, mode) in [(directory, 0o755), (certsDirectory, 0o700), (persistenceDirectory, 0o755)] as [(String, Int)] {
            do {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: mode])
            } catch {
                throw BrokerError.file(operation: "mkdir", path: dir, errno: Int32((error as NSError).code))
            }
        }
    }

    /// Writes the config (0644), ACL (0644) and password file (0600), each atomically.
    public func install(plan: BrokerPlan, acl: String, passwords: String) throws(BrokerError) {
        try createDirectories()
        try writeBrokerFile(plan.mosquittoConf(), to: configFile, mode: 0o644)
        try writeBrokerFile(acl, to: aclFile, mode: 0o644)
        try writeBrokerFile(passwords, to: passwordFile, mode: 0o600)
    }

    /// Writes the device-trust bundle and the CRL bundle: one CRL per CA, so
    /// every CA in the bundle has a CRL, as mosquitto's CRL checking requires.
    public func installTrust(authorities: [CertificateAuthority], revokedSerials: [String: [String]] = [:]) throws {
        try createDirectories()
        var bundle = "", crls = ""
        for ca in authorities {
            bundle += try ca.certificate.pem()
            crls += try ca.crl(revokedSerials: revokedSerials[ca.commonName] ?? [])
        }
        try writeBrokerFile(bundle, to: caBundle, mode: 0o644)
        try writeBrokerFile(crls, to: crlFile, mode: 0o644)
    }

    /// Issues the broker's server certificate from `ca` and writes it with its key (0600).
    public func installServerIdentity(ca: CertificateAuthority, commonName: String = "escrowfleet-broker",
                                      serverNames: [String], validityDays: Int = 825) throws {
        try createDirectories()
        let key = try PrivateKey()
        let cert = try ca.issue(commonName: commonName, publicKey: key.publicKey(), validityDays: validityDays,
                                serverNames: serverNames, isServer: true)
        try writeBrokerFile(key.pem(), to: serverKey, mode: 0o600)
        try writeBrokerFile(cert.pem() + ca.certificate.pem(), to: serverCertificate, mode: 0o644)
    }
}

/// Writes through a temporary file with `mode`, then renames over `path`, so
/// mosquitto never reads a half-written file on SIGHUP.
public func writeBrokerFile(_ text: String, to path: String, mode: mode_t) throws(BrokerError) {
    do { try AtomicFile.write(text, to: path, mode: mode) } catch {
        throw BrokerError.file(operation: error.operation, path: error.path, errno: error.errno)
    }
}
