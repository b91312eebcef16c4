import Foundation
import Testing
import EscrowCore
import TestSupport

/// account.show, account.delete, profile.show and profile.delete against the real broker.
@Suite("Accounts and profiles: show, delete", .timeLimit(.minutes(3)))
struct AccountLifecycleTests {
    /// Offers `devices` from `from` to `to` and lets `to` decide them all.
    static func transfer(_ devices: [String], from: OperatorProbe, _ fromAccount: AccountID, to: OperatorProbe, _ toAccount: AccountID,
                         action: String, profile: String? = nil) async throws {
        let t = try await from.send(fromAccount, "transfer.request", ["to": .string(toAccount.rawValue), "deviceIds": ids(devices)]).result(Commands.TransferResult.self)
        var args: [String: JSONValue] = ["transferId": .string(t.transfer.id), "action": .string(action)]
        if let profile { args["profile"] = .string(profile) }
        let r = try await to.send(toAccount, "transfer.approve", args).result(Commands.TransferResult.self)
        #expect(r.decided.count == devices.count, "\(r.refused)")
    }

    @Test("show counts what an account holds; delete is refused while it manages, holds, trades or anchors devices, then removes it and its logins; profiles in use cannot be deleted")
    func showAndDelete() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let acme = try await platform.account("acme", kind: .customer, managedBy: "oem")
        let resell = try await platform.account("resell", kind: .reseller)
        _ = try await oem.send("oem", "device.provision", ["deviceIds": ids(["sn-1", "sn-2", "sn-3", "sn-4"]), "issueIdentity": false])
            .result(Commands.DeviceProvisionResult.self)
        _ = try await acme.send("acme", "profile.put", ["name": "fleet", "settings": ["region": "eu"]]).result(Commands.Profile.self)
        try await Self.transfer(["sn-1", "sn-2"], from: oem, "oem", to: acme, "acme", action: "activate", profile: "fleet")
        let pending = try await oem.send("oem", "transfer.request", ["to": "resell", "deviceIds": ids(["sn-3"])]).result(Commands.TransferResult.self)

        // account.show, from platform and from an account's own topics.
        let shownAcme = try await platform.admin.send(.platform, "account.show", ["id": "acme"]).result(Commands.AccountShowResult.self)
        #expect(shownAcme.account == Account(id: "acme", name: "ACME", kind: .customer, managedBy: "oem"))
        #expect(shownAcme.devices == .init(total: 2, escrow: 0, active: 2, online: 0))
        #expect(shownAcme.manages == nil && shownAcme.operators == 1 && shownAcme.profiles == 1 && shownAcme.openTransfers == 0)
        #expect(abs(shownAcme.createdAt.timeIntervalSinceNow) < 300)
        let shownOEM = try await oem.send("oem", "account.show", ["id": "oem"]).result(Commands.AccountShowResult.self)
        #expect(shownOEM.manages == ["acme"] && shownOEM.devices == .init(total: 2, escrow: 2, active: 0, online: 0) && shownOEM.openTransfers == 1)
        #expect(try await oem.send("oem", "account.show", ["id": "acme"]).result(Commands.AccountShowResult.self).devices.total == 2, "a managed customer is in reach")
        #expect(try await acme.send("acme", "account.show", ["id": "oem"]).error?.code == .notFound, "the manager is not in the customer's reach")
        #expect(try await oem.send("oem", "account.show", ["id": "resell"]).error?.code == .notFound, "a standalone account is not in reach")

