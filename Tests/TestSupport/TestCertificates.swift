import Foundation
import Synchronization

/// A throwaway PKI made with the `openssl` CLI: an ECDSA P-256 CA, a server certificate for
/// 127.0.0.1/localhost, and client certificates whose CN becomes the MQTT username.
/// The CA and server certificate are generated once per process (`shared()`).
public final class TestCertificates: Sendable {
    public struct ClientCertificate: Sendable {
        public let commonName: String
        public let certFile: String
        public let keyFile: String
    }

    public static let installHint = "apt-get install -y openssl"

    public let directory: TempDirectory
    public let caFile: String
    public let caKeyFile: String
    public let serverCertFile: String
    public let serverKeyFile: String
    private let openssl: String
    private let counter = Atomic<Int>(0)

    private static let cached = Mutex<TestCertificates?>(nil)

    /// The per-process CA and server certificate (created on first use).
    public static func shared() throws -> TestCertificates {
        try cached.withLock { cached in
            if let cached { return cached }
            let made = try TestCertificates(caName: "EscrowFleet Test CA")
            cached = made
            // A static is never deinitialised: remove the shared directory when the process exits.
            atexit { TestCertificates.removeShared() }
            return made
        }
    }

    private static func removeShared() {
        if let path = cached.withLock({ $0?.directory.path }) {
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    /// A fresh, independent CA (e.g. to make a certificate the broker does not trust).
    public init(caName: String) throws {
        guard let openssl = locateExecutable("openssl") else {
            throw TestSupportError("openssl not found; install it with `\(Self.installHint)`")
        }
        self.openssl = openssl
        directory = try TempDirectory(prefix: "certs")
        caKeyFile = directory.file("ca.key")
        caFile = directory.file("ca.crt")
        serverKeyFile = directory.file("server.key")
        serverCertFile = directory.file("server.crt")
        try generateKey(caKeyFile)
        let caExt = directory.file("ca.cnf")
        try """
        [req]
        distinguished_name = dn
        x509_extensions = v3
        prompt = no
        [dn]
        CN = \(caName)
        [v3]
        basicConstraints = critical,CA:TRUE
        keyUsage = critical,keyCertSign,cRLSign
        subjectKeyIdentifier = hash
        """.write(toFile: caExt, atomically: true, encoding: .utf8)
        try runCommand(openssl, ["req", "-x509", "-new", "-config", caExt, "-key", caKeyFile, "-sha256",
                                 "-days", "2", "-out", caFile], installHint: Self.installHint)
        try issue(commonName: "127.0.0.1", keyFile: serverKeyFile, certFile: serverCertFile,
                  extensions: "subjectAltName = IP:127.0.0.1,DNS:localhost\nextendedKeyUsage = serverAuth")
    }

    /// A client certificate signed by this CA with the given CN.
    public func makeClient(commonName: String) throws -> ClientCertificate {
        let n = counter.add(1, ordering: .relaxed).newValue
        let keyFile = directory.file("client-\(n).key")
        let certFile = directory.file("client-\(n).crt")
        try issue(commonName: commonName, keyFile: keyFile, certFile: certFile,
                  extensions: "extendedKeyUsage = clientAuth")
        return ClientCertificate(commonName: commonName, certFile: certFile, keyFile: keyFile)
    }

    private func generateKey(_ path: String) throws {
        try runCommand(openssl, ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path],
                       installHint: Self.installHint)
    }

    private func issue(commonName: String, keyFile: String, certFile: String, extensions: String) throws {
        try generateKey(keyFile)
        let csr = certFile + ".csr"
        let ext = certFile + ".ext"
        try "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\(extensions)\n"
            .write(toFile: ext, atomically: true, encoding: .utf8)
        try runCommand(openssl, ["req", "-new", "-key", keyFile, "-subj", "/CN=\(commonName)", "-out", csr],
                       installHint: Self.installHint)
        let serial = "0x" + (0..<16).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined()
        try runCommand(openssl, ["x509", "-req", "-in", csr, "-CA", caFile, "-CAkey", caKeyFile,
                                 "-set_serial", serial, "-days", "2", "-sha256", "-extfile", ext, "-out", certFile],
                       installHint: Self.installHint)
    }
}
