import Foundation
import Testing
import Storage
import TestSupport

/// The calls the ledger makes, answered the same by SQLite and by a real PostgreSQL server
/// (started by the harness as a non-root user): the one ledger interface, two databases.
@Suite struct SQLDatabaseContractTests {
    enum Backend: String, CaseIterable, CustomTestStringConvertible {
        case sqlite, postgres
        var testDescription: String { rawValue }
    }

    /// A fresh database of `backend` (kept alive by the returned directory for SQLite).
    static func open(_ backend: Backend) async throws -> (any SQLDatabase, TemporaryDirectory) {
        let dir = try TemporaryDirectory()
        switch backend {
        case .sqlite: return (try Database(path: dir.path()), dir)
        case .postgres:
            let server = try await PostgresServer.shared()
            let store = try await offPool { try server.freshStore() }
            return (try await offPool { try store.open() }, dir)
        }
    }

    /// Runs `body` off the cooperative pool on a fresh database of `backend`, with the test table when `schema`.
    static func with(_ backend: Backend, schema: Bool = true, _ body: @escaping @Sendable (any SQLDatabase) throws -> Void) async throws {
        let (db, dir) = try await open(backend)
        try await offPool {
            if schema { try Self.schema(db) }
            try body(db)
        }
        _ = dir  // kept until the body is done
    }

    static let table = """
        CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER NOT NULL, x REAL, b BLOB, note TEXT);
        CREATE TABLE seqs (k TEXT PRIMARY KEY, last INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT NOT NULL);
        """

    static func schema(_ db: any SQLDatabase) throws {
        try db.migrate([Migration(version: 1, name: "t", sql: table)])
    }

    @Test(arguments: Backend.allCases)
    func valuesRoundTripWithTheirKinds(_ backend: Backend) async throws {
        try await Self.with(backend) { db in
            let bytes: [UInt8] = [0, 1, 0x7f, 0x80, 0xff, 0x0a]
            try db.execute("INSERT INTO t (id, n, x, b, note) VALUES (?, ?, ?, ?, ?)",
                           [.text("a-é"), .integer(Int64.max), .real(1_733_616_000.123456), .blob(bytes), .null])
            try db.execute("INSERT INTO t (id, n, x, b, note) VALUES (?, ?, ?, ?, ?)", [.text("b"), .integer(-3), .real(0.1), .blob([]), .text("it's")])
            let rows = try db.query("SELECT id, n, x, b, note FROM t ORDER BY id")
            #expect(rows.count == 2)
            #expect(rows[0]["id"] == .text("a-é"))
            #expect(rows[0]["n"] == .integer(Int64.max))
            #expect(rows[0]["x"] == .real(1_733_616_000.123456))
            #expect(rows[0]["b"] == .blob(bytes))
            #expect(rows[0]["note"] == .null)
            #expect(rows[1]["b"] == .blob([]))
            #expect(rows[1]["note"] == .text("it's"))
            // Aggregates read as integers on both (PostgreSQL's sum of bigint is numeric).
            #expect(try db.scalar("SELECT count(*) FROM t") == .integer(2))
            #expect(try db.scalar("SELECT sum(n) FROM t WHERE id = ?", [.text("b")]) == .integer(-3))
            #expect(try db.scalar("SELECT min(n) FROM t WHERE id = ?", [.text("none")]) == .null)
            #expect(try db.scalar("SELECT \(db.dialect.greatest)(coalesce(x, 0), ?) FROM t WHERE id = 'b'", [.real(5)]) == .real(5))
        }
    }

