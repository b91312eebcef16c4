import Foundation
import Glibc
import Testing
import TestSupport
import Storage

/// What happens when the disk, the permissions or the process fail underneath the database.
@Suite struct FailureTests {
    private func makeDevices(at path: String, count: Int) throws {
        let db = try Database(path: path)
        try db.execute("CREATE TABLE devices (serial TEXT PRIMARY KEY, owner TEXT)")
        try db.transaction { db in
            for i in 0..<count { try db.execute("INSERT INTO devices VALUES (?, 'acme')", [.text("SN-\(i)")]) }
        }
    }

    @Test func readOnlyConnectionRefusesWritesAndKeepsData() throws {
        let dir = try TemporaryDirectory()
        try makeDevices(at: dir.path(), count: 3)

        let reader = try Database.openReadOnly(path: dir.path())
        #expect(reader.isReadOnly)
        #expect(try reader.scalar("SELECT count(*) FROM devices") == 3)
        let error = try #require(throws: SQLiteError.self) {
            try reader.execute("DELETE FROM devices")
        }
        #expect(error.isReadOnly)
        #expect(error.primaryCode == 8)  // SQLITE_READONLY
        #expect(error.sql == "DELETE FROM devices")
        let inTransaction = try #require(throws: SQLiteError.self) {
            try reader.transaction { db in try db.execute("INSERT INTO devices VALUES ('x', NULL)") }
        }
        #expect(inTransaction.isReadOnly)

        let writer = try Database(path: dir.path())
        #expect(try writer.scalar("SELECT count(*) FROM devices") == 3)
        #expect(try writer.integrityCheck())
        // The reader follows the writer's committed changes (WAL lets it read alongside).
        try writer.execute("INSERT INTO devices VALUES ('SN-new', NULL)")
        #expect(try reader.scalar("SELECT count(*) FROM devices") == 4)
    }

    @Test func openReadOnlyOfAMissingFileFails() throws {
        let dir = try TemporaryDirectory()
        let error = try #require(throws: SQLiteError.self) { try Database.openReadOnly(path: dir.path("absent.sqlite")) }
        #expect(error.primaryCode == 14)  // SQLITE_CANTOPEN
        #expect(!FileManager.default.fileExists(atPath: dir.path("absent.sqlite")))
    }

    @Test func diskFullIsReportedAndRecoverable() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        try db.execute("INSERT INTO blobs (data) VALUES (?)", [.blob([UInt8](repeating: 1, count: 100))])
        let pages = try db.scalar("PRAGMA page_count").int64Value!
        // PRAGMA max_page_count caps the file as a full disk would.
        try db.execute("PRAGMA max_page_count = \(pages + 10)")

        var committed = 1
        var fullError: SQLiteError?
        for _ in 0..<100 {
            do {
                try db.transaction { db in
                    try db.execute("INSERT INTO blobs (data) VALUES (?)", [.blob([UInt8](repeating: 2, count: 3000))])
                }
                committed += 1
            } catch let error as SQLiteError {
                fullError = error
                break
            }
        }
        let error = try #require(fullError)
        #expect(error.isFull)
        #expect(error.primaryCode == 13)  // SQLITE_FULL
        #expect(!db.isInTransaction)

        // A big transaction that hits the limit halfway leaves nothing behind.
        #expect(throws: SQLiteError.self) {
            try db.transaction { db in
                try db.execute("INSERT INTO blobs (data) VALUES (x'00')")
                try db.execute("INSERT INTO blobs (data) VALUES (?)", [.blob([UInt8](repeating: 3, count: 100_000))])
            }
        }
        #expect(try db.scalar("SELECT count(*) FROM blobs") == .integer(Int64(committed)))
        #expect(try db.integrityCheck())

        // Once there is room again, writing works.
        try db.execute("PRAGMA max_page_count = 1000000")
        try db.execute("INSERT INTO blobs (data) VALUES (?)", [.blob([UInt8](repeating: 4, count: 100_000))])
        #expect(try db.scalar("SELECT count(*) FROM blobs") == .integer(Int64(committed + 1)))
        #expect(try db.integrityCheck())
    }

    /// kill -9 right after commit, simulated in-process: with automatic checkpoints off, a committed
    /// transaction lives only in the -wal file. Copying the database and -wal files while the
    /// connection is still open (never closed, never checkpointed) gives exactly what a killed process
    /// leaves on disk; the -shm index is deliberately not copied, so opening the copy must recover
    /// the WAL from scratch. (Power loss additionally needs the fsync that synchronous=FULL does on
    /// every commit, which no test can observe without pulling the plug.)
    @Test func committedDataSurvivesACrashWithoutCheckpoint() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path("live.sqlite"))
        try db.execute("PRAGMA wal_autocheckpoint = 0")
        try db.execute("CREATE TABLE devices (serial TEXT PRIMARY KEY, owner TEXT)")
        try db.transaction { db in
            for i in 0..<500 { try db.execute("INSERT INTO devices VALUES (?, 'acme')", [.text("SN-\(i)")]) }
        }
        let files = FileManager.default
        try files.copyItem(atPath: dir.path("live.sqlite"), toPath: dir.path("crashed.sqlite"))
        try files.copyItem(atPath: dir.path("live.sqlite-wal"), toPath: dir.path("crashed.sqlite-wal"))
        // The main file alone does not hold the table yet: the data really comes from the WAL.
        try files.copyItem(atPath: dir.path("live.sqlite"), toPath: dir.path("mainonly.sqlite"))
        let mainOnly = try Database(path: dir.path("mainonly.sqlite"))
        #expect(try mainOnly.scalar("SELECT count(*) FROM sqlite_schema WHERE name = 'devices'") == 0)

        let recovered = try Database(path: dir.path("crashed.sqlite"))
        #expect(try recovered.scalar("SELECT count(*) FROM devices") == 500)
        #expect(try recovered.integrityCheck())
        withExtendedLifetime(db) {}
    }

    static let sqlite3CLI: String? = ["/usr/bin/sqlite3", "/usr/local/bin/sqlite3", "/bin/sqlite3"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    /// A real kill -9: the sqlite3 CLI (another process, WAL + synchronous=FULL) commits and then
    /// idles waiting for input; once its commit is visible we SIGKILL it and open the files it left.
    @Test(.enabled(if: sqlite3CLI != nil, "needs the sqlite3 command-line tool (apt-get install sqlite3)"))
    func committedDataSurvivesSIGKILLOfTheWriterProcess() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.path()
        let child = Process()
        child.executableURL = URL(fileURLWithPath: Self.sqlite3CLI!)
        child.arguments = [path]
        let input = Pipe()
        child.standardInput = input
        child.standardOutput = FileHandle.nullDevice
        child.standardError = FileHandle.nullDevice
        try child.run()
        defer { if child.isRunning { kill(child.processIdentifier, SIGKILL) } }

        let inserts = (0..<200).map { "INSERT INTO devices VALUES ('SN-\($0)');" }.joined()
        let script = """
            PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint=0;
            CREATE TABLE devices (serial TEXT PRIMARY KEY);
            BEGIN; \(inserts) COMMIT;

            """
        input.fileHandleForWriting.write(Data(script.utf8))  // stdin stays open: the CLI waits for more

        try await waitUntil(timeout: .seconds(20), "the sqlite3 child commits its 200 rows") {
            guard let reader = try? Database.openReadOnly(path: path) else { return false }
            return ((try? reader.scalar("SELECT count(*) FROM devices").int64Value) ?? 0) == 200
        }
        #expect(child.isRunning)
        kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()
        #expect(child.terminationReason == .uncaughtSignal)
        #expect(FileManager.default.fileExists(atPath: path + "-wal"), "a killed writer leaves its WAL behind")

        let db = try Database(path: path)
        #expect(try db.scalar("SELECT count(*) FROM devices") == 200)
        #expect(try db.integrityCheck())
        try db.execute("INSERT INTO devices VALUES ('after-crash')")
    }
}
