import Foundation
import POSIX

/// Runs a short-lived command to completion (bounded by `timeout`) and returns its combined output;
/// throws with that output on failure. Output goes through a temp file, never a pipe, so a concurrently
/// spawned process can never hold the write end open.
@discardableResult
public func runCommand(_ executable: String, _ arguments: [String], installHint: String? = nil,
                       timeout: Duration = .seconds(60)) throws -> String {
    guard FileManager.default.isExecutableFile(atPath: executable) else {
        throw TestSupportError("\(executable) not found" + (installHint.map { "; install it with `\($0)`" } ?? ""))
    }
    let scratch = try TempDirectory(prefix: "cmd")
    let outputPath = scratch.file("output")
    let child = try ChildProcess.spawn(executable, arguments, stdout: outputPath)
    let finished = child.waitForExit(timeout: timeout)
    let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    let command = ([executable] + arguments).joined(separator: " ")
    guard finished else {
        child.signal(SIGKILL)
        throw TestSupportError("\(command) did not finish within \(timeout): \(text)")
    }
    guard child.exitStatus == 0 else {
        throw TestSupportError("\(command) failed (exit status \(child.exitStatus ?? -1)): \(text)")
    }
    return text
}

/// Runs a short-lived command to completion (bounded by `timeout`) and returns its exit status and
/// combined output, whatever the status.
public func runCommandStatus(_ executable: String, _ arguments: [String], timeout: Duration = .seconds(60)) throws -> (status: Int32, output: String) {
    let scratch = try TempDirectory(prefix: "cmd")
    let outputPath = scratch.file("output")
    let child = try ChildProcess.spawn(executable, arguments, stdout: outputPath)
    guard child.waitForExit(timeout: timeout) else {
        child.signal(SIGKILL)
        throw TestSupportError("\(([executable] + arguments).joined(separator: " ")) did not finish within \(timeout)")
    }
    return (child.exitStatus ?? -1, (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")
}

/// Finds an executable in the usual system directories.
public func locateExecutable(_ name: String) -> String? {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin", "/bin"] {
        let path = dir + "/" + name
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

/// A child process whose stdout and stderr go to a file, with waits that are events: its output
/// file being written (inotify) or its exit (pidfd), each bounded.
public final class SpawnedProcess: Sendable {
    public let child: ChildProcess
    public let outputPath: String
    private let scratch: TempDirectory
    private let watch: FileWatch

    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws {
        scratch = try TempDirectory(prefix: "spawn")
        outputPath = scratch.file("output")
        guard FileManager.default.createFile(atPath: outputPath, contents: nil) else { throw TestSupportError("cannot create \(outputPath)") }
        watch = try FileWatch(outputPath) // before the child starts: no write goes unseen
        child = try ChildProcess.spawn(executable, arguments, stdout: outputPath, environment: environment)
    }

    /// Everything it printed so far.
    public var text: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    /// Waits until `predicate(text)` holds, the process exits or `timeout` passes; the predicate's last answer.
    @discardableResult
    public func wait(until predicate: (String) -> Bool, timeout: Duration = .seconds(5)) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            if predicate(text) { return true }
            let left = ContinuousClock.now.duration(to: deadline)
            if left <= .zero || !child.isRunning { return predicate(text) }
            watch.wait(milliseconds: Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1),
                       orExitOf: child)
        }
    }

    /// Waits for its exit (killing it after `timeout`); its exit status.
    public func finish(timeout: Duration = .seconds(10)) -> Int32 {
        if !child.waitForExit(timeout: timeout) { kill() }
        return child.exitStatus ?? -1
    }

    public func kill() {
        guard child.isRunning else { return }
        child.signal(SIGKILL)
        _ = child.waitUntilExit()
    }
}
