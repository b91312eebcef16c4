import Foundation
import EscrowCore
import POSIX
import Storage
#if canImport(Glibc)
import Glibc
#endif

/// The built `escrowd` binary with its managed mosquitto, in a temp data directory on free ports.
public final class EscrowdProcess: @unchecked Sendable {
    public let data: TempDirectory
    public let devicePort: Int
    public let operatorPort: Int
    public let extraArguments: [String]
    /// `--store`: nil (DATA/escrow.db) or, with `ESCROW_TEST_STORE=postgres`, a schema of its own.
    public let store: StoreLocation?
    /// The ledger, whichever database it is in.
    public var ledger: StoreLocation { store ?? .sqlite(path: dataDirectory + "/escrow.db") }
    public private(set) var process: ChildProcess?
    /// Where the current process's lines begin in the log (the log keeps every start's lines).
    public private(set) var logOffsetOfThisRun = 0
    /// The log lines of the current process only.
    public var logOfThisRun: String {
        let all = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        return String(all.utf8.dropFirst(min(logOffsetOfThisRun, all.utf8.count))) ?? ""
    }
    public var logPath: String { data.file("escrowd.log") }
    public var dataDirectory: String { data.path + "/data" }
    public var operatorURL: String { "mqtt://127.0.0.1:\(operatorPort)" }
    public var deviceURL: String { "mqtts://127.0.0.1:\(devicePort)" }

    /// `prepare` fills the data directory (a path that does not exist yet) before the first start,
    /// for example with `escrowd restore`. `sqlite`: the ledger is the data directory's SQLite file
    /// even when the suite runs on PostgreSQL (what a test of that file, such as backup, needs).
    public init(arguments: [String] = [], startTimeout: Duration = .seconds(20), sqlite: Bool = false, postgres: Bool = false,
                prepare: ((String) throws -> Void)? = nil) async throws {
        data = try TempDirectory(prefix: "escrowd")
        if postgres {
            let server = try await PostgresServer.shared()
            store = try await offPool { try server.freshStore() }
        } else {
            store = sqlite ? nil : try await TestStore.forDaemon()
        }
        let ports = try freePorts(2)
        devicePort = ports[0]
        operatorPort = ports[1]
        extraArguments = arguments
        try prepare?(data.path + "/data")
        try await start(timeout: startTimeout)
    }

    /// A second escrowd sharing `primary`'s PostgreSQL ledger and broker (a replica): a data
    /// directory of its own holding the primary's platform CA and secrets (bundles carry that CA;
    /// the administrator's login is the same), the primary's managed broker as `--broker`, logged
    /// in as the same service (its client id is its own).
    public init(replicaOf primary: EscrowdProcess, startTimeout: Duration = .seconds(20)) async throws {
        guard case .postgres? = primary.store else {
            throw TestSupportError("a replica shares a PostgreSQL ledger: start the primary with postgres: true")
        }
        data = try TempDirectory(prefix: "escrowd-replica")
        store = primary.store
        devicePort = primary.devicePort
        operatorPort = primary.operatorPort
        let dir = data.path + "/data"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        for f in ["platform-ca.pem", "platform-ca.key", "admin.secret", "escrowd.secret"] {
            try FileManager.default.copyItem(atPath: primary.dataDirectory + "/" + f, toPath: dir + "/" + f)
        }
        let secret = try String(contentsOfFile: dir + "/escrowd.secret", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        extraArguments = ["--broker", primary.operatorURL, "--password", secret]
        try await start(timeout: startTimeout)
    }

    /// Starts (or restarts) escrowd on the same data directory and ports; returns when it logs
    /// that it serves (a bounded wait that never blocks a thread of the cooperative pool).
    public func start(timeout: Duration = .seconds(20)) async throws {
        let before = (try? String(contentsOfFile: logPath, encoding: .utf8))?.components(separatedBy: "serving ").count ?? 1
        logOffsetOfThisRun = ((try? FileManager.default.attributesOfItem(atPath: logPath)[.size] as? Int) ?? nil) ?? 0
        let started = try ChildProcess.spawn(try Products.path("escrowd"),
                                             ["--data", dataDirectory, "--device-port", String(devicePort), "--operator-port", String(operatorPort),
                                              "--reconcile-interval", "2s"] + storeArguments + extraArguments,
                                             stdout: logPath,
                                             // The executor rule, enforced: a blocking call on the cooperative
                                             // pool ends escrowd with a message naming it (docs/ARCHITECTURE.md).
                                             environment: ProcessInfo.processInfo.environment.merging(["ESCROW_EXECUTOR_CHECK": "1"]) { $1 })
        process = started
        let logPath = self.logPath
        do {
            try await waitUntil(timeout: timeout, "escrowd serves") {
                let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                if log.components(separatedBy: "serving ").count > before { return true }
                if !started.isRunning {
                    throw TestSupportError("escrowd exited during start-up (status \(started.exitStatus ?? -1)). Log tail:\n\(String(log.suffix(2000)))")
                }
                return false
            }
        } catch let e as TestSupportError where !e.description.contains("exited during start-up") {
            throw TestSupportError("escrowd did not start serving within \(timeout). Log tail:\n\(logTail(2000))")
        }
    }

    private var storeArguments: [String] {
        if case .postgres(let url)? = store { ["--store", url] } else { [] }
    }

    /// The platform administrator's login, from the admin.conf escrowd writes.
    public func adminCredentials() throws -> (user: String, password: String) {
        let text = try String(contentsOfFile: dataDirectory + "/admin.conf", encoding: .utf8)
        let kv = try KeyValueFile.parse(text)
        return (kv["user"] ?? "op-admin", kv["password"] ?? "")
    }

    public var brokerPID: Int32? {
        guard let t = try? String(contentsOfFile: dataDirectory + "/broker/mosquitto.pid", encoding: .utf8) else { return nil }
        return Int32(t.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Sends a signal to escrowd (SIGKILL to crash it, SIGSTOP/SIGCONT to pause it).
    public func signal(_ sig: Int32) { process?.signal(sig) }

    /// Kills escrowd with SIGKILL and waits for it. Its managed broker keeps running (orphaned)
    /// until the next `start()`, which finds it through the pid file and replaces it.
    public func crash() {
        process?.signal(SIGKILL)
        process?.waitForExit(timeout: .seconds(10))
    }

    public func logTail(_ n: Int = 3000) -> String { String(((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").suffix(n)) }

    /// SIGTERM (escrowd stops its broker), SIGKILL after a bound; also stops an orphaned broker
    /// (watched through a pidfd, not polled).
    public func stop() {
        process?.terminate(grace: .seconds(10))
        if let pid = brokerPID, let orphan = ChildProcess.adopt(pid: pid, executable: "mosquitto") {
            orphan.terminate(grace: .seconds(2))
        }
    }

    deinit { stop() }
}
