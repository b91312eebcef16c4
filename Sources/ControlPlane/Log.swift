import Foundation
import EscrowCore

/// escrowd's log lines, to the caller's sink (stderr by default), in one of two formats:
/// - text: `2026-11-29T09:00:00.123Z escrowd info: message (account=acme requestId=r-1)`
/// - json: `{"component":"escrowd","level":"info","message":"message","time":"2026-11-29T09:00:00.123Z","account":"acme"}`
///   one object per line (`--log-format json`), time in UTC, fields beside the message.
/// Secrets (passwords, keys) are never passed to it; `SecretsNotLoggedTests` checks the log.
public struct Log: Sendable {
    public enum Level: String, Sendable { case debug, info, warn, error }
    public enum Format: String, Sendable { case text, json }
    public var component: String
    public var minimum: Level
    public var format: Format
    public var sink: @Sendable (String) -> Void

    public init(component: String, minimum: Level = .info, format: Format = .text, sink: @escaping @Sendable (String) -> Void = { line in
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }) {
        self.component = component; self.minimum = minimum; self.format = format; self.sink = sink
    }

    public static let silent = Log(component: "", sink: { _ in })

    public func callAsFunction(_ level: Level, _ message: @autoclosure () -> String, _ fields: KeyValuePairs<String, String> = [:]) {
        guard rank(level) >= rank(minimum) else { return }
        let time = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        switch format {
        case .text:
            let extra = fields.isEmpty ? "" : " (" + fields.map { "\($0.key)=\($0.value)" }.joined(separator: " ") + ")"
            sink("\(time) \(component) \(level.rawValue): \(message())\(extra)")
        case .json:
            var object: [String: JSONValue] = ["time": .string(time), "level": .string(level.rawValue), "component": .string(component), "message": .string(message())]
            for (k, v) in fields where object[k] == nil { object[k] = .string(v) }
            sink(String(decoding: WireCodec.encode(JSONValue.object(object)), as: UTF8.self))
        }
    }
    private func rank(_ l: Level) -> Int { [.debug: 0, .info: 1, .warn: 2, .error: 3][l] ?? 1 }
}
