import Foundation
import Testing
import EscrowCore

@Suite("Transfer state machine")
struct TransferStateMachineTests {
    static let from: AccountID = "oem"
    static let to: AccountID = "acme"
    static let other: AccountID = "evil"
    static let devices: [DeviceID] = ["d1", "d2", "d3"]
    static let expiresAt = Fx.t0.addingTimeInterval(3600)
    static let now = Fx.t0.addingTimeInterval(60)

    static func transfer(_ ids: [DeviceID] = devices) -> Transfer {
        Transfer(id: "t-1", from: from, to: to, note: "batch 7", createdAt: Fx.t0, expiresAt: expiresAt, devices: ids)
    }

    /// A transfer driven into `status` by legal events.
    static func transfer(in status: Transfer.Status) throws -> Transfer {
        var t = transfer()
        switch status {
        case .pending: break
        case .partiallyApproved: _ = try t.apply(.approve(devices: ["d1"], action: .activate, by: to), now: now)
        case .approved: _ = try t.apply(.approve(devices: nil, action: .hold, by: to), now: now)
        case .rejected: _ = try t.apply(.reject(devices: nil, reason: "wrong batch", by: to), now: now)
        case .cancelled: _ = try t.apply(.cancel(by: from), now: now)
        case .expired: _ = try t.apply(.expire(now: expiresAt), now: expiresAt)
        case .completed:
            _ = try t.apply(.approve(devices: ["d1"], action: .activate, by: to), now: now)
            _ = try t.apply(.reject(devices: nil, reason: "no", by: to), now: now)
        }
        #expect(t.status == status)
        return t
    }

    @Test("a new request is pending, open, in request order")
    func fresh() {
        let t = Self.transfer(["d3", "d1", "d2"])
        #expect(t.status == .pending)
        #expect(t.isOpen)
        #expect(t.pendingDevices == ["d3", "d1", "d2"])
    }

    @Test("approve all with activate: activate each device, notify both sides", arguments: ApprovalAction.allCases)
    func approveAll(_ action: ApprovalAction) throws {
        var t = Self.transfer()
        let tr = try t.apply(.approve(devices: nil, action: action, by: Self.to), now: Self.now)
        let per: [Transfer.Effect] = Self.devices.map {
            action == .activate ? .activate($0, newOwner: Self.to) : .hold($0, newOwner: Self.to)
        }
        #expect(tr.effects == per + [.notify(.transferApproved, accounts: [Self.from, Self.to], devices: Self.devices)])
        #expect(tr.decided == Self.devices)
        #expect(tr.refused.isEmpty)
        #expect(t.status == .approved)
        #expect(!t.isOpen)
        #expect(t.items.values.allSatisfy { $0 == .approved(action) })
    }

    @Test("approve a subset, then reject the rest: partially approved, then completed")
    func approveThenReject() throws {
        var t = Self.transfer()
        let a = try t.apply(.approve(devices: ["d2"], action: .activate, by: Self.to), now: Self.now)
        #expect(a.decided == ["d2"])
        #expect(t.status == .partiallyApproved)
        #expect(t.pendingDevices == ["d1", "d3"])
        let r = try t.apply(.reject(devices: nil, reason: "not ours", by: Self.to), now: Self.now)
        #expect(r.decided == ["d1", "d3"])
        #expect(r.effects == [.release("d1"), .release("d3"), .notify(.transferRejected, accounts: [Self.from, Self.to], devices: ["d1", "d3"])])
        #expect(t.status == .completed)
        #expect(t.items["d1"] == .rejected(reason: "not ours"))
    }

    @Test("reject all: every device released to the sender")
    func rejectAll() throws {
        var t = Self.transfer()
        let r = try t.apply(.reject(devices: nil, reason: "wrong", by: Self.to), now: Self.now)
        #expect(r.effects == Self.devices.map { .release($0) } + [.notify(.transferRejected, accounts: [Self.from, Self.to], devices: Self.devices)])
        #expect(t.status == .rejected)
    }

    @Test("cancel by the sender releases pending devices only")
    func cancel() throws {
        var t = Self.transfer()
        _ = try t.apply(.approve(devices: ["d1"], action: .hold, by: Self.to), now: Self.now)
        let c = try t.apply(.cancel(by: Self.from), now: Self.now)
        #expect(c.decided == ["d2", "d3"])
        #expect(c.effects == [.release("d2"), .release("d3"), .notify(.transferCancelled, accounts: [Self.from, Self.to], devices: ["d2", "d3"])])
        #expect(t.items["d1"] == .approved(.hold))
        #expect(t.status == .completed)
    }

    @Test("cancelling everything gives status cancelled")
    func cancelAll() throws {
        var t = Self.transfer()
        _ = try t.apply(.cancel(by: Self.from), now: Self.now)
        #expect(t.status == .cancelled)
    }

