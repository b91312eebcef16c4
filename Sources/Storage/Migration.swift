/// One numbered schema change. Versions start at 1 and only ever grow; a shipped migration
/// is never edited, a new one is appended.
public struct Migration: Sendable, Equatable {
    public let version: Int
    public let name: String
    /// One or more `;`-separated statements, run with `executeScript` inside the migration's transaction.
    public let sql: String
    /// The same change for PostgreSQL, when `PostgresDDL.translate(sql)` cannot say it (a function
    /// only SQLite has); nil: the translation.
    public let postgres: String?

    public init(version: Int, name: String, sql: String, postgres: String? = nil) {
        self.version = version
        self.name = name
        self.sql = sql
        self.postgres = postgres
    }

    /// What runs on PostgreSQL.
    public var postgresSQL: String { postgres ?? PostgresDDL.translate(sql) }
}

/// Migrating failed; the database stays at the last version that applied completely.
public enum MigrationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file was migrated by newer code. Run that newer version, or restore a matching backup.
    case databaseNewerThanCode(databaseVersion: Int, latestKnownVersion: Int)
    /// The migration list itself is wrong (versions not positive and strictly increasing).
    case invalidMigrationList(String)
    /// A migration's SQL failed; its transaction was rolled back.
    case migrationFailed(version: Int, name: String, error: any StorageFailure)

    public static func == (a: MigrationError, b: MigrationError) -> Bool { a.description == b.description }

    public var description: String {
        switch self {
        case .databaseNewerThanCode(let databaseVersion, let latest):
            "database schema is at version \(databaseVersion) but this program only knows up to version \(latest); run a newer release or restore a matching backup"
        case .invalidMigrationList(let reason):
            "invalid migration list: \(reason)"
        case .migrationFailed(let version, let name, let error):
            "migration \(version) (\(name)) failed and was rolled back: \(error)"
        }
    }
}

extension Database {
    /// The schema version recorded in the file (`PRAGMA user_version`); 0 for a new database.
    public func userVersion() throws -> Int {
        try scalar("PRAGMA user_version").intValue ?? 0
    }

    /// Applies, in order, each migration whose version is above the file's `user_version`, each in
    /// its own transaction together with the version bump. Safe to call on every start; refuses a
    /// file whose version is newer than the last migration given.
    public func migrate(_ migrations: [Migration]) throws {
        var previous = 0
        for migration in migrations {
            guard migration.version > previous else {
                throw MigrationError.invalidMigrationList(
                    "version \(migration.version) (\(migration.name)) must be positive and greater than \(previous)")
            }
            previous = migration.version
        }
        let latest = previous

        try withLock {
            let current = try userVersion()
            guard current <= latest else {
                throw MigrationError.databaseNewerThanCode(databaseVersion: current, latestKnownVersion: latest)
            }
            for migration in migrations where migration.version > current {
                try transaction { db in
                    // Re-read under the write lock: another process may have migrated meanwhile.
                    let version = try db.userVersion()
                    guard version <= latest else {
                        throw MigrationError.databaseNewerThanCode(databaseVersion: version, latestKnownVersion: latest)
                    }
                    guard version < migration.version else { return }
                    do {
                        try db.executeScript(migration.sql)
                    } catch let error as SQLiteError {
                        throw MigrationError.migrationFailed(version: migration.version, name: migration.name, error: error)
                    }
                    try db.execute("PRAGMA user_version = \(migration.version)")
                }
            }
        }
    }
}
