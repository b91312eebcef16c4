import Foundation
import Testing
import Storage

@Suite struct MigrationTests {
    static let v1 = Migration(version: 1, name: "devices", sql: """
        CREATE TABLE devices (serial TEXT PRIMARY KEY, owner TEXT);
        INSERT INTO devices VALUES ('seed', NULL);
        """)
    static let v2 = Migration(version: 2, name: "owner index", sql: "CREATE INDEX devices_owner ON devices(owner);")
    static let v3 = Migration(version: 3, name: "transfers", sql: """
        CREATE TABLE transfers (id INTEGER PRIMARY KEY, serial TEXT NOT NULL REFERENCES devices(serial));
        """)

    @Test func appliedOnceAndIdempotentOnReopen() throws {
        let dir = try TemporaryDirectory()
        do {
            let db = try Database(path: dir.path())
            #expect(try db.userVersion() == 0)
            try db.migrate([Self.v1, Self.v2])
            #expect(try db.userVersion() == 2)
            try db.migrate([Self.v1, Self.v2])  // same process, again
        }
        let db = try Database(path: dir.path())
        try db.migrate([Self.v1, Self.v2])
        #expect(try db.userVersion() == 2)
        // The seed row of migration 1 was inserted exactly once.
        #expect(try db.scalar("SELECT count(*) FROM devices") == 1)
        #expect(try db.scalar("SELECT count(*) FROM sqlite_schema WHERE name = 'devices_owner'") == 1)
    }

    @Test func laterMigrationsApplyIncrementally() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        try db.migrate([Self.v1])
        #expect(try db.userVersion() == 1)
        try db.migrate([Self.v1, Self.v2, Self.v3])
        #expect(try db.userVersion() == 3)
        try db.execute("INSERT INTO transfers (serial) VALUES ('seed')")
        #expect(try db.scalar("SELECT count(*) FROM devices") == 1)
    }

    @Test func newerDatabaseIsRefused() throws {
        let dir = try TemporaryDirectory()
        do {
            let db = try Database(path: dir.path())
            try db.migrate([Self.v1, Self.v2, Self.v3])
        }
        let db = try Database(path: dir.path())
        let error = try #require(throws: MigrationError.self) { try db.migrate([Self.v1, Self.v2]) }
        #expect(error == .databaseNewerThanCode(databaseVersion: 3, latestKnownVersion: 2))
        #expect(error.description.contains("version 3"))
        #expect(try db.userVersion() == 3)
    }

    @Test func failedMigrationRollsBackAndKeepsEarlierOnes() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        let broken = Migration(version: 2, name: "broken", sql: """
            CREATE TABLE half_done (x);
            INSERT INTO no_such_table VALUES (1);
            """)
        let error = try #require(throws: MigrationError.self) { try db.migrate([Self.v1, broken]) }
        guard case .migrationFailed(let version, let name, let sqlError) = error else {
            Issue.record("unexpected \(error)")
            return
        }
        #expect(version == 2 && name == "broken")
        #expect(sqlError.message.contains("no such table"))
        #expect(try db.userVersion() == 1)
        #expect(try db.scalar("SELECT count(*) FROM sqlite_schema WHERE name = 'half_done'") == 0)
        // Fixed code migrates fine afterwards.
        try db.migrate([Self.v1, Self.v2])
        #expect(try db.userVersion() == 2)
    }

    @Test func invalidMigrationListIsRefused() throws {
        let dir = try TemporaryDirectory()
        let db = try Database(path: dir.path())
        #expect(throws: MigrationError.self) { try db.migrate([Self.v2, Self.v1]) }
        #expect(throws: MigrationError.self) { try db.migrate([Self.v1, Self.v1]) }
        #expect(throws: MigrationError.self) {
            try db.migrate([Migration(version: 0, name: "zero", sql: "SELECT 1")])
        }
        #expect(try db.userVersion() == 0)
    }
}
