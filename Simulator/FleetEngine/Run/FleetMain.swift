import MQTTWire
import Foundation
import POSIX
import EscrowCore
import Glibc

/// The whole `fleetsim` command: parse, validate, run (in-process or as workers), report.
/// `main.swift` only calls `FleetMain.run`; everything here is testable.
public enum FleetMain {
    /// Returns the process exit code: 0 ok, 1 run failed, 64 usage, 99 a threshold failed, 130 Ctrl-C.
    /// `version` is what `--version` prints (the main passes its build stamp); it goes into the report.
    public static func run(_ args: [String], stop: StopFlag = StopFlag(),
                           version: String = EscrowFleetVersion.line("fleetsim", commit: "unknown"),
                           stdout: @escaping (String) -> Void = { print($0) },
                           stderr: @escaping (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) -> Int32 {
        if args.first == "merge" { return MergeCommand.run(Array(args.dropFirst()), version: version, stdout: stdout, stderr: stderr) }
        var options: FleetOptions
        do { options = try FleetOptions.parse(args) } catch {
            stderr("fleetsim: \(error.description)")
            return 64
        }
        if options.help || args.isEmpty { stdout(FleetOptions.usage); return 0 }
        do { try options.resolveBundles() } catch {
            stderr("fleetsim: \(error.description)")
            return 64
        }
        var intervals: IntervalJSON?
        if let p = options.intervalJSON {
            do { intervals = try IntervalJSON(path: p) } catch {
                stderr("fleetsim: \(error.description)")
                return 1
            }
        }
        // With the interval lines on stdout, everything else for a person goes to stderr.
        let say = options.intervalJSON == "-" ? stderr : stdout
        var report: FleetReport
        do {
            if options.scenario == .transfer {
                report = try TransferRunner(options: options, output: stderr, intervals: intervals).run(stop: stop)
            } else if options.workers > 1 {
                report = try WorkerPool(options: options, output: stderr).run(stop: stop)
            } else {
                report = try FleetRunner(options: options, output: stderr, intervals: intervals).run(stop: stop)
            }
        } catch {
            stderr("fleetsim: \(error.description)")
            if case .usage = error { return 64 } // an input checked before the first connection
            return 1
        }
        let broker = report.settings["broker"] ?? options.brokerURL
        report.run = RunMetadata.current(version: version, arguments: args, broker: broker, tls: (try? BrokerURL.parse(broker))?.tls == true,
                                         startedAt: report.startedAt, durationSeconds: report.elapsedSeconds, stoppedBy: report.stoppedBy)
        if !options.thresholds.isEmpty && !options.isWorker { report.thresholds = options.thresholds.map { $0.evaluate(report) } }
        if !options.isWorker { say(report.summaryTable) }
        for t in report.thresholds ?? [] { say(t.line) }
        do {
            try write(report, json: options.reportPath, html: options.htmlPath, csv: options.isWorker ? nil : options.csvDirectory,
                      say: options.isWorker ? { _ in } : say)
        } catch {
            stderr("fleetsim: cannot write report: \(error.localizedDescription)")
            return 1
        }
        if let t = report.transfer, !t.verified {
            stderr("fleetsim: transfer failed: " + (t.verificationProblems.first ?? "verification did not pass"))
            return 1
        }
        if report.stoppedBy == "error" {
            stderr("fleetsim: " + (report.problems.first ?? "run failed"))
            return 1
        }
        if let code = thresholdFailure(report, stderr: stderr) { return code }
        // Ctrl-C: the partial report is written; say so in the status (workers end normally for the parent).
        if report.stoppedBy == "signal" && !options.isWorker { return 130 }
        return 0
    }

    /// Writes the JSON report, the HTML page and the CSV directory that were asked for.
    static func write(_ report: FleetReport, json: String?, html: String?, csv: String?, say: (String) -> Void) throws {
        if let p = json { try report.json().write(to: URL(fileURLWithPath: p)) }
        if let p = html { try Data(HTMLReport.render(report).utf8).write(to: URL(fileURLWithPath: p)) }
        if let d = csv { try CSVReport.write(report, to: d) }
        for p in [json, html, csv].compactMap({ $0 }) { say("report written: \(p)") }
    }

    /// Exit 99 with one line naming the failed rules, or nil when every threshold passed.
    static func thresholdFailure(_ report: FleetReport, stderr: (String) -> Void) -> Int32? {
        let all = report.thresholds ?? []
        let failed = all.filter { !$0.passed }
        guard !failed.isEmpty else { return nil }
        stderr("fleetsim: \(failed.count) of \(all.count) thresholds failed: " + failed.map(\.threshold.expression).joined(separator: ", "))
        return Threshold.exitCode
    }
}

/// `--workers K`: K child processes of this executable, each with a slice of the devices and its
/// own source address(es); their JSON reports are merged into one.
public struct WorkerPool {
    public var options: FleetOptions
    var output: (String) -> Void
    public var executable = "/proc/self/exe"

