import COpenSSL

/// One mutual-TLS client connection that does no I/O itself: the caller's event
/// loop reads the socket and `feed`s the bytes in, and sends what `takeOutgoing`
/// hands back. OpenSSL does the handshake: one SSL with two memory BIOs (read and
/// write). When the handshake ends in TLS 1.3 (and the context's `compactRecords` is
/// on), the session keeps only the traffic keys (`TLS13RecordLayer`, ~200 bytes) and
/// frees the SSL (20-30 KB: record buffers, handshake state, the session with the
/// server's certificate); with TLS 1.2, the SSL stays.
///
/// Not `Sendable`: a session belongs to the one loop that owns its socket, and
/// OpenSSL's error queue, which every call reads, is per thread.
public final class TLSClientSession {
    public enum Status: Equatable, Sendable {
        /// Handshake in progress: feed server bytes, call `handshake()`, send the outgoing bytes.
        case handshaking
        /// Application data flows in both directions.
        case established
        /// Closed by `close()` or by the server's close_notify; nothing more is read or written.
        case closed
        /// The handshake or a record failed; the error says why (OpenSSL's reason text).
        case failed(IdentityError)
    }

    public private(set) var status: Status = .handshaking

    /// nil once the session moved to `records`.
    private var ssl: OpaquePointer?
    /// Borrowed: owned by `ssl` (SSL_set_bio / SSL_set0_rbio).
    private var readBIO: OpaquePointer?
    /// Borrowed: owned by `ssl` (SSL_set_bio / SSL_set0_wbio).
    private var writeBIO: OpaquePointer?
    /// The established TLS 1.3 connection's keys, after the SSL is freed.
    private var records: TLS13RecordLayer?
    /// Ciphertext for the socket while `records` is in use.
    private var outgoing: [UInt8] = []
    private let context: TLSClientContext
    /// The traffic secrets OpenSSL's keylog callback hands over during the handshake.
    private var clientSecret: [UInt8] = []
    private var serverSecret: [UInt8] = []
    private var negotiatedVersion = "unknown"
    /// Application bytes written before the handshake finished (or refused by a pending read).
    private var pending: [UInt8] = []
    /// Set by `feedEndOfStream`; the read BIO then carries the EOF and is never replaced.
    private var inputEnded = false

    /// A memory BIO whose buffer grew past this many bytes (handshake flights, a large
    /// record) is replaced by an empty one once drained, so idle sessions stay small.
    static let idleBufferLimit = 1024

    /// A session for one device identity given as PEM (parsed here on every call).
    public convenience init(context: TLSClientContext, certificatePEM: String, privateKeyPEM: String,
                            serverName: String?) throws(IdentityError) {
        try self.init(context: context, certificate: Certificate(pem: certificatePEM),
                      privateKey: PrivateKey(pem: privateKeyPEM), serverName: serverName)
    }

