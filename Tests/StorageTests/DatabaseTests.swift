import Foundation
import Testing
import Storage

@Suite struct DatabaseTests {
    @Test func openCreatesTheFile() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path()
        #expect(!FileManager.default.fileExists(atPath: path))
        let db = try Database(path: path)
        try db.execute("CREATE TABLE t (x INTEGER)")
        #expect(FileManager.default.fileExists(atPath: path))
        #expect(db.path == path)
        #expect(!db.isReadOnly)
        #expect(try db.integrityCheck())
    }

    @Test func openFailsInAMissingDirectory() throws {
        let dir = try TemporaryDirectory()
        let error = try #require(throws: SQLiteError.self) {
            _ = try Database(path: dir.path("no/such/dir/test.sqlite"))
        }
        #expect(error.primaryCode == 14)  // SQLITE_CANTOPEN
        #expect(error.description.contains("no/such/dir"))
    }

    @Test func pragmasAreSetForDurability() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path(), busyTimeout: .milliseconds(2500))
        #expect(try db.scalar("PRAGMA journal_mode") == "wal")
        #expect(try db.scalar("PRAGMA synchronous") == 2)  // FULL
        #expect(try db.scalar("PRAGMA foreign_keys") == 1)
        #expect(try db.scalar("PRAGMA busy_timeout") == 2500)
        try db.execute("CREATE TABLE t (x)")
        #expect(FileManager.default.fileExists(atPath: dir.path("test.sqlite-wal")))
    }

    @Test func crudWithEveryValueType() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.execute("CREATE TABLE v (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n TEXT)")
        let blob: [UInt8] = [0, 1, 2, 0xFF, 0]
        try db.execute(
            "INSERT INTO v (i, r, t, b, n) VALUES (?, ?, ?, ?, ?)",
            [.integer(Int64.max), .real(-1.5e300), .text("héllo\u{0}wörld 🚀"), .blob(blob), .null])
        let id = db.lastInsertRowID
        #expect(id == 1)
        #expect(db.changes == 1)

        var rows = try db.query("SELECT * FROM v WHERE id = ?", [.integer(id)])
        #expect(rows.count == 1)
        let row = rows[0]
        #expect(row.columns == ["id", "i", "r", "t", "b", "n"])
        #expect(try row.int64("i") == Int64.max)
        #expect(try row.double("r") == -1.5e300)
        #expect(try row.string("t") == "héllo\u{0}wörld 🚀")
        #expect(try row.blob("b") == blob)
        #expect(row["n"] == .null)
        #expect(row[1] == .integer(Int64.max))

        #expect(try db.execute("UPDATE v SET t = ?, i = i - 1 WHERE id = ?", ["bye", .integer(id)]) == 1)
        rows = try db.query("SELECT t, i FROM v")
        #expect(rows[0].values == [.text("bye"), .integer(Int64.max - 1)])

        #expect(try db.execute("DELETE FROM v WHERE id = ?", [SQLValue(Int(id))]) == 1)
        #expect(try db.query("SELECT * FROM v").isEmpty)
    }

    @Test func emptyTextAndEmptyBlobAreNotNull() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.execute("CREATE TABLE e (t TEXT NOT NULL, b BLOB NOT NULL)")
        try db.execute("INSERT INTO e VALUES (?, ?)", [.text(""), .blob([])])
        let row = try #require(try db.query("SELECT t, b, typeof(t) AS tt, typeof(b) AS tb FROM e").first)
        #expect(try row.string("t") == "")
        #expect(try row.blob("b") == [])
        #expect(try row.string("tt") == "text")
        #expect(try row.string("tb") == "blob")
    }

    @Test func nullHandling() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.execute("CREATE TABLE n (a INTEGER, b TEXT, c REAL, d BLOB, e INTEGER)")
        try db.execute("INSERT INTO n VALUES (?, ?, ?, ?, ?)", [nil, SQLValue(nil as String?), .null, .null, SQLValue(nil as Bool?)])
        try db.execute("INSERT INTO n VALUES (?, ?, ?, ?, ?)", [7, "x", 2.5, .blob([9]), true])
        let rows = try db.query("SELECT * FROM n ORDER BY rowid")
        let empty = rows[0], full = rows[1]
        #expect(try empty.optionalInt("a") == nil)
        #expect(try empty.optionalString("b") == nil)
        #expect(try empty.optionalDouble("c") == nil)
        #expect(try empty.optionalBlob("d") == nil)
        #expect(try empty.optionalBool("e") == nil)
        #expect(try full.optionalInt("a") == 7)
        #expect(try full.optionalString("b") == "x")
        #expect(try full.optionalDouble("c") == 2.5)
        #expect(try full.optionalBlob("d") == [9])
        #expect(try full.optionalBool("e") == true)
        #expect(try full.bool("e"))
        // A NULL read through a non-optional getter is a clear error, not a crash or a default.
        #expect(throws: RowError.typeMismatch(column: "a", expected: "integer", actual: .null)) {
            try empty.int("a")
        }
        #expect(try db.scalar("SELECT count(*) FROM n WHERE a IS NULL") == 1)
        #expect(try db.scalar("SELECT a FROM n WHERE 0") == .null)  // no row at all
    }

    @Test func rowLookupErrorsAndCaseInsensitiveNames() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        let row = try #require(try db.query("SELECT 1 AS DeviceCount, 'a' AS name, 2.0 AS ratio").first)
        #expect(try row.int("DeviceCount") == 1)
        #expect(try row.int("devicecount") == 1)
        #expect(try row.double("ratio") == 2.0)
        #expect(row["missing"] == nil)
        #expect(throws: RowError.noSuchColumn("missing", available: ["DeviceCount", "name", "ratio"])) {
            try row.string("missing")
        }
        #expect(throws: RowError.self) { try row.int("name") }
        #expect(row.description == "[DeviceCount: 1, name: 'a', ratio: 2.0]")
    }

    @Test func literalsAndConveniences() {
        let values: [SQLValue] = [nil, 1, 2.5, "s", true, false]
        #expect(values == [.null, .integer(1), .real(2.5), .text("s"), .integer(1), .integer(0)])
        #expect(SQLValue(Data([1, 2])) == .blob([1, 2]))
        #expect(SQLValue(3 as Int?) == .integer(3))
        #expect(SQLValue(nil as Int?) == .null)
        #expect(SQLValue.integer(4).doubleValue == 4.0)
        #expect(SQLValue.text("x").intValue == nil)
        #expect(SQLValue.text("it's").description == "'it''s'")
        #expect(SQLValue.blob([0xAB, 1]).description == "X'AB01'")
    }

    @Test func preparedStatementsAreCachedAndReused() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.execute("CREATE TABLE c (x INTEGER)")
        let before = db.cachedStatementCount
        for i in 0..<100 { try db.execute("INSERT INTO c VALUES (?)", [SQLValue(i)]) }
        for _ in 0..<100 { _ = try db.query("SELECT count(*) FROM c") }
        #expect(db.cachedStatementCount == before + 2)
        #expect(try db.scalar("SELECT count(*) FROM c") == 100)
        // Bindings are cleared after each use: a reused statement never leaks the previous values.
        #expect(throws: SQLiteError.self) { try db.execute("INSERT INTO c VALUES (?)") }
    }

    @Test func statementCacheIsBounded() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        for i in 0..<(Database.statementCacheLimit + 50) { _ = try db.scalar("SELECT \(i)") }
        #expect(db.cachedStatementCount <= Database.statementCacheLimit)
    }

    @Test func cachedStatementSurvivesSchemaChange() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.execute("CREATE TABLE s (a)")
        try db.execute("INSERT INTO s VALUES (1)")
        #expect(try db.query("SELECT * FROM s")[0].columns == ["a"])
        try db.executeScript("ALTER TABLE s ADD COLUMN b DEFAULT 'new'")
        let row = try db.query("SELECT * FROM s")[0]
        #expect(row.columns == ["a", "b"])
        #expect(try row.string("b") == "new")
    }

    @Test func reentrantUseOfTheSameSQLWhileIterating() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.executeScript("CREATE TABLE r (x); INSERT INTO r VALUES (1), (2), (3);")
        var pairs: [Int] = []
        try db.forEachRow("SELECT x FROM r ORDER BY x") { outer in
            // Same SQL while the cached statement is being stepped: gets its own statement.
            let inner = try db.query("SELECT x FROM r ORDER BY x")
            pairs.append(try outer.int("x") * 10 + inner.count)
        }
        #expect(pairs == [13, 23, 33])
    }

    @Test func constraintViolationCarriesCodeMessageAndSQL() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.execute("CREATE TABLE u (serial TEXT PRIMARY KEY NOT NULL, owner INTEGER REFERENCES o(id))")
        try db.execute("CREATE TABLE o (id INTEGER PRIMARY KEY)")
        let insert = "INSERT INTO u (serial) VALUES (?)"
        try db.execute(insert, ["SN-1"])
        let error = try #require(throws: SQLiteError.self) { try db.execute(insert, ["SN-1"]) }
        #expect(error.isConstraint)
        #expect(error.primaryCode == 19)  // SQLITE_CONSTRAINT
        #expect(error.code == 1555)  // SQLITE_CONSTRAINT_PRIMARYKEY
        #expect(error.message.contains("UNIQUE constraint failed: u.serial"))
        #expect(error.sql == insert)
        #expect(error.description.contains(insert))
        #expect(!error.isFull && !error.isBusy && !error.isReadOnly && !error.isIOError)

        // Foreign keys are enforced.
        let fk = try #require(throws: SQLiteError.self) {
            try db.execute("INSERT INTO u (serial, owner) VALUES ('SN-2', 42)")
        }
        #expect(fk.isConstraint)
        #expect(fk.code == 787)  // SQLITE_CONSTRAINT_FOREIGNKEY
        // The failed statement is reusable afterwards.
        try db.execute(insert, ["SN-3"])
        #expect(try db.scalar("SELECT count(*) FROM u") == 2)
    }

    @Test func syntaxErrorCarriesSQL() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        let sql = "SELEC * FROM nowhere"
        let error = try #require(throws: SQLiteError.self) { try db.query(sql) }
        #expect(error.code == 1)  // SQLITE_ERROR
        #expect(error.sql == sql)
        #expect(error.message.contains("syntax error"))

        let missing = try #require(throws: SQLiteError.self) { try db.query("SELECT * FROM nowhere") }
        #expect(missing.message.contains("no such table: nowhere"))

        let script = try #require(throws: SQLiteError.self) { try db.executeScript("CREATE TABLE a (x); CREATE TABLE (") }
        #expect(script.sql == "CREATE TABLE a (x); CREATE TABLE (")
    }

    @Test func misuseIsRefusedClearly() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.execute("CREATE TABLE m (x)")
        let count = try #require(throws: SQLiteError.self) { try db.execute("INSERT INTO m VALUES (?)", [1, 2]) }
        #expect(count.message.contains("1 parameter(s) but 2 value(s)"))
        let several = try #require(throws: SQLiteError.self) {
            try db.execute("INSERT INTO m VALUES (1); INSERT INTO m VALUES (2)")
        }
        #expect(several.message.contains("executeScript"))
        #expect(try db.scalar("SELECT count(*) FROM m") == 0)
        // Trailing whitespace, semicolons and comments are fine.
        try db.execute("INSERT INTO m VALUES (3);  -- comment\n")
        #expect(throws: SQLiteError.self) { try db.execute("   ") }
    }
}

@Suite struct SchemaChangeTests {
    @Test func renamedColumnIsSeenByACachedStatement() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.executeScript("CREATE TABLE s (old_name); INSERT INTO s VALUES (1);")
        #expect(try db.query("SELECT * FROM s")[0].columns == ["old_name"])
        try db.execute("ALTER TABLE s RENAME COLUMN old_name TO new_name")
        let row = try db.query("SELECT * FROM s")[0]
        #expect(row.columns == ["new_name"])
        #expect(try row.int("new_name") == 1)
    }
}
