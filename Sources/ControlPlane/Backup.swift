import Foundation
import EscrowCore
import Storage

/// `escrowd backup` and `escrowd restore`: a data directory's durable state as a directory of files.
///
/// A backup holds `escrow.db` (a consistent snapshot through SQLite's online backup API, taken while
/// escrowd keeps running), the platform CA (`platform-ca.pem`, `platform-ca.key`: the broker's
/// server certificate and every device's trust anchor), `escrowd.secret` and `admin.conf`, and a
/// `MANIFEST` naming them. Account CAs live in the database. The broker's files (`broker/`) are not
/// kept: escrowd writes them from the database on start. Blocking throughout: command-line use only.
public enum Backup {
    /// Files copied next to the database when present (the platform CA is required).
    static let files = ["platform-ca.pem", "platform-ca.key", "escrowd.secret", "admin.conf"]
    static let required: Set<String> = ["platform-ca.pem", "platform-ca.key"]

    public struct Summary: Sendable, Equatable {
        public var accounts: Int
        public var devices: Int
        /// Custody chains that verified (every device's, or the restore fails).
        public var chainsVerified: Int
        public var schemaVersion: Int
        public var files: [String]
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
        /// escrowd's exit status: 73 when the target already exists, 65 for a backup or data directory that will not do.
        public var exitCode: Int32
        init(_ d: String, exitCode: Int32 = 65) { description = d; self.exitCode = exitCode }
    }

    /// Writes a backup of `dataDirectory` into the new directory `destination`.
    public static func backup(dataDirectory: String, to destination: String) throws -> Summary {
        let fm = FileManager.default
        let database = dataDirectory + "/escrow.db"
        guard fm.fileExists(atPath: database) else {
            throw Failure("\(database) does not exist: is --data the directory escrowd runs with?")
        }
        guard !fm.fileExists(atPath: destination) else {
            throw Failure("\(destination) already exists; back up into a new directory", exitCode: 73)
        }
        for f in required where !fm.fileExists(atPath: dataDirectory + "/" + f) {
            throw Failure("\(dataDirectory)/\(f) is missing; without it a restore cannot serve the devices")
        }
        try fm.createDirectory(atPath: destination, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        do {
            try Database.openReadOnly(path: database).backup(to: destination + "/escrow.db")
            var copied = ["escrow.db"]
            for f in files where fm.fileExists(atPath: dataDirectory + "/" + f) {
                try fm.copyItem(atPath: dataDirectory + "/" + f, toPath: destination + "/" + f)
                try fm.setAttributes([.posixPermissions: 0o600], ofItemAtPath: destination + "/" + f)
                copied.append(f)
            }
            let summary = try check(destination + "/escrow.db", files: copied)
            let manifest = "# EscrowFleet backup \(Date().formatted(.iso8601)), schema \(summary.schemaVersion)\n"
                + copied.joined(separator: "\n") + "\n"
            try manifest.write(toFile: destination + "/MANIFEST", atomically: true, encoding: .utf8)
            return summary
        } catch {
            try? fm.removeItem(atPath: destination)
            throw error
        }
    }

    /// Restores the backup at `source` into `dataDirectory`, which must not hold a database yet.
    /// Verifies the database's integrity and every device's custody chain before writing anything.
    public static func restore(from source: String, into dataDirectory: String) throws -> Summary {
        let fm = FileManager.default
        guard let manifest = try? String(contentsOfFile: source + "/MANIFEST", encoding: .utf8) else {
            throw Failure("\(source)/MANIFEST is missing: \(source) is not a backup written by 'escrowd backup'")
        }
        let listed = manifest.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") && !$0.isEmpty }
        for f in listed where !fm.fileExists(atPath: source + "/" + f) {
            throw Failure("\(source)/\(f) is listed in the MANIFEST but missing")
        }
        guard listed.contains("escrow.db"), required.isSubset(of: listed) else {
            throw Failure("\(source)/MANIFEST must list escrow.db, platform-ca.pem and platform-ca.key")
        }
        if fm.fileExists(atPath: dataDirectory + "/escrow.db") {
            throw Failure("\(dataDirectory) already holds a database; restore into a new, empty data directory (--data NEWDIR)", exitCode: 73)
        }
        let summary = try check(source + "/escrow.db", files: listed)
        try fm.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        for f in listed {
            let target = dataDirectory + "/" + f
            if fm.fileExists(atPath: target) { try fm.removeItem(atPath: target) }
            try fm.copyItem(atPath: source + "/" + f, toPath: target)
            try fm.setAttributes([.posixPermissions: 0o600], ofItemAtPath: target)
        }
        return summary
    }

    /// Integrity, schema version and every custody chain of the database at `path`.
    static func check(_ path: String, files: [String]) throws -> Summary {
        let db = try Database.openReadOnly(path: path)
        let problems = try db.integrityProblems()
        guard problems.isEmpty else { throw Failure("\(path) fails SQLite's integrity check: \(problems.prefix(3).joined(separator: "; "))") }
        let version = try db.userVersion()
        let known = Schema.migrations.map(\.version).max() ?? 0
        guard version <= known else {
            throw Failure("\(path) has schema version \(version), newer than this escrowd (\(known)); use the escrowd that wrote it")
        }
        let ledger = Ledger(database: db)
        let devices = try ledger.allDeviceIDs()
        var verified = 0
        for id in devices {
            let v = CustodyChain.verify(try ledger.custody(id))
            guard v.valid else {
                throw Failure("device \(id): custody chain broken at entry \(v.brokenAt ?? 0): \(v.problem ?? "?")")
            }
            verified += 1
        }
        let accounts = try db.scalar("SELECT count(*) FROM accounts").intValue ?? 0
        return Summary(accounts: accounts, devices: devices.count, chainsVerified: verified, schemaVersion: version, files: files)
    }
}
