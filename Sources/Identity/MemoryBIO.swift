import COpenSSL

/// Owns one memory BIO; the only way this module moves PEM text in and out of OpenSSL.
final class MemoryBIO {
    let pointer: OpaquePointer

    /// An empty, writable BIO.
    init() throws(IdentityError) {
        pointer = try checkNotNil(BIO_new(BIO_s_mem()), "BIO_new")
    }

    /// A BIO holding a copy of `text`.
    init(text: String) throws(IdentityError) {
        pointer = try checkNotNil(BIO_new(BIO_s_mem()), "BIO_new")
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { BIO_write(pointer, $0.baseAddress, Int32($0.count)) }
        if written != Int32(bytes.count) && !bytes.isEmpty {
            throw IdentityError.fromQueue("BIO_write")
        }
    }

    deinit { BIO_free(pointer) }

    /// Everything written so far, as UTF-8 text.
    func text() -> String {
        var data: UnsafeMutablePointer<CChar>? = nil
        let length = escrow_bio_get_mem_data(pointer, &data)
        guard let data, length > 0 else { return "" }
        let buffer = UnsafeRawBufferPointer(start: data, count: Int(length))
        return String(decoding: buffer, as: UTF8.self)
    }

    /// Runs a PEM writer against a fresh BIO and returns its text.
    static func pem(_ operation: String, _ write: (OpaquePointer) -> Int32) throws(IdentityError) -> String {
        let bio = try MemoryBIO()
        try check(write(bio.pointer) == 1, operation)
        return bio.text()
    }
}

/// Reads the UTF-8 CN of an X509_NAME, or nil when it has none.
func commonName(of name: OpaquePointer?) -> String? {
    guard let name else { return nil }
    let index = X509_NAME_get_index_by_NID(name, NID_commonName, -1)
    guard index >= 0, let entry = X509_NAME_get_entry(name, index),
          let data = X509_NAME_ENTRY_get_data(entry) else { return nil }
    var out: UnsafeMutablePointer<UInt8>? = nil
    let length = ASN1_STRING_to_UTF8(&out, data)
    guard length >= 0, let out else { return nil }
    defer { escrow_openssl_free(out) }
    return String(decoding: UnsafeBufferPointer(start: out, count: Int(length)), as: UTF8.self)
}

/// A fresh X509_NAME holding only `CN=commonName`. The caller owns the result.
func makeName(commonName: String) throws(IdentityError) -> OpaquePointer {
    guard !commonName.isEmpty, commonName.utf8.count <= 64 else {
        throw IdentityError.invalidInput("common name must be 1...64 bytes, got '\(commonName.prefix(80))'")
    }
    let name = try checkNotNil(X509_NAME_new(), "X509_NAME_new")
    let ok = X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, commonName, -1, -1, 0)
    if ok != 1 {
        X509_NAME_free(name)
        throw IdentityError.fromQueue("X509_NAME_add_entry_by_txt(CN)")
    }
    return name
}

func hex(_ bytes: some Sequence<UInt8>) -> String {
    let digits: [Character] = Array("0123456789abcdef")
    var s = ""
    for b in bytes { s.append(digits[Int(b >> 4)]); s.append(digits[Int(b & 0xF)]) }
    return s
}
