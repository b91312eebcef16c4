import Foundation
import Testing
import TestSupport
import EscrowCore

/// `escrowd --store`: where the ledger lives, checked before anything starts, with errors that say
/// what to do (the suite itself runs twice, once with every ledger on PostgreSQL: `.ci/run`).
@Suite("escrowd --store", .timeLimit(.minutes(2)))
struct StoreOptionTests {
    static func escrowd(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        let data = try TempDirectory(prefix: "store")
        let ports = try freePorts(2)
        let exe = try Products.path("escrowd")
        return try await offPool {
            try runCommandStatus(exe, ["--data", data.path + "/data", "--device-port", String(ports[0]), "--operator-port", String(ports[1])] + arguments,
                                 timeout: .seconds(30))
        }
    }

    @Test("a store that is neither sqlite:PATH nor a postgres:// URL is a usage error (64) naming both forms")
    func badStore() async throws {
        let r = try await Self.escrowd(["--store", "mysql://db/escrow"])
        #expect(r.status == 64 && r.output.contains("--store") && r.output.contains("neither sqlite:PATH nor a postgres:// URL"), "\(r)")
        let empty = try await Self.escrowd(["--store", "sqlite:"])
        #expect(empty.status == 64 && empty.output.contains("sqlite: needs a file path"), "\(empty)")
    }

    @Test("an unreachable PostgreSQL stops escrowd at start (exit 1) with libpq's reason and no password in the message")
    func unreachablePostgres() async throws {
        let r = try await Self.escrowd(["--store", "postgres://escrowd:hunter2@/escrow?host=/nonexistent-socket-dir&connect_timeout=2"])
        #expect(r.status == 1, "\(r)")
        #expect(r.output.contains("cannot connect to postgres://escrowd:***@/escrow"), "\(r)")
        #expect(!r.output.contains("hunter2"), "the password leaked: \(r.output)")
    }

    @Test("escrowd backup refuses a PostgreSQL store and names PostgreSQL's own tools")
    func backupOfPostgres() async throws {
        let exe = try Products.path("escrowd")
        let scratch = try TempDirectory(prefix: "store-backup")
        let r = try await offPool {
            try runCommandStatus(exe, ["backup", "--data", scratch.path, "--to", scratch.file("b"), "--store", "postgres://escrowd@db/escrow"])
        }
        #expect(r.status == 64 && r.output.contains("pg_dump"), "\(r)")
    }

    @Test("escrowd runs on an SQLite file named by --store sqlite:PATH, outside the data directory")
    func sqliteElsewhere() async throws {
        let elsewhere = try TempDirectory(prefix: "store-file")
        let escrowd = try await EscrowdProcess(arguments: ["--store", "sqlite:" + elsewhere.file("ledger.db")], sqlite: true)
        defer { escrowd.stop() }
        let a = try escrowd.adminCredentials()
        let admin = try await OperatorProbe(port: escrowd.operatorPort, username: a.user, password: a.password, accounts: [.platform])
        _ = try await admin.send(.platform, "account.create", ["id": "oem", "name": "OEM", "kind": "provisioner"]).result(EscrowCore.Account.self)
        await admin.close()
        #expect(FileManager.default.fileExists(atPath: elsewhere.file("ledger.db")))
        #expect(!FileManager.default.fileExists(atPath: escrowd.dataDirectory + "/escrow.db"))
    }
}
