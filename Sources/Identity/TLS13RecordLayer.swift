import COpenSSL
import Synchronization

/// The TLS 1.3 record layer (RFC 8446 section 5) of one established connection,
/// without OpenSSL's per-connection state: two traffic secrets, their keys and IVs,
/// and the two sequence numbers, about 200 bytes. `TLSClientSession` moves to it
/// once OpenSSL has finished the handshake and frees the SSL object (20-30 KB), the
/// way kernel TLS takes a connection's keys after the handshake.
///
/// It protects and opens application data, answers KeyUpdate (RFC 8446 4.6.3),
/// ignores NewSessionTicket, and ends on alerts. The AEAD itself is OpenSSL's,
/// through one cipher context per `TLSClientContext` (`TLS13Suite`).
struct TLS13RecordLayer {
    enum Event: Equatable {
        /// The server's close_notify: our own close_notify is already in the outgoing bytes.
        case closed
        /// Decryption, framing or an alert ended the connection; the text says why.
        case failed(String)
    }

    let suite: TLS13Suite
    private var write: TrafficKeys
    private var read: TrafficKeys
    /// Ciphertext received and not yet a whole record.
    private var inbound: [UInt8] = []
    /// Handshake messages that straddle records (rare: only a large NewSessionTicket could).
    private var handshakeBytes: [UInt8] = []

    /// Records larger than this are a protocol error (2^14 + 256, RFC 8446 5.2).
    static let maxCiphertext = 16384 + 256
    static let maxPlaintext = 16384

    init(suite: TLS13Suite, clientSecret: [UInt8], serverSecret: [UInt8]) throws(IdentityError) {
        self.suite = suite
        write = try TrafficKeys(suite: suite, secret: clientSecret)
        read = try TrafficKeys(suite: suite, secret: serverSecret)
    }

    /// Zeroes the key material (the arrays are about to be freed).
    mutating func wipe() {
        write.wipe()
        read.wipe()
    }

    // MARK: - Sending

