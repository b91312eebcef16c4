import Foundation
import Testing
import EscrowCore
import ControlPlane
import Storage
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A small filesystem of its own (tmpfs), so the database's disk can really fill up or turn read-only.
final class SmallDisk {
    let path: String
    init(megabytes: Int) throws {
        path = "/tmp/escrow-disk-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try run("mount", "-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", path)
    }
    /// Fills the disk to the last byte with a filler file.
    func fill() {
        let fd = open(path + "/filler", O_WRONLY | O_CREAT, 0o600)
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        var one: UInt8 = 0
        while write(fd, &one, 1) > 0 {}
    }
    func free() { unlink(path + "/filler") }
    deinit { _ = try? run("umount", "-l", path); rmdir(path) }

    @discardableResult
    private func run(_ args: String...) throws -> String {
        do { return try runCommand("/usr/bin/env", args) } catch {
            throw TestSupportError("\(args.joined(separator: " ")) failed (the storage fault tests need root to mount a tmpfs): \(error)")
        }
    }
}

@Suite("Storage faults: disk full and read-only", .serialized, .timeLimit(.minutes(2)))
struct StorageFaultTests {
    // The SQLite file on a full disk (on both runs of the suite: PostgreSQL's disk is the server's;
    // its "disk full", SQLSTATE 53100, is classified as unavailable like the read-only case below).
    @Test("a full disk refuses commands with storage_unavailable, corrupts nothing, and service resumes when space returns")
    func diskFull() async throws {
        let disk = try SmallDisk(megabytes: 4)
        let p = try await PlatformFixture(databaseDirectory: disk.path)
        let op = p.operators
        _ = try await op.send(.platform, "account.create", ["id": "oem", "name": "OEM", "kind": "provisioner"]).result(Account.self)
        _ = try await op.send("oem", "device.provision", ["prefix": "full-", "count": 50, "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        let before = try TestStore.snapshot(p.store)

        disk.fill()
        let args: [String: JSONValue] = ["prefix": "more-", "count": 500, "issueIdentity": false]
        let refused = try await op.send("oem", "device.provision", args, requestID: "provision-more")
        #expect(refused.error?.code == .storageUnavailable, "\(String(describing: refused.error))")
        #expect(refused.error?.message.contains("retry") == true)
        // Reads still work, nothing changed, and the file is intact.
        let list = try await op.send("oem", "device.list", ["limit": 1]).result(Commands.DeviceListResult.self)
        #expect(list.total == 50)
        #expect(try TestStore.snapshot(p.store) == before)
        #expect(try p.store.open().integrityProblems().isEmpty)

        disk.free()
        let retried = try await op.send("oem", "device.provision", args, requestID: "provision-more").result(Commands.DeviceProvisionResult.self)
        #expect(retried.provisioned.count == 500)
        #expect(try await op.send("oem", "device.list", ["limit": 1]).result(Commands.DeviceListResult.self).total == 550)
        await p.shutdown()
    }

    @Test("a read-only database refuses commands clearly and service resumes when it is writable again")
    func readOnly() async throws {
        let p = try await PlatformFixture()
        let op = p.operators
        _ = try await op.send(.platform, "account.create", ["id": "oem", "name": "OEM", "kind": "provisioner"]).result(Account.self)
        let before = try TestStore.snapshot(p.store)
        try await p.service.injectReadOnlyStorage(true)
        let refused = try await op.send(.platform, "account.create", ["id": "acme", "name": "Acme", "kind": "customer"], requestID: "create-acme")
        #expect(refused.error?.code == .storageUnavailable, "\(String(describing: refused.error))")
        try await p.service.injectReadOnlyStorage(false)
        #expect(try TestStore.snapshot(p.store) == before)
        let ok = try await op.send(.platform, "account.create", ["id": "acme", "name": "Acme", "kind": "customer"], requestID: "create-acme")
        #expect(ok.ok, "\(String(describing: ok.error))")
        await p.shutdown()
    }

    @Test("PostgreSQL: after the server drops escrowd's connection (a restart, a failover), the next commands reconnect and nothing is lost")
    func postgresConnectionDropped() async throws {
        let server = try await PostgresServer.shared()
        let store = try await offPool { try server.freshStore() }
        let p = try await PlatformFixture(store: store)
        let op = p.operators
        _ = try await op.send(.platform, "account.create", ["id": "oem", "name": "OEM", "kind": "provisioner"]).result(Account.self)
        _ = try await op.send("oem", "device.provision", ["prefix": "pg-", "count": 20, "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        for round in 1...3 {
            let dropped = try await offPool { try server.dropConnections(of: store) }
            #expect(dropped >= 1, "round \(round): escrowd's connection was not found")
            // A write (a transaction) and a read right after: both answered on a new connection.
            let r = try await op.send("oem", "device.provision", ["prefix": .string("pg\(round)-"), "count": 10, "issueIdentity": false], requestID: "after-drop-\(round)")
            #expect(r.ok, "round \(round): \(String(describing: r.error))")
            _ = try await offPool { try server.dropConnections(of: store) }
            let list = try await op.send("oem", "device.list", ["limit": 1]).result(Commands.DeviceListResult.self)
            #expect(list.total == 20 + 10 * round)
        }
        #expect(try TestStore.snapshot(store).filter { $0.hasPrefix("devices:") }.count == 50)
        await p.shutdown()
    }
}
