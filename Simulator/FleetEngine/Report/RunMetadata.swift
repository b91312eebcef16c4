import Foundation
import Glibc

/// Who ran what, where and when: the first block of every report.
public struct RunMetadata: Codable, Sendable, Equatable {
    /// `fleetsim 0.4.0 (commit ...; EscrowFleet; wire schema 1)`, as `--version` prints it.
    public var version: String
    /// The full command line, shell-quoted where needed.
    public var commandLine: String
    public var host: String
    /// `uname -sr`, e.g. `Linux 6.8.0-49-generic`.
    public var kernel: String
    public var cpus: Int
    public var broker: String
    public var tls: Bool
    /// ISO 8601 UTC with milliseconds, e.g. `2025-01-31T12:00:00.250Z`.
    public var startedAt: String
    public var durationSeconds: Double
    public var stoppedBy: String

    public init(version: String, commandLine: String, host: String, kernel: String, cpus: Int, broker: String, tls: Bool,
                startedAt: String, durationSeconds: Double, stoppedBy: String) {
        self.version = version; self.commandLine = commandLine; self.host = host; self.kernel = kernel; self.cpus = cpus
        self.broker = broker; self.tls = tls; self.startedAt = startedAt; self.durationSeconds = durationSeconds; self.stoppedBy = stoppedBy
    }

    /// This process's metadata for a finished run.
    public static func current(version: String, arguments: [String], broker: String, tls: Bool,
                               startedAt: Date, durationSeconds: Double, stoppedBy: String) -> RunMetadata {
        RunMetadata(version: version, commandLine: commandLine(["fleetsim"] + arguments), host: hostName(), kernel: kernel(),
                    cpus: ProcessInfo.processInfo.activeProcessorCount, broker: broker, tls: tls,
                    startedAt: timestamp(startedAt), durationSeconds: durationSeconds, stoppedBy: stoppedBy)
    }

    /// Arguments joined with spaces; an argument with a shell metacharacter is single-quoted.
    public static func commandLine(_ args: [String]) -> String {
        args.map { a in
            let plain = !a.isEmpty && a.allSatisfy { $0.isLetter || $0.isNumber || "-_./:=,@%+".contains($0) }
            return plain ? a : "'" + a.replacingOccurrences(of: "'", with: "'\\''") + "'"
        }.joined(separator: " ")
    }

    public static func hostName() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, buf.count) == 0 else { return "unknown" }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func kernel() -> String {
        var u = utsname()
        guard uname(&u) == 0 else { return "unknown" }
        func field<T>(_ value: T) -> String {
            withUnsafeBytes(of: value) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        return field(u.sysname) + " " + field(u.release)
    }

    /// ISO 8601 UTC with milliseconds.
    public static func timestamp(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: d)
    }

    public static func parseTimestamp(_ s: String) -> Date? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = f.date(from: s) { return d }
        f.formatOptions = [.withInternetDateTime]
        return f.date(from: s)
    }
}
