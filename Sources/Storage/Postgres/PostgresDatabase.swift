import CLibPQ
import POSIX
import Foundation

/// One connection to a PostgreSQL database through libpq, with the same calls as `Database`
/// (`SQLDatabase`), safe to share between threads and tasks.
///
/// Every call runs with the connection's lock held (recursive: a transaction body keeps using it,
/// nested transactions are savepoints) and blocks the calling thread for a round trip to the
/// server. Statements are prepared once per connection and cached by their SQL. Parameters go as
/// text (byte strings as binary), typed by the first call's values; results come as text and are
/// read by column type: integers, floating point and numeric as numbers, booleans as 0/1, bytea
/// as bytes, everything else as text.
///
/// Durability: with the server's defaults (`synchronous_commit = on`) a commit returns once the
/// server flushed its write-ahead log, so an acknowledged change survives kill -9 of either side.
///
/// After the connection is lost (the server restarted, a failover, an administrator's
/// `pg_terminate_backend`), the next call outside a transaction reconnects (once). Where nothing
/// can have happened yet, that call is simply made again on the new connection: a transaction whose
/// BEGIN found the connection dead, a read outside a transaction. Inside a transaction the loss is
/// an error (`isUnavailable`) and nothing of it was committed.
///
/// `@unchecked Sendable`: the `PGconn*`, the statement cache and the depth are only touched with
/// `lock` held; `deinit` runs when no other reference exists.
public final class PostgresDatabase: SQLDatabase, @unchecked Sendable {
    public let url: String
    public var location: String { Self.redacted(url) }
    public var dialect: SQLDialect { .postgres }

    private let connection: OpaquePointer
    private let lock = NSRecursiveLock()
    private var statements: [String: Prepared] = [:]
    private var statementCounter = 0
    private var transactionDepth = 0
    /// Writes sent in pipeline mode whose results are not read yet (`write`).
    private var pipelined = 0
    /// Pipelined writes at most before their results are read (so neither side's socket buffer fills).
    static let pipelineDepth = 512

    private struct Prepared {
        let name: String
        let count: Int
        let columns: ColumnIndex?
    }

    public static let statementCacheLimit = 256

