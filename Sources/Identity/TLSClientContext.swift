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

    /// A context that trusts every certificate in `trustedCAPEM` (one CA or a bundle).
    public convenience init(trustedCAPEM: String) throws(IdentityError) {
        let authorities = try Certificate.all(pem: trustedCAPEM)
        guard !authorities.isEmpty else {
            throw IdentityError.invalidInput("trusted CA PEM holds no certificate")
        }
        try self.init(trusting: authorities)
    }

    /// A context that trusts `authorities`.
    public init(trusting authorities: [Certificate]) throws(IdentityError) {
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
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
        pointer = ctx
    }

    deinit { SSL_CTX_free(pointer) }
}
