import EscrowCore
import Foundation
import MQTT

/// One escrowctl command: parsed and validated from its arguments without I/O, then run.
public protocol OperatorCommand: Sendable {
    static var spec: CommandSpec { get }
    /// Parses and validates the command's own options and positionals (usage errors exit 64).
    init(_ args: Arguments) throws(UsageError)
    /// Runs against escrowd; throws `OperatorError`, `CLIError` or `UsageError`.
    func run(_ context: CommandContext) async throws
    /// False when this invocation works offline (no broker, so no account to act in).
    var needsBroker: Bool { get }
}

extension OperatorCommand {
    public var needsBroker: Bool { true }
}

/// What `--help` shows for a command, and which options it takes.
public struct CommandSpec: Sendable {
    public enum Group: String, CaseIterable, Sendable {
        case platform = "PLATFORM ADMINISTRATION (as the platform administrator, in account 'platform')"
        case devices = "DEVICES"
        case transfers = "TRANSFERS (moving devices between accounts: sale, resale, return)"
        case configuration = "CONFIGURATION"
        case watching = "WATCHING"
    }
    public var path: [String]
    public var group: Group
    public var summary: String
    /// Usage line(s), without the leading `escrowctl `.
    public var usage: [String]
    public var options: String
    public var examples: [String]
    public var valued: Set<String>
    public var booleans: Set<String>
    /// Names of the required positional arguments, in order; a last name ending in `...` (`ID...`)
    /// takes one or more.
    public var positionals: [String] = []
    /// The account this command always acts in (platform administration), overriding --account.
    public var actsIn: AccountID?

    public var name: String { path.joined(separator: " ") }

    public var help: String {
        var s = "\(summary)\n\nUSAGE\n" + usage.map { "  escrowctl \($0)" }.joined(separator: "\n")
        if !options.isEmpty { s += "\n\nOPTIONS\n" + options }
        if !examples.isEmpty { s += "\n\nEXAMPLES\n" + examples.map { "  \($0)" }.joined(separator: "\n") }
        return s + "\n\n" + GlobalOptions.help
    }
}

/// A failure with its exit status, a stable code, a message, and what to do next.
public struct CLIError: Error, Sendable, Equatable, CustomStringConvertible {
    public var exit: ExitCode
    public var code: String
    public var message: String
    public var hint: String?
    /// The request id to retry with, when a command may or may not have run (a timeout).
    public var requestId: String?
    public init(_ exit: ExitCode, _ code: String, _ message: String, hint: String? = nil) {
        self.exit = exit; self.code = code; self.message = message; self.hint = hint
    }
    /// A usage mistake as a failure: code `usage`, or `invalid_argument` for a present but invalid value.
    public init(usage e: CLIUsageError) { self.init(e.exit, e.invalidValue ? "invalid_argument" : "usage", e.message) }
    /// The `--json` form, one line on stderr: `{"error":{"code":"conflict","exit":67,"message":"...","hint":"..."}}`.
    public var json: JSONValue {
        var e: [String: JSONValue] = ["code": .string(code), "message": .string(message), "exit": .number(Double(exit.rawValue))]
        if let hint { e["hint"] = .string(hint) }
        if let requestId { e["requestId"] = .string(requestId) }
        return .object(["error": .object(e)])
    }
    /// The single stderr line: `escrowctl: <code>: <message>. <hint>`.
    public var description: String {
        var line = "escrowctl: \(code): \(message)"
        if let hint { line += (line.hasSuffix(".") ? " " : ". ") + hint }
        return line
    }
}

/// A usage mistake together with the usage text that helps fix it.
public struct CLIUsageError: Error, Sendable, Equatable {
    public var message: String
    public var usage: String
    /// A present but invalid value (`UsageError.invalidValue`): exit 65, not 64.
    public var invalidValue = false
    public var exit: ExitCode { invalidValue ? .dataError : .usage }
}

