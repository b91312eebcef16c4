/// The Prometheus text exposition format (version 0.0.4), written and checked in one place.
///
/// `PrometheusText.render` writes metric families (`# HELP`, `# TYPE`, samples); `validate`
/// checks a whole exposition against the format's rules (names, label syntax and escaping, one
/// TYPE per family before its samples, histogram buckets cumulative with `+Inf` equal to `_count`),
/// so the tests and a scraper agree on what is valid.
public enum PrometheusText {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public enum Kind: String, Sendable { case counter, gauge, histogram }

    public struct Sample: Sendable, Equatable {
        public var labels: [(String, String)]
        public var value: Double
        public init(_ labels: [(String, String)] = [], _ value: Double) { self.labels = labels; self.value = value }
        public static func == (a: Sample, b: Sample) -> Bool {
            a.value == b.value && a.labels.map { $0.0 + "=" + $0.1 } == b.labels.map { $0.0 + "=" + $0.1 }
        }
    }

    /// A histogram's observations: cumulative counts per upper bound (seconds), their sum and count.
    public struct Histogram: Sendable, Equatable {
        public var bounds: [Double]
        public var counts: [Int]
        public var sum: Double = 0
        public var count: Int = 0
        public init(bounds: [Double]) { self.bounds = bounds; counts = Array(repeating: 0, count: bounds.count) }
        /// Command and commit latencies: 0.5 ms to 10 s.
        public static let latencyBounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
        public mutating func observe(_ seconds: Double) {
            for (i, b) in bounds.enumerated() where seconds <= b { counts[i] += 1 }
            sum += seconds
            count += 1
        }
    }

    public struct Family: Sendable {
        public var name: String
        public var help: String
        public var kind: Kind
        public var samples: [Sample] = []
        public var histograms: [(labels: [(String, String)], histogram: Histogram)] = []
        public init(_ name: String, _ kind: Kind, _ help: String, samples: [Sample] = []) {
            self.name = name; self.kind = kind; self.help = help; self.samples = samples
        }
    }

    public static func render(_ families: [Family]) -> String {
        var out = ""
        for f in families {
            out += "# HELP \(f.name) \(escapeHelp(f.help))\n# TYPE \(f.name) \(f.kind.rawValue)\n"
            for s in f.samples { out += "\(f.name)\(labelText(s.labels)) \(number(s.value))\n" }
            for (labels, h) in f.histograms {
                for (b, c) in zip(h.bounds, h.counts) { out += "\(f.name)_bucket\(labelText(labels + [("le", number(b))])) \(c)\n" }
                out += "\(f.name)_bucket\(labelText(labels + [("le", "+Inf")])) \(h.count)\n"
                out += "\(f.name)_sum\(labelText(labels)) \(number(h.sum))\n"
                out += "\(f.name)_count\(labelText(labels)) \(h.count)\n"
            }
        }
        return out
    }