        // profile.show and profile.delete.
        let fleet = try await acme.send("acme", "profile.show", ["name": "fleet"]).result(Commands.ProfileShowResult.self)
        #expect(fleet.profile.version == 1 && fleet.devices == 2 && fleet.versions == [.init(version: 1, devices: 2)])
        // A device uses the profile version it was last pushed from; explicit settings use none.
        _ = try await acme.send("acme", "profile.put", ["name": "fleet", "settings": ["region": "eu-west"]]).result(Commands.Profile.self)
        _ = try await acme.send("acme", "config.push", ["deviceIds": ids(["sn-1"]), "profile": "fleet"]).result(Commands.ConfigPushResult.self)
        let twoVersions = try await acme.send("acme", "profile.show", ["name": "fleet"]).result(Commands.ProfileShowResult.self)
        #expect(twoVersions.profile.version == 2 && twoVersions.versions == [.init(version: 2, devices: 1), .init(version: 1, devices: 1)])
        _ = try await acme.send("acme", "config.push", ["deviceIds": ids(["sn-2"]), "settings": ["adhoc": true]]).result(Commands.ConfigPushResult.self)
        #expect(try await acme.send("acme", "profile.show", ["name": "fleet"]).result(Commands.ProfileShowResult.self).versions == [.init(version: 2, devices: 1)])
        let inUse = try await acme.send("acme", "profile.delete", ["name": "fleet"])
        #expect(inUse.error?.code == .conflict && inUse.error?.message.contains("in use by 1 device of acme") == true, "\(String(describing: inUse.error))")
        _ = try await acme.send("acme", "profile.put", ["name": "spare", "settings": [:]]).result(Commands.Profile.self)
        let spare = try await acme.send("acme", "profile.delete", ["name": "spare"]).result(Commands.Profile.self)
        #expect(spare.name == "spare" && spare.version == 1)
        try await waitUntil("profile.deleted reaches acme") { await acme.events(of: .profileDeleted).contains { $0.details["name"] == "spare" && $0.account == "acme" } }
        #expect(try await acme.send("acme", "profile.show", ["name": "spare"]).error?.code == .notFound)
        #expect(try await acme.send("acme", "profile.delete", ["name": "spare"]).error?.code == .notFound)
        #expect(try await platform.admin.send(.platform, "profile.show", ["name": "fleet"]).error?.code == .forbidden)

        // account.delete: each precondition, with a message that says what is left.
        func refusal(_ id: String) async throws -> WireError? { try await platform.admin.send(.platform, "account.delete", ["id": .string(id)]).error }
        let open = try await refusal("resell")
        #expect(open?.code == .conflict && open?.message.contains("1 open transfer request") == true, "\(String(describing: open))")
        let r = try await resell.send("resell", "transfer.approve", ["transferId": .string(pending.transfer.id), "action": "hold"]).result(Commands.TransferResult.self)
        #expect(r.decided == ["sn-3"])
        let holds = try await refusal("resell")
        #expect(holds?.code == .conflict && holds?.message.contains("holds 1 device (1 in escrow, 0 active)") == true, "\(String(describing: holds))")
        let acmeHolds = try await refusal("acme")
        #expect(acmeHolds?.code == .conflict && acmeHolds?.message.contains("account acme holds 2 devices") == true, "\(String(describing: acmeHolds))")
        let manages = try await refusal("oem")
        #expect(manages?.code == .conflict && manages?.message.contains("manages acme") == true, "\(String(describing: manages))")
        #expect(try await refusal("platform")?.code == .forbidden)
        #expect(try await refusal("nobody")?.code == .notFound)
        #expect(try await oem.send("oem", "account.delete", ["id": "resell"]).error?.code == .forbidden)

