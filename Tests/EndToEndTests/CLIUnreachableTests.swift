import Foundation
import Testing
import TestSupport
import EscrowCore

/// The built escrowctl binary, without escrowd: help, usage errors, an unreachable broker, no reply.
@Suite("escrowctl binary without escrowd")
struct CLIUnreachableTests {
    @Test("a closed broker port exits 69 with one line on stderr")
    func unreachable() async throws {
        let port = try freePort()
        let r = try await runCLI(["--broker", "mqtt://127.0.0.1:\(port)", "--account", "oem", "device", "list"])
        #expect(r.status == 69, "\(r)")
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(r)")
        #expect(r.stderr.hasPrefix("escrowctl: unreachable: cannot reach the broker at mqtt://127.0.0.1:\(port)"), "\(r)")
        #expect(r.stdout.isEmpty)
    }

    @Test("the broker URL and account may come from the environment")
    func unreachableFromEnvironment() async throws {
        let port = try freePort()
        let r = try await runCLI(["transfer", "inbox"], env: operatorEnv(broker: "mqtt://127.0.0.1:\(port)", account: "oem"))
        #expect(r.status == 69, "\(r)")
    }

    @Test("--help exits 0 and lists the commands by purpose")
    func help() async throws {
        let r = try await runCLI(["--help"])
        #expect(r.status == 0, "\(r)")
        for text in ["DEVICES", "TRANSFERS", "CONFIGURATION", "device provision", "transfer approve", "tail", "WALK-THROUGH"] {
            #expect(r.stdout.contains(text), "missing \(text)")
        }
        let sub = try await runCLI(["transfer", "request", "--help"])
        #expect(sub.status == 0 && sub.stdout.contains("EXAMPLES"), "\(sub)")
    }

    @Test("an unknown command exits 64 and lists the commands")
    func unknownCommand() async throws {
        let r = try await runCLI(["frobnicate"])
        #expect(r.status == 64, "\(r)")
        #expect(r.stderr.hasPrefix("escrowctl: usage: unknown command 'frobnicate'"), "\(r)")
        #expect(r.stderr.contains("device provision"))
    }

    @Test("a missing argument exits 64 and prints that command's usage")
    func missingArgument() async throws {
        let r = try await runCLI(["--account", "oem", "transfer", "approve", "tr-1"])
        #expect(r.status == 64, "\(r)")
        #expect(r.stderr.contains("--activate or --hold") && r.stderr.contains("escrowctl transfer approve TID"), "\(r)")
    }

    @Test("a broker without escrowd: no reply within --timeout exits 75 and says escrowd may be down")
    func noReply() async throws {
        let broker = try await MosquittoBroker()
        let r = try await runCLI(["--broker", broker.url, "--account", "oem", "--timeout", "1s", "device", "list"])
        #expect(r.status == 75, "\(r)")
        #expect(r.stderr.hasPrefix("escrowctl: timeout: no reply to device.list in account oem within 1 s (request id "), "\(r)")
        #expect(r.stderr.contains("escrowd may be down"), "\(r)")
    }

    @Test("a broker that refuses the login exits 77")
    func refusedLogin() async throws {
        let broker = try await MosquittoBroker(BrokerConfig(allowAnonymous: false, passwords: ["op-admin": "right-password"]))
        let r = try await runCLI(["--broker", broker.url, "--user", "op-admin", "--password", "wrong", "--account", "oem", "--timeout", "3s", "device", "list"])
        #expect(r.status == 77, "\(r)")
        #expect(r.stderr.hasPrefix("escrowctl: refused:"), "\(r)")
    }

    @Test("with --json every error is one JSON object on stderr with its code, exit status and hint; stdout stays empty")
    func jsonErrors() async throws {
        let broker = try await MosquittoBroker(BrokerConfig(allowAnonymous: false, passwords: ["op-admin": "right-password"]))
        let refused = try await runCLI(["--json", "--broker", broker.url, "--user", "op-admin", "--password", "wrong", "--account", "oem", "--timeout", "3s", "device", "list"])
        #expect(refused.status == 77 && refused.stdout.isEmpty, "\(refused)")
        let object = try JSONDecoder().decode(JSONValue.self, from: Data(refused.stderr.utf8))
        #expect(object["error"]?["code"] == .string("refused") && object["error"]?["exit"] == .number(77), "\(refused)")
        #expect(object["error"]?["hint"]?.stringValue?.contains("--password") == true, "\(refused)")
        let usage = try await runCLI(["--json", "device", "provision", "--prefix", "sn-", "--count", "x"])
        let u = try JSONDecoder().decode(JSONValue.self, from: Data(usage.stderr.utf8))
        #expect(usage.status == 65 && u["error"]?["code"] == .string("invalid_argument") && u["error"]?["exit"] == .number(65), "\(usage)")
    }
}
