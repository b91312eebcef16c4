import COpenSSL

/// Every failure the Identity module reports. OpenSSL failures carry the
/// operation that failed and OpenSSL's own error-queue text.
public enum IdentityError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An OpenSSL call failed; `message` is the drained ERR_error_string text.
    case openSSL(operation: String, message: String)
    /// A CSR's subject CN is not the device id it was submitted for.
    case commonNameMismatch(expected: String, actual: String)
    /// A CSR's self-signature does not verify: the requester does not hold the key.
    case invalidCSRSignature(commonName: String)
    /// Input that cannot be used (bad PEM, empty name, bad serial...).
    case invalidInput(String)
    /// A file could not be read or written.
    case file(operation: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .openSSL(let op, let msg): return "OpenSSL \(op) failed: \(msg)"
        case .commonNameMismatch(let e, let a):
            return "CSR refused: subject CN '\(a)' is not the expected device id '\(e)'"
        case .invalidCSRSignature(let cn): return "CSR refused: signature of CSR for '\(cn)' does not verify"
        case .invalidInput(let m): return "invalid input: \(m)"
        case .file(let op, let path, let e): return "\(op) \(path) failed: errno \(e)"
        }
    }

    /// Drains this thread's OpenSSL error queue into an error for `operation`.
    static func fromQueue(_ operation: String) -> IdentityError {
        var parts: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buf = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buf, buf.count)
            parts.append(buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        return .openSSL(operation: operation, message: parts.isEmpty ? "no OpenSSL error reported" : parts.joined(separator: "; "))
    }
}

/// Throws the drained error queue when `ok` is false.
@inline(__always)
func check(_ ok: Bool, _ operation: @autoclosure () -> String) throws(IdentityError) {
    if !ok { throw IdentityError.fromQueue(operation()) }
}

@inline(__always)
func checkNotNil<T>(_ value: T?, _ operation: @autoclosure () -> String) throws(IdentityError) -> T {
    guard let value else { throw IdentityError.fromQueue(operation()) }
    return value
}
