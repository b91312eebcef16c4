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

    /// A P-256 key from `rawP256()`'s parts, without any decoding (~20 us against
    /// ~110 us for `init(der:)` and ~450 us for `init(pem:)`).
    public init(p256Private: [UInt8], publicPoint: [UInt8]) throws(IdentityError) {
        pointer = try checkNotNil(escrow_ec_p256_from_raw(p256Private, p256Private.count, publicPoint, publicPoint.count),
                                  "EVP_PKEY_fromdata(P-256)")
    }

    /// The private scalar (32 bytes, native byte order) and the uncompressed public point
    /// (65 bytes): a key's smallest form, for holding thousands of them (fleetsim).
    public func rawP256() throws(IdentityError) -> (privateScalar: [UInt8], publicPoint: [UInt8]) {
        var bignum: OpaquePointer? = nil
        try check(EVP_PKEY_get_bn_param(pointer, "priv", &bignum) == 1 && bignum != nil, "EVP_PKEY_get_bn_param(priv)")
        defer { BN_clear_free(bignum) }
        var scalar = [UInt8](repeating: 0, count: 32)
        try check(BN_bn2nativepad(bignum, &scalar, 32) == 32, "BN_bn2nativepad")
        var point = [UInt8](repeating: 0, count: 65)
        var length = 0
        try check(EVP_PKEY_get_octet_string_param(pointer, "pub", &point, 65, &length) == 1 && length == 65,
                  "EVP_PKEY_get_octet_string_param(pub)")
        return (scalar, point)
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
