import Foundation
import POSIX
import TestSupport

/// What one run of a built executable produced.
struct CLIResult: Sendable, CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String
    var description: String { "exit \(status)\n--- stdout\n\(stdout)--- stderr\n\(stderr)" }
}

/// The built `escrowctl`: next to the test bundle (`.build/<triple>/debug`), else `.build/debug` of this checkout.
func escrowctlPath() throws -> String {
    var candidates: [String] = []
    let runner = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    candidates.append(runner.deletingLastPathComponent().appendingPathComponent("escrowctl").path)
    // macOS bundles: .../debug/EscrowFleetPackageTests.xctest/Contents/MacOS/...
    candidates.append(Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("escrowctl").path)
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    candidates.append(root.appendingPathComponent(".build/debug/escrowctl").path)
    for c in candidates where FileManager.default.isExecutableFile(atPath: c) { return c }
    throw TestSupportError("escrowctl is not built (looked in \(candidates.joined(separator: ", "))); run `swift build --product escrowctl` first")
}

/// Runs the built escrowctl with `args` and exactly `env` (nothing inherited, so no ESCROW_* leaks in),
/// in `directory` (a fresh empty one by default, so no ./escrow-data/admin.conf is picked up).
/// Gives up after `timeout` (the process is then killed and the status is -1).
///
/// The wait for the child runs on a thread of its own: on 2 cores the cooperative pool has two
/// threads, and tests that held them while escrowctl ran starved every other suite into its
/// time limit.
func runCLI(_ args: [String], env: [String: String] = [:], in directory: String? = nil,
            timeout: Duration = .seconds(60)) async throws -> CLIResult {
    try await offPool { try runCLIBlocking(args, env: env, in: directory, timeout: timeout) }
}

private func runCLIBlocking(_ args: [String], env: [String: String], in directory: String?,
                            timeout: Duration) throws -> CLIResult {
    let executable = try escrowctlPath()
    let scratch = try TempDirectory(prefix: "escrowctl-run")
    let outPath = scratch.file("stdout"), errPath = scratch.file("stderr")
    // posix_spawn with the output files opened in the child (POSIX.ChildProcess), not Foundation's
    // Process: with several launches at once, Process returned empty stdout for runs that exited 0.
    let child = try ChildProcess.spawn(executable, args, stdout: outPath, stderr: errPath,
                                       environment: ["PATH": "/usr/bin:/bin", "HOME": scratch.path].merging(env) { $1 },
                                       directory: directory ?? scratch.path)
    let exited = child.waitForExit(timeout: timeout)
    if !exited { child.terminate(grace: .seconds(1)) }
    return CLIResult(status: exited ? (child.exitStatus ?? -1) : -1,
                     stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
                     stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
}

/// Environment for an operator: broker, credentials and the account acted in.
func operatorEnv(broker: String, user: String? = nil, password: String? = nil, account: String? = nil) -> [String: String] {
    var env = ["ESCROW_BROKER": broker]
    env["ESCROW_USER"] = user
    env["ESCROW_PASSWORD"] = password
    env["ESCROW_ACCOUNT"] = account
    return env
}