    static func labelText(_ labels: [(String, String)]) -> String {
        labels.isEmpty ? "" : "{" + labels.map { "\($0.0)=\"\(escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
    }

    static func escapeLabel(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    static func escapeHelp(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    static func number(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }

    // MARK: validation

    /// One parsed sample line.
    public struct ParsedSample: Sendable, Equatable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    /// Parses and checks an exposition; throws the first rule it breaks, with its line number.
    @discardableResult
    public static func validate(_ text: String) throws(ValidationError) -> [ParsedSample] {
        var types: [String: Kind] = [:]
        var seenSamples: Set<String> = []
        var samples: [ParsedSample] = []
        guard text.isEmpty || text.hasSuffix("\n") else { throw ValidationError(line: 0, "the exposition must end with a newline") }
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().enumerated() {
            let line = String(raw), n = i + 1
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
                guard parts.count >= 3, parts[0] == "#" else { continue } // a plain comment
                if parts[1] == "TYPE" {
                    guard parts.count == 4, isMetricName(parts[2]), let kind = Kind(rawValue: parts[3]) ?? (["summary", "untyped"].contains(parts[3]) ? .gauge : nil) else {
                        throw ValidationError(line: n, "bad TYPE line: \(line)")
                    }
                    guard types[parts[2]] == nil else { throw ValidationError(line: n, "second TYPE for \(parts[2])") }
                    guard !seenSamples.contains(parts[2]) else { throw ValidationError(line: n, "TYPE for \(parts[2]) after its samples") }
                    types[parts[2]] = kind
                } else if parts[1] == "HELP" {
                    guard isMetricName(parts[2]) else { throw ValidationError(line: n, "bad HELP line: \(line)") }
                }
                continue
            }
            let sample = try parseSample(line, line: n)
            let family = familyName(sample.name, types: types)
            seenSamples.insert(family)
            if types[family] == .histogram, sample.name.hasSuffix("_bucket"), sample.labels["le"] == nil {
                throw ValidationError(line: n, "histogram bucket without le: \(line)")
            }
            samples.append(sample)
        }
        try checkHistograms(samples, types: types)
        return samples
    }

    public struct ValidationError: Error, Sendable, CustomStringConvertible {
        public var line: Int
        public var message: String
        init(line: Int, _ message: String) { self.line = line; self.message = message }
        public var description: String { "line \(line): \(message)" }
    }

    static func familyName(_ name: String, types: [String: Kind]) -> String {
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if types[base] == .histogram { return base }
        }
        return name
    }

    static func isMetricName(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, first.isASCIILetter || first == "_" || first == ":" else { return false }
        return s.unicodeScalars.allSatisfy { $0.isASCIILetter || $0.isASCIIDigit || $0 == "_" || $0 == ":" }
    }

    static func isLabelName(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, first.isASCIILetter || first == "_" else { return false }
        return s.unicodeScalars.allSatisfy { $0.isASCIILetter || $0.isASCIIDigit || $0 == "_" }
    }

    static func parseSample(_ line: String, line n: Int) throws(ValidationError) -> ParsedSample {
        let chars = Array(line)
        var i = 0
        while i < chars.count, chars[i] != "{", chars[i] != " " { i += 1 }
        let name = String(chars[0..<i])
        guard isMetricName(name) else { throw ValidationError(line: n, "bad metric name '\(name)'") }
        var labels: [String: String] = [:]
        if i < chars.count, chars[i] == "{" {
            i += 1
            while i < chars.count, chars[i] != "}" {
                var j = i
                while j < chars.count, chars[j] != "=" { j += 1 }
                let label = String(chars[i..<j])
                guard isLabelName(label), j + 1 < chars.count, chars[j + 1] == "\"" else { throw ValidationError(line: n, "bad label '\(label)'") }
                j += 2
                var value = ""
                while j < chars.count, chars[j] != "\"" {
                    if chars[j] == "\\" {
                        guard j + 1 < chars.count else { throw ValidationError(line: n, "dangling escape") }
                        switch chars[j + 1] {
                        case "\\": value.append("\\")
                        case "\"": value.append("\"")
                        case "n": value.append("\n")
                        default: throw ValidationError(line: n, "bad escape \\\(chars[j + 1])")
                        }
                        j += 2
                    } else {
                        value.append(chars[j]); j += 1
                    }
                }
                guard j < chars.count else { throw ValidationError(line: n, "unterminated label value") }
                guard labels[label] == nil else { throw ValidationError(line: n, "label \(label) twice") }
                labels[label] = value
                j += 1
                if j < chars.count, chars[j] == "," { j += 1 }
                i = j
            }
            guard i < chars.count else { throw ValidationError(line: n, "unterminated label set") }
            i += 1
        }
        guard i < chars.count, chars[i] == " " else { throw ValidationError(line: n, "no value") }
        let rest = String(chars[(i + 1)...]).split(separator: " ")
        guard (1...2).contains(rest.count), let value = parseNumber(String(rest[0])) else { throw ValidationError(line: n, "bad value in '\(line)'") }
        if rest.count == 2, Int64(rest[1]) == nil { throw ValidationError(line: n, "bad timestamp in '\(line)'") }
        return ParsedSample(name: name, labels: labels, value: value)
    }

    static func parseNumber(_ s: String) -> Double? {
        switch s {
        case "+Inf", "Inf": return .infinity
        case "-Inf": return -.infinity
        case "NaN": return .nan
        default: return Double(s)
        }
    }

    /// Buckets of each histogram series: le ascending, counts non-decreasing, +Inf present and equal to _count.
    static func checkHistograms(_ samples: [ParsedSample], types: [String: Kind]) throws(ValidationError) {
        for (family, kind) in types where kind == .histogram {
            var series: [String: [(le: Double, count: Double)]] = [:]
            var counts: [String: Double] = [:]
            for s in samples {
                var key = s.labels
                key["le"] = nil
                let id = key.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
                if s.name == family + "_bucket", let le = s.labels["le"].flatMap(parseNumber) { series[id, default: []].append((le, s.value)) }
                if s.name == family + "_count" { counts[id] = s.value }
            }
            for (id, buckets) in series {
                guard buckets.map(\.le) == buckets.map(\.le).sorted() else { throw ValidationError(line: 0, "\(family){\(id)}: buckets out of order") }
                guard zip(buckets, buckets.dropFirst()).allSatisfy({ $0.count <= $1.count }) else {
                    throw ValidationError(line: 0, "\(family){\(id)}: bucket counts are not cumulative")
                }
                guard let inf = buckets.last, inf.le == .infinity else { throw ValidationError(line: 0, "\(family){\(id)}: no +Inf bucket") }
                guard counts[id] == inf.count else { throw ValidationError(line: 0, "\(family){\(id)}: +Inf bucket differs from _count") }
            }
        }
    }
}

private extension Unicode.Scalar {
    var isASCIILetter: Bool { ("a"..."z").contains(self) || ("A"..."Z").contains(self) }
    var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