    /// Appends `bytes` as application-data records to `out`.
    mutating func seal(_ bytes: UnsafeRawBufferPointer, into out: inout [UInt8]) throws(IdentityError) {
        var offset = 0
        while offset < bytes.count {
            let n = min(Self.maxPlaintext, bytes.count - offset)
            try seal(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n]), type: 23, into: &out)
            offset += n
        }
    }

    /// close_notify (alert level 1, description 0).
    mutating func sealCloseNotify(into out: inout [UInt8]) throws(IdentityError) {
        try seal([1, 0], type: 21, into: &out)
    }

    /// Sends KeyUpdate and moves our sending keys on (RFC 8446 4.6.3). With `requestPeer`,
    /// the server must answer with its own KeyUpdate, which `open` applies.
    mutating func updateKeys(requestPeer: Bool, into out: inout [UInt8]) throws(IdentityError) {
        try seal([24, 0, 0, 1, requestPeer ? 1 : 0], type: 22, into: &out)
        try write.advance(suite: suite)
    }

    private mutating func seal(_ content: [UInt8], type: UInt8, into out: inout [UInt8]) throws(IdentityError) {
        let result = content.withUnsafeBytes { b in Result { () throws(IdentityError) in try seal(b, type: type, into: &out) } }
        try result.get()
    }

    private mutating func seal(_ content: UnsafeRawBufferPointer, type: UInt8, into out: inout [UInt8]) throws(IdentityError) {
        let length = content.count + 1 + TLS13Suite.tagLength // inner type byte, no padding
        let header: [UInt8] = [23, 3, 3, UInt8(length >> 8), UInt8(length & 0xFF)]
        var plaintext = [UInt8](unsafeUninitializedCapacity: content.count + 1) { buffer, count in
            if let base = content.baseAddress { buffer.baseAddress!.initialize(from: base.assumingMemoryBound(to: UInt8.self), count: content.count) }
            buffer[content.count] = type
            count = content.count + 1
        }
        defer { plaintext.withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 0) } }
        let nonce = write.nonce()
        out.append(contentsOf: header)
        try suite.seal(key: write.key, nonce: nonce, aad: header, plaintext: plaintext, into: &out)
        write.sequence += 1
    }

    // MARK: - Receiving

    /// Ciphertext from the socket.
    mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        inbound.append(contentsOf: bytes)
    }

    /// True when part of a record is waiting for more bytes.
    var hasPartialRecord: Bool { !inbound.isEmpty }

    /// Opens every complete record: application data goes to `plaintext`, answers
    /// (close_notify, KeyUpdate) to `out`. Returns the event that ended the connection, if any.
    mutating func open(into plaintext: inout [UInt8], answers out: inout [UInt8]) -> Event? {
        var consumed = 0
        defer {
            if consumed == inbound.count {
                inbound = [] // an idle connection holds no buffer (thousands of them add up)
            } else if consumed > 0 {
                inbound.removeSubrange(0..<consumed)
            }
        }
        while inbound.count - consumed >= 5 {
            let type = inbound[consumed]
            let length = Int(inbound[consumed + 3]) << 8 | Int(inbound[consumed + 4])
            guard inbound[consumed + 1] == 3 else { return .failed("record with version \(inbound[consumed + 1]).\(inbound[consumed + 2]) (wrong version number)") }
            guard length <= Self.maxCiphertext, length > TLS13Suite.tagLength else {
                return .failed("record of \(length) bytes (record overflow or too short)")
            }
            guard inbound.count - consumed >= 5 + length else { break }
            let header = Array(inbound[consumed..<consumed + 5])
            let body = inbound[consumed + 5..<consumed + 5 + length]
            consumed += 5 + length
            switch type {
            case 23: break
            case 20: continue // a stray change_cipher_spec (middlebox compatibility) carries nothing
            case 21: return .failed("unprotected TLS alert \(body.dropFirst().first.map(Self.alertName) ?? "?") from the server")
            default: return .failed("record of type \(type) after the handshake (unexpected message)")
            }
            var inner: [UInt8]
            do { inner = try suite.open(key: read.key, nonce: read.nonce(), aad: header, ciphertext: body) } catch {
                return .failed("bad record mac: \(error)")
            }
            read.sequence += 1
            // TLSInnerPlaintext: content, content type, zero padding.
            guard let last = inner.lastIndex(where: { $0 != 0 }) else { return .failed("record without a content type") }
            let content = inner[..<last]
            switch inner[last] {
            case 23:
                plaintext.append(contentsOf: content)
            case 21:
                guard content.count == 2 else { return .failed("malformed alert") }
                if content[content.startIndex + 1] == 0 {
                    do { try sealCloseNotify(into: &out) } catch { return .failed("\(error)") }
                    return .closed
                }
                return .failed("TLS alert \(Self.alertName(content[content.startIndex + 1])) from the server")
            case 22:
                handshakeBytes.append(contentsOf: content)
                if let event = handleHandshakeMessages(answers: &out) { return event }
            default:
                return .failed("inner content type \(inner[last]) (unexpected message)")
            }
            inner.withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 0) }
        }
        return nil
    }

    /// RFC 8446 6.2 names, as OpenSSL words them ("certificate revoked").
    static func alertName(_ code: UInt8) -> String {
        let names: [UInt8: String] = [
            10: "unexpected message", 20: "bad record mac", 22: "record overflow", 40: "handshake failure",
            42: "bad certificate", 43: "unsupported certificate", 44: "certificate revoked", 45: "certificate expired",
            46: "certificate unknown", 47: "illegal parameter", 48: "unknown ca", 49: "access denied", 50: "decode error",
            51: "decrypt error", 70: "protocol version", 71: "insufficient security", 80: "internal error",
            90: "user canceled", 109: "missing extension", 116: "certificate required",
        ]
        return "\(code) (\(names[code] ?? "unknown alert"))"
    }

    /// Post-handshake messages: NewSessionTicket (4) is not kept; KeyUpdate (24) moves the
    /// receiving keys on and, when asked, answers with ours.
    private mutating func handleHandshakeMessages(answers out: inout [UInt8]) -> Event? {
        var offset = 0
        defer { handshakeBytes.removeSubrange(0..<offset) }
        while handshakeBytes.count - offset >= 4 {
            let type = handshakeBytes[offset]
            let length = Int(handshakeBytes[offset + 1]) << 16 | Int(handshakeBytes[offset + 2]) << 8 | Int(handshakeBytes[offset + 3])
            guard length <= 65536 else { return .failed("handshake message of \(length) bytes") }
            guard handshakeBytes.count - offset >= 4 + length else { break }
            let body = handshakeBytes[offset + 4..<offset + 4 + length]
            offset += 4 + length
            switch type {
            case 4: continue // NewSessionTicket
            case 24:
                guard body.count == 1, body.first! <= 1 else { return .failed("malformed KeyUpdate") }
                do {
                    try read.advance(suite: suite)
                    if body.first! == 1 { try updateKeys(requestPeer: false, into: &out) }
                } catch { return .failed("\(error)") }
            default:
                return .failed("handshake message \(type) after the handshake (unexpected message)")
            }
        }
        return nil
    }
}

