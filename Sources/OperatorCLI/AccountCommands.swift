import EscrowCore
import Foundation

/// Platform administration: accounts and operators (always acts in account `platform`).
public enum AccountCommands {
    public struct Create: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["account", "create"], group: .platform, summary: "Create an account (provisioner, reseller or customer)",
            usage: ["account create ID --name NAME --kind provisioner|reseller|customer [--managed-by ACCT]"],
            options: """
                  ID                  account id, [A-Za-z0-9._-]{1,64}
                  --name NAME         display name (1 to 200 characters)
                  --kind KIND         provisioner (OEM, factory), reseller or customer
                  --managed-by ACCT   an account whose operators may also act in this one
                """,
            examples: ["escrowctl account create oem --name \"Acme Devices\" --kind provisioner",
                       "escrowctl account create cust --name \"Customer Inc\" --kind customer --managed-by resell"],
            valued: ["name", "kind", "managed-by"], booleans: [], positionals: ["ID"], actsIn: .platform)

        public var args: Commands.AccountCreate

        public init(_ a: Arguments) throws(UsageError) {
            let id = try Parse.account(a.positionals[0], what: "account id")
            guard let name = a.value("name"), !name.isEmpty else { throw UsageError("--name is required") }
            guard let k = a.value("kind") else { throw UsageError("--kind is required (provisioner, reseller or customer)") }
            guard let kind = Account.Kind(rawValue: k) else { throw .invalid("--kind must be provisioner, reseller or customer, got '\(k)'") }
            let managedBy = try a.value("managed-by").map { v throws(UsageError) in try Parse.account(v, what: "--managed-by") }
            args = .init(id: id, name: name, kind: kind, managedBy: managedBy)
        }

        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.accountCreate, args)
            if c.global.json { return c.console.json(json) }
            let a = try c.decode(json, as: Account.self, .accountCreate)
            c.console.out("account \(a.id) created: \(a.kind.rawValue) '\(a.name)'" + (a.managedBy.map { ", managed by \($0)" } ?? ", standalone"))
        }
    }

    public struct List: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["account", "list"], group: .platform, summary: "List accounts",
            usage: ["account list"], options: "",
            examples: ["escrowctl account list", "escrowctl account list --json"],
            valued: [], booleans: [], actsIn: .platform)

        public init(_ a: Arguments) throws(UsageError) {}

        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.accountList, [String: String]())
            if c.global.json { return c.console.json(json) }
            let r = try c.decode(json, as: Commands.AccountListResult.self, .accountList)
            c.console.out(Self.table(r.accounts).render())
        }

        public static func table(_ accounts: [Account]) -> Table {
            Table(["ID", "KIND", "MANAGED BY", "NAME"], accounts.map { [$0.id.rawValue, $0.kind.rawValue, $0.managedBy?.rawValue ?? "-", $0.name] })
        }
    }

    public struct OperatorCreate: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["operator", "create"], group: .platform, summary: "Create an operator login for an account",
            usage: ["operator create USER --account ACCT [--role full|support] [--password P]"],
            options: """
                  USER            username, starting with op- (e.g. op-alice)
                  --account ACCT  the operator's home account (it may also act in accounts that one manages)
                  --role R        full (default): every command; support: read-only commands only
                                  (device, transfer, profile and config listings, account show,
                                  events.since), enforced by the broker: an OEM's support staff
                                  looking at the customers the OEM manages

                  --password P    the NEW operator's password, 8 to 256 characters; generated and printed
                                  when absent (your own login comes from ESCROW_PASSWORD or --config)
                """,
            examples: ["escrowctl operator create op-oem --account oem",
                       "escrowctl operator create op-bob --account cust --password 'correct horse battery'",
                       "escrowctl operator create op-oem-help --account oem --role support"],
            valued: ["account", "password", "role"], booleans: [], positionals: ["USER"], actsIn: .platform)

        public var args: Commands.OperatorCreate
        public var generatedPassword: Bool

        public init(_ a: Arguments) throws(UsageError) {
            let user = a.positionals[0]
            if let problem = BrokerNames.operatorNameProblem(user) {
                throw UsageError("'\(user.prefix(80))': \(problem)")
            }
            guard let raw = a.value("account") else { throw UsageError("--account is required (the operator's home account)") }
            let account = try Parse.account(raw, what: "--account")
            let (password, generated) = try Parse.password(a)
            generatedPassword = generated
            var role: Commands.OperatorRole?
            if let r = a.value("role") {
                guard let parsed = Commands.OperatorRole(rawValue: r) else { throw UsageError("--role is full or support, not '\(r.prefix(40))'") }
                role = parsed
            }
            args = .init(username: user, password: password, account: account, role: role)
        }

        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.operatorCreate, args)
            if c.global.json { return c.console.json(Parse.showingPassword(json, args.password, if: generatedPassword)) }
            let r = try c.decode(json, as: Commands.OperatorResult.self, .operatorCreate)
            c.console.out("operator \(r.username) created in account \(r.account)\(r.role == .support ? " (support: read-only)" : ""); may act in: \(r.reach.map(\.rawValue).joined(separator: ", "))")
            if generatedPassword { c.console.out("password: \(args.password)") }
        }
    }
}