    public init(options: FleetOptions, output: @escaping (String) -> Void) { self.options = options; self.output = output }

    /// Device slices: (first index, count) per worker.
    public static func slices(devices: Int, workers: Int, first: Int = 0) -> [(first: Int, count: Int)] {
        let base = devices / workers, extra = devices % workers
        var start = first
        return (0..<workers).map { i in
            let n = base + (i < extra ? 1 : 0)
            defer { start += n }
            return (start, n)
        }
    }

    /// Source addresses per worker: a share of the given list, or 127.0.0.(i+1).
    public static func sources(_ given: [String], workers: Int) -> [[String]] {
        if given.count >= workers {
            return (0..<workers).map { w in given.enumerated().filter { $0.offset % workers == w }.map(\.element) }
        }
        return (0..<workers).map { ["127.0.0.\($0 + 1)"] }
    }

    public func run(stop: StopFlag) throws(FleetError) -> FleetReport {
        let k = options.workers
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fleetsim-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let srcs = Self.sources(options.sourceAddresses, workers: k)
        var workers: [ChildProcess] = []
        var paths: [String] = []
        for (i, slice) in Self.slices(devices: options.devices, workers: k, first: options.firstIndex).enumerated() {
            let path = dir.appendingPathComponent("worker-\(i).json").path
            paths.append(path)
            let args = options.workerArguments(first: slice.first, count: slice.count, source: srcs[i], report: path)
            do {
                workers.append(try ChildProcess.spawn(executable, args, inheritOutput: true))
            } catch {
                workers.forEach { $0.signal(SIGTERM) }
                throw .runtime("cannot start worker \(i): \(error)")
            }
        }
        output("started \(k) workers (pids \(workers.map { String($0.pid) }.joined(separator: " "))) for \(options.devices) devices")
        var forwarded = false
        var failures: [String] = []
        // Each worker's exit is awaited on its pidfd; the 100 ms bound only lets Ctrl-C be forwarded.
        for w in workers {
            while !w.waitForExit(timeout: .milliseconds(100)) {
                if stop.isRequested && !forwarded { forwarded = true; workers.forEach { $0.signal(SIGINT) } }
            }
        }
        for w in workers where w.exitStatus != 0 {
            failures.append("worker pid \(w.pid) exited with status \(w.exitStatus ?? -1)")
        }
        let reports = paths.compactMap { p -> FleetReport? in
            guard let d = FileManager.default.contents(atPath: p) else { return nil }
            return try? FleetReport.decode(d)
        }
        guard var merged = FleetReport.merge(reports) else {
            throw .runtime("no worker produced a report (\(failures.joined(separator: "; ")))")
        }
        merged.problems += failures
        if reports.count < k { merged.problems.append("only \(reports.count) of \(k) workers produced a report") }
        if forwarded { merged.stoppedBy = "signal" }
        return merged
    }
}
