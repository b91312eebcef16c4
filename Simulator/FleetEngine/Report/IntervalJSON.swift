import Foundation

/// `--interval-json FILE|-`: one JSON object per sample interval, written (one write(2) per line,
/// so nothing waits in a buffer) while the run goes, for live dashboards.
///
/// Each line has the sample's fields (`t`, `connected`, `connectsPerSec`, `msgsOutPerSec`,
/// `msgsInPerSec`, cumulative `errors`, the interval percentiles such as `connectP99Ms` when the
/// interval measured any), `timestamp` (ISO 8601 UTC, milliseconds) and the open `phase`.
/// Owned by the engine's thread.
public final class IntervalJSON {
    private let handle: FileHandle
    private let closes: Bool
    private let encoder: JSONEncoder

    /// `-` is standard output; a path is created or truncated.
    public init(path: String) throws(FleetError) {
        if path == "-" {
            handle = .standardOutput; closes = false
        } else {
            guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path) else {
                throw .runtime("cannot write --interval-json \(path): \(String(cString: strerror(errno)))")
            }
            handle = h; closes = true
        }
        encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
    }

    deinit { if closes { try? handle.close() } }

    /// The line for one sample (no trailing newline).
    public static func line(_ sample: Sample, start: Date, phase: String?, encoder: JSONEncoder = JSONEncoder()) -> String {
        encoder.outputFormatting = [.sortedKeys]
        let line = Line(sample: sample, timestamp: RunMetadata.timestamp(start.addingTimeInterval(sample.t)), phase: phase)
        guard let data = try? encoder.encode(line) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    public func write(_ sample: Sample, start: Date, phase: String?) {
        handle.write(Data((Self.line(sample, start: start, phase: phase, encoder: encoder) + "\n").utf8))
    }

    /// A sample plus its wall-clock time and phase, flattened into one object.
    struct Line: Encodable {
        var sample: Sample
        var timestamp: String
        var phase: String?
        enum Key: String, CodingKey { case timestamp, phase }
        func encode(to encoder: any Encoder) throws {
            try sample.encode(to: encoder)
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(timestamp, forKey: .timestamp)
            try c.encodeIfPresent(phase, forKey: .phase)
        }
    }
}
