import Foundation

/// A small command-line parser shared by the executables: `--name value`, `--name=value`,
/// boolean `--flag`, positionals, and `--` to end options. Unknown options are usage errors.
public struct Arguments: Sendable {
    public private(set) var positionals: [String] = []
    private var values: [String: [String]] = [:]
    private var flags: Set<String> = []
    private var consumed: Set<String> = []

    /// `valued` names take a value; `booleans` do not. Names are given without dashes.
    public init(_ argv: [String], valued: Set<String>, booleans: Set<String>) throws(UsageError) {
        var i = 0
        var onlyPositionals = false
        while i < argv.count {
            let a = argv[i]
            i += 1
            if onlyPositionals || !a.hasPrefix("--") || a == "-" {
                if !onlyPositionals, a.hasPrefix("-"), a.count == 2, a != "-" {
                    if a == "-h" { flags.insert("help"); continue }
                    throw UsageError("unknown option '\(a)'")
                }
                positionals.append(a); continue
            }
            if a == "--" { onlyPositionals = true; continue }
            var name = String(a.dropFirst(2))
            var inline: String?
            if let eq = name.firstIndex(of: "=") { inline = String(name[name.index(after: eq)...]); name = String(name[..<eq]) }
            if booleans.contains(name) {
                if let inline {
                    guard let b = ["true": true, "false": false, "1": true, "0": false][inline] else { throw UsageError("--\(name) takes no value (or true/false)") }
                    if b { flags.insert(name) } else { flags.remove(name) }
                } else { flags.insert(name) }
            } else if valued.contains(name) {
                if let inline { values[name, default: []].append(inline); continue }
                guard i < argv.count else { throw UsageError("--\(name) needs a value") }
                values[name, default: []].append(argv[i]); i += 1
            } else {
                throw UsageError("unknown option '--\(name)'" + Suggestions.phrase(name, in: valued.union(booleans).sorted(), prefix: "--"))
            }
        }
    }

    public func flag(_ name: String) -> Bool { flags.contains(name) }
    public func value(_ name: String) -> String? { values[name]?.last }
    public func all(_ name: String) -> [String] { values[name] ?? [] }

    public func int(_ name: String, in range: ClosedRange<Int>? = nil) throws(UsageError) -> Int? {
        guard let v = value(name) else { return nil }
        guard let n = Int(v) else { throw .invalid("--\(name) expects a whole number, got '\(v)'") }
        if let range, !range.contains(n) { throw .invalid("--\(name) must be within \(range.lowerBound)...\(range.upperBound), got \(n)") }
        return n
    }

    public func double(_ name: String) throws(UsageError) -> Double? {
        guard let v = value(name) else { return nil }
        guard let n = Double(v) else { throw .invalid("--\(name) expects a number, got '\(v)'") }
        return n
    }

    /// Durations like `90`, `90s`, `15m`, `2h`, `7d` (seconds when no unit is given), in whole
    /// seconds (a fraction is dropped: `1.5m` is 90).
    public func seconds(_ name: String) throws(UsageError) -> Int? {
        guard let v = value(name) else { return nil }
        guard let d = Self.parseDuration(v) else { throw .invalid("--\(name) expects a duration like 90s, 15m, 2h or 7d, got '\(v)'") }
        return Int(d.components.seconds)
    }

    /// The one duration grammar of every command line here (escrowd, escrowctl, fleetsim,
    /// escrowbench): a non-negative number with an optional unit, `ms`, `s`, `m`, `h` or `d`
    /// (seconds without one): `500ms`, `10s`, `1.5m`, `2h`, `7d`, `30`. Millisecond precision.
    public static func parseDuration(_ text: String) -> Duration? {
        let units: [(suffix: String, seconds: Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        let unit = units.first { text.hasSuffix($0.suffix) }
        guard let n = Double(text.dropLast(unit?.suffix.count ?? 0)), n.isFinite, n >= 0,
              text.first.map({ $0.isNumber || $0 == "." }) == true else { return nil }
        let ms = (n * (unit?.seconds ?? 1) * 1000).rounded()
        guard ms < 1e15 else { return nil }
        return .milliseconds(Int64(ms))
    }

    /// The same, in seconds as a `Double`.
    public static func parseSeconds(_ text: String) -> Double? {
        parseDuration(text)?.seconds
    }

    /// Comma-separated values across repeated options: `--ids a,b --ids c`.
    public func list(_ name: String) -> [String] {
        all(name).flatMap { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }.filter { !$0.isEmpty }
    }
}

/// A command-line mistake: printed with a hint to `--help`, exit code 64 (EX_USAGE).
public struct UsageError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    /// True for a value that is present but invalid (out of range, not a number, not one of the
    /// choices): EX_DATAERR, 65. Unknown commands or options and missing arguments stay EX_USAGE, 64.
    public var invalidValue: Bool
    public init(_ message: String) { self.message = message; invalidValue = false }
    public static func invalid(_ message: String) -> UsageError {
        var e = UsageError(message)
        e.invalidValue = true
        return e
    }
    public var description: String { message }
    public static let exitCode: Int32 = 64
    public static let invalidValueExitCode: Int32 = 65
    /// The exit status this error calls for.
    public var status: Int32 { invalidValue ? Self.invalidValueExitCode : Self.exitCode }
}

/// Reads `key = value` lines (`#` comments) from a configuration file.
public enum KeyValueFile {
    public static func parse(_ text: String) throws(UsageError) -> [String: String] {
        var out: [String: String] = [:]
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let eq = line.firstIndex(of: "=") else { throw UsageError("line \(n + 1): expected key = value, got '\(line.prefix(60))'") }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            out[key] = value
        }
        return out
    }
}