    @Test(arguments: Backend.allCases)
    func numberedParametersUpsertAndReturning(_ backend: Backend) async throws {
        try await Self.with(backend) { db in
            try db.execute("INSERT INTO t (id, n) VALUES (?1, 1), (?1 || '-2', ?2)", [.text("p"), .integer(7)])
            #expect(try db.query("SELECT n FROM t WHERE id = ?1 OR id = ?1 || '-2' ORDER BY n", [.text("p")]).map { $0["n"] } == [.integer(1), .integer(7)])
            for expected in 1...3 {
                let r = try db.query("""
                    INSERT INTO seqs (k, last) VALUES (?, 1) ON CONFLICT(k) DO UPDATE SET last = seqs.last + 1 RETURNING last
                    """, [.text("acct")])
                #expect(r.first?["last"] == .integer(Int64(expected)))
            }
            #expect(try db.execute("INSERT INTO seqs (k, last) VALUES (?, 9) ON CONFLICT DO NOTHING", [.text("acct")]) == 0)
            // A question mark inside a literal is not a parameter.
            #expect(try db.scalar("SELECT count(*) FROM t WHERE note = '?' OR id = ?", [.text("p")]) == .integer(1))
            // `? IS NULL` first seen with NULL (no type to infer) works on both.
            #expect(try db.scalar("SELECT count(*) FROM t WHERE (? IS NULL OR n = ?)", [.null, .integer(7)]) == .integer(2))
            #expect(try db.scalar("SELECT count(*) FROM t WHERE (? IS NULL OR n = ?)", [.integer(7), .integer(7)]) == .integer(1))
            // Inside a transaction, with NULLs of which only some have a type the context gives:
            // the statement is prepared without aborting the transaction.
            try db.transaction {
                #expect(try db.scalar("SELECT count(*) FROM t WHERE (? IS NULL OR n <= ?) AND coalesce(?, n) = n", [.null, .null, .null]) == .integer(2))
                // One number used where the type is known and where it is not (the ledger's presence update).
                #expect(try db.scalar("SELECT count(*) FROM t WHERE coalesce(?1, n) = n AND (?1 IS NULL OR n <= ?1)", [.null]) == .integer(2))
                try db.execute("INSERT INTO t (id, n) VALUES ('in-tx', 0)")
            }
            #expect(try db.scalar("SELECT count(*) FROM t WHERE id = 'in-tx'") == .integer(1))
            // Changed-row counts.
            #expect(try db.execute("UPDATE t SET n = n + 1 WHERE id LIKE 'p%'") == 2)
            // Identity columns count up.
            try db.execute("INSERT INTO log (what) VALUES (?)", [.text("one")])
            try db.execute("INSERT INTO log (what) VALUES (?)", [.text("two")])
            #expect(try db.query("SELECT id FROM log ORDER BY id").map { $0["id"] } == [.integer(1), .integer(2)])
        }
    }

    @Test(arguments: Backend.allCases)
    func textSortsByteWiseAsSQLiteDoes(_ backend: Backend) async throws {
        try await Self.with(backend) { db in
            for id in ["b", "B", "a-1", "a.1", "a_1", "a1", "~"] { try db.execute("INSERT INTO t (id, n) VALUES (?, 0)", [.text(id)]) }
            let ids = try db.query("SELECT id FROM t ORDER BY id").compactMap { $0["id"]?.stringValue }
            #expect(ids == ["B", "a-1", "a.1", "a1", "a_1", "b", "~"])
            // The ledger's prefix ranges: [p, p + "~").
            #expect(try db.scalar("SELECT count(*) FROM t WHERE id >= ? AND id < ?", [.text("a"), .text("a~")]) == .integer(4))
        }
    }