/// escrowctl: parse, validate, run, and print every error in one place.
public enum CLI {
    /// Every command, in help order.
    public static let commands: [any OperatorCommand.Type] = [
        AccountCommands.Create.self, AccountCommands.List.self, AccountCommands.Show.self, AccountCommands.Delete.self, AccountCommands.OperatorCreate.self,
        AccountCommands.OperatorList.self, AccountCommands.OperatorPasswd.self, AccountCommands.OperatorDelete.self,
        DeviceCommands.Provision.self, DeviceCommands.List.self, DeviceCommands.Show.self, DeviceCommands.Retire.self, DeviceCommands.Rebundle.self,
        CustodyCommands.Verify.self,
        TransferCommands.Request.self, TransferCommands.Inbox.self, TransferCommands.Show.self,
        TransferCommands.Approve.self, TransferCommands.Reject.self, TransferCommands.Cancel.self,
        ConfigCommands.ProfilePut.self, ConfigCommands.ProfileList.self, ConfigCommands.ProfileShow.self, ConfigCommands.ProfileDelete.self,
        ConfigCommands.Push.self, ConfigCommands.Status.self,
        TailCommand.self, AuditCommands.List.self,
    ]

    /// A parsed command line that is ready to run.
    public struct Invocation: Sendable {
        public var command: any OperatorCommand
        public var spec: CommandSpec
        public var global: GlobalOptions
        /// The account the command acts in (the topic's account).
        public var account: AccountID
    }

    public enum Parsed: Sendable {
        case help(String)
        case run(Invocation)
    }

    /// Parses `argv` (without the program name). No network; reads only the config file via `readFile`.
    public static func parse(_ argv: [String], environment: [String: String] = ProcessInfo.processInfo.environment,
                             readFile: (String) -> String? = GlobalOptions.readFile) throws(CLIUsageError) -> Parsed {
        let allValued = commands.reduce(GlobalOptions.valued) { $0.union($1.spec.valued) }
        // Find the command words: the first non-option arguments, skipping option values.
        var words: [(index: Int, word: String)] = []
        var i = 0
        while i < argv.count, words.count < 2 {
            let a = argv[i]
            if a == "--" { break }
            if a.hasPrefix("--") {
                if !a.contains("="), allValued.contains(String(a.dropFirst(2))) { i += 1 }
            } else if !(a.hasPrefix("-") && a.count > 1) {
                words.append((i, a))
            }
            i += 1
        }
        let wantsHelp = argv.contains("--help") || argv.contains("-h")
        guard let first = words.first else {
            if wantsHelp { return .help(overview) }
            throw CLIUsageError(message: "no command given", usage: overview)
        }
        if first.word == "help" {
            let rest = words.dropFirst().map(\.word)
            if let spec = commands.map({ $0.spec }).first(where: { rest.starts(with: $0.path) && !rest.isEmpty && $0.path.count <= rest.count }) {
                return .help(spec.help)
            }
            if let g = rest.first, let h = groupHelp(g) { return .help(h) }
            return .help(overview)
        }
        let type: any OperatorCommand.Type
        var used = [first.index]
        if let t = commands.first(where: { $0.spec.path == [first.word] }) {
            type = t
        } else if let group = groupHelp(first.word) {
            guard words.count > 1, let t = commands.first(where: { $0.spec.path == [first.word, words[1].word] }) else {
                if wantsHelp, words.count == 1 { return .help(group) }
                let subcommands = commands.filter { $0.spec.path.count == 2 && $0.spec.path[0] == first.word }.map { $0.spec.path[1] }
                let what = words.count > 1 ? "unknown command '\(first.word) \(words[1].word)'" + Suggestions.phrase(words[1].word, in: subcommands, prefix: first.word + " ")
                                           : "'\(first.word)' needs a subcommand"
                throw CLIUsageError(message: what, usage: group)
            }
            type = t
            used.append(words[1].index)
        } else {
            let words = Array(Set(commands.map { $0.spec.path[0] })).sorted()
            throw CLIUsageError(message: "unknown command '\(first.word)'" + Suggestions.phrase(first.word, in: words), usage: commandList)
        }
        let spec = type.spec
        let rest = argv.enumerated().filter { !used.contains($0.offset) }.map(\.element)
        do throws(UsageError) {
            let args = try Arguments(rest, valued: GlobalOptions.valued.union(spec.valued), booleans: GlobalOptions.booleans.union(spec.booleans))
            if args.flag("help") { return .help(spec.help) }
            // A positional in brackets ("[ID...]") is optional.
            let required = spec.positionals.filter { !$0.hasPrefix("[") }
            if args.positionals.count < required.count {
                throw UsageError("missing " + required.dropFirst(args.positionals.count).joined(separator: ", "))
            }
            if args.positionals.count > spec.positionals.count, spec.positionals.last?.trimmingCharacters(in: ["]"]).hasSuffix("...") != true {
                throw UsageError("unexpected argument '\(args.positionals[spec.positionals.count])'")
            }
            let global = try GlobalOptions.resolve(args, environment: environment, accountFlag: !spec.valued.contains("account"),
                                                   passwordFlag: !spec.valued.contains("password"), readFile: readFile)
            let command = try type.init(args)
            // An offline invocation acts in no account; `platform` only fills the slot.
            guard let account = spec.actsIn ?? global.account ?? (command.needsBroker ? nil : .platform) else {
                throw UsageError("no account to act in: pass --account ACCT, set ESCROW_ACCOUNT, or add 'account = ACCT' to the config file")
            }
            return .run(Invocation(command: command, spec: spec, global: global, account: account))
        } catch {
            throw CLIUsageError(message: error.message, usage: spec.usage.map { "  escrowctl \($0)" }.joined(separator: "\n")
                                + "\n\nRun 'escrowctl \(spec.name) --help' for options and examples.", invalidValue: error.invalidValue)
        }
    }