extension AccountCommands {
    public struct Show: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["account", "show"], group: .platform, summary: "Show an account: what it manages, its devices by state, operators and profiles",
            usage: ["account show ID"],
            options: """
                  ID              the account; as the platform administrator any account, as an account's
                                  operator that account or a customer account it manages
                """,
            examples: ["escrowctl account show acme", "escrowctl --account oem account show acme --json"],
            valued: [], booleans: [], positionals: ["ID"])
        public var args: Commands.AccountRef
        public init(_ a: Arguments) throws(UsageError) { args = .init(id: try Parse.account(a.positionals[0], what: "account id")) }
        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.accountShow, args)
            if c.global.json { return c.console.json(json) }
            c.console.out(Self.render(try c.decode(json, as: Commands.AccountShowResult.self, .accountShow)))
        }
        public static func render(_ r: Commands.AccountShowResult) -> String {
            let a = r.account, d = r.devices
            var rows: [[String]] = [
                ["account", a.id.rawValue], ["name", a.name], ["kind", a.kind.rawValue], ["managed by", a.managedBy?.rawValue ?? "- (standalone)"],
                ["created", Format.date(r.createdAt)],
            ]
            if let m = r.manages { rows.append(["manages", m.isEmpty ? "-" : m.map(\.rawValue).joined(separator: ", ")]) }
            rows += [
                ["devices", "\(d.total) (\(d.escrow) in escrow, \(d.active) active\(d.retired > 0 ? ", \(d.retired) retired" : ""); \(d.online) online)"],
                ["transfers", "\(r.openTransfers) open"], ["operators", String(r.operators)], ["profiles", String(r.profiles)],
            ]
            return Table([], rows).render()
        }
    }

    public struct Delete: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["account", "delete"], group: .platform, summary: "Delete an account that holds nothing (its operators are refused at once)",
            usage: ["account delete ID"],
            options: """
                  ID              the account: it must hold no devices, have no open transfer requests,
                                  manage no account, and no device elsewhere may still use a certificate
                                  its authority issued; its operators and profiles are removed with it,
                                  and its id is never reused
                """,
            examples: ["escrowctl account delete acme", "escrowctl account delete trial-7 --json"],
            valued: [], booleans: [], positionals: ["ID"], actsIn: .platform)
        public var args: Commands.AccountRef
        public init(_ a: Arguments) throws(UsageError) { args = .init(id: try Parse.account(a.positionals[0], what: "account id")) }
        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.accountDelete, args)
            if c.global.json { return c.console.json(json) }
            let r = try c.decode(json, as: Commands.AccountDeleteResult.self, .accountDelete)
            c.console.out("account \(r.account.id) deleted" + (r.operators.isEmpty ? "" : "; the broker refuses \(r.operators.joined(separator: ", ")) from now on")
                          + (r.profiles == 0 ? "" : "; \(plural(r.profiles, "profile")) removed"))
        }
    }

    public struct OperatorList: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["operator", "list"], group: .platform, summary: "List operator logins (all, or one account's)",
            usage: ["operator list [--account ACCT]"],
            options: """
                  --account ACCT  only the operators whose home account is ACCT
                  --json          the reply as JSON
                """,
            examples: ["escrowctl operator list", "escrowctl operator list --account oem --json"],
            valued: ["account"], booleans: [], actsIn: .platform)
        public var args: Commands.OperatorList
        public init(_ a: Arguments) throws(UsageError) {
            args = .init(account: try a.value("account").map { v throws(UsageError) in try Parse.account(v, what: "--account") })
        }
        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.operatorList, args)
            if c.global.json { return c.console.json(json) }
            let r = try c.decode(json, as: Commands.OperatorListResult.self, .operatorList)
            c.console.out(Table(["USERNAME", "ACCOUNT", "ROLE"], r.operators.map { [$0.username, $0.account.rawValue, $0.role.rawValue] }).render())
            c.console.note(plural(r.operators.count, "operator"))
        }
    }

    public struct OperatorPasswd: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["operator", "passwd"], group: .platform, summary: "Give an operator a new password (the old one is refused at once)",
            usage: ["operator passwd USER [--password P]"],
            options: """
                  USER            the operator's username
                  --password P    the new password, 8 to 256 characters; generated and printed when absent
                """,
            examples: ["escrowctl operator passwd op-alice", "escrowctl operator passwd op-bob --password 'new horse battery'"],
            valued: ["password"], booleans: [], positionals: ["USER"], actsIn: .platform)
        public var args: Commands.OperatorPasswd
        public var generatedPassword: Bool
        public init(_ a: Arguments) throws(UsageError) {
            let (password, generated) = try Parse.password(a)
            generatedPassword = generated
            args = .init(username: a.positionals[0], password: password)
        }
        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.operatorPasswd, args)
            if c.global.json { return c.console.json(Parse.showingPassword(json, args.password, if: generatedPassword)) }
            let r = try c.decode(json, as: Commands.OperatorListResult.Entry.self, .operatorPasswd)
            c.console.out("operator \(r.username) (account \(r.account)) has a new password; the old one is refused from now on")
            if generatedPassword { c.console.out("password: \(args.password)") }
        }
    }

    public struct OperatorDelete: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["operator", "delete"], group: .platform, summary: "Remove an operator login (refused by the broker at once)",
            usage: ["operator delete USER"],
            options: """
                  USER            the operator's username (op-admin cannot be deleted)
                """,
            examples: ["escrowctl operator delete op-alice"],
            valued: [], booleans: [], positionals: ["USER"], actsIn: .platform)
        public var args: Commands.OperatorRef
        public init(_ a: Arguments) throws(UsageError) { args = .init(username: a.positionals[0]) }
        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.operatorDelete, args)
            if c.global.json { return c.console.json(json) }
            let r = try c.decode(json, as: Commands.OperatorListResult.Entry.self, .operatorDelete)
            c.console.out("operator \(r.username) (account \(r.account)) deleted; the broker refuses its login from now on")
        }
    }
}

