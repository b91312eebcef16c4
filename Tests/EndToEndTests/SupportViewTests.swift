import Foundation
import Testing
import EscrowCore
import MQTT
import TestSupport

/// Issue 15: an OEM's support staff get a read-only view of the customers the OEM manages, never
/// of standalone customers, and the broker (not only escrowd) enforces it.
@Suite("Support operators: read-only, enforced by the broker", .serialized, .timeLimit(.minutes(2)))
struct SupportViewTests {
    /// The MQTT error a publish ends with, or nil when the broker accepted it.
    static func publishError(_ publish: () async throws -> Void) async -> MQTTError? {
        do { try await publish(); return nil } catch let e as MQTTError { return e } catch { return MQTTError(kind: .library, operation: "publish", code: 0, message: "\(error)") }
    }

    @Test("a support login reads the OEM's managed customers; every write and every standalone account is refused at the broker")
    func supportView() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        _ = try await platform.admin.send(.platform, "account.create", ["id": "managed", "name": "Managed", "kind": "customer", "managedBy": "oem"]).result(Account.self)
        _ = try await platform.account("solo", kind: .customer)
        // The OEM's full operator, now reaching the managed account too.
        let oemFull = try await platform.operatorProbe(user: "op-oem", password: "pw-oem-secret", accounts: ["oem", "managed"])
        let created = try await platform.admin.send(.platform, "operator.create", ["username": "op-oem-help", "password": "pw-help-secret", "account": "oem", "role": "support"])
            .result(Commands.OperatorResult.self)
        #expect(created.role == .support && created.reach == ["oem", "managed"])
        let list = try await platform.admin.send(.platform, "operator.list", ["account": "oem"]).result(Commands.OperatorListResult.self)
        #expect(list.operators.contains { $0.username == "op-oem-help" && $0.role == .support })
        #expect(list.operators.contains { $0.username == "op-oem" && $0.role == .full })

        // A device active in the managed account.
        let files = try TempDirectory(prefix: "support")
        _ = try await platform.provision(["sup-0001"], by: oem, account: "oem", into: files)
        let t = try await oem.send("oem", "transfer.request", ["to": "managed", "deviceIds": ids(["sup-0001"])]).result(Commands.TransferResult.self)
        _ = try await oemFull.send("managed", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "activate"]).result(Commands.TransferResult.self)

        let help = try await platform.operatorProbe(user: "op-oem-help", password: "pw-help-secret", accounts: ["oem", "managed"])
        // Reads work in the managed account...
        let devices = try await help.send("managed", "device.list", [:]).result(Commands.DeviceListResult.self)
        #expect(devices.devices.map(\.id) == ["sup-0001"])
        let show = try await help.send("managed", "device.show", ["deviceId": "sup-0001"]).result(Commands.DeviceShowResult.self)
        #expect(show.device.state == .active && show.verification.valid)
        _ = try await help.send("managed", "config.status", [:]).result(Commands.ConfigStatusResult.self)
        _ = try await help.send("oem", "transfer.list", [:]).result(Commands.TransferListResult.self)

        // ... every write is refused by the broker (PUBACK 135), in the managed account and its own,
        // and nothing changes.
        let writes: [(AccountID, String, JSONValue)] = [
            ("managed", "device.retire", ["deviceIds": ["sup-0001"]]),
            ("managed", "config.push", ["all": true, "settings": ["x": 1]]),
            ("managed", "transfer.request", ["to": "oem", "deviceIds": ["sup-0001"]]),
            ("oem", "device.provision", ["deviceIds": ["sup-0002"]]),
        ]
        for (account, command, args) in writes {
            let envelope = CommandEnvelope(requestId: "help-\(command)", args: args)
            let error = await Self.publishError { try await help.client.publish("accounts/\(account)/cmd/\(command)", WireCodec.encode(envelope)) }
            #expect(error?.kind == .notAuthorized, "\(command) in \(account): \(String(describing: error))")
        }
        let after = try await oemFull.send("managed", "device.show", ["deviceId": "sup-0001"]).result(Commands.DeviceShowResult.self)
        #expect(after.device.state == .active && after.device.configVersion == show.device.configVersion, "a refused write changed something")
        #expect(try await oem.send("oem", "device.list", ["prefix": "sup-0002"]).result(Commands.DeviceListResult.self).total == 0)

        // A standalone customer: not even reads.
        let envelope = CommandEnvelope(requestId: "help-solo", args: [:])
        let refused = await Self.publishError { try await help.client.publish("accounts/solo/cmd/device.list", WireCodec.encode(envelope)) }
        #expect(refused?.kind == .notAuthorized, "\(String(describing: refused))")
        await oemFull.close()
        await help.close()
        await platform.close()
    }
}
