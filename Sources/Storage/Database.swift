import CSQLite
import POSIX
import Foundation

/// One connection to an SQLite database file, safe to share between threads and tasks.
///
/// Every call runs with the connection's lock held, so calls from different threads are
/// serialized and a `transaction` keeps the connection to itself until it commits or rolls back.
/// The lock is recursive: a transaction body (which runs on the calling thread) keeps using
/// the same `Database`, and nested `transaction` calls become savepoints. Calls block the calling
/// thread while they wait for the lock, so keep transactions short (a 20,000-row batch takes tens of ms).
///
/// Durability: the file is in WAL mode with `synchronous=FULL`, so when `execute` (outside a
/// transaction) or `transaction` returns, the change has been fsynced to the WAL and survives
/// kill -9 and power loss.
///
/// `@unchecked Sendable` is safe because the `sqlite3*` handle, the statement cache and the
/// transaction depth are only read or written while `lock` is held (the connection is opened
/// with SQLITE_OPEN_NOMUTEX because this lock already serializes it; holding it also keeps
/// `sqlite3_errmsg` about our own failing call). `deinit` runs when no other reference exists.
public final class Database: SQLDatabase, @unchecked Sendable {
    /// The path given when opening.
    public let path: String
    private let connection: OpaquePointer
    private let lock = NSRecursiveLock()
    private var statements: [String: Statement] = [:]
    private var transactionDepth = 0

    /// Cached prepared statements kept at most; SQL built at run time must not grow the cache forever.
    public static let statementCacheLimit = 256

    /// Opens (creating if needed) a database file for reading and writing, in WAL mode with
    /// `synchronous=FULL`, foreign keys enforced, and waiting up to `busyTimeout` for other
    /// processes' locks.
    public convenience init(path: String, busyTimeout: Duration = .seconds(5)) throws {
        try self.init(
            path: path,
            flags: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
            busyTimeout: busyTimeout)
        // journal_mode answers with the mode in force; anything but WAL would lose our durability story.
        let mode = try scalar("PRAGMA journal_mode=WAL").stringValue?.lowercased()
        if mode != "wal" && mode != "memory" {
            throw SQLiteError(
                code: SQLITE_CANTOPEN,
                message: "could not switch \(path) to WAL journal mode (got \(mode ?? "nothing")); is it on a filesystem without shared memory or read-only?",
                sql: "PRAGMA journal_mode=WAL")
        }
        try execute("PRAGMA synchronous=FULL")
        try execute("PRAGMA foreign_keys=ON")
    }

    /// Opens an existing database file read-only; every write fails with `SQLiteError.isReadOnly`.
    public static func openReadOnly(path: String, busyTimeout: Duration = .seconds(5)) throws -> Database {
        let database = try Database(
            path: path, flags: SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, busyTimeout: busyTimeout)
        try database.execute("PRAGMA foreign_keys=ON")
        return database
    }

    private init(path: String, flags: Int32, busyTimeout: Duration) throws {
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard let handle else {
            throw SQLiteError(resultCode: rc, connection: nil, sql: nil)
        }
        guard rc == SQLITE_OK else {
            let error = SQLiteError(resultCode: rc, connection: handle, sql: nil)
            sqlite3_close_v2(handle)
            throw SQLiteError(code: error.code, message: "\(error.message) (opening \(path))", sql: nil)
        }
        self.path = path
        self.connection = handle
        sqlite3_extended_result_codes(handle, 1)
        let (seconds, attoseconds) = busyTimeout.components
        let milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        sqlite3_busy_timeout(handle, Int32(clamping: milliseconds))
    }

    deinit {
        // Finalize every statement before closing; close_v2 would otherwise leave a zombie connection.
        statements.removeAll()
        sqlite3_close_v2(connection)
    }

    // MARK: Locking

