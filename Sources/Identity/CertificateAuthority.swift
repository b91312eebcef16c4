import COpenSSL
import Foundation
import POSIX
#if canImport(Glibc)
import Glibc
#endif

/// A certificate authority: a CA certificate and its private key (ECDSA P-256).
///
/// `@unchecked Sendable`: certificate, key and the prepared extensions are
/// never mutated after init; OpenSSL 3 supports concurrent signing with one
/// shared EVP_PKEY (each X509_sign makes its own digest context), which the
/// parallel batch issuer relies on (exercised by `IssueRateTests`).
public final class CertificateAuthority: @unchecked Sendable {
    public let certificate: Certificate
    public let key: PrivateKey
    /// Extensions shared by every device certificate, built once.
    private let deviceExtensions: ExtensionList

    /// Pairs a CA certificate with its key; refuses a key that does not match.
    public init(certificate: Certificate, key: PrivateKey) throws(IdentityError) {
        guard X509_check_private_key(certificate.pointer, key.pointer) == 1 else {
            ERR_clear_error()
            throw IdentityError.invalidInput("CA key does not match certificate '\(certificate.commonName)'")
        }
        self.certificate = certificate
        self.key = key
        deviceExtensions = try ExtensionList(issuer: certificate.pointer, [
            (NID_basic_constraints, "critical,CA:FALSE"),
            (NID_key_usage, "critical,digitalSignature"),
            (NID_ext_key_usage, "clientAuth"),
            (NID_authority_key_identifier, "keyid:always"),
        ])
    }

    public convenience init(certificatePEM: String, keyPEM: String) throws(IdentityError) {
        try self.init(certificate: Certificate(pem: certificatePEM), key: PrivateKey(pem: keyPEM))
    }

    /// Creates a self-signed CA: P-256, `CN=commonName`, basicConstraints
    /// critical CA:TRUE, keyUsage keyCertSign+cRLSign, valid `validityYears`.
    public static func create(commonName: String, validityYears: Int = 10) throws(IdentityError) -> CertificateAuthority {
        let key = try PrivateKey()
        let x = try buildCertificate(subject: commonName, subjectKey: key.pointer, issuer: nil,
                                     validityDays: validityYears * 365) { x throws(IdentityError) in
            try ExtensionList(issuer: x, subject: x, [
                (NID_basic_constraints, "critical,CA:TRUE"),
                (NID_key_usage, "critical,keyCertSign,cRLSign"),
                (NID_subject_key_identifier, "hash"),
            ]).add(to: x)
            // A second pass: the AKI of a self-signed certificate reads the SKI just added.
            try ExtensionList(issuer: x, subject: x, [(NID_authority_key_identifier, "keyid:always")]).add(to: x)
        }
        try check(X509_sign(x, key.pointer, EVP_sha256()) > 0, "X509_sign(CA)")
        return try CertificateAuthority(certificate: Certificate(owning: x), key: key)
    }

    /// Loads a CA from a certificate PEM file and a private-key PEM file.
    public static func load(certificatePath: String, keyPath: String) throws(IdentityError) -> CertificateAuthority {
        try CertificateAuthority(certificatePEM: readFile(certificatePath), keyPEM: readFile(keyPath))
    }

    /// Writes the certificate (mode 0644) and the key (mode 0600), each atomically.
    public func save(certificatePath: String, keyPath: String) throws(IdentityError) {
        try writeFile(key.pem(), to: keyPath, mode: 0o600)
        try writeFile(certificate.pem(), to: certificatePath, mode: 0o644)
    }

    public var commonName: String { certificate.commonName }

    /// Issues a certificate for `publicKey` with subject `CN=commonName` and a
    /// random 128-bit serial. Client certificates get extendedKeyUsage
    /// clientAuth; server certificates serverAuth and a subjectAltName built
    /// from `serverNames` (IP literals become IP entries, the rest DNS).
    public func issue(commonName: String, publicKey: PublicKey, validityDays: Int,
                      serverNames: [String] = [], isServer: Bool = false) throws(IdentityError) -> Certificate {
        try issue(commonName: commonName, keyPointer: publicKey.pointer, validityDays: validityDays,
                  serverNames: serverNames, isServer: isServer)
    }

