import Foundation
import Testing
import EscrowCore
@testable import ControlPlane
import MQTT
import TestSupport

/// Presence by lease (issue 20): the value type without a broker, then escrowd with its managed
/// broker and a device over real mutual TLS that disconnects cleanly without an offline status.
@Suite("Presence by lease", .timeLimit(.minutes(2)))
struct PresenceLeaseTests {
    let a: DeviceID = "dev-a", b: DeviceID = "dev-b"

    @Test("an online device silent past intervals x heartbeat interval + grace goes offline; a heartbeat brings it back")
    func leaseEnds() {
        var lease = PresenceLease(intervals: 3, grace: 5, defaultInterval: 300)
        lease.setInterval(a, 10)
        #expect(lease.lease(a) == 35 && lease.lease(b) == 905)
        #expect(lease.status(a, online: true, at: 0) == .init(device: a, online: true, reason: .status))
        #expect(lease.status(b, online: true, at: 0) != nil)
        #expect(lease.heard(a, at: 20) == nil, "heard while online: no change")
        #expect(lease.expire(now: 55).isEmpty, "35 s after the heartbeat at 20 is 55: not past it")
        #expect(lease.expire(now: 55.5) == [.init(device: a, online: false, reason: .leaseExpired)])
        #expect(lease.expire(now: 60).isEmpty, "ended once")
        #expect(!lease.isOnline(a) && lease.isOnline(b) && lease.onlineCount == 1)
        #expect(lease.heard(a, at: 61) == .init(device: a, online: true, reason: .heartbeat))
        #expect(lease.expire(now: 906).map(\.device) == [a, b], "both leases end; changes come in device order")
    }

    @Test("after an offline status only an online status brings a device back, never a late heartbeat")
    func statusOfflineWins() {
        var lease = PresenceLease(intervals: 3, grace: 5, defaultInterval: 300)
        _ = lease.status(a, online: true, at: 0)
        #expect(lease.status(a, online: false, at: 1) == .init(device: a, online: false, reason: .status))
        #expect(lease.heard(a, at: 0.5) == nil && lease.heard(a, at: 2) == nil && !lease.isOnline(a))
        #expect(lease.expire(now: 10_000).isEmpty, "an offline device has no lease to end")
        #expect(lease.status(a, online: false, at: 3) == nil, "already offline: no second event")
        #expect(lease.status(a, online: true, at: 4)?.reason == .status)
    }

    @Test("a device never heard of that heartbeats is online; the interval follows its configuration")
    func unknownAndIntervals() {
        var lease = PresenceLease(intervals: 2, grace: 0, defaultInterval: 300)
        #expect(lease.heard(a, at: 0) == .init(device: a, online: true, reason: .heartbeat))
        lease.setInterval(a, 5)
        #expect(lease.expire(now: 10).isEmpty && lease.expire(now: 10.1).count == 1)
        lease.assumeOnline(b, at: 0)
        #expect(lease.expire(now: 600).isEmpty && lease.expire(now: 601).map(\.device) == [b])
        lease.forget(b)
        #expect(lease.presence[b] == nil && lease.lease(b) == 600)
    }

    @Test("escrowd: a clean disconnect without an offline status ends in device.offline (lease_expired); a heartbeat brings device.online (heartbeat)")
    func endToEnd() async throws {
        // Escrow devices heartbeat every 300 s: 0.005 intervals is 1.5 s, plus 0.2 s + 1 s of grace.
        let p = try await HostileTenantTests.Platform {
            $0.presenceLeaseIntervals = 0.005
            $0.lastSeenFlushInterval = .milliseconds(200)
        }
        let oem = try await p.account("oem", kind: .provisioner)
        let dirs = try await p.provision(["dev-l"], by: oem, account: "oem")
        let device = try p.device(dirs["dev-l"]!, clientID: "dev-l")
        try await device.connect()
        try await device.publish("devices/dev-l/status", WireCodec.encode(DeviceStatus(state: .online, mode: .escrow, session: 1)),
                                 qos: .atLeastOnce, retain: true)
        try await waitUntil("device.online (status)") {
            await oem.events(of: .deviceOnline).contains { $0.details["reason"] == "status" }
        }
        // A clean DISCONNECT: the broker sends no will, and the retained status still says online.
        await device.disconnect()
        try await waitUntil(timeout: .seconds(15), "device.offline (lease_expired) after the lease") {
            await oem.events(of: .deviceOffline).contains { $0.details["reason"] == "lease_expired" }
        }
        let show = try await oem.send("oem", "device.show", ["deviceId": "dev-l"]).result(Commands.DeviceShowResult.self)
        #expect(!show.device.online, "device.show agrees with the event: \(show.device)")
        #expect(await oem.events(of: .deviceOffline).count == 1)

        // Back, heartbeating only (no new status): the heartbeat ends the silence.
        let again = try p.device(dirs["dev-l"]!, clientID: "dev-l")
        try await again.connect()
        try await again.publish("devices/dev-l/heartbeat", WireCodec.encode(Heartbeat(seq: 1, mode: .escrow, uptime: 5, configVersion: 0)),
                                qos: .atMostOnce)
        try await waitUntil(timeout: .seconds(15), "device.online (heartbeat)") {
            await oem.events(of: .deviceOnline).contains { $0.details["reason"] == "heartbeat" }
        }
        let back = try await oem.send("oem", "device.show", ["deviceId": "dev-l"]).result(Commands.DeviceShowResult.self)
        #expect(back.device.online)
        for var e in await oem.events(of: .deviceOnline) + oem.events(of: .deviceOffline) {
            e.details["_topicAccount"] = nil // the probe's note of the topic it came on
            #expect(e.shapeProblem == nil, "\(e.type): \(e.shapeProblem ?? "")")
        }
        await again.disconnect()
        await oem.close()
        await p.close()
    }
}
