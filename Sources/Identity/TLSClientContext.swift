import COpenSSL

/// A TLS client configuration shared by many sessions: TLS 1.2 or later, the
/// server certificate verified against the given CA(s). Owns one SSL_CTX.
///
/// Client certificates and keys are not part of the context: each
/// `TLSClientSession` sets its own device identity, so one context serves a
/// whole fleet that trusts the same CA.
///
/// `@unchecked Sendable`: the SSL_CTX is fully configured in `init` and never
/// changed afterwards; OpenSSL 3 allows creating SSL objects from one SSL_CTX
/// on several threads at once (it locks the reference count and the cert store).
public final class TLSClientContext: @unchecked Sendable {
    let pointer: OpaquePointer
    /// Sessions drop OpenSSL's per-connection state after a TLS 1.3 handshake and keep
    /// only the traffic keys (`TLS13RecordLayer`). The secrets reach the session through
    /// the keylog callback, in memory only; nothing is logged.
    public let compactRecords: Bool
    /// The TLS 1.3 suites, each with its AEAD fetched once, by cipher id.
    private let suites: [UInt32: TLS13Suite]

    /// A context that trusts every certificate in `trustedCAPEM` (one CA or a bundle).
    public convenience init(trustedCAPEM: String, compactRecords: Bool = true) throws(IdentityError) {
        let authorities = try Certificate.all(pem: trustedCAPEM)
        guard !authorities.isEmpty else {
            throw IdentityError.invalidInput("trusted CA PEM holds no certificate")
        }
        try self.init(trusting: authorities, compactRecords: compactRecords)
    }

    /// A context that trusts `authorities`.
    public init(trusting authorities: [Certificate], compactRecords: Bool = true) throws(IdentityError) {
        guard !authorities.isEmpty else { throw IdentityError.invalidInput("no trusted CA given") }
        ERR_clear_error()
        let method = try checkNotNil(TLS_client_method(), "TLS_client_method")
        let ctx = try checkNotNil(SSL_CTX_new(method), "SSL_CTX_new")
        do throws(IdentityError) {
            try check(escrow_ssl_ctx_set_min_proto_version(ctx, TLS1_2_VERSION) == 1, "SSL_CTX_set_min_proto_version(TLS1.2)")
            let modes = SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
            _ = escrow_ssl_ctx_set_mode(ctx, Int(modes))
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
            let store = try checkNotNil(SSL_CTX_get_cert_store(ctx), "SSL_CTX_get_cert_store")
            for ca in authorities {
                try check(X509_STORE_add_cert(store, ca.pointer) == 1, "X509_STORE_add_cert(\(ca.commonName))")
            }
            var suites: [UInt32: TLS13Suite] = [:]
            if compactRecords {
                for id in [TLS1_3_CK_AES_128_GCM_SHA256, TLS1_3_CK_AES_256_GCM_SHA384, TLS1_3_CK_CHACHA20_POLY1305_SHA256] {
                    suites[UInt32(id)] = try TLS13Suite.make(cipherID: UInt32(id))
                }
                SSL_CTX_set_keylog_callback(ctx) { ssl, line in
                    guard let ssl, let line, let owner = SSL_get_ex_data(ssl, 0) else { return }
                    // "LABEL <client random hex> <secret hex>" (NSS key log format)
                    let fields = String(cString: line).split(separator: " ")
                    guard fields.count == 3 else { return }
                    Unmanaged<TLSClientSession>.fromOpaque(owner).takeUnretainedValue().captureSecret(label: fields[0], hex: fields[2])
                }
            }
            self.suites = suites
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
        pointer = ctx
        self.compactRecords = compactRecords
    }

    func suite(cipherID: UInt32) -> TLS13Suite? { suites[cipherID] }

    deinit { SSL_CTX_free(pointer) }
}