    @Test(arguments: Backend.allCases)
    func transactionsCommitRollBackAndNest(_ backend: Backend) async throws {
        try await Self.with(backend) { db in
            struct Boom: Error {}
            do {
                try db.transaction {
                    try db.execute("INSERT INTO t (id, n) VALUES ('gone', 1)")
                    throw Boom()
                }
                Issue.record("the transaction's error was not rethrown")
            } catch is Boom {}
            #expect(try db.scalar("SELECT count(*) FROM t") == .integer(0))
            try db.transaction {
                try db.execute("INSERT INTO t (id, n) VALUES ('kept', 1)")
                // A nested transaction is a savepoint: its failure undoes only itself.
                _ = try? db.transaction {
                    try db.execute("INSERT INTO t (id, n) VALUES ('inner', 1)")
                    throw Boom()
                }
                // A constraint error inside a savepoint leaves the outer transaction usable.
                _ = try? db.transaction { try db.execute("INSERT INTO t (id, n) VALUES ('kept', 2)") }
                try db.execute("INSERT INTO t (id, n) VALUES ('after', 1)")
            }
            #expect(try db.query("SELECT id FROM t ORDER BY id").compactMap { $0["id"]?.stringValue } == ["after", "kept"])
        }
    }

    @Test(arguments: Backend.allCases)
    func writesWhoseAnswerIsNotAwaitedStillFailTheTransaction(_ backend: Backend) async throws {
        try await Self.with(backend) { db in
            try db.execute("INSERT INTO t (id, n) VALUES ('x', 1)")
            // A failing write among many (PostgreSQL answers them only at the next read or the
            // commit): the transaction fails with the constraint error and leaves nothing behind.
            do {
                try db.transaction {
                    for i in 0..<1_200 { try db.write("INSERT INTO t (id, n) VALUES (?, ?)", [.text("w\(i)"), .integer(Int64(i))]) }
                    try db.write("INSERT INTO t (id, n) VALUES ('x', 2)", [])
                    for i in 0..<10 { try db.write("INSERT INTO t (id, n) VALUES (?, 0)", [.text("after\(i)")]) }
                }
                Issue.record("the duplicate key was committed")
            } catch let e as any StorageFailure {
                #expect(e.isConstraint, "\(e)")
            }
            #expect(try db.scalar("SELECT count(*) FROM t") == .integer(1))
            // A read after pipelined writes sees them, in order, inside the transaction.
            try db.transaction {
                for i in 0..<700 { try db.write("INSERT INTO t (id, n) VALUES (?, ?)", [.text("r\(i)"), .integer(Int64(i))]) }
                try db.write("UPDATE t SET n = n + 1000 WHERE id = ?", [.text("r699")])
                #expect(try db.scalar("SELECT n FROM t WHERE id = 'r699'") == .integer(1699))
            }
            #expect(try db.scalar("SELECT count(*) FROM t") == .integer(701))
            // A failing write inside a savepoint: only the savepoint is undone, once it is answered.
            try db.transaction {
                _ = try? db.transaction {
                    try db.write("INSERT INTO t (id, n) VALUES ('inner', 1)", [])
                    try db.write("INSERT INTO t (id, n) VALUES ('x', 3)", [])
                }
                try db.write("INSERT INTO t (id, n) VALUES ('outer', 1)", [])
            }
            #expect(try db.scalar("SELECT count(*) FROM t WHERE id IN ('inner', 'outer')") == .integer(1))
            // Outside a transaction a write is answered at once.
            #expect(throws: (any Error).self) { try db.write("INSERT INTO t (id, n) VALUES ('x', 4)", []) }
        }
    }

    @Test(arguments: Backend.allCases)
    func constraintAndReadOnlyFailuresAreClassified(_ backend: Backend) async throws {
        try await Self.with(backend) { db in
            /// The failure `sql` raises, which must be a storage failure.
            func failure(_ sql: String) throws -> (any StorageFailure)? {
                do { try db.execute(sql); return nil } catch let e as any StorageFailure { return e }
            }
            try db.execute("INSERT INTO t (id, n) VALUES ('x', 1)")
            let duplicate = try failure("INSERT INTO t (id, n) VALUES ('x', 2)")
            #expect(duplicate?.isConstraint == true && duplicate?.isUnavailable == false, "a duplicate key: \(String(describing: duplicate))")
            try db.refuseWrites(true)
            let refused = try failure("INSERT INTO t (id, n) VALUES ('y', 2)")
            #expect(refused?.isUnavailable == true && refused?.isConstraint == false, "a write while writes are refused: \(String(describing: refused))")
            try db.refuseWrites(false)
            try db.execute("INSERT INTO t (id, n) VALUES ('y', 2)")
            #expect(try db.scalar("SELECT count(*) FROM t") == .integer(2))
        }
    }

