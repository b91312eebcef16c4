import EscrowCore
import Foundation
import MQTT
@testable import OperatorCLI
import Testing
import TestSupport

/// Parses with a fixed environment and no config file on disk.
private func parse(_ argv: [String], env: [String: String] = ["ESCROW_ACCOUNT": "oem"],
                   files: [String: String] = [:]) throws(CLIUsageError) -> CLI.Parsed {
    try CLI.parse(argv, environment: env, readFile: { files[$0] })
}

private func invocation(_ argv: [String], env: [String: String] = ["ESCROW_ACCOUNT": "oem"],
                        files: [String: String] = [:]) throws -> CLI.Invocation {
    guard case .run(let i) = try parse(argv, env: env, files: files) else { throw TestSupportError("\(argv) parsed as help") }
    return i
}

private func usageError(_ argv: [String], env: [String: String] = ["ESCROW_ACCOUNT": "oem"]) -> CLIUsageError? {
    do { _ = try parse(argv, env: env); return nil } catch { return error }
}

@Suite("escrowctl parsing and validation")
struct CLIParsingTests {
    @Test("unknown commands and options are usage errors that show the relevant usage")
    func unknown() throws {
        let e = try #require(usageError(["frobnicate"]))
        #expect(e.message.contains("unknown command 'frobnicate'"))
        #expect(e.usage.contains("device provision"))
        let sub = try #require(usageError(["device", "frob"]))
        #expect(sub.message.contains("device frob") && sub.usage.contains("device list"))
        let opt = try #require(usageError(["device", "list", "--colour"]))
        #expect(opt.message.contains("--colour") && opt.usage.contains("escrowctl device list"))
        #expect(usageError([]) != nil)
        #expect(usageError(["device"])?.message.contains("needs a subcommand") == true)
        #expect(usageError(["device", "show"])?.message.contains("missing ID") == true)
        #expect(usageError(["device", "show", "a", "b"])?.message.contains("unexpected argument 'b'") == true)
        #expect(usageError(["device", "list", "-x"]) != nil)
        // Did you mean, for commands, subcommands and options alike.
        #expect(usageError(["devcie", "list"])?.message.contains("did you mean device?") == true)
        #expect(usageError(["device", "lsit"])?.message.contains("did you mean device list?") == true)
        #expect(usageError(["device", "list", "--limt", "3"])?.message.contains("did you mean --limit?") == true)
    }

