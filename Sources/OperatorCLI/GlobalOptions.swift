import EscrowCore
import Foundation

/// Options every command accepts. Precedence: flags, then environment, then the config file.
public struct GlobalOptions: Sendable, Equatable {
    public var broker: String = GlobalOptions.defaultBroker
    public var user: String?
    public var password: String?
    /// CA file for an `mqtts://` operator listener (ESCROW_CA, config key `ca`).
    public var caFile: String?
    /// The account acted in (`accounts/{account}/cmd/...`); nil when nothing named one.
    public var account: AccountID?
    /// The config file that was read, if any.
    public var configFile: String?
    public var timeout: Duration = .seconds(10)
    public var json = false
    public var quiet = false
    public var requestId: String?

    public init() {}

    public static let defaultBroker = "mqtt://127.0.0.1:1883"
    /// Read when it exists and neither --config nor ESCROW_CONFIG names another file.
    public static let defaultConfigFile = "./escrow-data/admin.conf"
    public static let valued: Set<String> = ["broker", "user", "password", "account", "config", "timeout", "request-id", "ca"]
    public static let booleans: Set<String> = ["json", "quiet", "help"]

    public static let help = """
        GLOBAL OPTIONS (flags win over environment, environment over the config file)
          --broker URL       broker for operators (ESCROW_BROKER; default \(defaultBroker))
          --user USER        operator username, op-... (ESCROW_USER)
          --password PASS    operator password (ESCROW_PASSWORD)
          --ca FILE          CA of an mqtts:// operator listener (ESCROW_CA; escrowd --operator-tls)
          --account ACCT     the account acted in (ESCROW_ACCOUNT; default: the config file's)
          --config FILE      key = value file with broker, user, password, account
                             (ESCROW_CONFIG; default \(defaultConfigFile) if it exists)
          --timeout 10s      how long to wait for the broker and for each reply
          --request-id ID    idempotency key: a retry with the same id gets the first reply
          --json             print the reply's result as JSON (pretty, sorted keys)
          --quiet            no progress or notes on stderr
          --version          print the version and exit
        """

    /// Resolves the options from parsed flags, the environment and the config file.
    /// `accountFlag` and `passwordFlag` are false for commands whose `--account` or `--password` mean
    /// something else (operator create: the new operator's account and password).
    public static func resolve(_ args: Arguments, environment: [String: String], accountFlag: Bool = true, passwordFlag: Bool = true,
                               readFile: (String) -> String? = GlobalOptions.readFile) throws(UsageError) -> GlobalOptions {
        var o = GlobalOptions()
        var file: [String: String] = [:]
        if let path = args.value("config") ?? environment["ESCROW_CONFIG"].flatMap({ $0.isEmpty ? nil : $0 }) {
            guard let text = readFile(path) else { throw UsageError("config file \(path) cannot be read") }
            do { file = try KeyValueFile.parse(text) } catch { throw UsageError("config file \(path): \(error.message)") }
            o.configFile = path
        } else if let text = readFile(defaultConfigFile) {
            do { file = try KeyValueFile.parse(text) } catch { throw UsageError("config file \(defaultConfigFile): \(error.message)") }
            o.configFile = defaultConfigFile
        }
        for key in file.keys where !["broker", "user", "password", "account", "ca"].contains(key) {
            throw UsageError("config file \(o.configFile ?? ""): unknown key '\(key)'; known: broker, user, password, account, ca")
        }
        func pick(_ flag: String, _ env: String, _ key: String, useFlag: Bool = true) -> String? {
            if useFlag, let v = args.value(flag) { return v }
            if let v = environment[env], !v.isEmpty { return v }
            return file[key]
        }
        o.broker = pick("broker", "ESCROW_BROKER", "broker") ?? defaultBroker
        guard o.broker.contains("://") else { throw UsageError.invalid("--broker expects a URL like mqtt://host:1883, got '\(o.broker)'") }
        o.user = pick("user", "ESCROW_USER", "user")
        o.password = pick("password", "ESCROW_PASSWORD", "password", useFlag: passwordFlag)
        o.caFile = pick("ca", "ESCROW_CA", "ca")
        if let raw = pick("account", "ESCROW_ACCOUNT", "account", useFlag: accountFlag) {
            guard let a = AccountID(raw) else { throw UsageError("account '\(raw)' must match [A-Za-z0-9._-]{1,64}") }
            o.account = a
        }
        if let t = args.value("timeout") {
            guard let d = Arguments.parseDuration(t), d > .zero else { throw UsageError.invalid("--timeout expects a duration like 10s, 500ms or 2m, got '\(t)'") }
            o.timeout = d
        }
        o.json = args.flag("json")
        o.quiet = args.flag("quiet")
        if let r = args.value("request-id") {
            guard Identifier.isValid(r) else { throw UsageError.invalid("--request-id must match [A-Za-z0-9._-]{1,64}, got '\(r.prefix(80))'") }
            o.requestId = r
        }
        return o
    }

    public static func readFile(_ path: String) -> String? {
        try? String(contentsOfFile: path, encoding: .utf8)
    }
}