    func issue(commonName: String, keyPointer: OpaquePointer, validityDays: Int,
               serverNames: [String], isServer: Bool) throws(IdentityError) -> Certificate {
        BlockingWork.check("sign certificate")
        let ca = certificate.pointer
        let shared = deviceExtensions
        let x = try Self.buildCertificate(subject: commonName, subjectKey: keyPointer, issuer: ca,
                                          validityDays: validityDays) { x throws(IdentityError) in
            if isServer || !serverNames.isEmpty {
                var specs: [(Int32, String)] = [
                    (NID_basic_constraints, "critical,CA:FALSE"),
                    (NID_key_usage, "critical,digitalSignature,keyEncipherment"),
                    (NID_ext_key_usage, isServer ? "serverAuth" : "clientAuth"),
                    (NID_subject_key_identifier, "hash"),
                    (NID_authority_key_identifier, "keyid:always"),
                ]
                if !serverNames.isEmpty {
                    let san = try serverNames.map { (n: String) throws(IdentityError) -> String in
                        guard !n.isEmpty, !n.contains(","), !n.contains(":") || Self.isIPAddress(n) else {
                            throw IdentityError.invalidInput("server name '\(n)' is not a DNS name or IP address")
                        }
                        return Self.isIPAddress(n) ? "IP:\(n)" : "DNS:\(n)"
                    }
                    specs.append((NID_subject_alt_name, san.joined(separator: ",")))
                }
                try ExtensionList(issuer: ca, subject: x, specs).add(to: x)
            } else {
                try shared.add(to: x)
            }
        }
        guard X509_sign(x, key.pointer, EVP_sha256()) > 0 else {
            X509_free(x)
            throw IdentityError.fromQueue("X509_sign(\(commonName))")
        }
        return Certificate(owning: x)
    }

    /// Signs a device CSR after checking its self-signature and that its
    /// subject CN is exactly `expected` (the device id it was received for).
    /// Only the public key is taken from the CSR; subject and extensions are ours.
    public func sign(csr: CertificateSigningRequest, commonName expected: String,
                     validityDays: Int = 3650) throws(IdentityError) -> Certificate {
        let actual = csr.commonName
        guard csr.verifySignature() else { throw IdentityError.invalidCSRSignature(commonName: actual) }
        guard actual == expected else { throw IdentityError.commonNameMismatch(expected: expected, actual: actual) }
        return try issue(commonName: expected, publicKey: csr.publicKey(), validityDays: validityDays)
    }

    /// A PEM CRL (v2, SHA-256, authorityKeyIdentifier, crlNumber = now) listing
    /// `revokedSerials` (hex, as `Certificate.serialNumberHex`), valid `validityDays`.
    public func crl(revokedSerials: [String], validityDays: Int = 30) throws(IdentityError) -> String {
        let crl = try checkNotNil(X509_CRL_new(), "X509_CRL_new")
        defer { X509_CRL_free(crl) }
        try check(X509_CRL_set_version(crl, 1) == 1, "X509_CRL_set_version")
        try check(X509_CRL_set_issuer_name(crl, X509_get_subject_name(certificate.pointer)) == 1, "X509_CRL_set_issuer_name")
        let thisUpdate = Int64(Date().timeIntervalSince1970)
        let now = try checkNotNil(ASN1_TIME_set(nil, time_t(thisUpdate)), "ASN1_TIME_set")
        defer { ASN1_TIME_free(now) }
        var base = time_t(thisUpdate)
        let next = try checkNotNil(X509_time_adj_ex(nil, Int32(validityDays), 0, &base), "X509_time_adj_ex")
        defer { ASN1_TIME_free(next) }
        try check(X509_CRL_set1_lastUpdate(crl, now) == 1, "X509_CRL_set1_lastUpdate")
        try check(X509_CRL_set1_nextUpdate(crl, next) == 1, "X509_CRL_set1_nextUpdate")
        for serial in revokedSerials {
            var bn: OpaquePointer? = nil
            guard !serial.isEmpty, serial.allSatisfy(\.isHexDigit), BN_hex2bn(&bn, serial) == Int32(serial.utf8.count), let bn else {
                throw IdentityError.invalidInput("revoked serial '\(serial.prefix(80))' is not hex")
            }
            defer { BN_free(bn) }
            let ai = try checkNotNil(BN_to_ASN1_INTEGER(bn, nil), "BN_to_ASN1_INTEGER")
            defer { ASN1_INTEGER_free(ai) }
            let revoked = try checkNotNil(X509_REVOKED_new(), "X509_REVOKED_new")
            guard X509_REVOKED_set_serialNumber(revoked, ai) == 1, X509_REVOKED_set_revocationDate(revoked, now) == 1,
                  X509_CRL_add0_revoked(crl, revoked) == 1 else {
                X509_REVOKED_free(revoked)
                throw IdentityError.fromQueue("X509_CRL_add0_revoked")
            }
        }
        try check(X509_CRL_sort(crl) == 1, "X509_CRL_sort")
        let number = try checkNotNil(ASN1_INTEGER_new(), "ASN1_INTEGER_new")
        defer { ASN1_INTEGER_free(number) }
        try check(ASN1_INTEGER_set_int64(number, thisUpdate) == 1, "ASN1_INTEGER_set_int64")
        try check(X509_CRL_add1_ext_i2d(crl, NID_crl_number, number, 0, 0) == 1, "X509_CRL_add1_ext_i2d(crlNumber)")
        var ctx = X509V3_CTX()
        X509V3_set_ctx(&ctx, certificate.pointer, nil, nil, crl, 0)
        let aki = try checkNotNil(X509V3_EXT_conf_nid(nil, &ctx, NID_authority_key_identifier, "keyid:always"),
                                  "X509V3_EXT_conf_nid(authorityKeyIdentifier)")
        defer { X509_EXTENSION_free(aki) }
        try check(X509_CRL_add_ext(crl, aki, -1) == 1, "X509_CRL_add_ext")
        try check(X509_CRL_sign(crl, key.pointer, EVP_sha256()) > 0, "X509_CRL_sign")
        return try MemoryBIO.pem("PEM_write_bio_X509_CRL") { PEM_write_bio_X509_CRL($0, crl) }
    }