    /// Connects to `url` (a libpq connection URI, `postgres://user:password@host:port/db?...`).
    public init(url: String) throws {
        self.url = url
        BlockingWork.check("postgres connect")
        guard let conn = PQconnectdb(url) else {
            throw PostgresError(sqlState: "08000", message: "libpq could not allocate a connection for \(Self.redacted(url))")
        }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = Self.text(PQerrorMessage(conn))
            PQfinish(conn)
            throw PostgresError(sqlState: "08001", message: "cannot connect to \(Self.redacted(url)): \(message)")
        }
        connection = conn
        PQsetNoticeProcessor(conn, { _, _ in }, nil)  // NOTICEs (a savepoint released...) are not errors
        try executeScript(Self.sessionSettings)
    }

    deinit { PQfinish(connection) }

    /// Set on every (re)connection: UTF-8, UTC, and doubles printed so they read back exactly.
    static let sessionSettings = "SET client_encoding = 'UTF8'; SET TIME ZONE 'UTC'; SET extra_float_digits = 1"

    /// `url` without its password (`postgres://user:***@host/db`, `password=***`).
    public static func redacted(_ url: String) -> String {
        var out = url
        if let scheme = out.range(of: "://"), let at = out[scheme.upperBound...].firstIndex(of: "@"),
           let colon = out[scheme.upperBound..<at].firstIndex(of: ":") {
            out.replaceSubrange(out.index(after: colon)..<at, with: "***")
        }
        if let r = out.range(of: "password=") {
            let end = out[r.upperBound...].firstIndex(where: { $0 == "&" || $0 == " " }) ?? out.endIndex
            out.replaceSubrange(r.upperBound..<end, with: "***")
        }
        return out
    }

    // MARK: Locking and connection

    private func withLock<T>(_ body: () throws -> T) throws -> T {
        BlockingWork.check("postgres")
        lock.lock()
        defer { lock.unlock() }
        if transactionDepth == 0, PQstatus(connection) != CONNECTION_OK { try reconnect() }
        return try body()
    }

    private func reconnect() throws {
        pipelined = 0
        PQreset(connection)
        statements.removeAll()
        guard PQstatus(connection) == CONNECTION_OK else {
            throw PostgresError(sqlState: "08006", message: "the connection to \(location) is lost and reconnecting failed: \(Self.text(PQerrorMessage(connection)))")
        }
        try run(simple: Self.sessionSettings)
    }

    /// `body` once more on a new connection when it failed because the connection was found dead
    /// (only for calls that cannot have changed anything: outside a transaction, before BEGIN).
    private func againIfConnectionLost<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as PostgresError where transactionDepth == 0 && PQstatus(connection) != CONNECTION_OK {
            do { try reconnect() } catch { throw e }
            return try body()
        }
    }

    // MARK: Results

    private static func text(_ p: UnsafePointer<CChar>?) -> String {
        p.map { String(cString: $0).trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
    }

    /// Throws for a failed result (and clears it); `sql` names the statement.
    private func check(_ result: OpaquePointer?, sql: String?) throws -> OpaquePointer {
        guard let result else {
            throw PostgresError(sqlState: "08006", message: Self.text(PQerrorMessage(connection)), sql: sql)
        }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return result
        default:
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) } ?? "08000"
            var message = Self.text(PQresultErrorField(result, Int32(UInt8(ascii: "M"))))
            if message.isEmpty { message = Self.text(PQresultErrorMessage(result)) }
            if let detail = PQresultErrorField(result, Int32(UInt8(ascii: "D"))) { message += " (\(Self.text(detail)))" }
            PQclear(result)
            throw PostgresError(sqlState: state, message: message, sql: sql)
        }
    }

    private func run(simple sql: String) throws {
        try flushPipeline()
        PQclear(try check(PQexec(connection, sql), sql: sql))
    }

    /// Reads the results of the pipelined writes (the first failure is thrown) and leaves pipeline mode.
    private func flushPipeline() throws {
        guard pipelined > 0 else { return }
        let expected = pipelined
        pipelined = 0
        var failure: PostgresError?
        if PQpipelineSync(connection) != 1 {
            failure = PostgresError(sqlState: "08006", message: "cannot send to \(location): \(Self.text(PQerrorMessage(connection)))")
        }
        // Each write: its result, then NULL; a write after a failure is PGRES_PIPELINE_ABORTED.
        for _ in 0..<expected where failure == nil || PQstatus(connection) == CONNECTION_OK {
            while let r = PQgetResult(connection) {
                if PQresultStatus(r) == PGRES_PIPELINE_ABORTED { PQclear(r); continue }
                do { PQclear(try check(r, sql: nil)) } catch let e as PostgresError { if failure == nil { failure = e } }
            }
        }
        if PQstatus(connection) == CONNECTION_OK, let sync = PQgetResult(connection) { PQclear(sync) } // PGRES_PIPELINE_SYNC
        PQexitPipelineMode(connection)
        if let failure { throw failure }
    }

    private static let int8 = Oid(20), float8 = Oid(701), text = Oid(25), bytea = Oid(17)

    private func rows(_ result: OpaquePointer, columns cached: ColumnIndex?) -> (rows: [Row], columns: ColumnIndex?) {
        let n = Int(PQntuples(result)), width = PQnfields(result)
        guard width > 0 else { return ([], cached) }
        let columns = cached ?? ColumnIndex(names: (0..<width).map { String(cString: PQfname(result, $0)) })
        let types = (0..<width).map { PQftype(result, $0) }
        var out: [Row] = []
        out.reserveCapacity(n)
        for r in 0..<Int32(n) {
            var values: [SQLValue] = []
            values.reserveCapacity(Int(width))
            for c in 0..<width {
                if PQgetisnull(result, r, c) == 1 { values.append(.null); continue }
                let raw = PQgetvalue(result, r, c)!
                values.append(Self.value(raw, length: Int(PQgetlength(result, r, c)), type: types[Int(c)]))
            }
            out.append(Row(columnIndex: columns, values: values))
        }
        return (out, columns)
    }

    /// One text-format value of column type `type`.
    static func value(_ raw: UnsafePointer<CChar>, length: Int, type: Oid) -> SQLValue {
        switch type {
        case 20, 21, 23, 26:  // int8, int2, int4, oid
            return Int64(String(cString: raw)).map(SQLValue.integer) ?? .text(String(cString: raw))
        case 700, 701:  // float4, float8
            return Double(String(cString: raw)).map(SQLValue.real) ?? .text(String(cString: raw))
        case 1700:  // numeric (sum of bigint): whole numbers as integers, as SQLite answers
            let s = String(cString: raw)
            if let i = Int64(s) { return .integer(i) }
            return Double(s).map(SQLValue.real) ?? .text(s)
        case 16:  // bool
            return .integer(raw.pointee == CChar(UInt8(ascii: "t")) ? 1 : 0)
        case 17:  // bytea, hex output: \x0a1b...
            return .blob(hexBytes(UnsafeRawBufferPointer(start: raw, count: length)))
        default:
            return .text(String(decoding: UnsafeRawBufferPointer(start: raw, count: length), as: UTF8.self))
        }
    }

    private static func hexBytes(_ text: UnsafeRawBufferPointer) -> [UInt8] {
        guard text.count >= 2, text[0] == UInt8(ascii: "\\"), text[1] == UInt8(ascii: "x") else { return Array(text) }
        func nibble(_ c: UInt8) -> UInt8 {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            default: c &- UInt8(ascii: "A") &+ 10
            }
        }
        var out = [UInt8](repeating: 0, count: (text.count - 2) / 2)
        var i = 2
        for k in out.indices {
            out[k] = nibble(text[i]) << 4 | nibble(text[i + 1])
            i += 2
        }
        return out
    }

    // MARK: Statements

    /// Prepares (once) and runs `sql` with `parameters`; returns the result, which the caller clears.
    private func execPrepared(_ sql: String, _ parameters: [SQLValue]) throws -> (OpaquePointer, Prepared) {
        try flushPipeline()
        let prepared = try preparedStatement(sql, parameters)
        let result = Self.withParameters(parameters) { values, lengths, formats in
            PQexecPrepared(connection, prepared.name, Int32(parameters.count), values, lengths, formats, 0)
        }
        return (try check(result, sql: sql), prepared)
    }

    /// Sends `sql` with `parameters` without waiting for the answer (pipeline mode).
    private func sendPrepared(_ sql: String, _ parameters: [SQLValue]) throws {
        let prepared = try preparedStatement(sql, parameters)
        let sent = Self.withParameters(parameters) { values, lengths, formats in
            PQsendQueryPrepared(connection, prepared.name, Int32(parameters.count), values, lengths, formats, 0)
        }
        guard sent == 1 else {
            throw PostgresError(sqlState: "08006", message: "cannot send to \(location): \(Self.text(PQerrorMessage(connection)))", sql: sql)
        }
    }

    /// The prepared statement for `sql`, checked against the number of parameters given.
    private func preparedStatement(_ sql: String, _ parameters: [SQLValue]) throws -> Prepared {
        let prepared = try statement(sql, parameters)
        guard parameters.count == prepared.count else {
            throw PostgresError(sqlState: "08P01", message: "\(parameters.count) parameters given for a statement that takes \(prepared.count)", sql: sql)
        }
        return prepared
    }

    /// Calls `body` with libpq's parameter arrays: every value as text (NUL-terminated) in one
    /// buffer, byte strings as binary, NULLs as null pointers.
    private static func withParameters<R>(_ parameters: [SQLValue],
                                          _ body: (UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?) -> R) -> R {
        var bytes: [UInt8] = []
        var offsets = [Int](repeating: -1, count: parameters.count)  // -1: NULL
        var lengths = [Int32](repeating: 0, count: parameters.count)
        var formats = [Int32](repeating: 0, count: parameters.count)
        for (i, p) in parameters.enumerated() {
            switch p {
            case .null: continue
            case .integer(let v): offsets[i] = bytes.count; bytes += "\(v)".utf8
            case .real(let v): offsets[i] = bytes.count; bytes += floatText(v).utf8
            case .text(let v): offsets[i] = bytes.count; bytes += v.utf8
            case .blob(let v): offsets[i] = bytes.count; bytes += v; formats[i] = 1; lengths[i] = Int32(v.count)
            }
            if formats[i] == 0 { bytes.append(0) }
        }
        if bytes.isEmpty { bytes.append(0) }  // a base address for empty byte strings
        return bytes.withUnsafeBufferPointer { buffer in
            let base = UnsafeRawPointer(buffer.baseAddress!).assumingMemoryBound(to: CChar.self)
            let values: [UnsafePointer<CChar>?] = offsets.map { $0 < 0 ? nil : base + $0 }
            return values.withUnsafeBufferPointer { v in
                lengths.withUnsafeBufferPointer { l in formats.withUnsafeBufferPointer { f in body(v.baseAddress, l.baseAddress, f.baseAddress) } }
            }
        }
    }

    static func floatText(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "Infinity" : "-Infinity" }
        return "\(v)"
    }

    private func statement(_ sql: String, _ parameters: [SQLValue]) throws -> Prepared {
        if let p = statements[sql] { return p }
        try flushPipeline()  // PQprepare waits for its answer: not in pipeline mode
        let (translated, count) = PostgresSQL.numberParameters(sql)
        statementCounter += 1
        let name = "escrow_\(statementCounter)"
        // Types from this call's values; a NULL is left to the server to infer from its context.
        var types: [Oid] = (0..<count).map { i in
            guard i < parameters.count else { return 0 }
            switch parameters[i] {
            case .null: return 0
            case .integer: return Self.int8
            case .real: return Self.float8
            case .text: return Self.text
            case .blob: return Self.bytea
            }
        }
        // A failed PREPARE would abort the caller's transaction: inside one, it gets a savepoint.
        let guarded = transactionDepth > 0
        if guarded { try run(simple: "SAVEPOINT escrowfleet_prepare") }
        // A NULL whose type nothing in the statement says (`? IS NULL`), or says twice differently
        // (`? IS NULL OR x <= ?` with the same number): PostgreSQL names it; it is tried as text,
        // then as a 64-bit integer, a double and bytes, and the first the statement accepts stays.
        let candidates: [Oid] = [Self.text, Self.int8, Self.float8, Self.bytea]
        var tried = [Int](repeating: 0, count: count)
        var lastNamed: Int?
        while true {
            do {
                PQclear(try check(PQprepare(connection, name, translated, Int32(count), &types), sql: sql))
                if guarded { try run(simple: "RELEASE SAVEPOINT escrowfleet_prepare") }
                break
            } catch let e as PostgresError {
                if guarded { try run(simple: "ROLLBACK TO SAVEPOINT escrowfleet_prepare") }
                let named = e.message.components(separatedBy: "parameter $").dropFirst().first.flatMap { Int($0.prefix { $0.isNumber }) }
                let retry = named.flatMap { n in n >= 1 && n <= count && n <= parameters.count && parameters[n - 1] == .null ? n : nil }
                    ?? (["42883", "42804", "42P08", "42P18"].contains(e.sqlState) ? lastNamed : nil)
                guard let n = retry, tried[n - 1] < candidates.count else {
                    if guarded { _ = try? run(simple: "RELEASE SAVEPOINT escrowfleet_prepare") }
                    throw e
                }
                types[n - 1] = candidates[tried[n - 1]]
                tried[n - 1] += 1
                lastNamed = n
            }
        }
        if statements.count >= Self.statementCacheLimit, let victim = statements.first {
            statements.removeValue(forKey: victim.key)
            _ = try? run(simple: "DEALLOCATE \(victim.value.name)")
        }
        let p = Prepared(name: name, count: count, columns: nil)
        statements[sql] = p
        return p
    }

    public func write(_ sql: String, _ parameters: [SQLValue]) throws {
        try withLock {
            guard transactionDepth > 0 else { _ = try execute(sql, parameters); return }
            if pipelined >= Self.pipelineDepth { try flushPipeline() }
            _ = try statement(sql, parameters)  // prepared (waiting for it) before the pipeline starts
            if PQpipelineStatus(connection) == PQ_PIPELINE_OFF, PQenterPipelineMode(connection) != 1 {
                throw PostgresError(sqlState: "08006", message: "cannot enter pipeline mode: \(Self.text(PQerrorMessage(connection)))", sql: sql)
            }
            try sendPrepared(sql, parameters)
            pipelined += 1
        }
    }

    @discardableResult
    public func execute(_ sql: String, _ parameters: [SQLValue] = []) throws -> Int {
        try withLock {
            let (result, _) = try execPrepared(sql, parameters)
            defer { PQclear(result) }
            return Int(String(cString: PQcmdTuples(result))) ?? 0
        }
    }

    public func query(_ sql: String, _ parameters: [SQLValue] = []) throws -> [Row] {
        try withLock { try againIfConnectionLost {
            let (result, prepared) = try execPrepared(sql, parameters)
            defer { PQclear(result) }
            let (rows, columns) = rows(result, columns: prepared.columns)
            if prepared.columns == nil, let columns, statements[sql] != nil {
                statements[sql] = Prepared(name: prepared.name, count: prepared.count, columns: columns)
            }
            return rows
        } }
    }

    public func forEachRow(_ sql: String, _ parameters: [SQLValue] = [], _ body: (Row) throws -> Void) throws {
        try withLock {
            for row in try query(sql, parameters) { try body(row) }
        }
    }

    public func scalar(_ sql: String, _ parameters: [SQLValue] = []) throws -> SQLValue {
        try query(sql, parameters).first.flatMap { $0.values.first } ?? .null
    }

    public func executeScript(_ sql: String) throws {
        try withLock { try run(simple: sql) }
    }

    /// True while a transaction is open on this connection.
    public var isInTransaction: Bool { (try? withLock { PQtransactionStatus(connection) != PQTRANS_IDLE }) ?? false }

    // MARK: Transactions

    @discardableResult
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try withLock {
            let depth = transactionDepth
            let savepoint = "escrowfleet_savepoint_\(depth)"
            if depth == 0 {
                // One writer at a time per database, as SQLite's BEGIN IMMEDIATE: every escrowd
                // sharing it (replicas) takes the same transaction-scoped lock first, so a
                // transaction sees every commit before it, decides on current state (a transfer
                // approved twice is refused as already decided, not half applied), and rows get
                // their identity values in commit order (the outbox is published in that order).
                try againIfConnectionLost { try run(simple: "BEGIN; SELECT \(Self.lock("writer"))") }
            } else {
                try run(simple: "SAVEPOINT \(savepoint)")
            }
            transactionDepth += 1
            defer { transactionDepth -= 1 }
            let result: T
            do {
                result = try body()
                try flushPipeline()
                // An error the body caught leaves the transaction aborted: COMMIT would roll it back silently.
                if PQtransactionStatus(connection) == PQTRANS_INERROR {
                    throw PostgresError(sqlState: "25P02", message: "the transaction was aborted by an earlier error; nothing was committed")
                }
                try run(simple: depth == 0 ? "COMMIT" : "RELEASE SAVEPOINT \(savepoint)")
            } catch {
                _ = try? flushPipeline()
                if PQstatus(connection) == CONNECTION_OK {
                    if depth == 0 { _ = try? run(simple: "ROLLBACK") } else { _ = try? run(simple: "ROLLBACK TO SAVEPOINT \(savepoint); RELEASE SAVEPOINT \(savepoint)") }
                }
                throw error
            }
            return result
        }
    }

    // MARK: Schema

    /// The schema version table; one row.
    static let versionTable = "escrow_schema_version"

    public func userVersion() throws -> Int {
        try withLock {
            let exists = try query("SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?", [.text(Self.versionTable)])
            guard !exists.isEmpty else { return 0 }
            return try scalar("SELECT version FROM \(Self.versionTable)").intValue ?? 0
        }
    }

    /// As `Database.migrate`, with each migration's PostgreSQL form; replicas starting together
    /// take turns (a transaction-scoped advisory lock), so each migration runs once.
    public func migrate(_ migrations: [Migration]) throws {
        var previous = 0
        for m in migrations {
            guard m.version > previous else {
                throw MigrationError.invalidMigrationList("version \(m.version) (\(m.name)) must be positive and greater than \(previous)")
            }
            previous = m.version
        }
        let latest = previous
        try withLock {
            try transaction {
                try execute("SELECT \(Self.lock("migrate"))")
                try execute("CREATE TABLE IF NOT EXISTS \(Self.versionTable) (version BIGINT NOT NULL)")
                if try scalar("SELECT count(*) FROM \(Self.versionTable)").intValue == 0 {
                    try execute("INSERT INTO \(Self.versionTable) (version) VALUES (0)")
                }
            }
            for m in migrations {
                try transaction {
                    try execute("SELECT \(Self.lock("migrate"))")
                    let version = try userVersion()
                    guard version <= latest else {
                        throw MigrationError.databaseNewerThanCode(databaseVersion: version, latestKnownVersion: latest)
                    }
                    guard version < m.version else { return }
                    do { try run(simple: m.postgresSQL) } catch let e as PostgresError {
                        throw MigrationError.migrationFailed(version: m.version, name: m.name, error: e)
                    }
                    try execute("UPDATE \(Self.versionTable) SET version = ?", [.integer(Int64(m.version))])
                }
            }
        }
    }

    /// A transaction-scoped advisory lock named `purpose` for the ledger in the connection's schema:
    /// escrowd instances sharing a schema (replicas) share it; other schemas in the same database
    /// (other deployments, or the tests' schema each) do not contend.
    static func lock(_ purpose: String) -> String {
        "pg_advisory_xact_lock(hashtext('escrowfleet-\(purpose)'), hashtext(current_schema()))"
    }

    public func refuseWrites(_ on: Bool) throws {
        try executeScript("SET default_transaction_read_only = \(on ? "on" : "off")")
    }

    /// PostgreSQL checks its pages itself (and `amcheck` on demand); nothing to report here.
    public func integrityProblems() throws -> [String] { [] }
}