    /// The program: returns the exit status. `argv` excludes the program name.
    public static func main(_ argv: [String]) async -> Int32 {
        await run(argv, environment: ProcessInfo.processInfo.environment).rawValue
    }

    public static func run(_ argv: [String], environment: [String: String]) async -> ExitCode {
        let console = Console(quiet: argv.contains("--quiet"))
        // With --json, errors are one JSON object on stderr too (`CLIError.json`), so scripts parse both streams.
        let wantsJSON = argv.prefix(while: { $0 != "--" }).contains("--json")
        if let status = Generated.run(argv, console: console) { return status }
        let invocation: Invocation
        do {
            switch try parse(argv, environment: environment) {
            case .help(let text): console.out(text); return .ok
            case .run(let i): invocation = i
            }
        } catch {
            if wantsJSON { console.err(Console.compactJSON(CLIError(usage: error).json)) }
            else { console.err("escrowctl: \(error.invalidValue ? "invalid argument" : "usage"): \(error.message)\n\n\(error.usage)") }
            return error.exit
        }
        let context = CommandContext(invocation: invocation)
        do {
            try await invocation.command.run(context)
            await context.close()
            return .ok
        } catch {
            await context.close()
            let failure = describe(error, context: context)
            if wantsJSON {
                console.err(Console.compactJSON(failure.json))
            } else if failure.exit == .usage, error is UsageError {
                console.err("escrowctl: usage: \(failure.message)\n\n" + invocation.spec.usage.map { "  escrowctl \($0)" }.joined(separator: "\n"))
            } else {
                console.err(failure.description)
            }
            return failure.exit
        }
    }