        // The reseller gives its device back: now it holds nothing and can go.
        try await Self.transfer(["sn-3"], from: resell, "resell", to: oem, "oem", action: "hold")
        try await waitUntil("the broker accepts op-resell before the delete") { await OperatorLifecycleTests.accepted(platform, "op-resell", "pw-resell-secret") }
        let deleted = try await platform.admin.send(.platform, "account.delete", ["id": "resell"], requestID: "r-del-resell")
        let result = try deleted.result(Commands.AccountDeleteResult.self)
        #expect(result.account.id == "resell" && result.operators == ["op-resell"] && result.profiles == 0)
        let replay = try await platform.admin.send(.platform, "account.delete", ["id": "resell"], requestID: "r-del-resell")
        #expect(replay == deleted, "a replayed delete returns the first reply")
        try await waitUntil(timeout: .seconds(5), "the broker refuses the deleted account's login") {
            !(await OperatorLifecycleTests.accepted(platform, "op-resell", "pw-resell-secret"))
        }
        try await waitUntil("account.deleted reaches platform") {
            await platform.admin.events(of: .accountDeleted).contains { $0.details["id"] == "resell" && $0.details["operatorsRemoved"] == 1 }
        }
        #expect(await platform.admin.events(of: .accountDeleted).count == 1, "the replay emitted nothing")
        #expect(try await platform.admin.send(.platform, "account.show", ["id": "resell"]).error?.code == .notFound)
        #expect(try await refusal("resell")?.code == .notFound)
        let reuse = try await platform.admin.send(.platform, "account.create", ["id": "resell", "name": "again", "kind": "reseller"])
        #expect(reuse.error?.code == .conflict && reuse.error?.message.contains("never reused") == true, "\(String(describing: reuse.error))")
        #expect(try await platform.admin.send(.platform, "account.list", [:]).result(Commands.AccountListResult.self).accounts.map(\.id) == ["acme", "oem"])
        #expect(try await platform.admin.send(.platform, "operator.list", [:]).result(Commands.OperatorListResult.self).operators.map(\.username)
                == ["op-acme", "op-admin", "op-oem"])
        // The custody chain still names the deleted holder and verifies.
        let sn3 = try await oem.send("oem", "device.show", ["deviceId": "sn-3"]).result(Commands.DeviceShowResult.self)
        #expect(sn3.custody.map(\.holder) == ["oem", "resell", "oem"] && sn3.verification.valid)

        // A provisioner whose escrow identities other accounts' devices still use cannot go.
        let standalone = try await platform.account("solo", kind: .provisioner)
        _ = try await standalone.send("solo", "device.provision", ["deviceIds": ids(["solo-1"]), "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        try await Self.transfer(["solo-1"], from: standalone, "solo", to: oem, "oem", action: "hold")
        let anchors = try await refusal("solo")
        #expect(anchors?.code == .conflict && anchors?.message.contains("1 device held by other accounts") == true, "\(String(describing: anchors))")

        let problems = await platform.admin.shapeProblems + acme.shapeProblems
        #expect(problems.isEmpty, "events off their contract shape: \(problems)")
        for p in [oem, acme, resell, standalone] { await p.close() }
        await platform.close()
    }

    @Test("escrowctl account show/delete and profile show/delete")
    func cli() async throws {
        let platform = try await PlatformSession()
        let acme = try await platform.account("acme", kind: .customer)
        _ = try await acme.send("acme", "profile.put", ["name": "lab", "settings": ["log": "debug"], "heartbeatInterval": 30]).result(Commands.Profile.self)
        await acme.close()
        let admin = ["ESCROW_CONFIG": platform.escrowd.dataDirectory + "/admin.conf"]
        let op = operatorEnv(broker: "mqtt://127.0.0.1:\(platform.escrowd.operatorPort)", user: "op-acme", password: "pw-acme-secret", account: "acme")

        let show = try await runCLI(["account", "show", "acme"], env: admin)
        #expect(show.status == 0 && show.stdout.contains("customer") && show.stdout.contains("0 (0 in escrow, 0 active; 0 online)"), "\(show)")
        let own = try await runCLI(["account", "show", "acme", "--json"], env: op)
        let ownJSON = try? JSONDecoder().decode(JSONValue.self, from: Data(own.stdout.utf8))
        #expect(own.status == 0 && ownJSON?["profiles"] == 1 && ownJSON?["account"]?["id"] == "acme", "\(own)")
        let profile = try await runCLI(["profile", "show", "lab"], env: op)
        #expect(profile.status == 0 && profile.stdout.contains("v1") && profile.stdout.contains("30s"), "\(profile)")
        let gone = try await runCLI(["profile", "delete", "lab"], env: op)
        #expect(gone.status == 0 && gone.stdout.contains("profile lab v1 deleted"), "\(gone)")
        let again = try await runCLI(["profile", "show", "lab"], env: op)
        #expect(again.status == 66 && again.stderr.contains("not_found"), "\(again)")
        let deleted = try await runCLI(["account", "delete", "acme"], env: admin)
        #expect(deleted.status == 0 && deleted.stdout.contains("account acme deleted") && deleted.stdout.contains("op-acme"), "\(deleted)")
        let platformItself = try await runCLI(["account", "delete", "platform"], env: admin)
        #expect(platformItself.status == 77 && platformItself.stderr.contains("forbidden"), "\(platformItself)")
        let help = try await runCLI(["--help"])
        for line in ["account show", "account delete", "profile show", "profile delete"] { #expect(help.stdout.contains(line), "\(line) in --help") }
        await platform.close()
    }
}
