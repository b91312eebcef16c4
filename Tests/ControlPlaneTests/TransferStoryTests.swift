import Foundation
import Testing
import EscrowCore
import EscrowAgent
import ControlPlane
import TestSupport

@Suite("The transfer story against a real broker", .timeLimit(.minutes(2)))
struct TransferStoryTests {
    @Test("OEM -> reseller (hold) -> customer: part approved, part rejected, rest expired")
    func fullStory() async throws {
        let p = try await PlatformFixture()
        defer { Task { await p.shutdown() } }
        let op = p.operators

        // Accounts.
        for (id, kind) in [("oem", "provisioner"), ("reseller", "reseller"), ("acme", "customer")] {
            _ = try await op.send(.platform, "account.create", ["id": .string(id), "name": .string(id.uppercased()), "kind": .string(kind)]).result(Account.self)
        }
        // Escrow devices, online in escrow mode.
        let devices = (1...6).map { "dev-00000\($0)" }
        let prov = try await op.send("oem", "device.provision", ["deviceIds": ids(devices), "issueIdentity": .bool(false)]).result(Commands.DeviceProvisionResult.self)
        #expect(prov.provisioned.count == 6)
        let agents = try devices.map { try p.startAgent($0) }
        try await waitUntil("all 6 devices online") {
            let list = try await op.send("oem", "device.list", [:]).result(Commands.DeviceListResult.self)
            return list.devices.filter(\.online).count == 6
        }

        // OEM -> reseller, held in escrow.
        let t1 = try await op.send("oem", "transfer.request", ["to": "reseller", "deviceIds": ids(devices), "note": "Q4 batch"]).result(Commands.TransferResult.self)
        #expect(t1.transfer.status == .pending)
        let held = try await op.send("reseller", "transfer.approve", ["transferId": .string(t1.transfer.id), "action": "hold"]).result(Commands.TransferResult.self)
        #expect(held.decided.count == 6)
        #expect(held.transfer.status == .approved)
        // The OEM no longer holds them; the reseller does, still in escrow.
        let resellerDevices = try await op.send("reseller", "device.list", [:]).result(Commands.DeviceListResult.self)
        #expect(resellerDevices.devices.map(\.state) == Array(repeating: .escrow, count: 6))
        #expect(try await op.send("oem", "device.list", [:]).result(Commands.DeviceListResult.self).total == 0)

        // Reseller -> customer, short expiry.
        _ = try await op.send("acme", "profile.put", ["name": "factory", "settings": ["site": "plant-7"], "heartbeatInterval": 30, "makeDefault": true]).result(Commands.Profile.self)
        let t2 = try await op.send("reseller", "transfer.request", ["to": "acme", "deviceIds": ids(devices), "expiresIn": 120]).result(Commands.TransferResult.self)
        let approved = Array(devices[0..<3]), rejected = Array(devices[3..<5]), expiring = devices[5]
        let a = try await op.send("acme", "transfer.approve", ["transferId": .string(t2.transfer.id), "deviceIds": ids(approved), "action": "activate"]).result(Commands.TransferResult.self)
        #expect(a.decided.map(\.rawValue) == approved)
        #expect(a.transfer.status == .partiallyApproved)
        let r = try await op.send("acme", "transfer.reject", ["transferId": .string(t2.transfer.id), "deviceIds": ids(rejected), "reason": "wrong model"]).result(Commands.TransferResult.self)
        #expect(r.decided.map(\.rawValue) == rejected)
        // Deciding the same devices again is refused per device, never silently dropped.
        let again = try await op.send("acme", "transfer.reject", ["transferId": .string(t2.transfer.id), "deviceIds": ids([approved[0], expiring]), "reason": "x"]).result(Commands.TransferResult.self)
        #expect(again.refused.map(\.deviceId.rawValue) == [approved[0]])
        #expect(again.decided.map(\.rawValue) == [expiring])

        // A fresh request for the remaining device, left to expire.
        _ = try await op.send("reseller", "transfer.request", ["to": "acme", "deviceIds": ids(rejected), "expiresIn": 1]).result(Commands.TransferResult.self)
        try await waitUntil("the request expires and both sides are told") {
            await op.events(of: .transferExpired).count >= 2
        }
        let expiredTo = await op.events(of: .transferExpired).compactMap { $0.details["_topicAccount"]?.stringValue }
        #expect(Set(expiredTo) == ["reseller", "acme"])

        // Approved devices get their configuration and report normal mode.
        try await waitUntil(timeout: .seconds(15), "approved devices apply their configuration") {
            let s = try await op.send("acme", "config.status", [:]).result(Commands.ConfigStatusResult.self)
            return s.devices.count == 3 && s.devices.allSatisfy { $0.state == .applied }
        }
        for (i, agent) in agents.enumerated() {
            let mode = await agent.mode
            #expect(mode == (i < 3 ? .normal : .escrow), "device \(devices[i])")
        }
        let acmeDevices = try await op.send("acme", "device.list", [:]).result(Commands.DeviceListResult.self)
        #expect(acmeDevices.devices.map(\.id.rawValue) == approved)
        try await waitUntil("the ledger sees normal mode") {
            let d = try await op.send("acme", "device.list", [:]).result(Commands.DeviceListResult.self)
            return d.devices.allSatisfy { $0.mode == .normal && $0.state == .active }
        }

        // Custody chains verify: provisioned -> held -> activated.
        let show = try await op.send("acme", "device.show", ["deviceId": .string(approved[0])]).result(Commands.DeviceShowResult.self)
        #expect(show.verification.valid)
        #expect(show.custody.map(\.decision) == [.provisioned, .held, .activated])
        #expect(show.custody.map(\.holder.rawValue) == ["oem", "reseller", "acme"])

        // Events reached the right accounts and no other.
        let events = await op.events
        for e in events {
            #expect(e.details["_topicAccount"]?.stringValue == e.account.rawValue)
        }
        let activations = events.filter { $0.type == .deviceActivated }
        #expect(Set(activations.map(\.account)) == ["acme"])
        #expect(activations.count == 3)
        // Nothing about activated devices reached the OEM after it handed them over.
        let oemAboutApproved = events.filter { $0.account == "oem" && $0.deviceId.map { approved.contains($0.rawValue) } == true }
        #expect(oemAboutApproved.filter { $0.type == .configApplied || $0.type == .deviceActivated }.isEmpty)
        // Every event of the story has the shape the contract gives its type.
        let problems = await op.shapeProblems
        #expect(problems.isEmpty, "events off their contract shape: \(problems.prefix(5))")
        await p.shutdown()
    }
}
