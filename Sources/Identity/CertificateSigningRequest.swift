import COpenSSL

/// A PKCS#10 certificate signing request. Owns its X509_REQ.
///
/// `@unchecked Sendable`: never mutated after init.
public final class CertificateSigningRequest: @unchecked Sendable {
    let pointer: OpaquePointer

    /// Builds a CSR with subject `CN=commonName`, signed by `key` (SHA-256).
    public init(key: PrivateKey, commonName: String) throws(IdentityError) {
        let req = try checkNotNil(X509_REQ_new(), "X509_REQ_new")
        pointer = req
        let name = try makeName(commonName: commonName)
        defer { X509_NAME_free(name) }
        try check(X509_REQ_set_version(req, 0) == 1, "X509_REQ_set_version")
        try check(X509_REQ_set_subject_name(req, name) == 1, "X509_REQ_set_subject_name")
        try check(X509_REQ_set_pubkey(req, key.pointer) == 1, "X509_REQ_set_pubkey")
        try check(X509_REQ_sign(req, key.pointer, EVP_sha256()) > 0, "X509_REQ_sign")
    }

    /// Parses `-----BEGIN CERTIFICATE REQUEST-----` PEM.
    public init(pem: String) throws(IdentityError) {
        let bio = try MemoryBIO(text: pem)
        pointer = try checkNotNil(PEM_read_bio_X509_REQ(bio.pointer, nil, nil, nil), "PEM_read_bio_X509_REQ")
    }

    deinit { X509_REQ_free(pointer) }

    public func pem() throws(IdentityError) -> String {
        try MemoryBIO.pem("PEM_write_bio_X509_REQ") { PEM_write_bio_X509_REQ($0, pointer) }
    }

    /// Subject CN ("" when absent).
    public var commonName: String { Identity.commonName(of: X509_REQ_get_subject_name(pointer)) ?? "" }

    /// True when the CSR is signed by the key it carries (proof of possession).
    public func verifySignature() -> Bool {
        defer { ERR_clear_error() }
        guard let key = X509_REQ_get0_pubkey(pointer) else { return false }
        return X509_REQ_verify(pointer, key) == 1
    }

    /// True when the requested key is an ECDSA P-256 key, the only kind the platform issues for.
    public var requestsP256Key: Bool {
        guard let key = X509_REQ_get0_pubkey(pointer), EVP_PKEY_get_base_id(key) == EVP_PKEY_EC else { return false }
        var name = [CChar](repeating: 0, count: 64)
        var length = 0
        guard EVP_PKEY_get_group_name(key, &name, name.count, &length) == 1 else { ERR_clear_error(); return false }
        let group = String(decoding: name.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return group == "prime256v1" || group == "P-256"
    }

    /// The requested public key.
    public func publicKey() throws(IdentityError) -> PublicKey {
        PublicKey(owning: try checkNotNil(X509_REQ_get_pubkey(pointer), "X509_REQ_get_pubkey"))
    }
}