    @Test("--help anywhere, `help CMD` and `CMD --help` print help instead of running")
    func help() throws {
        for argv in [["--help"], ["-h"], ["help"], ["device", "--help"], ["device", "provision", "--help"], ["help", "transfer", "approve"],
                     ["tail", "--help"], ["--account", "x", "device", "show", "--help"]] {
            guard case .help(let text) = try parse(argv, env: [:]) else { Issue.record("\(argv) did not give help"); continue }
            #expect(!text.isEmpty)
        }
        guard case .help(let top) = try parse(["--help"]) else { return }
        for group in CommandSpec.Group.allCases { #expect(top.contains(group.rawValue)) }
        #expect(top.contains("WALK-THROUGH") && top.contains("transfer approve tr-... --hold"))
        guard case .help(let provision) = try parse(["device", "provision", "--help"]) else { return }
        #expect(provision.contains("USAGE") && provision.contains("EXAMPLES") && provision.contains("--out DIR"))
    }

    @Test("every command documents its usage with examples, and every command name is reachable")
    func specs() throws {
        let names = CLI.commands.map { $0.spec.name }
        #expect(Set(names).count == names.count)
        #expect(names.count == 28)
        for type in CLI.commands {
            let spec = type.spec
            #expect(!spec.examples.isEmpty, "\(spec.name) has no examples")
            #expect(spec.examples.allSatisfy { $0.contains("escrowctl ") && $0.contains(spec.name) }, "\(spec.name) examples")
            #expect(spec.help.contains("EXAMPLES") && spec.help.contains("escrowctl \(spec.path[0])"))
            guard case .help = try parse(spec.path + ["--help"]) else { Issue.record("\(spec.name) --help"); continue }
        }
    }

    @Test("required options of every command", arguments: [
        ["account", "create", "acme", "--kind", "reseller"],
        ["account", "create", "acme", "--name", "Acme"],
        ["account", "create", "acme", "--name", "Acme", "--kind", "oem"],
        ["account", "create", "bad/id", "--name", "A", "--kind", "customer"],
        ["account", "create", "acme", "--name", "A", "--kind", "customer", "--managed-by", "x y"],
        ["operator", "create", "op-alice"],
        ["operator", "create", "alice", "--account", "oem"],
        ["operator", "create", "op-alice", "--account", "oem", "--password", "short"],
        ["device", "provision"],
        ["device", "provision", "--prefix", "sn-"],
        ["device", "provision", "--ids", "a", "--csv", "f.csv"],
        ["device", "provision", "--ids", "a", "--count", "3"],
        ["device", "provision", "--ids", "a b"],
        ["device", "provision", "--prefix", "sn-", "--count", "0"],
        ["device", "provision", "--prefix", "sn-", "--count", "x"],
        ["device", "provision", "--prefix", "sn/", "--count", "2"],
        ["device", "list", "--state", "gone"],
        ["device", "list", "--limit", "0"],
        ["device", "show"],
        ["device", "retire"],
        ["device", "retire", "a", "not an id!"],
        ["device", "retire", "a", "--reason", ""],
        ["transfer", "request", "--ids", "a"],
        ["transfer", "request", "--to", "resell"],
        ["transfer", "request", "--to", "resell", "--ids", "a", "--prefix", "sn-"],
        ["transfer", "request", "--to", "resell", "--ids", "a", "--count", "2"],
        ["transfer", "request", "--to", "resell", "--ids", "a", "--expires", "soon"],
        ["transfer", "request", "--to", "resell", "--ids", "a", "--expires", "91d"],
        ["transfer", "inbox", "--incoming", "--outgoing"],
        ["transfer", "inbox", "--status", "lost"],
        ["transfer", "show"],
        ["transfer", "approve", "tr-1"],
        ["transfer", "approve", "tr-1", "--activate", "--hold"],
        ["transfer", "approve", "tr-1", "--hold", "--profile", "office"],
        ["transfer", "reject", "tr-1"],
        ["transfer", "cancel"],
        ["profile", "put", "office"],
        ["profile", "put", "office", "--settings", "[1,2]"],
        ["profile", "put", "office", "--settings", "{}", "--settings-file", "f"],
        ["profile", "put", "office", "--settings", "{}", "--heartbeat", "1.5"],
        ["config", "push"],
        ["config", "push", "--ids", "a", "--all"],
        ["config", "push", "--all", "--profile", "p", "--settings", "{}"],
        ["tail", "--type", "transfer.done"],
        ["tail", "--for", "later"],
        ["tail", "--count", "0"],
        ["device", "list", "--timeout", "0s"],
        ["device", "list", "--request-id", "has space"],
        ["device", "list", "--broker", "localhost"],
    ])
    func requiredOptions(_ argv: [String]) {
        #expect(usageError(argv) != nil, "\(argv) should be a usage error")
    }

    @Test("valid command lines", arguments: [
        ["account", "create", "acme", "--name", "Acme", "--kind", "provisioner"],
        ["account", "list"],
        ["operator", "create", "op-alice", "--account", "oem"],
        ["device", "provision", "--prefix", "sn-", "--count", "10"],
        ["device", "provision", "--ids", "a,b", "--ids", "c", "--out", "/tmp/x"],
        ["device", "provision", "--csv", "f.csv"],
        ["device", "list", "--state", "escrow", "--online", "--prefix", "sn", "--limit", "5"],
        ["device", "show", "sn-000001"],
        ["device", "retire", "sn-000001"],
        ["device", "retire", "sn-000001", "sn-000002", "--reason", "water damage"],
        ["device", "list", "--state", "retired"],
        ["transfer", "request", "--to", "resell", "--prefix", "sn-", "--count", "5", "--note", "PO 1", "--expires", "2d"],
        ["transfer", "request", "--to", "resell", "--csv", "f.csv"],
        ["transfer", "inbox", "--incoming", "--status", "partially_approved"],
        ["transfer", "show", "tr-1"],
        ["transfer", "approve", "tr-1", "--activate", "--profile", "office", "--ids", "a"],
        ["transfer", "reject", "tr-1", "--reason", "wrong model"],
        ["transfer", "cancel", "tr-1"],
        ["profile", "put", "office", "--settings", "{\"ntp\":\"pool\"}", "--heartbeat", "5m", "--default"],
        ["profile", "list"],
        ["config", "push", "--all", "--profile", "office"],
        ["config", "status", "--ids", "a,b"],
        ["tail", "--type", "transfer.requested,device.online", "--device", "sn-1", "--count", "3", "--for", "30s"],
        ["--json", "--quiet", "--timeout", "500ms", "--request-id", "retry-1", "device", "list"],
    ])
    func valid(_ argv: [String]) throws {
        _ = try invocation(argv)
    }

    @Test("parsed values reach the command's arguments")
    func values() throws {
        let p = try #require(try invocation(["device", "provision", "--prefix", "sn-", "--count", "2500", "--start", "11"]).command as? DeviceCommands.Provision)
        #expect(p.selection == .range(prefix: "sn-", count: 2500, start: 11))
        let batches = try p.batches()
        #expect(batches.map(\.count) == [1000, 1000, 500])
        #expect(batches.map(\.start) == [11, 1011, 2011])
        let retire = try #require(try invocation(["device", "retire", "sn-1", "sn-2", "--reason", "RMA 7781"]).command as? DeviceCommands.Retire)
        #expect(retire.args == Commands.DeviceRetire(deviceIds: ["sn-1", "sn-2"], reason: "RMA 7781"))
        let ids = try #require(try invocation(["device", "provision", "--ids", "a,b", "--ids", " c "]).command as? DeviceCommands.Provision)
        #expect(ids.selection == .ids(["a", "b", "c"]))
        let many = DeviceCommands.Provision(selection: .ids((1...2001).map { DeviceID("d\($0)")! }), out: nil)
        #expect(try many.batches().map { $0.deviceIds?.count } == [1000, 1000, 1])

        let approve = try #require(try invocation(["transfer", "approve", "tr-9", "--activate", "--ids", "x,y"]).command as? TransferCommands.Approve)
        #expect(approve.args == .init(transferId: "tr-9", deviceIds: ["x", "y"], action: .activate))
        let request = try #require(try invocation(["transfer", "request", "--to", "resell", "--prefix", "sn-", "--expires", "2d"]).command as? TransferCommands.Request)
        #expect(request.devices == .prefix("sn-", count: nil) && request.expiresIn == 2 * 86400 && request.to == "resell")
        let list = try #require(try invocation(["device", "list", "--state", "active", "--online"]).command as? DeviceCommands.List)
        #expect(list.args == .init(state: .active, online: true))
        let put = try #require(try invocation(["profile", "put", "p", "--settings", "{\"a\":1}", "--heartbeat", "2m"]).command as? ConfigCommands.ProfilePut)
        #expect(put.settings == ["a": .number(1)] && put.heartbeat == 120 && !put.makeDefault)
        let tail = try #require(try invocation(["tail", "--type", "device.online,device.offline", "--for", "1m"]).command as? TailCommand)
        #expect(tail.types == [.deviceOnline, .deviceOffline] && tail.duration == .seconds(60))
        let inbox = try #require(try invocation(["transfer", "inbox", "--outgoing"]).command as? TransferCommands.Inbox)
        #expect(inbox.args.direction == .outgoing)
    }

    @Test("platform commands act in 'platform'; operator create's --account is the operator's home account")
    func platformAccount() throws {
        let create = try invocation(["account", "create", "a", "--name", "A", "--kind", "customer"], env: [:])
        #expect(create.account == .platform)
        let op = try invocation(["operator", "create", "op-x", "--account", "cust"], env: ["ESCROW_ACCOUNT": "oem"])
        #expect(op.account == .platform)
        #expect((op.command as? AccountCommands.OperatorCreate)?.args.account == "cust")
        #expect((op.command as? AccountCommands.OperatorCreate)?.generatedPassword == true)
        #expect(((op.command as? AccountCommands.OperatorCreate)?.args.password.count ?? 0) >= 16)
        #expect(op.global.account == "oem")
        // Other commands need an account from somewhere.
        #expect(usageError(["device", "list"], env: [:])?.message.contains("no account") == true)
    }

    @Test("flags win over environment, environment over the config file; the default config is read when present")
    func precedence() throws {
        let file = "broker = mqtt://file:1\nuser = op-file\npassword = pf\naccount = filea\n"
        let fromFile = try invocation(["device", "list"], env: [:], files: [GlobalOptions.defaultConfigFile: file])
        #expect(fromFile.global.broker == "mqtt://file:1" && fromFile.global.user == "op-file" && fromFile.account == "filea")
        #expect(fromFile.global.configFile == GlobalOptions.defaultConfigFile)
        let env = ["ESCROW_CONFIG": "/etc/e.conf", "ESCROW_BROKER": "mqtt://env:2", "ESCROW_ACCOUNT": "enva"]
        let fromEnv = try invocation(["device", "list"], env: env, files: ["/etc/e.conf": file])
        #expect(fromEnv.global.broker == "mqtt://env:2" && fromEnv.global.user == "op-file" && fromEnv.account == "enva")
        let fromFlags = try invocation(["--broker", "mqtt://flag:3", "device", "list", "--account=flaga", "--user", "op-flag", "--config", "/x.conf"],
                                       env: env, files: ["/x.conf": file])
        #expect(fromFlags.global.broker == "mqtt://flag:3" && fromFlags.account == "flaga" && fromFlags.global.user == "op-flag")
        #expect(fromFlags.global.password == "pf" && fromFlags.global.configFile == "/x.conf")
        let defaults = try invocation(["device", "list"])
        #expect(defaults.global.broker == GlobalOptions.defaultBroker && defaults.global.timeout == .seconds(10) && defaults.global.configFile == nil)
        // A named config file that cannot be read, or holds unknown keys, is a usage error.
        #expect(usageError(["--config", "/missing.conf", "device", "list"]) != nil)
        #expect(throws: CLIUsageError.self) { try parse(["device", "list"], env: [:], files: [GlobalOptions.defaultConfigFile: "colour = red\n"]) }
    }

    @Test("durations")
    func durations() throws {
        #expect(Arguments.parseDuration("10s") == .seconds(10))
        #expect(Arguments.parseDuration("500ms") == .milliseconds(500))
        #expect(Arguments.parseDuration("1.5s") == .milliseconds(1500))
        #expect(Arguments.parseDuration("2m") == .seconds(120))
        #expect(Arguments.parseDuration("7d") == .seconds(7 * 86400))
        #expect(Arguments.parseDuration("30") == .seconds(30))
        #expect(Arguments.parseDuration("-1s") == nil)
        #expect(Arguments.parseDuration("soon") == nil)
        #expect(Arguments.parseDuration("") == nil)
        // The one grammar everywhere: fractions, hours, days, and the same refusals.
        #expect(Arguments.parseDuration("1.5m") == .seconds(90))
        #expect(Arguments.parseDuration("2h") == .seconds(7200))
        #expect(Arguments.parseDuration("0.25") == .milliseconds(250))
        #expect(Arguments.parseDuration("ms") == nil && Arguments.parseDuration("s") == nil && Arguments.parseDuration("10x") == nil)
        #expect(Arguments.parseDuration("nan") == nil && Arguments.parseDuration("infs") == nil && Arguments.parseDuration("1e300d") == nil)
        #expect(Arguments.parseSeconds("500ms") == 0.5 && Arguments.parseSeconds("5m") == 300)
        #expect(try Arguments(["--every", "1.5m"], valued: ["every"], booleans: []).seconds("every") == 90)
    }

    @Test("CSV: first column, header and comments skipped, duplicates dropped, bad ids named by line")
    func csv() throws {
        let ids = try DeviceSelection.readCSV("device_id,model\nsn-1,x\n\n# comment\n\"sn-2\",y\nsn-1,x\r\nsn-3\n")
        #expect(ids == ["sn-1", "sn-2", "sn-3"])
        #expect(throws: UsageError("f.csv line 2: 'bad id' is not a device id ([A-Za-z0-9._-]{1,64})")) {
            try DeviceSelection.readCSV("sn-1\nbad id,2\n", file: "f.csv")
        }
        #expect(throws: UsageError.self) { try DeviceSelection.readCSV("id\n\n") }
        let dir = try TempDirectory()
        try "a\nb\n".write(toFile: dir.file("d.csv"), atomically: true, encoding: .utf8)
        #expect(try DeviceSelection.csv(dir.file("d.csv")).resolveIDs() == ["a", "b"])
        #expect(throws: CLIError.self) { try DeviceSelection.csv(dir.file("missing.csv")).resolveIDs() }
        do { _ = try DeviceSelection.csv(dir.file("missing.csv")).resolveIDs() } catch let e as CLIError { #expect(e.exit == .dataError, "topics.md: a CSV it cannot read exits 65") }
    }

    @Test("exit codes: one per error code and connection failure")
    func exitCodes() {
        let expected: [ErrorCode: ExitCode] = [
            .invalidArgument: .dataError, .malformed: .dataError, .unsupportedSchema: .dataError, .tooLarge: .dataError,
            .notFound: .notFound, .conflict: .conflict, .forbidden: .refused, .storageUnavailable: .storageUnavailable,
            .unknownCommand: .usage, .internalError: .failure,
        ]
        for code in ErrorCode.allCases { #expect(ExitCode(code) == expected[code], "\(code)") }
        #expect(ExitCode(MQTTError.Kind.unreachable) == .unavailable)
        #expect(ExitCode(MQTTError.Kind.refused) == .refused)
        #expect(ExitCode(MQTTError.Kind.notAuthorized) == .refused)
        #expect(ExitCode(MQTTError.Kind.invalidArgument) == .usage)
        #expect(ExitCode.allCases.map(\.rawValue) == [0, 1, 64, 65, 66, 67, 69, 74, 75, 77])
    }

    @Test("errors are described with their exit status, code and a hint")
    func describe() throws {
        let context = CommandContext(invocation: try invocation(["device", "list", "--user", "op-x"]))
        let timeout = CLI.describe(OperatorError.noReply(command: "device.list", account: "oem", after: .seconds(10), requestId: "r-42"), context: context)
        #expect(timeout.exit == .timeout && timeout.description.contains("escrowd may be down") && !timeout.description.contains("\n"))
        #expect(timeout.description.contains("--request-id r-42") && timeout.json["error"]?["requestId"] == .string("r-42"))
        let wire = CLI.describe(OperatorError.command(WireError(.conflict, "account oem already exists")), context: context)
        #expect(wire.exit == .conflict && wire.description.hasPrefix("escrowctl: conflict: account oem already exists. "))
        let refused = CLI.describe(OperatorError.connection(MQTTError(kind: .refused, operation: "connect", code: 5, message: "not authorised")), context: context)
        #expect(refused.exit == .refused && refused.description.contains("op-x"))
        #expect(CLI.describe(OperatorError.notAuthorized(topic: "accounts/x/cmd/device.list"), context: context).exit == .refused)
        #expect(CLI.describe(OperatorError.connectionLost("gone"), context: context).exit == .unavailable)
        #expect(CLI.describe(UsageError("x"), context: context).exit == .usage)
        #expect(CLI.describe(OperatorError.badReply("x"), context: context).exit == .failure)
    }

    @Test("tables align columns and leave no trailing spaces; progress bar and rates")
    func formatting() {
        let t = Table(["ID", "STATE", "NOTE"], [["sn-000001", "escrow", ""], ["a", "active", "hello"]]).render()
        #expect(t == "ID         STATE   NOTE\nsn-000001  escrow\na          active  hello")
        #expect(ProgressBar.render(done: 3000, total: 10000, perSecond: 1234) == "[###.......] 3000/10000 devices  1.2k/s")
        #expect(ProgressBar.render(done: 10, total: 10, perSecond: 850) == "[##########] 10/10 devices  850/s")
        #expect(ProgressBar.rate(2_500_000) == "2.5M/s")
        #expect(Console.prettyJSON(.object(["b": .number(1), "a": .string("x/y")])) == "{\n  \"a\" : \"x/y\",\n  \"b\" : 1\n}")
    }

    @Test("tail lines are readable")
    func tailLine() throws {
        let at = try #require(ISO8601DateFormatter().date(from: "2024-05-01T09:41:07Z"))
        let e = Event(type: .transferRequested, at: at, account: "oem", transferId: "tr-abc",
                      details: ["from": .string("oem"), "to": .string("reseller"), "devices": .number(120)])
        let line = TailCommand.line(e)
        #expect(line.hasSuffix("transfer.requested  tr-abc  oem -> reseller  120 devices"))
        #expect(line.hasPrefix("2024-05-01T09:41:07Z transfer.requested"), "RFC 3339 UTC, to the second as on the wire: \(line)")
        let activated = Event(type: .deviceActivated, at: at, account: "acme", deviceId: "sn-7", transferId: "tr-abc", details: ["version": .number(1)])
        #expect(TailCommand.line(activated) == "2024-05-01T09:41:07Z device.activated    sn-7  tr-abc  config v1", "the device and the transfer")
        let approved = Event(type: .transferApproved, at: at, account: "oem", transferId: "tr-abc",
                             details: ["count": .number(120), "action": .string("hold"), "devices": .array([.string("sn-1")])])
        #expect(TailCommand.line(approved).hasSuffix("transfer.approved   tr-abc  120 devices (hold)"))
        #expect(TailCommand.concerns(approved, "sn-1") && !TailCommand.concerns(approved, "sn-2"))
    }

    @Test("bundles: one directory per device, private key 0600, agent.conf with relative paths")
    func bundles() throws {
        let dir = try TempDirectory()
        let b = Commands.DeviceBundle(deviceId: "sn-000001", certificate: "-----BEGIN CERTIFICATE-----\nC\n", privateKey: "-----BEGIN PRIVATE KEY-----\nK\n",
                                      brokerCA: "-----BEGIN CERTIFICATE-----\nCA\n", brokerURL: "mqtts://factory:8883", fingerprint: "ab")
        let path = try DeviceBundleWriter.write(b, into: dir.path)
        #expect(path == dir.path + "/sn-000001")
        #expect(try String(contentsOfFile: path + "/device.crt", encoding: .utf8) == b.certificate)
        #expect(try String(contentsOfFile: path + "/device.key", encoding: .utf8) == b.privateKey)
        #expect(try String(contentsOfFile: path + "/broker-ca.pem", encoding: .utf8) == b.brokerCA)
        let mode = try FileManager.default.attributesOfItem(atPath: path + "/device.key")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let conf = try KeyValueFile.parse(String(contentsOfFile: path + "/agent.conf", encoding: .utf8))
        #expect(conf == ["broker": "mqtts://factory:8883", "device_id": "sn-000001", "certificate": "device.crt",
                         "private_key": "device.key", "broker_ca": "broker-ca.pem", "state_dir": "state"])
    }