    // MARK: - Building blocks

    /// A new, unsigned X509 (caller owns it): v3, random 128-bit serial,
    /// notBefore now - 5 min (clock skew), notAfter now + validityDays.
    /// `issuer == nil` means self-issued. `extensions` runs after the key is set.
    static func buildCertificate(subject: String, subjectKey: OpaquePointer, issuer: OpaquePointer?,
                                 validityDays: Int,
                                 extensions: (OpaquePointer) throws(IdentityError) -> Void) throws(IdentityError) -> OpaquePointer {
        guard validityDays > 0 else { throw IdentityError.invalidInput("validityDays must be positive") }
        let x = try checkNotNil(X509_new(), "X509_new")
        do {
            try check(X509_set_version(x, 2) == 1, "X509_set_version")
            var serial = [UInt8](repeating: 0, count: 16)
            try check(RAND_bytes(&serial, 16) == 1, "RAND_bytes(serial)")
            if serial[0] == 0 { serial[0] = 1 } // keep all 16 bytes significant
            let bn = try checkNotNil(BN_bin2bn(serial, 16, nil), "BN_bin2bn")
            defer { BN_free(bn) }
            try check(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != nil, "BN_to_ASN1_INTEGER")
            let name = try makeName(commonName: subject)
            defer { X509_NAME_free(name) }
            try check(X509_set_subject_name(x, name) == 1, "X509_set_subject_name")
            try check(X509_set_issuer_name(x, issuer.map { X509_get_subject_name($0) } ?? name) == 1, "X509_set_issuer_name")
            try check(X509_gmtime_adj(X509_getm_notBefore(x), -300) != nil, "X509_gmtime_adj")
            try check(X509_time_adj_ex(X509_getm_notAfter(x), Int32(validityDays), 0, nil) != nil, "X509_time_adj_ex")
            try check(X509_set_pubkey(x, subjectKey) == 1, "X509_set_pubkey")
            try extensions(x)
            return x
        } catch {
            X509_free(x)
            throw error
        }
    }

    static func isIPAddress(_ s: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, s, &v4) == 1 || inet_pton(AF_INET6, s, &v6) == 1
    }
}

/// Owns a list of X509_EXTENSIONs built from OpenSSL config strings.
final class ExtensionList {
    private let extensions: [OpaquePointer]

    init(issuer: OpaquePointer?, subject: OpaquePointer? = nil, _ specs: [(Int32, String)]) throws(IdentityError) {
        var built: [OpaquePointer] = []
        var ctx = X509V3_CTX()
        X509V3_set_ctx(&ctx, issuer, subject, nil, nil, 0)
        for (nid, value) in specs {
            guard let ext = X509V3_EXT_conf_nid(nil, &ctx, nid, value) else {
                built.forEach { X509_EXTENSION_free($0) }
                throw IdentityError.fromQueue("X509V3_EXT_conf_nid(\(String(cString: OBJ_nid2sn(nid))), \(value))")
            }
            built.append(ext)
        }
        extensions = built
    }

    deinit { extensions.forEach { X509_EXTENSION_free($0) } }

    /// Adds copies of every extension to `x` (X509_add_ext duplicates; this list stays read-only).
    func add(to x: OpaquePointer) throws(IdentityError) {
        for ext in extensions { try check(X509_add_ext(x, ext, -1) == 1, "X509_add_ext") }
    }
}

// MARK: - Files

func readFile(_ path: String) throws(IdentityError) -> String {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw IdentityError.file(operation: "read", path: path, errno: errno == 0 ? ENOENT : errno)
    }
    return String(decoding: data, as: UTF8.self)
}

/// Writes through a temporary file created with `mode`, fsyncs, then renames over `path`.
func writeFile(_ text: String, to path: String, mode: mode_t) throws(IdentityError) {
    do { try AtomicFile.write(text, to: path, mode: mode) } catch {
        throw IdentityError.file(operation: error.operation, path: error.path, errno: error.errno)
    }
}
