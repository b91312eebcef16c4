import Foundation
import Testing
import Storage

private struct Abort: Error {}

@Suite struct TransactionTests {
    @Test func commitMakesChangesVisible() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.execute("CREATE TABLE t (x INTEGER)")
        let id = try db.transaction { db in
            try db.execute("INSERT INTO t VALUES (1)")
            #expect(db.isInTransaction)
            return db.lastInsertRowID
        }
        #expect(id == 1)
        #expect(!db.isInTransaction)
        // Another connection sees the committed row.
        let other = try Database(path: dir.path())
        #expect(try other.scalar("SELECT count(*) FROM t") == 1)
    }

    @Test func rollbackOnThrow() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.execute("CREATE TABLE t (x INTEGER)")
        #expect(throws: Abort.self) {
            try db.transaction { db in
                try db.execute("INSERT INTO t VALUES (1)")
                try db.execute("INSERT INTO t VALUES (2)")
                throw Abort()
            }
        }
        #expect(!db.isInTransaction)
        #expect(try db.scalar("SELECT count(*) FROM t") == 0)
        // A failing statement rolls back the statements before it too.
        #expect(throws: SQLiteError.self) {
            try db.transaction { db in
                try db.execute("INSERT INTO t VALUES (3)")
                try db.execute("INSERT INTO nowhere VALUES (4)")
            }
        }
        #expect(try db.scalar("SELECT count(*) FROM t") == 0)
    }

    @Test func nestedTransactionsAreSavepoints() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.execute("CREATE TABLE t (x TEXT)")
        try db.transaction { db in
            try db.execute("INSERT INTO t VALUES ('outer')")
            // Inner failure undoes only the inner work.
            #expect(throws: Abort.self) {
                try db.transaction { db in
                    try db.execute("INSERT INTO t VALUES ('inner-failed')")
                    throw Abort()
                }
            }
            try db.transaction { db in
                try db.execute("INSERT INTO t VALUES ('inner-ok')")
                try db.transaction { db in try db.execute("INSERT INTO t VALUES ('innermost')") }
            }
            #expect(db.isInTransaction)
        }
        let values = try db.query("SELECT x FROM t ORDER BY rowid").map { try $0.string("x") }
        #expect(values == ["outer", "inner-ok", "innermost"])

        // Outer failure undoes inner work that was already released.
        #expect(throws: Abort.self) {
            try db.transaction { db in
                try db.transaction { db in try db.execute("INSERT INTO t VALUES ('lost')") }
                throw Abort()
            }
        }
        #expect(try db.scalar("SELECT count(*) FROM t WHERE x = 'lost'") == 0)
    }

    @Test func concurrentTasksAreSerialized() async throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        try db.execute("INSERT INTO counter VALUES (1, 0)")
        try db.execute("CREATE TABLE log (task INTEGER, step INTEGER)")
        let tasks = 64
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<tasks {
                group.addTask {
                    for step in 0..<10 {
                        // Read-modify-write: interleaving would lose updates or fail with
                        // "cannot start a transaction within a transaction".
                        try db.transaction { db in
                            let n = try db.scalar("SELECT n FROM counter WHERE id = 1").int64Value!
                            try db.execute("INSERT INTO log VALUES (?, ?)", [SQLValue(task), SQLValue(step)])
                            try db.execute("UPDATE counter SET n = ? WHERE id = 1", [.integer(n + 1)])
                        }
                        _ = try db.query("SELECT count(*) FROM log WHERE task = ?", [SQLValue(task)])
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try db.scalar("SELECT n FROM counter") == .integer(Int64(tasks * 10)))
        #expect(try db.scalar("SELECT count(*) FROM log") == .integer(Int64(tasks * 10)))
        #expect(try db.integrityCheck())
    }

    @Test func threadsCannotInterleaveTransactions() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.execute("CREATE TABLE events (thread INTEGER, phase TEXT)")
        let threads = 8
        let done = DispatchGroup()
        for thread in 0..<threads {
            done.enter()
            Thread.detachNewThread {
                defer { done.leave() }
                for _ in 0..<5 {
                    try? db.transaction { db in
                        try db.execute("INSERT INTO events VALUES (?, 'begin')", [SQLValue(thread)])
                        usleep(200)  // give other threads every chance to sneak in
                        try db.execute("INSERT INTO events VALUES (?, 'end')", [SQLValue(thread)])
                    }
                }
            }
        }
        done.wait()
        let events = try db.query("SELECT thread, phase FROM events ORDER BY rowid")
        #expect(events.count == threads * 5 * 2)
        for pair in stride(from: 0, to: events.count, by: 2) {
            #expect(events[pair][1] == "begin")
            #expect(events[pair + 1][1] == "end")
            #expect(events[pair][0] == events[pair + 1][0])
        }
    }

    @Test func bulkInsertAndUpdateInOneTransaction() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.execute("CREATE TABLE devices (serial TEXT PRIMARY KEY, last_seen INTEGER NOT NULL, firmware TEXT) WITHOUT ROWID")

        let rows = 10_000
        var start = ContinuousClock.now
        try db.transaction { db in
            for i in 0..<rows {
                try db.execute(
                    "INSERT INTO devices (serial, last_seen, firmware) VALUES (?, ?, ?)",
                    [.text("SN-\(i)"), .integer(Int64(i)), "1.0.0"])
            }
        }
        let insertTime = ContinuousClock.now - start
        #expect(try db.scalar("SELECT count(*) FROM devices") == .integer(Int64(rows)))

        // 20,000 last-seen updates (each device twice), as the control plane does every 5 s.
        start = ContinuousClock.now
        try db.transaction { db in
            for i in 0..<20_000 {
                try db.execute(
                    "UPDATE devices SET last_seen = ? WHERE serial = ?",
                    [.integer(1_000_000 + Int64(i)), .text("SN-\(i % rows)")])
            }
        }
        let updateTime = ContinuousClock.now - start
        #expect(try db.scalar("SELECT min(last_seen) FROM devices") == .integer(1_000_000 + Int64(rows)))
        print("[StorageTests] \(rows)-row insert: \(insertTime), 20000 updates: \(updateTime) (debug build)")
    }

    @Test func commitAfterSQLiteAbortedTheTransactionIsRefused() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.execute("CREATE TABLE t (x)")
        let error = try #require(throws: SQLiteError.self) {
            try db.transaction { db in
                try db.execute("INSERT INTO t VALUES (1)")
                try db.execute("ROLLBACK")  // stands in for SQLite rolling back on FULL/IOERR
            }
        }
        #expect(error.message.contains("already rolled back"))
        #expect(!db.isInTransaction)
        try db.transaction { db in try db.execute("INSERT INTO t VALUES (2)") }
        #expect(try db.scalar("SELECT count(*) FROM t") == 1)
    }
}