    @Test(arguments: Backend.allCases)
    func migrationsApplyOnceAndRefuseANewerDatabase(_ backend: Backend) async throws {
        try await Self.with(backend, schema: false) { db in
            let v1 = Migration(version: 1, name: "t", sql: Self.table)
            let v2 = Migration(version: 2, name: "more", sql: "ALTER TABLE t ADD COLUMN extra INTEGER NOT NULL DEFAULT 4;")
            #expect(try db.userVersion() == 0)
            try db.migrate([v1, v2])
            try db.migrate([v1, v2])  // again: nothing to do
            #expect(try db.userVersion() == 2)
            try db.execute("INSERT INTO t (id, n) VALUES ('m', 1)")
            #expect(try db.scalar("SELECT extra FROM t") == .integer(4))
            let error = try #require(throws: MigrationError.self) { try db.migrate([v1]) }
            #expect(error == .databaseNewerThanCode(databaseVersion: 2, latestKnownVersion: 1))
            let broken = Migration(version: 3, name: "broken", sql: "CREATE TABLE half (x INTEGER); INSERT INTO no_such_table VALUES (1);")
            #expect(throws: MigrationError.self) { try db.migrate([v1, v2, broken]) }
            #expect(try db.userVersion() == 2)
            #expect(throws: (any Error).self) { try db.query("SELECT * FROM half") }
        }
    }

    @Test func parametersAreNumberedOutsideLiteralsAndComments() {
        #expect(PostgresSQL.numberParameters("SELECT ? , ?").sql == "SELECT $1 , $2")
        #expect(PostgresSQL.numberParameters("a = ?1 OR b = ?1 AND c = ?").sql == "a = $1 OR b = $1 AND c = $2")
        #expect(PostgresSQL.numberParameters("x = '?' AND \"q?\" = ? -- why?\n AND y = ?").sql == "x = '?' AND \"q?\" = $1 -- why?\n AND y = $2")
        #expect(PostgresSQL.numberParameters("x = 'it''s ?' AND y = ?") == ("x = 'it''s ?' AND y = $1", 1))
    }

    @Test func ddlIsTranslatedWordByWord() {
        let pg = PostgresDDL.translate("""
            CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT, t TEXT NOT NULL, r REAL, b BLOB, texture INTEGER) WITHOUT ROWID; -- TEXT stays in comments
            """)
        #expect(pg == """
            CREATE TABLE a (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, t TEXT COLLATE "C" NOT NULL, r DOUBLE PRECISION, b BYTEA, texture BIGINT); -- TEXT stays in comments
            """)
    }

    @Test func storeLocationsParse() throws {
        #expect(try StoreLocation.parse("sqlite:/x/escrow.db").get() == .sqlite(path: "/x/escrow.db"))
        #expect(try StoreLocation.parse("./escrow.db").get() == .sqlite(path: "./escrow.db"))
        #expect(try StoreLocation.parse("postgres://u:secret@db:5432/escrow").get() == .postgres(url: "postgres://u:secret@db:5432/escrow"))
        #expect(StoreLocation.postgres(url: "postgres://u:secret@db:5432/escrow").description == "postgres://u:***@db:5432/escrow")
        #expect(StoreLocation.postgres(url: "postgresql:///escrow?password=hunter2&host=/tmp").description == "postgresql:///escrow?password=***&host=/tmp")
        guard case .failure(let e) = StoreLocation.parse("mysql://db/escrow") else { Issue.record("mysql accepted"); return }
        #expect(e.description.contains("neither sqlite:PATH nor a postgres:// URL"))
        guard case .failure = StoreLocation.parse("sqlite:") else { Issue.record("empty path accepted"); return }
    }
}