    /// Runs `body` with the connection to itself. Recursive on the same thread.
    func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        BlockingWork.check("sqlite")
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// A cached statement for `sql`, or a fresh one when the cached one is being stepped
    /// further up the stack. It is reset and its bindings cleared after `body`. Lock must be held.
    private func withStatement<T>(_ sql: String, _ body: (Statement) throws -> T) throws -> T {
        let statement: Statement
        if let cached = statements[sql] {
            statement = cached.inUse ? try Statement(connection: connection, sql: sql, persistent: false) : cached
        } else {
            statement = try Statement(connection: connection, sql: sql, persistent: true)
            if statements.count >= Self.statementCacheLimit,
                let victim = statements.first(where: { !$0.value.inUse })?.key
            {
                statements.removeValue(forKey: victim)
            }
            statements[sql] = statement
        }
        statement.inUse = true
        defer {
            statement.reset()
            statement.inUse = false
        }
        return try body(statement)
    }

    // MARK: Statements

    /// Runs one SQL statement with `?` parameters and returns how many rows it changed.
    @discardableResult
    public func execute(_ sql: String, _ parameters: [SQLValue] = []) throws -> Int {
        try withLock {
            try withStatement(sql) { statement in
                try statement.bind(parameters)
                while try statement.step() {}
            }
            return Int(sqlite3_changes64(connection))
        }
    }

    /// Runs one query and returns all its rows.
    public func query(_ sql: String, _ parameters: [SQLValue] = []) throws -> [Row] {
        try withLock {
            try withStatement(sql) { statement in
                try statement.bind(parameters)
                var rows: [Row] = []
                while try statement.step() { rows.append(statement.currentRow()) }
                return rows
            }
        }
    }

    /// Calls `body` for each row without collecting them all; `body` may use the database.
    public func forEachRow(_ sql: String, _ parameters: [SQLValue] = [], _ body: (Row) throws -> Void) throws {
        try withLock {
            try withStatement(sql) { statement in
                try statement.bind(parameters)
                while try statement.step() { try body(statement.currentRow()) }
            }
        }
    }

    /// The first column of the first row, or `.null` when there is no row.
    public func scalar(_ sql: String, _ parameters: [SQLValue] = []) throws -> SQLValue {
        try withLock {
            try withStatement(sql) { statement in
                try statement.bind(parameters)
                guard try statement.step(), sqlite3_column_count(statement.pointer) > 0 else { return .null }
                return statement.value(at: 0)
            }
        }
    }

    /// Runs several `;`-separated statements without parameters (migrations, schema scripts).
    public func executeScript(_ sql: String) throws {
        try withLock {
            try SQLiteError.check(sqlite3_exec(connection, sql, nil, nil, nil), connection: connection, sql: sql)
        }
    }

    /// Rows changed by the most recent INSERT, UPDATE or DELETE on this connection.
    /// Only meaningful inside `transaction` (or with no other thread using the database).
    public var changes: Int { withLock { Int(sqlite3_changes64(connection)) } }

    /// Rowid of the most recent successful INSERT on this connection.
    /// Only meaningful inside `transaction` (or with no other thread using the database).
    public var lastInsertRowID: Int64 { withLock { sqlite3_last_insert_rowid(connection) } }

    /// True when this connection cannot write (opened read-only, or the file is not writable).
    public var isReadOnly: Bool { withLock { sqlite3_db_readonly(connection, "main") == 1 } }

    /// True while a transaction is open on this connection.
    public var isInTransaction: Bool { withLock { sqlite3_get_autocommit(connection) == 0 } }

    // MARK: Transactions

    /// Runs `body` in a transaction: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if `body` throws.
    ///
    /// Called inside another transaction, it becomes a SAVEPOINT that rolls back only its own
    /// changes when `body` throws. The connection is locked for the whole call, so no other thread's
    /// statements or transactions can interleave. `body` must not hand the database to another
    /// thread and wait for it (that thread would block on the lock).
    @discardableResult
    public func transaction<T>(_ body: (Database) throws -> T) throws -> T {
        try withLock {
            let depth = transactionDepth
            let savepoint = "escrowfleet_savepoint_\(depth)"
            if depth == 0 {
                try execute("BEGIN IMMEDIATE")
            } else {
                try requireOpenTransaction()
                try execute("SAVEPOINT \(savepoint)")
            }
            transactionDepth += 1
            defer { transactionDepth -= 1 }

            let result: T
            do {
                result = try body(self)
                try requireOpenTransaction()
                try execute(depth == 0 ? "COMMIT" : "RELEASE \(savepoint)")
            } catch {
                rollBack(depth: depth, savepoint: savepoint)
                throw error
            }
            return result
        }
    }

