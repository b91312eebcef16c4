import EscrowCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A plain-text table: columns aligned with two spaces, the last column unpadded.
public struct Table: Sendable, Equatable {
    public var headers: [String]
    public var rows: [[String]]
    public init(_ headers: [String], _ rows: [[String]]) { self.headers = headers; self.rows = rows }

    public func render() -> String {
        let all = [headers] + rows
        let columns = all.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for row in all { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        return all.map { row in
            var line = ""
            for (i, cell) in row.enumerated() {
                line += i == row.count - 1 ? cell : cell.padding(toLength: widths[i] + 2, withPad: " ", startingAt: 0)
            }
            return line.trimmingTrailingSpaces()
        }.joined(separator: "\n")
    }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var s = Substring(self)
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}

/// `[#####.....] 3000/10000 devices  1.2k/s`, redrawn in place on a terminal.
public struct ProgressBar: Sendable {
    public static func render(done: Int, total: Int, perSecond: Double, width: Int = 10, unit: String = "devices") -> String {
        let filled = total > 0 ? min(width, done * width / total) : width
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        return "[\(bar)] \(done)/\(total) \(unit)  \(rate(perSecond))"
    }

    /// `850/s`, `1.2k/s`, `3.4M/s`.
    public static func rate(_ perSecond: Double) -> String {
        guard perSecond.isFinite, perSecond >= 0 else { return "-/s" }
        if perSecond >= 1_000_000 { return String(format: "%.1fM/s", perSecond / 1_000_000) }
        if perSecond >= 1_000 { return String(format: "%.1fk/s", perSecond / 1_000) }
        return String(format: "%.0f/s", perSecond)
    }
}

/// Where escrowctl writes: results to stdout, diagnostics and progress to stderr.
public struct Console: Sendable {
    public var quiet: Bool
    public init(quiet: Bool = false) { self.quiet = quiet }

    public func out(_ text: String) { FileHandle.standardOutput.write(Data((text + "\n").utf8)) }
    public func err(_ text: String) { FileHandle.standardError.write(Data((text + "\n").utf8)) }
    /// A diagnostic suppressed by `--quiet`.
    public func note(_ text: String) { if !quiet { err(text) } }

    public var stderrIsTerminal: Bool { isatty(2) == 1 }

    /// Draws a progress line on stderr when it is a terminal and not `--quiet`.
    public func progress(_ line: String, final: Bool = false) {
        guard !quiet, stderrIsTerminal else { return }
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + line + (final ? "\n" : "")).utf8))
    }

    /// Pretty JSON with sorted keys (the `--json` output).
    public func json(_ value: JSONValue) { out(Self.prettyJSON(value)) }

    private static let prettyEncoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .iso8601
        return e
    }()

    public static func prettyJSON(_ value: JSONValue) -> String {
        (try? prettyEncoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
    }

    public static func compactJSON(_ value: JSONValue) -> String {
        (try? WireCodec.encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
    }
}

/// Small formatters shared by the commands.
enum Format {
    /// RFC 3339 in UTC, to the second (the precision of the contract's timestamps): `2026-11-29T10:08:59Z`.
    static func date(_ d: Date?) -> String {
        guard let d else { return "-" }
        return d.formatted(.iso8601)
    }

    static func counts(_ c: [String: Int]) -> String {
        c.isEmpty ? "-" : c.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    }

}
