import Foundation
import Testing
import EscrowCore
import POSIX
import TestSupport

/// README.md's "An operator's walk-through", run as written: every `$ ` line of the section is
/// executed (exports carry over, `&` runs in the background, "in another terminal" runs beside the
/// rest) against a real escrowd, and every output is compared with the README's, with transfer ids,
/// times, fingerprints and hashes masked. Transfer ids the README shows are replaced by the real
/// ones in later commands, as a reader does.
@Suite("README walk-through", .timeLimit(.minutes(3)))
struct ReadmeWalkthroughTests {
    struct Step: Equatable {
        var command: String
        var expected: [String]
        var background: Bool { command.range(of: #"&\s*(#.*)?$"#, options: .regularExpression) != nil }
        var anotherTerminal: Bool { command.contains("# in another terminal") }
    }

    /// The `$ ` lines of the walk-through section, each with the lines it prints.
    static func steps(_ readme: String) throws -> [Step] {
        let start = try #require(readme.range(of: "## An operator's walk-through"), "README.md has no walk-through section")
        let rest = readme[start.upperBound...]
        let section = rest.range(of: "\n## ").map { rest[..<$0.lowerBound] } ?? rest
        var steps: [Step] = []
        var inBlock = false, current: Int?
        for line in section.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("```") { inBlock.toggle(); current = nil; continue }
            guard inBlock else { continue }
            if line.hasPrefix("$ ") {
                steps.append(Step(command: String(line.dropFirst(2)), expected: []))
                current = steps.count - 1
            } else if let current {
                steps[current].expected.append(line)
            }
        }
        for i in steps.indices {
            while steps[i].expected.last?.trimmingCharacters(in: .whitespaces).isEmpty == true { steps[i].expected.removeLast() }
        }
        return steps
    }

    static let transferID = #"tr-[0-9a-f]{8}-[0-9a-f]{4}"#

    /// Masks what differs between runs.
    static func normalize(_ line: String) -> String {
        var l = line
        for (pattern, mask) in [(transferID, "tr-ID"), (#"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"#, "TIME"),
                                (#"\b[0-9a-f]{64}\b"#, "FINGERPRINT"), (#"\b[0-9a-f]{12}\b"#, "HASH")] {
            l = l.replacingOccurrences(of: pattern, with: mask, options: .regularExpression)
        }
        while l.last == " " { l.removeLast() }
        return l
    }

    static func ids(_ lines: [String]) -> [String] {
        lines.flatMap { line in
            let ns = line as NSString
            return (try! NSRegularExpression(pattern: transferID)).matches(in: line, range: NSRange(location: 0, length: ns.length)).map { ns.substring(with: $0.range) }
        }
    }

    /// Commands that only read: a mismatch may be the platform still converging, so they are re-run
    /// until they match or 20 s pass.
    static func readOnly(_ command: String) -> Bool {
        ["config status", "device show", "device list", "transfer show", "transfer inbox"].contains { command.contains("escrowctl " + $0) }
    }

    @Test("the section parses into the commands a reader types")
    func parsing() throws {
        let steps = try Self.steps(try String(contentsOfFile: Self.readmePath, encoding: .utf8))
        #expect(steps.count >= 20)
        #expect(steps.filter(\.background).count == 1 && steps.filter(\.anotherTerminal).count == 1)
        #expect(steps.allSatisfy { $0.command.hasPrefix("escrowctl ") || $0.command.hasPrefix("export ") || $0.command.hasPrefix("escrow-agent ") })
        #expect(Self.normalize("transfer tr-e6153a6c-12e6 requested, expires 2026-12-06T10:08:51Z  ") == "transfer tr-ID requested, expires TIME")
    }

    static var readmePath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("README.md").path
    }

    @Test("every command of README.md's walk-through runs as written and prints what the README shows")
    func walkthrough() async throws {
        let steps = try Self.steps(try String(contentsOfFile: Self.readmePath, encoding: .utf8))
        let escrowd = try await EscrowdProcess()
        defer { escrowd.stop() }
        let work = try TempDirectory(prefix: "readme")
        var environment = ["PATH": Products.directory + ":/usr/bin:/bin", "HOME": work.path,
                           "ESCROW_CONFIG": escrowd.dataDirectory + "/admin.conf"]
        var idMap: [String: String] = [:]
        var background: [(step: Step, process: ChildProcess, output: String)] = []
        defer { for b in background where b.process.isRunning { b.process.signal(SIGKILL) } }

        func run(_ command: String, output: String) throws -> ChildProcess {
            try ChildProcess.spawn("/bin/bash", ["-c", "cd '\(work.path)' && exec \(command)"], stdout: output, environment: environment)
        }
        func text(_ path: String) -> [String] {
            ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
                .reversed().drop(while: { $0.isEmpty }).reversed()
        }

        for (n, step) in steps.enumerated() {
            var command = step.command
            for (shown, real) in idMap { command = command.replacingOccurrences(of: shown, with: real) }
            if command.hasPrefix("export ") {
                for pair in command.dropFirst(7).split(separator: " ") {
                    let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
                    if kv.count == 2 { environment[kv[0]] = kv[1] }
                }
                continue
            }
            let output = work.file("step-\(n).out")
            if step.background {
                let bare = command.replacingOccurrences(of: #"&\s*(#.*)?$"#, with: "", options: .regularExpression)
                background.append((step, try run(bare, output: output), output))
                continue
            }
            if step.anotherTerminal {
                let process = try run(command, output: output)
                background.append((step, process, output))
                // Its first line is printed once it follows the events: only then does the story go on.
                try await waitUntil(timeout: .seconds(20), "'\(step.command)' follows the events") {
                    text(output).first?.contains("following events") == true || !process.isRunning
                }
                continue
            }
            let deadline = ContinuousClock.now + .seconds(20)
            var actual: [String] = []
            while true {
                try? FileManager.default.removeItem(atPath: output)
                let process = try run(command, output: output)
                guard process.waitForExit(timeout: .seconds(30)) else {
                    process.signal(SIGKILL)
                    Issue.record("README step `\(step.command)` did not finish within 30 s")
                    return
                }
                actual = text(output)
                let matches = actual.map(Self.normalize) == step.expected.map(Self.normalize) && process.exitStatus == 0
                if matches || !Self.readOnly(command) || ContinuousClock.now >= deadline { break }
            }
            #expect(actual.map(Self.normalize) == step.expected.map(Self.normalize),
                    "README step `\(step.command)` printed:\n\(actual.joined(separator: "\n"))\n--- the README shows:\n\(step.expected.joined(separator: "\n"))")
            for (shown, real) in zip(Self.ids(step.expected), Self.ids(actual)) where idMap[shown] == nil { idMap[shown] = real }
        }
        for b in background where b.step.anotherTerminal {
            let stopped = (try? await waitUntil(timeout: .seconds(20), "'\(b.step.command)' prints its events and stops") { !b.process.isRunning }) != nil
            let actual = text(b.output)
            #expect(stopped, "README step `\(b.step.command)` did not stop within 20 s; it printed:\n\(actual.joined(separator: "\n"))")
            #expect(actual.map(Self.normalize).sorted() == b.step.expected.map(Self.normalize).sorted(),
                    "README step `\(b.step.command)` printed (in any order):\n\(actual.joined(separator: "\n"))\n--- the README shows:\n\(b.step.expected.joined(separator: "\n"))")
        }
    }
}