    @Test("only the right account may act; a refused actor changes nothing", arguments: [
        Transfer.Event.approve(devices: nil, action: .activate, by: "oem"),
        .approve(devices: nil, action: .hold, by: "evil"),
        .reject(devices: nil, reason: "x", by: "oem"),
        .reject(devices: ["d1"], reason: "x", by: "evil"),
        .cancel(by: "acme"),
        .cancel(by: "evil"),
    ])
    func forbiddenActors(_ event: Transfer.Event) {
        var t = Self.transfer()
        let before = t
        let e = Fx.domainError { _ = try t.apply(event, now: Self.now) }
        #expect(e?.code == .forbidden)
        #expect(t == before)
    }

    @Test("devices not in the request, already decided, or repeated are refused per device")
    func perDeviceRefusals() throws {
        var t = Self.transfer()
        _ = try t.apply(.reject(devices: ["d1"], reason: "x", by: Self.to), now: Self.now)
        let tr = try t.apply(.approve(devices: ["d1", "d2", "zz", "d2", "d3"], action: .activate, by: Self.to), now: Self.now)
        #expect(tr.decided == ["d2", "d3"])
        #expect(tr.refused == [
            .init(deviceId: "d1", reason: "device d1 is already rejected"),
            .init(deviceId: "zz", reason: "device zz is not part of transfer t-1"),
        ])
        #expect(t.items["zz"] == nil)
        #expect(t.status == .completed)
    }

    @Test("an event naming only undecidable devices changes nothing and notifies nobody")
    func nothingDecided() throws {
        var t = Self.transfer()
        let before = t
        let tr = try t.apply(.reject(devices: ["nope"], reason: "x", by: Self.to), now: Self.now)
        #expect(tr.decided.isEmpty)
        #expect(tr.effects.isEmpty)
        #expect(tr.refused.count == 1)
        #expect(t == before)
    }

    @Test("every event from every status", arguments: Transfer.Status.allCases)
    func everyEventFromEveryStatus(_ status: Transfer.Status) throws {
        let open = status == .pending || status == .partiallyApproved
        let events: [Transfer.Event] = [
            .approve(devices: nil, action: .activate, by: Self.to),
            .reject(devices: nil, reason: "r", by: Self.to),
            .cancel(by: Self.from),
        ]
        for event in events {
            var t = try Self.transfer(in: status)
            let before = t
            let e = Fx.domainError { _ = try t.apply(event, now: Self.now) }
            if open {
                #expect(e == nil, "\(event) from \(status)")
                #expect(!t.isOpen)
            } else {
                #expect(e?.code == .conflict, "\(event) from \(status)")
                #expect(e?.message.contains(status.rawValue) == true)
                #expect(t == before)
            }
        }
        var t = try Self.transfer(in: status)
        let tr = try t.apply(.expire(now: Self.expiresAt), now: Self.expiresAt)
        #expect(tr.decided.isEmpty == !open)
        #expect(!t.isOpen)
    }

    @Test("expire before expiresAt does nothing")
    func expireEarly() throws {
        var t = Self.transfer()
        let tr = try t.apply(.expire(now: Self.expiresAt.addingTimeInterval(-1)), now: Self.now)
        #expect(tr.effects.isEmpty && tr.decided.isEmpty && tr.refused.isEmpty)
        #expect(t.status == .pending)
    }

    @Test("expire at or after expiresAt releases pending devices, notifies both sides, and is idempotent")
    func expire() throws {
        var t = Self.transfer()
        _ = try t.apply(.approve(devices: ["d3"], action: .activate, by: Self.to), now: Self.now)
        let tr = try t.apply(.expire(now: Self.expiresAt), now: Self.expiresAt)
        #expect(tr.decided == ["d1", "d2"])
        #expect(tr.effects == [.release("d1"), .release("d2"), .notify(.transferExpired, accounts: [Self.from, Self.to], devices: ["d1", "d2"])])
        #expect(t.status == .completed)
        let again = try t.apply(.expire(now: Self.expiresAt.addingTimeInterval(10)), now: Self.expiresAt)
        #expect(again.effects.isEmpty && again.decided.isEmpty && again.refused.isEmpty)
        var whole = Self.transfer()
        _ = try whole.apply(.expire(now: Self.expiresAt.addingTimeInterval(86_400)), now: Self.now)
        #expect(whole.status == .expired)
    }

    @Test("a request past its expiry cannot be decided even before the expiry sweep ran", arguments: [
        Transfer.Event.approve(devices: nil, action: .activate, by: "acme"),
        .reject(devices: nil, reason: "x", by: "acme"),
        .cancel(by: "oem"),
    ])
    func lateDecision(_ event: Transfer.Event) {
        for late in [Self.expiresAt, Self.expiresAt.addingTimeInterval(1)] {
            var t = Self.transfer()
            let e = Fx.domainError { _ = try t.apply(event, now: late) }
            #expect(e?.code == .conflict)
            #expect(e?.message.contains("expired") == true)
            #expect(t.status == .pending)
        }
        var t = Self.transfer()
        #expect(Fx.domainError { _ = try t.apply(event, now: Self.expiresAt.addingTimeInterval(-1)) } == nil)
    }

    @Test("status derivation for every mix of outcomes", arguments: [
        ([ItemOutcome.pending, .pending], Transfer.Status.pending),
        ([.pending, .rejected(reason: "r")], .pending),
        ([.pending, .approved(.activate)], .partiallyApproved),
        ([.approved(.activate), .approved(.hold)], .approved),
        ([.approved(.activate), .rejected(reason: "r")], .completed),
        ([.approved(.hold), .cancelled], .completed),
        ([.approved(.hold), .expired], .completed),
        ([.rejected(reason: "a"), .rejected(reason: "b")], .rejected),
        ([.cancelled, .cancelled], .cancelled),
        ([.expired, .expired], .expired),
        ([.rejected(reason: "r"), .cancelled], .completed),
        ([.rejected(reason: "r"), .expired], .completed),
        ([.cancelled, .expired], .completed),
        ([.approved(.activate)], .approved),
    ])
    func statusDerivation(_ outcomes: [ItemOutcome], _ expected: Transfer.Status) {
        var t = Self.transfer(Array(Self.devices.prefix(outcomes.count)))
        for (d, o) in zip(t.order, outcomes) { t.items[d] = o }
        #expect(t.status == expected)
        #expect(t.isOpen == outcomes.contains(.pending))
    }

    @Test("status raw values are the documented strings")
    func statusNames() {
        #expect(Transfer.Status.allCases.map(\.rawValue) == ["pending", "partially_approved", "approved", "rejected", "cancelled", "expired", "completed"])
        #expect(Transfer.defaultLifetime == 7 * 24 * 3600)
        #expect(Commands.TransferRequest.expiryRange == 1...(90 * 24 * 3600))
    }

    @Test("the operator view counts outcomes and lists items in request order")
    func view() throws {
        var t = Self.transfer()
        _ = try t.apply(.approve(devices: ["d1"], action: .activate, by: Self.to), now: Self.now)
        _ = try t.apply(.reject(devices: ["d2"], reason: "damaged", by: Self.to), now: Self.now)
        let v = TransferView(t, includeItems: true)
        #expect(v.status == .partiallyApproved)
        #expect(v.counts == ["approved": 1, "rejected": 1, "pending": 1])
        #expect(v.items == [
            .init(deviceId: "d1", outcome: "approved", action: .activate),
            .init(deviceId: "d2", outcome: "rejected", reason: "damaged"),
            .init(deviceId: "d3", outcome: "pending"),
        ])
        #expect(TransferView(t, includeItems: false).items == nil)
    }
}

