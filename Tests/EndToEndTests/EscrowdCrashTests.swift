import Foundation
import Testing
import EscrowCore
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite("escrowd killed with SIGKILL during a 1,000-device approval", .serialized, .timeLimit(.minutes(5)))
struct EscrowdCrashTests {
    enum CrashPoint: String, CaseIterable, Sendable {
        /// Before escrowd could commit (or reply to) the approval.
        case rightAfterSending
        /// After the reply, while configurations are being published and acked.
        case afterReply
        /// After some acks were processed.
        case duringAcks
    }

    @Test("every approved device is activated exactly once and converges", arguments: CrashPoint.allCases)
    func crash(at point: CrashPoint) async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let acme = try await platform.account("acme", kind: .customer)
        let n = 1_000
        _ = try await oem.send("oem", "device.provision", ["prefix": "crash-", "count": .number(Double(n)), "issueIdentity": false], timeout: .seconds(30))
            .result(Commands.DeviceProvisionResult.self)
        let all = (1...n).map { String(format: "crash-%06d", $0) }
        let t = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": ids(all)], timeout: .seconds(30)).result(Commands.TransferResult.self)
        let approved = Array(all.prefix(800))
        let responder = try await DeviceResponder(escrowd: platform.escrowd)

        let requestID = "approve-crash-\(point.rawValue)"
        let approve: [String: JSONValue] = ["transferId": .string(t.transfer.id), "deviceIds": ids(approved), "action": "activate"]
        switch point {
        case .rightAfterSending:
            try await acme.sendRaw("acme", "transfer.approve", payload: WireCodec.encode(CommandEnvelope(requestId: requestID, args: .object(approve))))
            platform.escrowd.crash()
        case .afterReply:
            _ = try await acme.send("acme", "transfer.approve", approve, requestID: requestID, timeout: .seconds(30)).result(Commands.TransferResult.self)
            platform.escrowd.crash()
        case .duringAcks:
            _ = try await acme.send("acme", "transfer.approve", approve, requestID: requestID, timeout: .seconds(30)).result(Commands.TransferResult.self)
            try await waitUntil("some acks were sent") { await responder.acked.count >= 100 }
            platform.escrowd.crash()
        }
        try await platform.escrowd.start()

        // The operator retries with the same request id: the approval happens once, whatever survived.
        let acme2 = try await platform.operatorProbe(user: "op-acme", password: "pw-acme-secret", accounts: ["acme"])
        let retry = try await acme2.send("acme", "transfer.approve", approve, requestID: requestID, timeout: .seconds(30))
        if point != .rightAfterSending {
            // Acknowledged before the crash: the replay returns the first reply.
            #expect(retry.ok, "replay of an acknowledged approval: \(String(describing: retry.error))")
        }
        try await waitUntil(timeout: .seconds(60), "all approved devices converge after the restart") {
            let s = try await acme2.send("acme", "config.status", [:], timeout: .seconds(20)).result(Commands.ConfigStatusResult.self).devices
            return s.count == approved.count && s.allSatisfy { $0.state == .applied }
        }
        // Exactly once: one activation in each custody chain, one configuration version.
        let status = try await acme2.send("acme", "config.status", [:]).result(Commands.ConfigStatusResult.self).devices
        #expect(Set(status.map(\.desiredVersion)) == [1])
        for d in approved.shuffled().prefix(25) {
            let show = try await acme2.send("acme", "device.show", ["deviceId": .string(d)]).result(Commands.DeviceShowResult.self)
            #expect(show.verification.valid)
            #expect(show.custody.filter { $0.decision == .activated }.count == 1, "\(d) activated once")
        }
        // The request is neither lost nor half-applied.
        let view = try await acme2.send("acme", "transfer.show", ["transferId": .string(t.transfer.id)]).result(TransferView.self)
        #expect(view.counts["approved"] == approved.count)
        #expect(view.counts["pending"] == n - approved.count)
        #expect(view.status == .partiallyApproved)
        await responder.close()
        await acme2.close()
        await platform.close()
    }
}
