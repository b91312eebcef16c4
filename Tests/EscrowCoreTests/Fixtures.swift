import Foundation
import Testing
import EscrowCore

/// Shared values and helpers for the pure EscrowCore tests.
enum Fx {
    /// 2025-06-15T08:00:00Z: a whole second, so dates survive the wire unchanged.
    static let t0 = Date(timeIntervalSince1970: 1_749_974_400)

    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    /// Parses raw JSON bytes into a comparable value (numbers compare as Double).
    static func json(_ bytes: some Collection<UInt8>) throws -> JSONValue {
        try WireCodec.decoder.decode(JSONValue.self, from: Data(bytes))
    }

    static func json(_ s: String) throws -> JSONValue { try json(Array(s.utf8)) }

    /// The error a typed-throwing domain call raised, or nil when it succeeded.
    static func domainError(_ body: () throws -> Void) -> DomainError? {
        do { try body(); return nil } catch let e as DomainError { return e } catch {
            Issue.record("expected a DomainError, got \(error)"); return nil
        }
    }

    /// The error `WireCodec.decode` raised for `text`, or nil when it decoded.
    static func wireError<T: Decodable>(_ type: T.Type, _ text: String, limit: Int = WireCodec.maxPayloadBytes) -> WireError? {
        wireError(type, Array(text.utf8), limit: limit)
    }

    static func wireError<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], limit: Int = WireCodec.maxPayloadBytes) -> WireError? {
        do { _ = try WireCodec.decode(type, from: bytes, limit: limit); return nil } catch { return error }
    }
}

/// A published message, decoded for assertions.
struct Published: Equatable {
    var topic: String
    var json: JSONValue
    var qos: Int
    var retain: Bool
}

extension Array where Element == AgentMachine.Effect {
    var published: [Published] {
        compactMap {
            guard case .publish(let topic, let payload, let qos, let retain) = $0 else { return nil }
            return Published(topic: topic, json: (try? Fx.json(payload)) ?? .null, qos: qos, retain: retain)
        }
    }
    /// The effects without their `.log` lines, which are free text.
    var withoutLogs: [AgentMachine.Effect] {
        filter { if case .log = $0 { false } else { true } }
    }
}
