import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// A TLS server configuration (TLS 1.2 or later) from a certificate chain and key in PEM files:
/// what `escrow-console --tls-cert/--tls-key` serves with (for example the broker's server
/// certificate, which the platform CA signed). Clients are not asked for certificates.
///
/// `@unchecked Sendable`: configured in `init`, never changed; OpenSSL 3 allows SSL objects to be
/// created from one SSL_CTX on several threads.
public final class TLSServerContext: @unchecked Sendable {
    let pointer: OpaquePointer

    public init(certificateFile: String, keyFile: String) throws(IdentityError) {
        ERR_clear_error()
        let method = try checkNotNil(TLS_server_method(), "TLS_server_method")
        let ctx = try checkNotNil(SSL_CTX_new(method), "SSL_CTX_new")
        do throws(IdentityError) {
            try check(escrow_ssl_ctx_set_min_proto_version(ctx, TLS1_2_VERSION) == 1, "SSL_CTX_set_min_proto_version(TLS1.2)")
            _ = escrow_ssl_ctx_set_mode(ctx, Int(SSL_MODE_RELEASE_BUFFERS | SSL_MODE_AUTO_RETRY))
            try check(SSL_CTX_use_certificate_chain_file(ctx, certificateFile) == 1, "SSL_CTX_use_certificate_chain_file(\(certificateFile))")
            try check(SSL_CTX_use_PrivateKey_file(ctx, keyFile, SSL_FILETYPE_PEM) == 1, "SSL_CTX_use_PrivateKey_file(\(keyFile))")
            try check(SSL_CTX_check_private_key(ctx) == 1, "SSL_CTX_check_private_key (the key does not match the certificate)")
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
        pointer = ctx
    }

    deinit { SSL_CTX_free(pointer) }

    /// Runs the server handshake on a connected, blocking socket (its receive timeout bounds it).
    public func accept(_ fd: Int32) throws(IdentityError) -> TLSServerConnection {
        ERR_clear_error()
        let ssl = try checkNotNil(SSL_new(pointer), "SSL_new")
        guard SSL_set_fd(ssl, fd) == 1 else { SSL_free(ssl); throw IdentityError.fromQueue("SSL_set_fd") }
        guard SSL_accept(ssl) == 1 else {
            let error = IdentityError.fromQueue("TLS handshake with a client")
            SSL_free(ssl)
            throw error
        }
        return TLSServerConnection(ssl)
    }
}

/// One accepted TLS connection, used by a single thread: blocking reads and writes over its socket.
public final class TLSServerConnection: @unchecked Sendable {
    private let ssl: OpaquePointer
    init(_ ssl: OpaquePointer) { self.ssl = ssl }
    deinit { SSL_shutdown(ssl); SSL_free(ssl) }

    /// Up to `buffer.count` bytes; 0 at the end of the stream or on failure.
    public func read(into buffer: inout [UInt8]) -> Int {
        let n = buffer.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
        return max(0, Int(n))
    }

    /// All of `bytes`; false once the peer is gone.
    public func write(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { SSL_write(ssl, $0.baseAddress, Int32($0.count)) }
            if n <= 0 { return false }
            offset += Int(n)
        }
        return true
    }
}