/// One direction's traffic secret, key, IV and record sequence number.
private struct TrafficKeys {
    var secret: [UInt8]
    var key: [UInt8]
    var iv: [UInt8]
    var sequence: UInt64 = 0

    init(suite: TLS13Suite, secret: [UInt8]) throws(IdentityError) {
        self.secret = secret
        key = try suite.expandLabel(secret: secret, label: "key", length: suite.keyLength)
        iv = try suite.expandLabel(secret: secret, label: "iv", length: 12)
    }

    /// The next generation (RFC 8446 7.2): secret_N+1 = HKDF-Expand-Label(secret_N, "traffic upd", "", Hash.length).
    mutating func advance(suite: TLS13Suite) throws(IdentityError) {
        let next = try TrafficKeys(suite: suite, secret: suite.expandLabel(secret: secret, label: "traffic upd", length: secret.count))
        wipe()
        self = next
    }

    /// The per-record nonce: the IV XOR the sequence number, left-padded to 12 bytes.
    func nonce() -> [UInt8] {
        var n = iv
        for i in 0..<8 { n[11 - i] ^= UInt8(truncatingIfNeeded: sequence >> (8 * UInt64(i))) }
        return n
    }

    mutating func wipe() {
        for i in secret.indices { secret[i] = 0 }
        for i in key.indices { key[i] = 0 }
        for i in iv.indices { iv[i] = 0 }
    }
}

/// A TLS 1.3 cipher suite: its AEAD (fetched once) and hash. Shared by every session
/// of a `TLSClientContext`; the one cipher context is used under a lock (an AEAD
/// operation on a record is a few microseconds).
final class TLS13Suite: @unchecked Sendable {
    static let tagLength = 16

    let name: String
    let keyLength: Int
    private let hash: OpaquePointer
    private let cipher: OpaquePointer
    /// One cipher context, used under `lock`.
    private let ctx: OpaquePointer
    private let lock = Mutex(())

    /// The suites a server may choose (RFC 8446 B.4, without the CCM ones nobody offers by default).
    static func make(cipherID: UInt32) throws(IdentityError) -> TLS13Suite? {
        switch cipherID {
        case UInt32(TLS1_3_CK_AES_128_GCM_SHA256): return try TLS13Suite(name: "TLS_AES_128_GCM_SHA256", cipher: "AES-128-GCM", keyLength: 16, hash: EVP_sha256())
        case UInt32(TLS1_3_CK_AES_256_GCM_SHA384): return try TLS13Suite(name: "TLS_AES_256_GCM_SHA384", cipher: "AES-256-GCM", keyLength: 32, hash: EVP_sha384())
        case UInt32(TLS1_3_CK_CHACHA20_POLY1305_SHA256): return try TLS13Suite(name: "TLS_CHACHA20_POLY1305_SHA256", cipher: "ChaCha20-Poly1305", keyLength: 32, hash: EVP_sha256())
        default: return nil
        }
    }

