import COpenSSL
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// An X.509 certificate. Owns its X509.
///
/// `@unchecked Sendable`: never mutated after init; OpenSSL 3 locks its
/// internal extension cache, so concurrent reads are safe.
public final class Certificate: @unchecked Sendable {
    let pointer: OpaquePointer

    init(owning pointer: OpaquePointer) { self.pointer = pointer }

    /// Parses the first certificate in `pem`.
    public init(pem: String) throws(IdentityError) {
        let bio = try MemoryBIO(text: pem)
        pointer = try checkNotNil(PEM_read_bio_X509(bio.pointer, nil, nil, nil), "PEM_read_bio_X509")
    }

    /// Parses a DER certificate (what `der(pem:label:)` returns for a PEM one).
    public init(der: [UInt8]) throws(IdentityError) {
        pointer = try der.withUnsafeBufferPointer { b throws(IdentityError) in
            var cursor: UnsafePointer<UInt8>? = b.baseAddress
            return try checkNotNil(d2i_X509(nil, &cursor, b.count), "d2i_X509")
        }
    }

    /// Parses every certificate in a PEM bundle (e.g. a CA bundle).
    public static func all(pem: String) throws(IdentityError) -> [Certificate] {
        let bio = try MemoryBIO(text: pem)
        var result: [Certificate] = []
        while let x = PEM_read_bio_X509(bio.pointer, nil, nil, nil) { result.append(Certificate(owning: x)) }
        ERR_clear_error() // the loop ends on a "no start line" error
        return result
    }

    deinit { X509_free(pointer) }

    public func pem() throws(IdentityError) -> String {
        try MemoryBIO.pem("PEM_write_bio_X509") { PEM_write_bio_X509($0, pointer) }
    }

    /// Subject CN ("" when absent).
    public var commonName: String { Identity.commonName(of: X509_get_subject_name(pointer)) ?? "" }

    /// Issuer CN ("" when absent).
    public var issuerCommonName: String { Identity.commonName(of: X509_get_issuer_name(pointer)) ?? "" }

    /// SHA-256 over the DER certificate: 64 lowercase hex digits, no colons
    /// (what `openssl x509 -noout -fingerprint -sha256` prints, normalised).
    public var sha256Fingerprint: String {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard X509_digest(pointer, EVP_sha256(), &digest, &length) == 1 else { return "" }
        return hex(digest.prefix(Int(length)))
    }

    /// Serial number as lowercase hex (`BN_bn2hex`, whole bytes: it may start with one zero nibble), the form `crl(revokedSerials:)` and the broker plugin's revocation set take.
    public var serialNumberHex: String {
        guard let bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(pointer), nil) else { return "" }
        defer { BN_free(bn) }
        guard let s = BN_bn2hex(bn) else { return "" }
        defer { escrow_openssl_free(s) }
        return String(cString: s).lowercased()
    }

    /// End of validity.
    public var notAfter: Date { Certificate.date(X509_get0_notAfter(pointer)) }
    /// Start of validity.
    public var notBefore: Date { Certificate.date(X509_get0_notBefore(pointer)) }

    /// The subject public key.
    public func publicKey() throws(IdentityError) -> PublicKey {
        PublicKey(owning: try checkNotNil(X509_get_pubkey(pointer), "X509_get_pubkey"))
    }

    /// True when `issuer`'s subject names this certificate's issuer and its key
    /// verifies this certificate's signature. Does not check validity dates.
    public func verify(signedBy issuer: Certificate) -> Bool {
        defer { ERR_clear_error() }
        guard X509_check_issued(issuer.pointer, pointer) == X509_V_OK else { return false }
        guard let key = X509_get0_pubkey(issuer.pointer) else { return false }
        return X509_verify(pointer, key) == 1
    }

    /// Same as `verify(signedBy: authority.certificate)`.
    public func verify(signedBy authority: CertificateAuthority) -> Bool {
        verify(signedBy: authority.certificate)
    }

    static func date(_ time: UnsafePointer<ASN1_TIME>?) -> Date {
        var parts = tm()
        guard let time, ASN1_TIME_to_tm(time, &parts) == 1 else { return .distantPast }
        return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
    }
}

/// The DER bytes of the first PEM block in `pem` whose label is one of `labels`
/// ("CERTIFICATE", "PRIVATE KEY", ...), without parsing what they encode.
public func der(pem: String, labels: Set<String>) throws(IdentityError) -> [UInt8] {
    let bio = try MemoryBIO(text: pem)
    while true {
        var name: UnsafeMutablePointer<CChar>? = nil
        var header: UnsafeMutablePointer<CChar>? = nil
        var data: UnsafeMutablePointer<UInt8>? = nil
        var length = 0
        guard PEM_read_bio(bio.pointer, &name, &header, &data, &length) == 1 else {
            ERR_clear_error()
            throw IdentityError.invalidInput("no PEM block labelled \(labels.sorted().joined(separator: " or "))")
        }
        defer { escrow_openssl_free(name); escrow_openssl_free(header); escrow_openssl_free(data) }
        if let name, labels.contains(String(cString: name)), let data {
            return Array(UnsafeBufferPointer(start: data, count: length))
        }
    }
}
