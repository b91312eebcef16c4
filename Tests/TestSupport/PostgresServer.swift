import Foundation
import POSIX
import Storage
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A real PostgreSQL server for the tests: one per test process, started on first use in a
/// temporary directory, listening on a Unix socket there and on a free loopback port. PostgreSQL
/// refuses to run as root, so as root (CI) `initdb` and `postgres` run as the `postgres` user
/// (Debian's package creates it) through `setpriv`, which also makes the kernel kill the server
/// when the test process dies (`--pdeathsig`). Each test gets a schema of its own (`freshStore()`),
/// so tests in parallel never see each other's tables.
///
/// Durability settings are the server's defaults except `fsync = off`: the tests kill escrowd,
/// never this server, and an fsync per commit on a shared CI disk only slows them down.
public final class PostgresServer: Sendable {
    public static let installHint = "apt-get install -y postgresql"

    public let directory: String
    public let port: Int
    private let process: ChildProcess
    private let schemas = Atomic<Int>(0)

    /// The database every test schema lives in.
    public static let database = "escrow"

    /// The process's server, started on first call.
    public static func shared() async throws -> PostgresServer {
        try await offPool { try started.withLock { state in
            if let server = state.server { return server }
            if let failure = state.failure { throw TestSupportError(failure) }
            do {
                let server = try PostgresServer()
                state.server = server
                return server
            } catch {
                state.failure = "\(error)"
                throw error
            }
        } }
    }

    private struct State: Sendable {
        var server: PostgresServer?
        var failure: String?
    }
    private static let started = Mutex(State())

    /// The newest installed server binaries (`/usr/lib/postgresql/N/bin`).
    static func binaries() throws -> String {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted()
        guard let newest = versions.last, FileManager.default.isExecutableFile(atPath: "\(root)/\(newest)/bin/postgres") else {
            throw TestSupportError("PostgreSQL server binaries not found under \(root); install them with `\(installHint)`")
        }
        return "\(root)/\(newest)/bin"
    }

    private init() throws {
        let bin = try Self.binaries()
        var template = Array("/tmp/escrow-pg-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TestSupportError("mkdtemp under /tmp failed: \(String(cString: strerror(errno)))")
        }
        directory = String(cString: made)
        port = try freePorts(1)[0]
        let runAs = try Self.unprivilegedUser()
        if let (uid, gid) = runAs.ids { chown(directory, uid, gid) }
        let data = directory + "/data", log = directory + "/postgres.log"

        let initdb = try ChildProcess.spawn(runAs.wrapper.first ?? bin + "/initdb",
                                            Array(runAs.wrapper.dropFirst()) + (runAs.wrapper.isEmpty ? [] : [bin + "/initdb"])
                                                + ["-D", data, "-U", "escrow", "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync"],
                                            stdout: directory + "/initdb.log", stderr: nil)
        guard initdb.waitForExit(timeout: .seconds(60)), initdb.exitStatus == 0 else {
            initdb.terminate(grace: .seconds(1))
            let text = (try? String(contentsOfFile: directory + "/initdb.log", encoding: .utf8)) ?? ""
            throw TestSupportError("initdb failed (status \(initdb.exitStatus.map(String.init) ?? "still running after 60 s")): \(text.suffix(800))")
        }
        FileManager.default.createFile(atPath: log, contents: nil)
        if let (uid, gid) = runAs.ids { chown(log, uid, gid) }
        let watch = try FileWatch(log)
        let serverArgs = ["-D", data, "-k", directory, "-p", String(port), "-c", "listen_addresses=127.0.0.1",
                          "-c", "fsync=off", "-c", "max_connections=1000", "-c", "shared_buffers=64MB"]
        process = try Self.spawnFromKeeperThread(runAs.wrapper.first ?? bin + "/postgres",
                                                 Array(runAs.wrapper.dropFirst()) + (runAs.wrapper.isEmpty ? [] : [bin + "/postgres"]) + serverArgs,
                                                 log: log)
        // Ready when the server logs so (an event: the log file is written), bounded.
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if text.contains("ready to accept connections") { break }
            if !process.isRunning { throw TestSupportError("postgres exited during start-up: \(text.suffix(800))") }
            let left = deadline - ContinuousClock.now
            guard left > .zero else {
                process.terminate(grace: .seconds(1))
                throw TestSupportError("postgres did not log 'ready to accept connections' within 30 s: \(text.suffix(800))")
            }
            watch.wait(milliseconds: Int32(left.components.seconds * 1000 + 1), orExitOf: process)
        }
        let admin = try PostgresDatabase(url: url(database: "postgres"))
        try admin.execute("CREATE DATABASE \(Self.database)")
        Self.registerCleanup(self)
    }

    /// The kernel's parent-death signal fires when the *thread* that spawned the child ends, so the
    /// server is spawned by a thread that lives as long as the process (it waits for the server).
    private static func spawnFromKeeperThread(_ executable: String, _ arguments: [String], log: String) throws -> ChildProcess {
        let handoff = Mutex<Result<ChildProcess, any Error>?>(nil)
        let ready = DispatchSemaphore(value: 0)
        let keeper = Thread {
            BlockingWork.markThread()
            let result = Result { try ChildProcess.spawn(executable, arguments, stdout: log, stderr: nil) }
            handoff.withLock { $0 = result }
            ready.signal()
            if case .success(let process) = result { _ = process.waitUntilExit() }
        }
        keeper.name = "postgres-keeper"
        keeper.start()
        ready.wait()
        return try handoff.withLock { $0! }.get()
    }

    /// `setpriv` to the `postgres` user when running as root (with the kernel's parent-death
    /// signal, so the server dies with the test process); nothing otherwise.
    private static func unprivilegedUser() throws -> (wrapper: [String], ids: (uid_t, gid_t)?) {
        guard geteuid() == 0 else { return ([], nil) }
        guard let pw = getpwnam("postgres") else {
            throw TestSupportError("running as root and there is no 'postgres' user to run PostgreSQL as; install it with `\(installHint)`")
        }
        return (["/usr/bin/setpriv", "--reuid=\(pw.pointee.pw_uid)", "--regid=\(pw.pointee.pw_gid)", "--clear-groups",
                 "--pdeathsig", "KILL", "--"], (pw.pointee.pw_uid, pw.pointee.pw_gid))
    }

    /// A libpq URL for `database` over the server's Unix socket.
    public func url(database: String = PostgresServer.database, schema: String? = nil) -> String {
        var u = "postgresql://escrow@/\(database)?host=\(directory)&port=\(port)"
        if let schema { u += "&options=-csearch_path%3D\(schema)&application_name=\(schema)" }
        return u
    }

    /// Ends every server connection of the store's schema (`pg_terminate_backend`), as a server
    /// restart or a failover does; returns how many.
    @discardableResult
    public func dropConnections(of store: StoreLocation) throws -> Int {
        guard case .postgres(let u) = store, let schema = u.components(separatedBy: "application_name=").last else { return 0 }
        let admin = try PostgresDatabase(url: url())
        return try admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ?", [.text(schema)]).count
    }

    /// A new, empty schema for one test (or one escrowd) and the store that uses it.
    public func freshStore() throws -> StoreLocation {
        let n = schemas.add(1, ordering: .relaxed).newValue
        let schema = "t\(getpid())_\(n)"
        let admin = try PostgresDatabase(url: url())
        try admin.execute("CREATE SCHEMA \(schema)")
        return .postgres(url: url(schema: schema))
    }

    private static let cleanup = Mutex<[(ChildProcess, String)]>([])
    private static func registerCleanup(_ server: PostgresServer) {
        cleanup.withLock { $0.append((server.process, server.directory)) }
        atexit {
            for (process, directory) in PostgresServer.cleanup.withLock({ $0 }) {
                process.signal(SIGQUIT)  // immediate shutdown: nothing here needs to survive
                _ = process.waitForExit(timeout: .seconds(5))
                try? FileManager.default.removeItem(atPath: directory)
            }
        }
    }
}

