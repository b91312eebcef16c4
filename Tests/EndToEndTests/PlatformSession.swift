import Foundation
import EscrowCore
import MQTT
import POSIX
import TestSupport
import OperatorCLI

/// A running `escrowd` (real binary, managed mosquitto, mutual TLS for devices) with operators.
struct PlatformSession {
    let escrowd: EscrowdProcess
    let admin: OperatorProbe

    init(arguments: [String] = [], sqlite: Bool = false) async throws {
        escrowd = try await EscrowdProcess(arguments: arguments, sqlite: sqlite)
        let a = try escrowd.adminCredentials()
        admin = try await OperatorProbe(port: escrowd.operatorPort, username: a.user, password: a.password, accounts: [.platform])
    }

    /// Creates an account and an operator login for it; returns the operator's probe.
    func account(_ id: AccountID, kind: Account.Kind, managedBy: AccountID? = nil) async throws -> OperatorProbe {
        var args: [String: JSONValue] = ["id": .string(id.rawValue), "name": .string(id.rawValue.uppercased()), "kind": .string(kind.rawValue)]
        if let managedBy { args["managedBy"] = .string(managedBy.rawValue) }
        _ = try await admin.send(.platform, "account.create", args).result(Account.self)
        let user = "op-\(id)", password = "pw-\(id)-secret"
        _ = try await admin.send(.platform, "operator.create", ["username": .string(user), "password": .string(password), "account": .string(id.rawValue)])
            .result(Commands.OperatorResult.self)
        return try await operatorProbe(user: user, password: password, accounts: [id])
    }

    /// One login, no retry: escrowd answers operator.create once the broker has the login in force
    /// (topics.md, "A reply means in force"; `BrokerReloadConfirmationTests`).
    func operatorProbe(user: String, password: String, accounts: [AccountID]) async throws -> OperatorProbe {
        try await OperatorProbe(port: escrowd.operatorPort, username: user, password: password, accounts: accounts)
    }

    /// Provisions devices with identities and writes each bundle + agent.conf into `directory/{id}/`.
    func provision(_ deviceIDs: [String], by op: OperatorProbe, account: AccountID, into directory: TempDirectory) async throws -> [String: String] {
        let r = try await op.send(account, "device.provision", ["deviceIds": TestSupport.ids(deviceIDs)]).result(Commands.DeviceProvisionResult.self)
        var configs: [String: String] = [:]
        for b in r.bundles {
            // The layout escrowctl writes, with a short backoff for tests.
            let dir = try DeviceBundleWriter.write(b, into: directory.path)
            let conf = DeviceBundleWriter.agentConf(b) + "backoff_initial = 1\nbackoff_max = 2\n"
            try conf.write(toFile: dir + "/agent.conf", atomically: true, encoding: .utf8)
            configs[b.deviceId.rawValue] = dir + "/agent.conf"
        }
        return configs
    }

    /// Provisions devices with identities, starts an `escrow-agent` for each, and waits until all are online.
    func startAgents(_ names: [String], by op: OperatorProbe, account: AccountID, into directory: TempDirectory) async throws -> [AgentProcess] {
        let confs = try await provision(names, by: op, account: account, into: directory)
        let agents = try names.map { try AgentProcess(config: confs[$0]!) }
        try await waitUntil("all agents online") {
            try await op.send(account, "device.list", ["online": true]).result(Commands.DeviceListResult.self).total == names.count
        }
        return agents
    }

    func close() async {
        await admin.close()
        escrowd.stop()
    }
}

/// An `escrow-agent` process.
final class AgentProcess: @unchecked Sendable {
    let config: String
    let log: String
    private(set) var process: ChildProcess

    init(config: String) throws {
        self.config = config
        log = (config as NSString).deletingLastPathComponent + "/agent.log"
        process = try Self.spawn(config, log)
    }

    func restart() throws {
        process = try Self.spawn(config, log)
    }

    /// With the executor rule enforced, as for escrowd.
    static func spawn(_ config: String, _ log: String) throws -> ChildProcess {
        try ChildProcess.spawn(try Products.path("escrow-agent"), ["--config", config], stdout: log, stderr: nil,
                               environment: ProcessInfo.processInfo.environment.merging(["ESCROW_EXECUTOR_CHECK": "1"]) { $1 })
    }

    /// The mode in the agent's durable state file.
    var persistedMode: String? {
        let path = (config as NSString).deletingLastPathComponent + "/state/agent-state.json"
        guard let data = FileManager.default.contents(atPath: path),
              let v = try? JSONDecoder().decode(JSONValue.self, from: data) else { return nil }
        return v["mode"]?.stringValue
    }

    func logTail() -> String { String(((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").suffix(1500)) }
}
