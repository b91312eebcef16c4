/// The ledger's view of a SQL database: the same calls on SQLite (`Database`, the default) and on
/// PostgreSQL (`PostgresDatabase`). SQL is written once, in the dialect both accept: `?` and `?N`
/// parameters (PostgreSQL's `$N` are derived), `ON CONFLICT`, `RETURNING`, `coalesce`; where the two
/// differ the caller asks `dialect` (`greatest`). Migrations are written in SQLite's DDL and
/// translated for PostgreSQL (`Migration.postgresSQL`).
///
/// Every call blocks the calling thread (a disk or a network round trip): call it from the thread
/// that owns the ledger, never from Swift's cooperative pool (`BlockingWork`).
public protocol SQLDatabase: AnyObject, Sendable {
    var dialect: SQLDialect { get }
    /// Where it is, for messages: the file path, or the PostgreSQL URL without its password.
    var location: String { get }

    /// Runs one statement and returns how many rows it changed.
    @discardableResult
    func execute(_ sql: String, _ parameters: [SQLValue]) throws -> Int
    /// A change whose row count the caller does not need. Inside a transaction PostgreSQL sends it
    /// without waiting for its answer (libpq's pipeline mode): it is answered, and a failure thrown,
    /// at the next call that needs an answer (a read, or the commit, which then does not commit).
    /// Outside a transaction, and on SQLite, it is `execute`.
    func write(_ sql: String, _ parameters: [SQLValue]) throws
    /// Runs one query and returns all its rows.
    func query(_ sql: String, _ parameters: [SQLValue]) throws -> [Row]
    /// Calls `body` for each row; `body` may use the database.
    func forEachRow(_ sql: String, _ parameters: [SQLValue], _ body: (Row) throws -> Void) throws
    /// The first column of the first row, or `.null` when there is no row.
    func scalar(_ sql: String, _ parameters: [SQLValue]) throws -> SQLValue
    /// Several `;`-separated statements without parameters.
    func executeScript(_ sql: String) throws
    /// Runs `body` in one transaction (a savepoint when nested); rolled back when it throws.
    /// Committed, and durable, when it returns.
    @discardableResult
    func transaction<T>(_ body: () throws -> T) throws -> T
    /// Applies the migrations above the stored schema version, each in its own transaction.
    func migrate(_ migrations: [Migration]) throws
    /// The stored schema version; 0 for a new database.
    func userVersion() throws -> Int
    /// Fault injection: refuse every write (as a read-only disk does), or lift that.
    func refuseWrites(_ on: Bool) throws
    /// What the database's own consistency check reports; empty when sound.
    func integrityProblems() throws -> [String]
}

extension SQLDatabase {
    @discardableResult
    public func execute(_ sql: String) throws -> Int { try execute(sql, []) }
    public func query(_ sql: String) throws -> [Row] { try query(sql, []) }
    public func scalar(_ sql: String) throws -> SQLValue { try scalar(sql, []) }
}

/// Where the two SQL dialects the ledger speaks differ.
public enum SQLDialect: String, Sendable {
    case sqlite, postgres

    /// The larger of two values: SQLite's scalar `max(a, b)`, PostgreSQL's `greatest(a, b)`.
    public var greatest: String { self == .sqlite ? "max" : "greatest" }
}

/// A storage failure the control plane answers for: the database cannot take writes now (full,
/// read-only, I/O, busy, unreachable), or a change broke a constraint. SQLite's and PostgreSQL's
/// errors both say which.
public protocol StorageFailure: Error, Sendable, CustomStringConvertible {
    /// Writes are impossible for now; retrying later may work. Nothing was changed.
    var isUnavailable: Bool { get }
    /// A UNIQUE, NOT NULL, CHECK, FOREIGN KEY or PRIMARY KEY constraint refused the change.
    var isConstraint: Bool { get }
    /// The database's own message.
    var message: String { get }
}

extension SQLiteError: StorageFailure {
    public var isUnavailable: Bool { isFull || isReadOnly || isIOError || isBusy }
}

/// Which database the ledger lives in: `sqlite:PATH` (or a bare path) or a PostgreSQL URL
/// (`postgres://` / `postgresql://`, anything libpq's connection URIs accept).
public enum StoreLocation: Sendable, Equatable, CustomStringConvertible {
    case sqlite(path: String)
    case postgres(url: String)

    /// Parses `--store`; nil (with a reason) when it is neither form.
    public static func parse(_ text: String) -> Result<StoreLocation, StoreLocationError> {
        if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") { return .success(.postgres(url: text)) }
        if text.hasPrefix("sqlite:") {
            let path = String(text.dropFirst("sqlite:".count))
            return path.isEmpty ? .failure(.init("sqlite: needs a file path, as in sqlite:/var/lib/escrowd/escrow.db")) : .success(.sqlite(path: path))
        }
        if text.contains("://") {
            return .failure(.init("'\(text.prefix(40))' is neither sqlite:PATH nor a postgres:// URL"))
        }
        return text.isEmpty ? .failure(.init("the store is empty; give sqlite:PATH or postgres://...")) : .success(.sqlite(path: text))
    }

    /// Opens it: the SQLite file (created if missing) or a PostgreSQL connection.
    public func open() throws -> any SQLDatabase {
        switch self {
        case .sqlite(let path): try Database(path: path)
        case .postgres(let url): try PostgresDatabase(url: url)
        }
    }

    /// For logs and messages: a PostgreSQL URL without its password.
    public var description: String {
        switch self {
        case .sqlite(let path): "sqlite:\(path)"
        case .postgres(let url): PostgresDatabase.redacted(url)
        }
    }
}

public struct StoreLocationError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    init(_ description: String) { self.description = description }
}