    @Test("invalid option values exit 65, missing or unknown options 64, as topics.md documents")
    func invalidValuesAreDataErrors() async throws {
        for (args, status) in [
            (["account", "create", "x", "--name", "X", "--kind", "emperor"], Int32(65)),
            (["account", "create", "x", "--name", "X"], 64),
            (["device", "list", "--limit", "0"], 65),
            (["device", "list", "--limit", "1001"], 65),
            (["device", "list", "--limit", "ten"], 65),
            (["transfer", "request", "--to", "b", "--ids", "a", "--expires", "soon"], 65),
            (["device", "list", "--frobnicate"], 64),
        ] {
            let r = try await runCLI(args, env: ["ESCROW_BROKER": "mqtt://127.0.0.1:1", "ESCROW_USER": "op-x", "ESCROW_PASSWORD": "pw-x-secret", "ESCROW_ACCOUNT": "x"])
            #expect(r.status == status, "escrowctl \(args.joined(separator: " ")): \(r)")
        }
    }
}

@Suite("Every executable reports its version")
struct VersionTests {
    @Test("--version prints name, version, the commit it was built from and the wire schema, and exits 0", arguments: ["escrowd", "escrowctl", "escrow-agent", "fleetsim"])
    func version(_ product: String) throws {
        let out = try runCommand(try Products.path(product), ["--version"]).trimmingCharacters(in: .whitespacesAndNewlines)
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        // The checkout's commit (the build stamped it), or "unknown" outside git.
        let head = (try? runCommand("/usr/bin/git", ["-C", root, "rev-parse", "--short=12", "HEAD"]))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown"
        #expect(out == EscrowFleetVersion.line(product, commit: head), "\(out)")
    }
}
