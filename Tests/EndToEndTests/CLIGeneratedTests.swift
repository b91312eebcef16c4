import Foundation
import Testing
import OperatorCLI
import TestSupport

/// Completion scripts and the man page come from the same command definitions as the parser.
@Suite("escrowctl completion and man page")
struct CLIGeneratedTests {
    @Test("the bash script is valid bash and completes every command, subcommand and option")
    func bashCompletion() async throws {
        let r = try await runCLI(["completion", "bash"])
        #expect(r.status == 0, "\(r)")
        let scratch = try TempDirectory(prefix: "completion")
        let file = scratch.file("escrowctl.bash")
        try r.stdout.write(toFile: file, atomically: true, encoding: .utf8)
        // Source it and ask for completions the way bash does on <TAB>.
        func complete(_ words: [String]) throws -> [String] {
            let script = """
                source \(file)
                COMP_WORDS=(\(words.map { "'\($0)'" }.joined(separator: " "))); COMP_CWORD=\(words.count - 1)
                _escrowctl; printf '%s\\n' "${COMPREPLY[@]}"
                """
            return try runCommand("/bin/bash", ["-c", script]).split(separator: "\n").map(String.init)
        }
        for spec in CLI.commands.map({ $0.spec }) {
            #expect(try complete(["escrowctl", ""]).contains(spec.path[0]), "\(spec.name)")
            if spec.path.count == 2 { #expect(try complete(["escrowctl", spec.path[0], ""]).contains(spec.path[1]), "\(spec.name)") }
            let options = try complete(["escrowctl"] + spec.path + ["--"])
            for o in spec.valued.union(spec.booleans) { #expect(options.contains("--" + o), "\(spec.name) --\(o)") }
            #expect(options.contains("--broker") && options.contains("--json"))
        }
        #expect(try complete(["escrowctl", "dev"]) == ["device"])
        #expect(try complete(["escrowctl", "transfer", "app"]) == ["approve"])
        #expect(try complete(["escrowctl", "completion", ""]) == ["bash", "zsh"])
    }

    @Test("zsh gets a #compdef script; a missing shell is a usage error")
    func zshCompletion() async throws {
        let z = try await runCLI(["completion", "zsh"])
        #expect(z.status == 0 && z.stdout.hasPrefix("#compdef escrowctl\n") && z.stdout.contains("bashcompinit"), "\(z)")
        let missing = try await runCLI(["completion"])
        #expect(missing.status == 64 && missing.stderr.contains("bash or zsh"), "\(missing)")
    }

    @Test("the man page is roff with every command, its usage and examples, the exit codes and the environment")
    func manPage() async throws {
        let r = try await runCLI(["man"])
        #expect(r.status == 0 && r.stdout.hasPrefix(".TH ESCROWCTL 1 "), "\(r)")
        for spec in CLI.commands.map({ $0.spec }) {
            #expect(r.stdout.contains(".SS \(spec.name.replacingOccurrences(of: "-", with: "\\-"))\n"), "\(spec.name)")
            for example in spec.examples { #expect(r.stdout.contains(example.replacingOccurrences(of: "\\", with: "\\e").replacingOccurrences(of: "-", with: "\\-")), "\(example)") }
        }
        #expect(r.stdout.contains(".SH EXIT STATUS") && r.stdout.contains("ESCROW_PASSWORD"))
        // No line may start with a control character by accident (an example beginning with '.').
        for line in r.stdout.split(separator: "\n") where line.hasPrefix(".") {
            #expect(["TH", "SH", "SS", "PP", "nf", "fi", "B"].contains(line.dropFirst().split(separator: " ").first.map(String.init) ?? ""), "\(line)")
        }
    }
}