    /// Turns any error into its exit status, code, message and hint.
    public static func describe(_ error: any Error, context: CommandContext) -> CLIError {
        let g = context.global
        switch error {
        case let e as CLIError: return e
        case let e as UsageError: return e.invalidValue ? CLIError(.dataError, "invalid_argument", e.message) : CLIError(.usage, "usage", e.message)
        case let e as CLIUsageError: return CLIError(usage: e)
        case let e as OperatorError:
            switch e {
            case .connection(let m):
                let exit = ExitCode(m.kind)
                switch m.kind {
                case .unreachable, .timeout:
                    return CLIError(exit, "unreachable", "cannot reach the broker at \(g.broker) (\(m.message))",
                                    hint: "Is escrowd running? Check --broker or ESCROW_BROKER.")
                case .tls:
                    return CLIError(exit, "unreachable", "TLS with the broker at \(g.broker) failed (\(m.message))",
                                    hint: "Use the operator port (mqtt://) or check the broker's certificate.")
                case .refused, .notAuthorized:
                    return CLIError(exit, "refused", "the broker at \(g.broker) refused user '\(g.user ?? "(none)")' (\(m.message))",
                                    hint: "Check --user and --password (ESCROW_USER, ESCROW_PASSWORD or the config file).")
                case .invalidArgument:
                    return CLIError(exit, "usage", m.message, hint: "Use --broker mqtt://host:port.")
                case .disconnected:
                    return CLIError(exit, "unreachable", "the broker at \(g.broker) closed the connection (\(m.message))",
                                    hint: "The broker may be restarting; retry with the same --request-id.")
                case .protocolError, .library:
                    return CLIError(exit, "mqtt", m.description)
                }
            case .notAuthorized(let topic):
                return CLIError(.refused, "forbidden", "user '\(g.user ?? "(none)")' may not use \(topic)",
                                hint: "Operators act only in their own account and the accounts it manages; check --account.")
            case .noReply(let command, let account, let after, let requestId):
                var e = CLIError(.timeout, "timeout", "no reply to \(command) in account \(account) within \(Self.seconds(after)) (request id \(requestId))",
                                 hint: "escrowd may be down or busy. Retry with --request-id \(requestId) (safe: a replayed id gets the first reply), or raise --timeout.")
                e.requestId = requestId
                return e
            case .connectionLost(let reason):
                return CLIError(.unavailable, "unreachable", "lost the connection to \(g.broker) (\(reason))",
                                hint: "Retry with the same --request-id; escrowd answers a replayed id with its first reply.")
            case .command(let w):
                return CLIError(ExitCode(w.code), w.code.rawValue, w.message, hint: hint(for: w.code))
            case .badReply(let m):
                return CLIError(.failure, "bad_reply", m, hint: "escrowctl and escrowd may be different versions.")
            case .invalidArgument(let m):
                return CLIError(.usage, "usage", m)
            }
        default:
            return CLIError(.failure, "error", "\(error)")
        }
    }

    static func hint(for code: ErrorCode) -> String? {
        switch code {
        case .invalidArgument, .malformed: return "Check the arguments against 'escrowctl <command> --help'."
        case .unsupportedSchema, .unknownCommand: return "escrowctl and escrowd speak different versions; upgrade one of them."
        case .tooLarge: return "Send fewer devices per command."
        case .notFound: return "Check the id and the account acted in (--account)."
        case .conflict: return "Look at the current state with 'device show', 'transfer show' or 'transfer inbox'."
        case .forbidden: return "This user may not do that in this account; check --account and --user."
        case .storageUnavailable: return "escrowd cannot write its database; nothing changed. Retry later with the same --request-id."
        case .internalError: return "See escrowd's log."
        }
    }

    static func seconds(_ d: Duration) -> String {
        let s = d.seconds
        return s == s.rounded() ? "\(Int(s)) s" : String(format: "%.1f s", s)
    }

    // MARK: help

    static func groupHelp(_ word: String) -> String? {
        let specs = commands.map { $0.spec }.filter { $0.path.count == 2 && $0.path[0] == word }
        guard !specs.isEmpty else { return nil }
        return "escrowctl \(word) <command>\n\nCOMMANDS\n" + table(specs)
            + "\n\nRun 'escrowctl \(word) <command> --help' for options and examples."
    }

    static func table(_ specs: [CommandSpec]) -> String {
        Table([], specs.map { ["  " + $0.name, $0.summary] }).render()
            .split(separator: "\n", omittingEmptySubsequences: true).joined(separator: "\n")
    }

