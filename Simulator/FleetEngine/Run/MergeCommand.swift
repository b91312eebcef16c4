import MQTTWire
import EscrowCore
import Foundation

/// `fleetsim merge A.json B.json ... [--report OUT.json] [--html OUT.html] [--csv DIR] [--threshold RULE ...]`:
/// one report from the reports of several hosts (or runs) of one scenario.
///
/// Reuses `FleetReport.merge` (counts summed, histograms merged exactly, series and phases aligned
/// by wall-clock start). Exit codes: 0 merged, 64 usage (no file, a missing file, a file that is
/// not a fleetsim report, different scenarios, transfer reports), 99 a threshold failed, 1 an
/// output could not be written.
public enum MergeCommand {
    public struct Options: Equatable, Sendable {
        public var files: [String] = []
        public var reportPath: String?
        public var htmlPath: String?
        public var csvDirectory: String?
        public var thresholds: [Threshold] = []
        public var help = false
    }

    public static let usage = """
    USAGE: fleetsim merge A.json B.json ... [--report OUT.json] [--html OUT.html] [--csv DIR]
                          [--threshold RULE ...]
    Merges fleetsim JSON reports of one scenario (e.g. one per load-generating host) and prints
    the merged summary. Exit 0, 64 usage, 99 a --threshold failed.
    """

    public static func parse(_ args: [String]) throws(FleetError) -> Options {
        var o = Options()
        var i = 0
        func value(_ name: String) throws(FleetError) -> String {
            i += 1
            guard i < args.count else { throw .usage("merge: \(name) needs a value") }
            return args[i]
        }
        while i < args.count {
            let a = args[i]
            switch a {
            case "-h", "--help": o.help = true
            case "--report": o.reportPath = try value(a)
            case "--html": o.htmlPath = try value(a)
            case "--csv": o.csvDirectory = try value(a)
            case "--threshold": o.thresholds.append(try Threshold.parse(try value(a)))
            default:
                if a.hasPrefix("-") && a != "-" { throw .usage("merge: unknown option '\(a)' (merge takes --report, --html, --csv, --threshold)") }
                o.files.append(a)
            }
            i += 1
        }
        if !o.help && o.files.isEmpty { throw .usage("merge needs reports to merge: fleetsim merge A.json B.json ...") }
        return o
    }

    /// Reads and checks every file; the first problem is a usage error naming the file.
    public static func load(_ files: [String]) throws(FleetError) -> [FleetReport] {
        var reports: [FleetReport] = []
        for f in files {
            var isDirectory: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: f, isDirectory: &isDirectory)
            guard exists, !isDirectory.boolValue, let data = FileManager.default.contents(atPath: f) else {
                throw .usage("merge: cannot read \(f): \(!exists ? "no such file" : isDirectory.boolValue ? "it is a directory" : "permission denied")")
            }
            let r: FleetReport
            do { r = try FleetReport.decode(data) } catch {
                throw .usage("merge: \(f) is not a fleetsim report (write one with fleetsim ... --report FILE.json)")
            }
            guard r.tool == "fleetsim" else { throw .usage("merge: \(f) is not a fleetsim report (tool '\(r.tool.prefix(40))')") }
            if let first = reports.first, first.scenario != r.scenario {
                throw .usage("merge: \(f) is a \(r.scenario.rawValue) report but \(files[0]) is \(first.scenario.rawValue): merge reports of one scenario")
            }
            if r.scenario == .transfer { throw .usage("merge: \(f) is a transfer report; a transfer story runs in one process and is not merged") }
            reports.append(r)
        }
        return reports
    }

    public static func run(_ args: [String], version: String, stdout: @escaping (String) -> Void, stderr: @escaping (String) -> Void) -> Int32 {
        let o: Options
        let parts: [FleetReport]
        do {
            o = try parse(args)
            if o.help { stdout(usage); return 0 }
            parts = try load(o.files)
        } catch {
            stderr("fleetsim: \(error.description)")
            return 64
        }
        guard var merged = FleetReport.merge(parts) else { stderr("fleetsim: merge: nothing to merge"); return 64 }
        let stops = Set(parts.map(\.stoppedBy))
        merged.stoppedBy = stops.count == 1 ? parts[0].stoppedBy : stops.sorted().joined(separator: "+")
        let broker = parts[0].run?.broker ?? parts[0].settings["broker"] ?? ""
        merged.run = RunMetadata.current(version: version, arguments: ["merge"] + args, broker: broker, tls: (try? BrokerURL.parse(broker))?.tls == true,
                                         startedAt: merged.preciseStart, durationSeconds: merged.elapsedSeconds, stoppedBy: merged.stoppedBy)
        merged.mergedRuns = parts.compactMap(\.run)
        if !o.thresholds.isEmpty { merged.thresholds = o.thresholds.map { $0.evaluate(merged) } }
        stdout("merged \(parts.count) reports: " + o.files.joined(separator: " "))
        stdout(merged.summaryTable)
        for t in merged.thresholds ?? [] { stdout(t.line) }
        do { try FleetMain.write(merged, json: o.reportPath, html: o.htmlPath, csv: o.csvDirectory, say: stdout) } catch {
            stderr("fleetsim: cannot write report: \(error.localizedDescription)")
            return 1
        }
        return FleetMain.thresholdFailure(merged, stderr: stderr) ?? 0
    }
}
