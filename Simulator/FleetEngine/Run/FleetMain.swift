import Foundation
import POSIX
import EscrowCore
import Glibc

/// The whole `fleetsim` command: parse, validate, run (in-process or as workers), report.
/// `main.swift` only calls `FleetMain.run`; everything here is testable.
public enum FleetMain {
    /// Returns the process exit code: 0 ok, 1 run failed, 64 usage, 99 a threshold failed, 130 Ctrl-C.
    public static func run(_ args: [String], stop: StopFlag = StopFlag(),
                           stdout: (String) -> Void = { print($0) },
                           stderr: @escaping (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) -> Int32 {
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
        var report: FleetReport
        do {
            if options.scenario == .transfer {
                report = try TransferRunner(options: options, output: stderr).run(stop: stop)
            } else if options.workers > 1 {
                report = try WorkerPool(options: options, output: stderr).run(stop: stop)
            } else {
                report = try FleetRunner(options: options, output: stderr).run(stop: stop)
            }
        } catch {
            stderr("fleetsim: \(error.description)")
            if case .usage = error { return 64 } // an input checked before the first connection
            return 1
        }
        if !options.thresholds.isEmpty && !options.isWorker { report.thresholds = options.thresholds.map { $0.evaluate(report) } }
        if !options.isWorker { stdout(report.summaryTable) }
        for t in report.thresholds ?? [] { stdout(t.line) }
        do {
            if let p = options.reportPath { try report.json().write(to: URL(fileURLWithPath: p)) }
            if let p = options.htmlPath { try Data(HTMLReport.render(report).utf8).write(to: URL(fileURLWithPath: p)) }
            for p in [options.reportPath, options.htmlPath].compactMap({ $0 }) where !options.isWorker { stdout("report written: \(p)") }
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
        let failed = (report.thresholds ?? []).filter { !$0.passed }
        if !failed.isEmpty {
            stderr("fleetsim: \(failed.count) of \(report.thresholds!.count) thresholds failed: " + failed.map(\.threshold.expression).joined(separator: ", "))
            return Threshold.exitCode
        }
        // Ctrl-C: the partial report is written; say so in the status (workers end normally for the parent).
        if report.stoppedBy == "signal" && !options.isWorker { return 130 }
        return 0
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
        while workers.contains(where: \.isRunning) {
            if stop.isRequested && !forwarded { forwarded = true; workers.forEach { $0.signal(SIGINT) } }
            usleep(100_000)
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
