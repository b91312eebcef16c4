import COpenSSL

/// Mosquitto 2.0 password-file hashes.
public enum MosquittoPassword {
    /// Iterations mosquitto_passwd uses by default for `$7$`.
    public static let iterations = 101

    /// `$7$101$<base64 12-byte salt>$<base64 64-byte PBKDF2-HMAC-SHA512>`, the
    /// format `mosquitto_passwd` writes (checked against a file it generated).
    public static func hash(password: String) -> String {
        var salt = [UInt8](repeating: 0, count: 12)
        precondition(RAND_bytes(&salt, Int32(salt.count)) == 1, "RAND_bytes failed")
        return hash(password: password, salt: salt)
    }

    /// Deterministic form, for tests against known vectors.
    public static func hash(password: String, salt: [UInt8], iterations: Int = iterations) -> String {
        var out = [UInt8](repeating: 0, count: 64)
        let pw = Array(password.utf8)
        let ok = pw.withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { pc in
                PKCS5_PBKDF2_HMAC(pc.baseAddress, Int32(pc.count), salt, Int32(salt.count),
                                  Int32(iterations), EVP_sha512(), Int32(out.count), &out)
            }
        }
        precondition(ok == 1, "PKCS5_PBKDF2_HMAC failed")
        return "$7$\(iterations)$\(base64(salt))$\(base64(out))"
    }

    /// True when `password` matches a `$7$` hash line field.
    public static func verify(password: String, hash: String) -> Bool {
        let parts = hash.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[1] == "7", let iter = Int(parts[2]),
              let salt = decodeBase64(String(parts[3])) else { return false }
        return self.hash(password: password, salt: salt, iterations: iter) == hash
    }

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func base64(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            let b0 = bytes[i], b1 = i + 1 < bytes.count ? bytes[i + 1] : 0, b2 = i + 2 < bytes.count ? bytes[i + 2] : 0
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 3) << 4 | b1 >> 4)])
            out.append(i + 1 < bytes.count ? alphabet[Int((b1 & 0xF) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? alphabet[Int(b2 & 0x3F)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decodeBase64(_ s: String) -> [UInt8]? {
        var lookup = [Int](repeating: -1, count: 256)
        for (i, c) in alphabet.enumerated() { lookup[Int(c)] = i }
        var bits = 0, acc = 0
        var out: [UInt8] = []
        for c in s.utf8 where c != UInt8(ascii: "=") {
            let v = lookup[Int(c)]
            if v < 0 { return nil }
            acc = acc << 6 | v; bits += 6
            if bits >= 8 { bits -= 8; out.append(UInt8((acc >> bits) & 0xFF)) }
        }
        return out
    }
}