    /// SQLite rolls the whole transaction back by itself after some errors (SQLITE_FULL, IOERR, BUSY...).
    /// If `body` caught such an error and went on, committing would silently lose its work.
    private func requireOpenTransaction() throws {
        if sqlite3_get_autocommit(connection) != 0 {
            throw SQLiteError(
                code: SQLITE_ABORT | (2 << 8),  // SQLITE_ABORT_ROLLBACK (a macro Swift cannot import)
                message: "the transaction was already rolled back by SQLite after an earlier error; nothing was committed",
                sql: nil)
        }
    }

    private func rollBack(depth: Int, savepoint: String) {
        guard sqlite3_get_autocommit(connection) == 0 else { return }  // already rolled back by SQLite
        if depth == 0 {
            _ = try? execute("ROLLBACK")
        } else {
            _ = try? execute("ROLLBACK TO \(savepoint)")
            _ = try? execute("RELEASE \(savepoint)")
        }
    }

    // MARK: Maintenance

    /// Copies the whole database into a new file at `path` with SQLite's online backup API: one
    /// consistent snapshot, taken while other connections (another process included) keep writing.
    /// Blocking: call it from a thread of its own or a command-line tool, never the cooperative pool.
    public func backup(to path: String) throws {
        guard !FileManager.default.fileExists(atPath: path) else {
            throw SQLiteError(code: SQLITE_CANTOPEN, message: "\(path) already exists; back up into a new file")
        }
        var destination: OpaquePointer?
        let rc = sqlite3_open_v2(path, &destination, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nil)
        defer { sqlite3_close_v2(destination) }
        try SQLiteError.check(rc, connection: destination)
        try withLock { () throws(SQLiteError) in
            guard let backup = sqlite3_backup_init(destination, "main", connection, "main") else {
                throw SQLiteError(resultCode: sqlite3_errcode(destination), connection: destination, sql: nil)
            }
            // All pages in one step, one read transaction: in WAL mode a reader never waits for the
            // writer, and a lock SQLite does need is waited for by this connection's busy timeout.
            let step = sqlite3_backup_step(backup, -1)
            let finish = sqlite3_backup_finish(backup)
            try SQLiteError.check(step == SQLITE_DONE ? finish : step, connection: destination)
        }
    }

    /// Runs `PRAGMA integrity_check`; true when SQLite reports "ok".
    public func integrityCheck() throws -> Bool {
        try integrityProblems().isEmpty
    }

    /// The problems `PRAGMA integrity_check` reports (empty when the database is sound).
    public func integrityProblems() throws -> [String] {
        let messages = try query("PRAGMA integrity_check").map { $0[0].stringValue ?? $0[0].description }
        return messages == ["ok"] ? [] : messages
    }

    // MARK: SQLDatabase

    public var dialect: SQLDialect { .sqlite }
    public var location: String { path }

    /// `execute`: SQLite answers in-process, there is no round trip to save.
    public func write(_ sql: String, _ parameters: [SQLValue]) throws { try execute(sql, parameters) }

    /// `transaction(_:)` for callers that do not need the connection handed back.
    @discardableResult
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try transaction { (_: Database) in try body() }
    }

    /// `PRAGMA query_only`: every write then fails as on a read-only file.
    public func refuseWrites(_ on: Bool) throws {
        try execute("PRAGMA query_only = \(on ? 1 : 0)")
    }

    /// Number of prepared statements currently cached (for tests and diagnostics).
    public var cachedStatementCount: Int { withLock { statements.count } }
}