@Suite("Transfer policy")
struct TransferPolicyTests {
    static let me: AccountID = "oem"
    static let known: [DeviceID: TransferPolicy.Candidate] = [
        "mine": .init(id: "mine", owner: me, pendingTransfer: nil),
        "mine2": .init(id: "mine2", owner: me, pendingTransfer: nil),
        "foreign": .init(id: "foreign", owner: "rival", pendingTransfer: nil),
        "active": .init(id: "active", owner: me, pendingTransfer: nil),
        "busy": .init(id: "busy", owner: me, pendingTransfer: "t-9"),
    ]

    static func check(_ ids: [DeviceID], to: AccountID = "acme") throws(DomainError) -> (eligible: [DeviceID], refused: [Transfer.Refusal]) {
        try TransferPolicy.eligibility(requester: me, to: to, requested: ids, known: known)
    }

    @Test("own escrow devices are eligible, in request order, once")
    func eligible() throws {
        let r = try Self.check(["mine2", "mine", "mine2"])
        #expect(r.eligible == ["mine2", "mine"])
        #expect(r.refused.isEmpty)
    }

    @Test("unknown and foreign devices are refused with the same reason shape (no leak)")
    func noLeak() throws {
        let r = try Self.check(["ghost", "foreign"])
        #expect(r.eligible.isEmpty)
        #expect(r.refused == [
            .init(deviceId: "ghost", reason: "device ghost is not a device of oem"),
            .init(deviceId: "foreign", reason: "device foreign is not a device of oem"),
        ])
    }

    @Test("activated devices may be offered (resale, return); already pending devices are refused with their reason")
    func activatedAndPending() throws {
        let r = try Self.check(["active", "busy", "mine"])
        #expect(r.eligible == ["active", "mine"])
        #expect(r.refused == [
            .init(deviceId: "busy", reason: "device busy is already in pending transfer t-9"),
        ])
    }

    @Test("self transfer, empty and oversized requests are invalid_argument")
    func wholeRequestRefusals() {
        #expect(Fx.domainError { _ = try Self.check(["mine"], to: Self.me) }?.code == .invalidArgument)
        #expect(Fx.domainError { _ = try Self.check([]) }?.code == .invalidArgument)
        let many = (0...Transfer.maxDevicesPerRequest).map { DeviceID("d\($0)")! }
        let e = Fx.domainError { _ = try Self.check(many) }
        #expect(e?.code == .invalidArgument)
        #expect(e?.message.contains("20000") == true)
    }

    @Test("exactly the maximum is accepted")
    func maximum() throws {
        #expect(Transfer.maxDevicesPerRequest == 20_000)
        let many = (0..<Transfer.maxDevicesPerRequest).map { DeviceID("d\($0)")! }
        let r = try Self.check(many)
        #expect(r.refused.count == many.count)
    }
}