/// Validation helpers shared by the commands.
enum Parse {
    /// `--password P` (8 to 256 characters), or a generated one to print once; `generated` says which.
    static func password(_ a: Arguments) throws(UsageError) -> (password: String, generated: Bool) {
        let password = a.value("password") ?? OperatorSession.randomToken(24)
        guard (8...256).contains(password.count) else { throw UsageError.invalid("--password must be 8 to 256 characters") }
        return (password, a.value("password") == nil)
    }

    /// The reply with a generated password added, for `--json` (the only time it is shown).
    static func showingPassword(_ reply: JSONValue, _ password: String, if generated: Bool) -> JSONValue {
        guard generated, case .object(var o) = reply else { return reply }
        o["password"] = .string(password)
        return .object(o)
    }

    static func account(_ raw: String, what: String) throws(UsageError) -> AccountID {
        guard let a = AccountID(raw) else { throw UsageError("\(what) '\(raw.prefix(80))' must match [A-Za-z0-9._-]{1,64}") }
        return a
    }

    static func devices(_ raw: [String], what: String = "--ids") throws(UsageError) -> [DeviceID] {
        var out: [DeviceID] = []
        for r in raw {
            guard let d = DeviceID(r) else { throw UsageError("\(what): device id '\(r.prefix(80))' must match [A-Za-z0-9._-]{1,64}") }
            out.append(d)
        }
        return out
    }

    /// `--heartbeat 60`, `90s`, `5m`: whole seconds.
    static func heartbeat(_ a: Arguments) throws(UsageError) -> Int? {
        guard let v = a.value("heartbeat") else { return nil }
        guard let d = Arguments.parseDuration(v), d.components.attoseconds == 0, d.components.seconds > 0 else {
            throw UsageError.invalid("--heartbeat expects whole seconds like 60 or 5m, got '\(v)'")
        }
        return Int(d.components.seconds)
    }

    /// A JSON object given on the command line.
    static func settings(_ text: String, what: String) throws(UsageError) -> [String: JSONValue] {
        guard let v = try? WireCodec.decoder.decode(JSONValue.self, from: Data(text.utf8)), case .object(let o) = v else {
            throw UsageError("\(what) must be a JSON object like '{\"ntp\":\"pool.ntp.org\"}'")
        }
        return o
    }
}
