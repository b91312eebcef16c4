import Foundation
import Testing
import EscrowCore
import TestSupport

/// `escrowd backup` while escrowd runs, `escrowd restore` into a new data directory, and a restored
/// escrowd that serves the same accounts, devices and verified custody chains.
@Suite("escrowd backup and restore", .timeLimit(.minutes(3)))
struct BackupTests {
    @Test("a backup taken while escrowd serves restores into a new data directory; custody verifies there and the operators' logins work")
    func roundTrip() async throws {
        let platform = try await PlatformSession(sqlite: true)  // escrowd backup copies the SQLite file (PostgreSQL: pg_dump)
        let oem = try await platform.account("oem", kind: .provisioner)
        let acme = try await platform.account("acme", kind: .customer)
        _ = try await oem.send("oem", "device.provision", ["prefix": "bk-", "count": 20, "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        let moving = (1...8).map { String(format: "bk-%06d", $0) }
        let t = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": ids(moving)]).result(Commands.TransferResult.self)
        _ = try await acme.send("acme", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "hold"]).result(Commands.TransferResult.self)

        let escrowd = try Products.path("escrowd")
        let scratch = try TempDirectory(prefix: "backup")
        let backup = scratch.file("b1")
        let out = try runCommand(escrowd, ["backup", "--data", platform.escrowd.dataDirectory, "--to", backup])
        #expect(out.contains("3 accounts, 20 devices, 20 custody chains verified"), "\(out)")
        for f in ["escrow.db", "platform-ca.pem", "platform-ca.key", "escrowd.secret", "admin.conf", "MANIFEST"] {
            #expect(FileManager.default.fileExists(atPath: backup + "/" + f), "\(f)")
        }
        // The live escrowd keeps working after the backup, and a change made now is not in it.
        _ = try await oem.send("oem", "device.provision", ["prefix": "late-", "count": 1, "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)

        var restoreOutput = ""
        let restored = try await EscrowdProcess(sqlite: true, prepare: { dir in
            restoreOutput = try runCommand(escrowd, ["restore", "--from", backup, "--data", dir])
        })
        defer { restored.stop() }
        #expect(restoreOutput.contains("20 custody chains verified"), "\(restoreOutput)")
        let acme2 = try await OperatorProbe(port: restored.operatorPort, username: "op-acme", password: "pw-acme-secret", accounts: ["acme"])
        let list = try await acme2.send("acme", "device.list", [:]).result(Commands.DeviceListResult.self)
        #expect(list.total == 8)
        for id in moving.prefix(3) {
            let shown = try await acme2.send("acme", "device.show", ["deviceId": .string(id)]).result(Commands.DeviceShowResult.self)
            #expect(shown.verification.valid && shown.custody.count == 2, "\(id): \(shown.verification)")
        }
        let oem2 = try await OperatorProbe(port: restored.operatorPort, username: "op-oem", password: "pw-oem-secret", accounts: ["oem"])
        let oemList = try await oem2.send("oem", "device.list", [:]).result(Commands.DeviceListResult.self)
        #expect(oemList.total == 12, "the device provisioned after the backup is not in it")
        await acme2.close(); await oem2.close()
        await oem.close(); await acme.close()
        await platform.close()
    }

    @Test("restore refuses a tampered custody entry, a missing MANIFEST and a data directory that already has a database, and writes nothing")
    func refusals() async throws {
        let platform = try await PlatformSession(sqlite: true)  // escrowd backup copies the SQLite file (PostgreSQL: pg_dump)
        let oem = try await platform.account("oem", kind: .provisioner)
        _ = try await oem.send("oem", "device.provision", ["prefix": "tp-", "count": 3, "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        let escrowd = try Products.path("escrowd")
        let scratch = try TempDirectory(prefix: "backup")
        let backup = scratch.file("b1")
        _ = try runCommand(escrowd, ["backup", "--data", platform.escrowd.dataDirectory, "--to", backup])
        await oem.close()
        // A second backup into the same directory is refused (exit 73), the first is untouched.
        let again = try runCommandStatus(escrowd, ["backup", "--data", platform.escrowd.dataDirectory, "--to", backup])
        #expect(again.status == 73 && again.output.contains("already exists"), "\(again)")
        await platform.close()

        // Into a directory that already holds a database.
        let occupied = try runCommandStatus(escrowd, ["restore", "--from", backup, "--data", platform.escrowd.dataDirectory])
        #expect(occupied.status == 73 && occupied.output.contains("already holds a database"), "\(occupied)")

        // Tamper one stored custody entry: the restore names the device and writes nothing.
        try runCommand("/usr/bin/sqlite3", [backup + "/escrow.db", "UPDATE custody SET holder = 'mallory' WHERE device_id = 'tp-000002'"],
                       installHint: "apt-get install sqlite3")
        let target = scratch.file("restored")
        let tampered = try runCommandStatus(escrowd, ["restore", "--from", backup, "--data", target])
        #expect(tampered.status == 65 && tampered.output.contains("tp-000002") && tampered.output.contains("custody chain broken"), "\(tampered)")
        #expect(!FileManager.default.fileExists(atPath: target + "/escrow.db"))

        try FileManager.default.removeItem(atPath: backup + "/MANIFEST")
        let noManifest = try runCommandStatus(escrowd, ["restore", "--from", backup, "--data", target])
        #expect(noManifest.status == 65 && noManifest.output.contains("not a backup"), "\(noManifest)")
    }
}