/// Which database the tests' ledgers use: SQLite files unless `ESCROW_TEST_STORE=postgres`
/// (`.ci/run` runs the whole suite both ways).
public enum TestStore {
    public static var usesPostgres: Bool { ProcessInfo.processInfo.environment["ESCROW_TEST_STORE"] == "postgres" }

    /// A store for one ledger: `sqliteFile` itself, or a fresh schema on the shared PostgreSQL.
    public static func make(sqliteFile: String) async throws -> StoreLocation {
        try await forDaemon() ?? .sqlite(path: sqliteFile)
    }

    /// What an escrowd's `--store` (`Daemon.Settings.store`) is: nil (its data directory's SQLite
    /// file) or a fresh schema on the shared PostgreSQL.
    public static func forDaemon() async throws -> StoreLocation? {
        guard usesPostgres else { return nil }
        let server = try await PostgresServer.shared()
        return try await offPool { try server.freshStore() }
    }

    /// Every row of the ledger's tables that commands change, as text: what "changes nothing" compares.
    public static func snapshot(_ store: StoreLocation) throws -> [String] {
        let db = try store.open()
        var out: [String] = []
        for (table, columns) in [("accounts", "*"), ("operators", "*"), ("transfers", "*"), ("transfer_items", "*"), ("custody", "*"),
                                 ("profiles", "*"), ("configs", "device_id, version, payload"),
                                 ("devices", "id, owner, provisioner, state, desired_version, applied_version, config_state, config_reason, csr")] {
            for row in try db.query("SELECT \(columns) FROM \(table) ORDER BY 1, 2") { out.append("\(table): \(row)") }
        }
        return out
    }

    /// Everything the database holds, as text: the SQLite files' bytes (WAL included), or every
    /// row of every table of the PostgreSQL schema.
    public static func everything(_ store: StoreLocation) throws -> String {
        switch store {
        case .sqlite(let path):
            return [path, path + "-wal"].compactMap { try? String(contentsOfFile: $0, encoding: .isoLatin1) }.joined()
        case .postgres:
            let db = try store.open()
            let tables = try db.query("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()").compactMap { $0[0].stringValue }
            return try tables.map { t in try db.query("SELECT x::text FROM \(t) x").compactMap { $0[0].stringValue }.joined(separator: "\n") }.joined(separator: "\n")
        }
    }

    /// One column of one device's row, as text ("NULL" when null).
    public static func deviceColumn(_ store: StoreLocation, _ column: String, of device: String) throws -> String {
        let value = try store.open().scalar("SELECT \(column) FROM devices WHERE id = ?", [.text(device)])
        switch value {
        case .null: return "NULL"
        case .text(let s): return s
        default: return value.description
        }
    }
}
