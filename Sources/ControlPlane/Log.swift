import Foundation

/// Plain log lines: `2026-11-29T09:00:00.123Z escrowd info: message`. The caller chooses the sink.
public struct Log: Sendable {
    public enum Level: String, Sendable { case debug, info, warn, error }
    public var component: String
    public var minimum: Level
    public var sink: @Sendable (String) -> Void

    public init(component: String, minimum: Level = .info, sink: @escaping @Sendable (String) -> Void = { line in
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }) {
        self.component = component; self.minimum = minimum; self.sink = sink
    }

    public static let silent = Log(component: "", sink: { _ in })

    public func callAsFunction(_ level: Level, _ message: @autoclosure () -> String) {
        guard rank(level) >= rank(minimum) else { return }
        sink("\(Date().formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true))) \(component) \(level.rawValue): \(message())")
    }
    private func rank(_ l: Level) -> Int { [.debug: 0, .info: 1, .warn: 2, .error: 3][l] ?? 1 }
}
