import COpenSSL

/// An ECDSA P-256 private key. Owns its EVP_PKEY.
///
/// `@unchecked Sendable`: the key is never mutated after init, and OpenSSL 3
/// allows concurrent read-only use of one EVP_PKEY (signing creates its own contexts).
public final class PrivateKey: @unchecked Sendable {
    let pointer: OpaquePointer

    /// Generates a fresh P-256 key.
    public init() throws(IdentityError) {
        pointer = try checkNotNil(escrow_ec_p256_generate(), "EVP_EC_gen(P-256)")
    }

    /// Imports a PEM private key (PKCS#8 or traditional, unencrypted).
    public init(pem: String) throws(IdentityError) {
        let bio = try MemoryBIO(text: pem)
        pointer = try checkNotNil(PEM_read_bio_PrivateKey(bio.pointer, nil, nil, nil), "PEM_read_bio_PrivateKey")
    }

    /// Imports a DER EC private key, PKCS#8 or SEC1 (what `der(pem:label:)` returns for a
    /// PEM one). 4x faster than the PEM path, which goes through OpenSSL 3's decoder framework.
    public init(der: [UInt8]) throws(IdentityError) {
        pointer = try der.withUnsafeBufferPointer { b throws(IdentityError) in
            var cursor: UnsafePointer<UInt8>? = b.baseAddress
            return try checkNotNil(d2i_PrivateKey(EVP_PKEY_EC, nil, &cursor, b.count), "d2i_PrivateKey(EC)")
        }
    }

    deinit { EVP_PKEY_free(pointer) }

    /// Unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    public func pem() throws(IdentityError) -> String {
        try MemoryBIO.pem("PEM_write_bio_PKCS8PrivateKey") { bio in
            PEM_write_bio_PKCS8PrivateKey(bio, pointer, nil, nil, 0, nil, nil)
        }
    }

    /// The matching public key.
    public func publicKey() throws(IdentityError) -> PublicKey {
        try PublicKey(derOf: pointer)
    }
}

/// A public key (SubjectPublicKeyInfo). Owns its EVP_PKEY, which holds no private part.
///
/// `@unchecked Sendable`: immutable after init; read-only use is thread-safe in OpenSSL 3.
public final class PublicKey: @unchecked Sendable {
    let pointer: OpaquePointer

    /// Copies only the public half of `key` through its DER encoding.
    init(derOf key: OpaquePointer) throws(IdentityError) {
        var der: UnsafeMutablePointer<UInt8>? = nil
        let length = i2d_PUBKEY(key, &der)
        guard length > 0, let der else { throw IdentityError.fromQueue("i2d_PUBKEY") }
        defer { escrow_openssl_free(der) }
        var cursor: UnsafePointer<UInt8>? = UnsafePointer(der)
        pointer = try checkNotNil(d2i_PUBKEY(nil, &cursor, Int(length)), "d2i_PUBKEY")
    }

    /// Takes ownership of an EVP_PKEY reference.
    init(owning pointer: OpaquePointer) { self.pointer = pointer }

    /// Imports `-----BEGIN PUBLIC KEY-----` PEM.
    public init(pem: String) throws(IdentityError) {
        let bio = try MemoryBIO(text: pem)
        pointer = try checkNotNil(PEM_read_bio_PUBKEY(bio.pointer, nil, nil, nil), "PEM_read_bio_PUBKEY")
    }

    deinit { EVP_PKEY_free(pointer) }

    public func pem() throws(IdentityError) -> String {
        try MemoryBIO.pem("PEM_write_bio_PUBKEY") { PEM_write_bio_PUBKEY($0, pointer) }
    }

    /// True when both keys are the same public key.
    public func matches(_ other: PublicKey) -> Bool { EVP_PKEY_eq(pointer, other.pointer) == 1 }
}