    static var commandList: String {
        "COMMANDS\n" + table(commands.map { $0.spec }) + "\n\nRun 'escrowctl --help' for the overview."
    }

    /// `escrowctl --help`: commands grouped by purpose and a walk-through.
    public static var overview: String {
        var s = """
            escrowctl: manage an EscrowFleet platform (accounts, escrow devices, transfers, configuration) through escrowd.

            USAGE
              escrowctl [global options] <command> [options]
            """
        for group in CommandSpec.Group.allCases {
            let specs = commands.map { $0.spec }.filter { $0.group == group }
            s += "\n\n\(group.rawValue)\n" + table(specs)
        }
        s += """


            WALK-THROUGH (OEM -> reseller -> customer)
              # 1. As the platform administrator (escrowd wrote ./escrow-data/admin.conf):
              escrowctl account create oem --name "Acme Devices" --kind provisioner
              escrowctl account create resell --name "Channel Co" --kind reseller
              escrowctl account create cust --name "Customer Inc" --kind customer
              escrowctl operator create op-oem --account oem       # prints a generated password
              # 2. As the OEM: provision devices in escrow and write their bundles for the factory.
              export ESCROW_USER=op-oem ESCROW_PASSWORD=... ESCROW_ACCOUNT=oem
              escrowctl device provision --prefix sn- --count 10000 --out ./bundles
              escrowctl transfer request --to resell --prefix sn- --count 500 --note "PO 4711"
              # 3. As the reseller: take custody and pass devices on.
              escrowctl --account resell transfer inbox --incoming
              escrowctl --account resell transfer approve tr-... --hold
              escrowctl --account resell transfer request --to cust --prefix sn- --count 20
              # 4. As the customer: activate with a configuration profile, then watch.
              escrowctl --account cust profile put office --settings '{"ntp":"pool.ntp.org"}' --default
              escrowctl --account cust transfer approve tr-... --activate --profile office
              escrowctl --account cust tail

            SHELL COMPLETION AND MANUAL
              source <(escrowctl completion bash)     # or: escrowctl completion zsh
              escrowctl man | man -l -

            EXIT STATUS
              0 ok, 1 other failure, 64 usage, 65 invalid argument, 66 not found, 67 conflict,
              69 broker unreachable, 74 escrowd storage unavailable, 75 no reply in time, 77 refused

            Run 'escrowctl <command> --help' for a command's options and examples.

            """
        return s + GlobalOptions.help
    }
}

/// What a running command may use: the resolved options, the console, and a session opened on first use.
public final class CommandContext {
    public let global: GlobalOptions
    /// The account acted in.
    public let account: AccountID
    public let console: Console
    private var session: OperatorSession?
    private var batch = 0

    public init(invocation: CLI.Invocation) {
        global = invocation.global
        account = invocation.account
        console = Console(quiet: invocation.global.quiet)
    }

    /// The connected session (connecting on first use).
    public func connect() async throws -> OperatorSession {
        if let session { return session }
        let s = try await OperatorSession.connect(.init(broker: global.broker, username: global.user, password: global.password,
                                                        account: account, timeout: global.timeout, caFile: global.caFile))
        session = s
        return s
    }

    /// Sends a command and returns its result; `ok: false` throws. Successive calls of one run get
    /// request ids `ID-2`, `ID-3`... when `--request-id ID` was given.
    public func call<Args: Encodable & Sendable>(_ command: CommandName, _ args: Args) async throws -> JSONValue {
        let session = try await connect()
        batch += 1
        var rid = global.requestId
        if let r = rid, batch > 1 {
            rid = "\(r)-\(batch)"
            guard Identifier.isValid(rid!) else { throw UsageError("--request-id is too long to number the \(batch)th command; use at most 60 characters") }
        }
        return try await session.call(command, args, requestId: rid)
    }

    public func decode<Result: Decodable>(_ json: JSONValue, as: Result.Type, _ command: CommandName) throws -> Result {
        try OperatorSession.decodeResult(json, as: Result.self, command: command)
    }

    func close() async {
        await session?.close()
        session = nil
    }
}
