import Foundation
import Testing
import EscrowCore
import ControlPlane
import TestSupport

@Suite("Event log retention", .timeLimit(.minutes(2)))
struct EventRetentionTests {
    @Test("pruned events are reported as pruned, their numbers are never reused, and the log goes on from where it was")
    func prunedEventsAreCountedNotReused() async throws {
        let p = try await PlatformFixture()
        let op = p.operators
        _ = try await op.send(.platform, "account.create", ["id": "oem", "name": "OEM", "kind": "provisioner"]).result(Account.self)
        for i in 1...3 {
            _ = try await op.send("oem", "device.provision", ["deviceIds": .array([.string("ret-\(i)")]), "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        }
        let before = try await op.send("oem", "events.since", [:]).result(Commands.EventsSinceResult.self)
        #expect(before.events.map(\.seq) == [1, 2, 3, 4] && before.latestSeq == 4)

        await p.service.pruneEvents(olderThan: Date().addingTimeInterval(60))
        let gone = try await op.send("oem", "events.since", ["after": 1]).result(Commands.EventsSinceResult.self)
        #expect(gone.events.isEmpty && gone.latestSeq == 4 && gone.oldestSeq == nil && gone.pruned == 3, "\(gone)")

        _ = try await op.send("oem", "device.provision", ["deviceIds": ["ret-4"], "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        let after = try await op.send("oem", "events.since", ["after": 2]).result(Commands.EventsSinceResult.self)
        #expect(after.events.map(\.seq) == [5] && after.oldestSeq == 5 && after.pruned == 2, "\(after)")
        let current = try await op.send("oem", "events.since", ["after": 4]).result(Commands.EventsSinceResult.self)
        #expect(current.events.map(\.seq) == [5] && current.pruned == nil)
        await p.shutdown()
    }
}