    /// A session for one device identity parsed once (reconnects reuse the objects;
    /// OpenSSL takes a reference, no copy).
    ///
    /// `serverName`: when given, the server certificate must match it: an IP literal
    /// is checked against the certificate's IP SANs, a DNS name is sent as SNI and
    /// checked against its DNS SANs. When nil, only the CA signature is verified.
    public init(context: TLSClientContext, certificate: Certificate, privateKey: PrivateKey,
                serverName: String?) throws(IdentityError) {
        ERR_clear_error()
        let ssl = try checkNotNil(SSL_new(context.pointer), "SSL_new")
        guard let rbio = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw IdentityError.fromQueue("BIO_new(read)")
        }
        guard let wbio = BIO_new(BIO_s_mem()) else {
            BIO_free(rbio)
            SSL_free(ssl)
            throw IdentityError.fromQueue("BIO_new(write)")
        }
        SSL_set_bio(ssl, rbio, wbio)
        do throws(IdentityError) {
            try check(SSL_use_certificate(ssl, certificate.pointer) == 1, "SSL_use_certificate(\(certificate.commonName))")
            try check(SSL_use_PrivateKey(ssl, privateKey.pointer) == 1, "SSL_use_PrivateKey")
            try check(SSL_check_private_key(ssl) == 1, "SSL_check_private_key(\(certificate.commonName))")
            if let serverName {
                guard !serverName.isEmpty else { throw IdentityError.invalidInput("server name is empty") }
                if CertificateAuthority.isIPAddress(serverName) {
                    let param = try checkNotNil(SSL_get0_param(ssl), "SSL_get0_param")
                    try check(X509_VERIFY_PARAM_set1_ip_asc(param, serverName) == 1, "X509_VERIFY_PARAM_set1_ip_asc(\(serverName))")
                } else {
                    try check(escrow_ssl_set_tlsext_host_name(ssl, serverName) == 1, "SSL_set_tlsext_host_name(\(serverName))")
                    try check(SSL_set1_host(ssl, serverName) == 1, "SSL_set1_host(\(serverName))")
                }
            }
        } catch {
            SSL_free(ssl)
            throw error
        }
        SSL_set_connect_state(ssl)
        self.ssl = ssl
        self.readBIO = rbio
        self.writeBIO = wbio
        self.context = context
        if context.compactRecords {
            // The keylog callback finds the session through app data (ex_data index 0).
            _ = SSL_set_ex_data(ssl, 0, Unmanaged.passUnretained(self).toOpaque())
        }
    }

    deinit {
        if let ssl { SSL_free(ssl) } // frees both BIOs
        records?.wipe()
        wipe(&clientSecret)
        wipe(&serverSecret)
    }

    /// Which record layer carries the established connection: "openssl" (the SSL object)
    /// or the compact TLS 1.3 one, with its suite ("TLS_AES_256_GCM_SHA384 (compact)").
    public var recordLayer: String {
        records.map { "\($0.suite.name) (compact)" } ?? "openssl"
    }

    // MARK: - Bytes from the socket

    /// Bytes received from the socket; processed by the next `handshake()` or `read(into:)`.
    public func feed(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        if records != nil { records!.feed(bytes); return }
        guard let readBIO else { return }
        var offset = 0
        while offset < bytes.count {
            let n = BIO_write(readBIO, base + offset, Int32(min(bytes.count - offset, Int(Int32.max))))
            guard n > 0 else { return } // only fails when malloc does
            offset += Int(n)
        }
    }

    /// Same as `feed(_: UnsafeRawBufferPointer)`.
    public func feed(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { feed($0) }
    }

    /// The socket reached end of stream. A later read without the server's
    /// close_notify fails with "unexpected eof while reading".
    public func feedEndOfStream() {
        if let readBIO { _ = escrow_bio_set_mem_eof_return(readBIO, 0) }
        inputEnded = true
    }

    // MARK: - Handshake

    /// Drives the handshake with the bytes fed so far; call once at start (to
    /// produce the ClientHello) and after every `feed`. Returns true when established.
    /// Throws (and sets `status` to `.failed`) on a verify error or a server alert.
    @discardableResult
    public func handshake() throws(IdentityError) -> Bool {
        switch status {
        case .established: return true
        case .closed: throw IdentityError.invalidInput("TLS session is closed")
        case .failed(let error): throw error
        case .handshaking: break
        }
        guard let ssl else { throw IdentityError.invalidInput("TLS session has no handshake state") }
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            status = .established
            negotiatedVersion = String(cString: SSL_get_version(ssl))
            try moveToCompactRecords()
            releaseIdleBuffers()
            try flushPending()
            return true
        }
        let code = SSL_get_error(ssl, result)
        if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE { return false }
        throw fail("TLS handshake", code: code)
    }

    // MARK: - Application data

    /// Encrypts application bytes into the outgoing buffer; before the handshake
    /// finishes they are queued and encrypted once it does.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(IdentityError) {
        switch status {
        case .closed: throw IdentityError.invalidInput("TLS session is closed")
        case .failed(let error): throw error
        case .handshaking:
            pending.append(contentsOf: bytes)
        case .established:
            if pending.isEmpty {
                let written = try encrypt(bytes)
                if written < bytes.count { pending.append(contentsOf: bytes[written...]) }
            } else {
                pending.append(contentsOf: bytes)
                try flushPending()
            }
        }
    }

    /// Same as `write(_: UnsafeRawBufferPointer)`.
    public func write(_ bytes: [UInt8]) throws(IdentityError) {
        let result = bytes.withUnsafeBytes { b in Result { () throws(IdentityError) in try write(b) } }
        try result.get()
    }

    /// Appends the application bytes that the fed records decrypt to; returns how
    /// many. Drives the handshake first if needed. Returns 0 when nothing is
    /// complete yet, or when the server closed (then `status == .closed`).
    @discardableResult
    public func read(into buffer: inout [UInt8]) throws(IdentityError) -> Int {
        switch status {
        case .closed: return 0
        case .failed(let error): throw error
        case .handshaking: if try !handshake() { return 0 }
        case .established: break
        }
        if records != nil { return try readRecords(into: &buffer) }
        guard let ssl else { return 0 }
        var total = 0
        var code = SSL_ERROR_NONE
        withUnsafeTemporaryAllocation(byteCount: 4096, alignment: 1) { chunk in
            while true {
                ERR_clear_error()
                let n = SSL_read(ssl, chunk.baseAddress, Int32(chunk.count))
                if n <= 0 { code = SSL_get_error(ssl, n); return }
                buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[..<Int(n)]))
                total += Int(n)
            }
        }
        switch code {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            break
        case SSL_ERROR_ZERO_RETURN:
            // The server's close_notify: answer with ours (left in the outgoing buffer).
            ERR_clear_error()
            _ = SSL_shutdown(ssl)
            ERR_clear_error()
            status = .closed
            pending = []
            return total
        default:
            throw fail("SSL_read", code: code)
        }
        if !pending.isEmpty { try flushPending() }
        releaseIdleBuffers()
        return total
    }

    // MARK: - Bytes to the socket

    /// True when `takeOutgoing` has bytes for the socket.
    public var hasOutgoing: Bool {
        guard let writeBIO else { return !outgoing.isEmpty }
        return BIO_ctrl_pending(writeBIO) > 0
    }

    /// Appends all ciphertext waiting for the socket to `into` and empties the
    /// outgoing buffer. If the socket takes only part, the caller keeps the rest.
    public func takeOutgoing(into buffer: inout [UInt8]) {
        guard let ssl, let writeBIO else {
            buffer.append(contentsOf: outgoing)
            outgoing = [] // an idle connection holds no buffer
            return
        }
        var data: UnsafeMutablePointer<CChar>? = nil
        let length = escrow_bio_get_mem_data(writeBIO, &data)
        guard length > 0, let data else { return }
        buffer.append(contentsOf: UnsafeRawBufferPointer(start: data, count: Int(length)))
        if bufferCapacity(writeBIO) > Self.idleBufferLimit, let fresh = BIO_new(BIO_s_mem()) {
            SSL_set0_wbio(ssl, fresh) // frees the old BIO
            self.writeBIO = fresh
        } else {
            _ = BIO_ctrl(writeBIO, BIO_CTRL_RESET, 0, nil)
        }
    }

    /// Sends close_notify (left in the outgoing buffer) and ends the session.
    /// Take the outgoing bytes and send them before closing the socket.
    public func close() {
        switch status {
        case .established:
            if records != nil {
                try? records!.sealCloseNotify(into: &outgoing)
            } else if let ssl {
                ERR_clear_error()
                _ = SSL_shutdown(ssl)
                ERR_clear_error()
            }
        case .handshaking: break
        case .closed, .failed: return
        }
        status = .closed
        pending = []
    }

    /// Sends a KeyUpdate that also asks the server to update its keys (RFC 8446 4.6.3):
    /// for long-lived connections. Compact TLS 1.3 sessions only; a no-op otherwise.
    public func updateKeys() throws(IdentityError) {
        guard status == .established, records != nil else { return }
        try records!.updateKeys(requestPeer: true, into: &outgoing)
    }

    /// The negotiated protocol ("TLSv1.3"), or "unknown" before the handshake.
    public var protocolVersion: String {
        if status == .handshaking, let ssl { return String(cString: SSL_get_version(ssl)) }
        return negotiatedVersion
    }

    // MARK: - Internals

    /// Encrypts as much of `bytes` as OpenSSL takes now; returns how much.
    private func encrypt(_ bytes: UnsafeRawBufferPointer) throws(IdentityError) -> Int {
        guard let base = bytes.baseAddress else { return 0 }
        if records != nil {
            do { try records!.seal(bytes, into: &outgoing) } catch {
                status = .failed(error)
                pending = []
                throw error
            }
            return bytes.count
        }
        guard let ssl else { return 0 }
        var offset = 0
        while offset < bytes.count {
            ERR_clear_error()
            let n = SSL_write(ssl, base + offset, Int32(min(bytes.count - offset, Int(Int32.max))))
            if n > 0 { offset += Int(n); continue }
            let code = SSL_get_error(ssl, n)
            if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE { break }
            throw fail("SSL_write", code: code)
        }
        return offset
    }

    private func flushPending() throws(IdentityError) {
        guard !pending.isEmpty else { return }
        var queued: [UInt8] = []
        swap(&queued, &pending) // `encrypt` may reset `pending` on failure
        let written = try queued.withUnsafeBytes { b in Result { () throws(IdentityError) in try encrypt(b) } }.get()
        if written < queued.count { pending = Array(queued[written...]) }
    }

    /// Records the failure in `status` and returns it: OpenSSL's error queue, plus the
    /// certificate verify result when verification is what failed.
    private func fail(_ operation: String, code: Int32) -> IdentityError {
        var message: String
        if case .openSSL(_, let queued) = IdentityError.fromQueue(operation) {
            message = queued
        } else {
            message = ""
        }
        if code == SSL_ERROR_SYSCALL && message == "no OpenSSL error reported" {
            message = "connection ended without close_notify"
        } else if code != SSL_ERROR_SSL && code != SSL_ERROR_SYSCALL {
            message += " (SSL_get_error \(code))"
        }
        if let ssl, case let verify = SSL_get_verify_result(ssl), verify != X509_V_OK {
            message += " (certificate verify: \(String(cString: X509_verify_cert_error_string(verify))))"
        }
        let error = IdentityError.openSSL(operation: operation, message: message)
        status = .failed(error)
        pending = []
        return error
    }

    /// Frees what an idle session does not need. SSL_MODE_RELEASE_BUFFERS frees the
    /// record read buffer (~17 KB) only after an application record; after handshake
    /// records (the server's Finished, TLS 1.3 session tickets) it stays allocated
    /// until SSL_free_buffers, which frees it only when no partial record is in it.
    /// Then a drained read BIO whose buffer grew large (handshake flights) is replaced.
    private func releaseIdleBuffers() {
        guard let ssl, let readBIO else { return }
        _ = SSL_free_buffers(ssl)
        guard BIO_ctrl_pending(readBIO) == 0, bufferCapacity(readBIO) > Self.idleBufferLimit,
  !inputEnded, let fresh = BIO_new(BIO_s_mem()) else { return }
        SSL_set0_rbio(ssl, fresh) // frees the old BIO
        self.readBIO = fresh
    }

    // MARK: - Compact TLS 1.3 records

    /// Called by the context's keylog callback during `SSL_do_handshake`, on this thread.
    func captureSecret(label: Substring, hex: Substring) {
        switch label {
        case "CLIENT_TRAFFIC_SECRET_0": clientSecret = Self.bytes(hex: hex)
        case "SERVER_TRAFFIC_SECRET_0": serverSecret = Self.bytes(hex: hex)
        default: break
        }
    }

    /// After a TLS 1.3 handshake: keeps the application traffic keys, moves the client's
    /// last flight (Certificate, CertificateVerify, Finished) to `outgoing` and frees the
    /// SSL. Stays on OpenSSL when anything is unusual (TLS 1.2, an unknown suite, bytes
    /// already read past the handshake), which is always correct, only larger.
    private func moveToCompactRecords() throws(IdentityError) {
        defer { wipe(&clientSecret); wipe(&serverSecret) }
        guard context.compactRecords, let ssl, let readBIO, let writeBIO,
              SSL_version(ssl) == TLS1_3_VERSION, !inputEnded,
              BIO_ctrl_pending(readBIO) == 0, SSL_pending(ssl) == 0,
              let cipher = SSL_get_current_cipher(ssl), let suite = context.suite(cipherID: SSL_CIPHER_get_id(cipher)),
              !clientSecret.isEmpty, clientSecret.count == serverSecret.count else { return }
        let layer = try TLS13RecordLayer(suite: suite, clientSecret: clientSecret, serverSecret: serverSecret)
        var data: UnsafeMutablePointer<CChar>? = nil
        let length = escrow_bio_get_mem_data(writeBIO, &data)
        if length > 0, let data { outgoing.append(contentsOf: UnsafeRawBufferPointer(start: data, count: Int(length))) }
        SSL_free(ssl) // frees both BIOs
        self.ssl = nil
        self.readBIO = nil
        self.writeBIO = nil
        records = layer
    }

    private func readRecords(into buffer: inout [UInt8]) throws(IdentityError) -> Int {
        let before = buffer.count
        switch records!.open(into: &buffer, answers: &outgoing) {
        case nil:
            if inputEnded {
                status = .failed(IdentityError.openSSL(operation: "SSL_read", message: "unexpected eof while reading"))
                return buffer.count - before
            }
        case .closed?:
            status = .closed
            pending = []
        case .failed(let reason)?:
            let error = IdentityError.openSSL(operation: "TLS record", message: reason)
            status = .failed(error)
            pending = []
            throw error
        }
        if !pending.isEmpty { try flushPending() }
        return buffer.count - before
    }

    private static func bytes(hex: Substring) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(hex.utf8.count / 2)
        var high: UInt8?
        for c in hex.utf8 {
            let v: UInt8
            switch c {
            case 0x30...0x39: v = c - 0x30
            case 0x61...0x66: v = c - 0x61 + 10
            case 0x41...0x46: v = c - 0x41 + 10
            default: return []
            }
            if let h = high { out.append(h << 4 | v); high = nil } else { high = v }
        }
        return high == nil ? out : []
    }

    private func wipe(_ bytes: inout [UInt8]) {
        for i in bytes.indices { bytes[i] = 0 }
        bytes = []
    }

    private func bufferCapacity(_ bio: OpaquePointer) -> Int {
        var memory: UnsafeMutablePointer<BUF_MEM>? = nil
        guard escrow_bio_get_mem_ptr(bio, &memory) == 1, let memory else { return 0 }
        return memory.pointee.max
    }
}