    private init(name: String, cipher cipherName: String, keyLength: Int, hash: OpaquePointer?) throws(IdentityError) {
        self.name = name
        self.keyLength = keyLength
        self.hash = try checkNotNil(hash, "EVP_MD(\(name))")
        cipher = try checkNotNil(EVP_CIPHER_fetch(nil, cipherName, nil), "EVP_CIPHER_fetch(\(cipherName))")
        guard let ctx = EVP_CIPHER_CTX_new() else {
            EVP_CIPHER_free(cipher)
            throw IdentityError.fromQueue("EVP_CIPHER_CTX_new")
        }
        self.ctx = ctx
    }

    deinit {
        EVP_CIPHER_CTX_free(ctx)
        EVP_CIPHER_free(cipher)
    }

    /// HKDF-Expand-Label(secret, label, "", length) (RFC 8446 7.1), for length <= Hash.length:
    /// one HMAC block, T(1) = HMAC(secret, HkdfLabel || 0x01).
    func expandLabel(secret: [UInt8], label: String, length: Int) throws(IdentityError) -> [UInt8] {
        let full = Array("tls13 \(label)".utf8)
        let info: [UInt8] = [UInt8(length >> 8), UInt8(length & 0xFF), UInt8(full.count)] + full + [0, 1]
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var outLength: UInt32 = 0
        let ok = secret.withUnsafeBytes { s in
            HMAC(hash, s.baseAddress, Int32(s.count), info, info.count, &out, &outLength) != nil
        }
        try check(ok && Int(outLength) >= length, "HMAC(HKDF-Expand-Label \(label))")
        return Array(out.prefix(length))
    }

    /// AEAD-encrypts `plaintext` and appends ciphertext and tag to `out`.
    func seal(key: [UInt8], nonce: [UInt8], aad: [UInt8], plaintext: [UInt8], into out: inout [UInt8]) throws(IdentityError) {
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: plaintext.count + Self.tagLength))
        let ok = lock.withLock { _ in
            out.withUnsafeMutableBufferPointer { o -> Bool in
                let base = o.baseAddress! + start
                var n: Int32 = 0, m: Int32 = 0
                return EVP_EncryptInit_ex2(ctx, cipher, key, nonce, nil) == 1
                    && EVP_EncryptUpdate(ctx, nil, &n, aad, Int32(aad.count)) == 1
                    && EVP_EncryptUpdate(ctx, base, &n, plaintext, Int32(plaintext.count)) == 1
                    && EVP_EncryptFinal_ex(ctx, base + Int(n), &m) == 1
                    && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, Int32(Self.tagLength), base + plaintext.count) == 1
            }
        }
        if !ok {
            out.removeSubrange(start...)
            throw IdentityError.fromQueue("AEAD seal (\(name))")
        }
    }

    /// AEAD-decrypts `ciphertext` (body and tag); throws when the tag does not verify.
    func open(key: [UInt8], nonce: [UInt8], aad: [UInt8], ciphertext: ArraySlice<UInt8>) throws(IdentityError) -> [UInt8] {
        let bodyLength = ciphertext.count - Self.tagLength
        var plaintext = [UInt8](repeating: 0, count: bodyLength)
        let ok = ciphertext.withUnsafeBufferPointer { c in
            lock.withLock { _ in
                plaintext.withUnsafeMutableBufferPointer { p -> Bool in
                    var n: Int32 = 0, m: Int32 = 0
                    let tag = UnsafeMutableRawPointer(mutating: c.baseAddress! + bodyLength)
                    return EVP_DecryptInit_ex2(ctx, cipher, key, nonce, nil) == 1
                        && EVP_DecryptUpdate(ctx, nil, &n, aad, Int32(aad.count)) == 1
                        && EVP_DecryptUpdate(ctx, p.baseAddress, &n, c.baseAddress, Int32(bodyLength)) == 1
                        && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, Int32(Self.tagLength), tag) == 1
                        && EVP_DecryptFinal_ex(ctx, p.baseAddress! + Int(n), &m) == 1
                }
            }
        }
        guard ok else {
            ERR_clear_error()
            throw IdentityError.openSSL(operation: "AEAD open (\(name))", message: "the record's authentication tag does not verify")
        }
        return plaintext
    }
}
