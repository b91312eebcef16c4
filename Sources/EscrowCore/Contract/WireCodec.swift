import Foundation

/// The one JSON encoding of the wire: sorted keys, ISO-8601 dates, no escaping of `/`.
public enum WireCodec {
    /// Every payload carries `"schema": 1`; other values are refused with `unsupported_schema`.
    public static let schemaVersion = 1
    /// Payloads larger than this are refused with `too_large` before any parsing.
    public static let maxPayloadBytes = 256 * 1024
    /// Device payloads (heartbeat, status, ack, csr) are small: anything larger is hostile.
    public static let maxDevicePayloadBytes = 16 * 1024
    /// Arrays and objects nest at most this deep (the outermost object is level 1): checked in one
    /// pass before parsing, so a 10,000-deep payload costs a scan, not a recursive parse.
    public static let maxNestingDepth = 32

    /// Shared coders: building a JSONDecoder per message cost more than parsing a heartbeat.
    /// Never change their options: every thread uses them (make your own coder instead).
    public static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .iso8601
        return e
    }()
    public static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }()

    public static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        // Encoding our own value types cannot fail; a failure is a programming error.
        do { return Array(try encoder.encode(value)) } catch { fatalError("encoding \(T.self) failed: \(error)") }
    }

    /// What is refused before any parsing, in one pass over the bytes: invalid UTF-8, and arrays or
    /// objects nested deeper than `maxNestingDepth` (brackets inside strings do not count).
    public static func precheck(_ data: Data) throws(WireError) {
        guard String(validating: data, as: UTF8.self) != nil else {
            throw WireError(.malformed, "payload is not valid UTF-8")
        }
        try checkNesting(data)
    }

    /// Refuses arrays or objects nested deeper than `maxNestingDepth`, in one pass over the bytes.
    public static func checkNesting(_ data: Data) throws(WireError) {
        var depth = 0, inString = false, escaped = false
        for byte in data {
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                if depth > maxNestingDepth {
                    throw WireError(.malformed, "payload nests arrays or objects deeper than \(maxNestingDepth) levels")
                }
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            default: continue
            }
        }
    }

    /// Decodes a versioned payload, mapping every failure to a documented `WireError`.
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: some Collection<UInt8>, limit: Int = maxPayloadBytes) throws(WireError) -> T {
        guard bytes.count <= limit else {
            throw WireError(.tooLarge, "payload is \(bytes.count) bytes; the limit is \(limit)")
        }
        let data = Data(bytes)
        try precheck(data)
        // Fast path: one parse. A versioned payload that decodes only needs its schema checked.
        if T.self is any VersionedPayload.Type, let value = try? decoder.decode(T.self, from: data),
           let schema = (value as? any VersionedPayload)?.schema {
            guard schema == schemaVersion else {
                throw WireError(.unsupportedSchema, "schema \(schema) is not supported; this platform speaks schema \(schemaVersion)")
            }
            return value
        }
        let probe: SchemaProbe
        do { probe = try decoder.decode(SchemaProbe.self, from: data) } catch {
            throw WireError(.malformed, "payload is not a JSON object: \(describe(error))")
        }
        guard let schema = probe.schema else {
            throw WireError(.malformed, "payload has no \"schema\" field; expected \"schema\": \(schemaVersion)")
        }
        guard schema == schemaVersion else {
            throw WireError(.unsupportedSchema, "schema \(schema) is not supported; this platform speaks schema \(schemaVersion)")
        }
        do { return try decoder.decode(T.self, from: data) } catch {
            if case DecodingError.dataCorrupted(let c) = error, c.codingPath.isEmpty {
                // Foundation reports a number that fits no integer (1.5, 1e20) as "not valid JSON"
                // at the root, without the field: name the candidates instead.
                let suspects = (try? decoder.decode(JSONValue.self, from: data)).map { unfitNumbers(in: $0, at: []) } ?? []
                throw WireError(.malformed, "\(suspects.isEmpty ? "payload" : suspects.joined(separator: ", ")): expected an integer; found a fraction or an out-of-range number")
            }
            throw WireError(.malformed, describe(error))
        }
    }

    /// Paths of numbers that are not integers representable as Int.
    private static func unfitNumbers(in value: JSONValue, at path: [String]) -> [String] {
        switch value {
        case .number(let n) where Int(exactly: n) == nil: return [path.isEmpty ? "payload" : path.joined(separator: ".")]
        case .array(let a): return a.enumerated().flatMap { unfitNumbers(in: $1, at: path + ["[\($0)]"]) }
        case .object(let o): return o.keys.sorted().flatMap { unfitNumbers(in: o[$0]!, at: path + [$0]) }
        default: return []
        }
    }

    /// A one-line description of a decoding error that names the field.
    public static func describe(_ error: any Error) -> String {
        guard let e = error as? DecodingError else { return "\(error)" }
        func path(_ p: [any CodingKey]) -> String {
            p.isEmpty ? "payload" : p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch e {
        case .typeMismatch(let t, let c): return "\(path(c.codingPath)): expected \(t)"
        case .valueNotFound(let t, let c): return "\(path(c.codingPath)): expected \(t), found null"
        case .keyNotFound(let k, let c): return "\(path(c.codingPath + [k])): required field is missing"
        case .dataCorrupted(let c): return "\(path(c.codingPath)): \(c.debugDescription)"
        @unknown default: return "\(e)"
        }
    }

    private struct SchemaProbe: Decodable {
        let schema: Int?
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: K.self)
            schema = try? c.decodeIfPresent(Int.self, forKey: .schema)
        }
        enum K: String, CodingKey { case schema }
    }
}

/// A payload that carries `"schema"`: decoded in one pass, then its version checked.
public protocol VersionedPayload { var schema: Int { get } }

/// Stable error codes of the contract (`topics.md`, "Errors").
public enum ErrorCode: String, Codable, Sendable, CaseIterable {
    case malformed
    case unsupportedSchema = "unsupported_schema"
    case tooLarge = "too_large"
    case unknownCommand = "unknown_command"
    case invalidArgument = "invalid_argument"
    case notFound = "not_found"
    case forbidden
    case conflict
    case storageUnavailable = "storage_unavailable"
    case internalError = "internal"
}

public struct WireError: Error, Equatable, Codable, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String
    public init(_ code: ErrorCode, _ message: String) { self.code = code; self.message = message }
    public var description: String { "\(code.rawValue): \(message)" }
}
