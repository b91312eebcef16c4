import Foundation
import Testing
import EscrowCore

@Suite("Custody chain")
struct CustodyChainTests {
    /// provisioned by oem -> held by reseller -> activated by acme.
    static func chain(start: Date = Fx.t0) -> [CustodyEntry] {
        let a = CustodyEntry.next(after: nil, device: "d1", holder: "oem", at: start, transferId: nil, decision: .provisioned)
        let b = CustodyEntry.next(after: a, device: "d1", holder: "reseller", at: start.addingTimeInterval(3600), transferId: "t-1", decision: .held)
        let c = CustodyEntry.next(after: b, device: "d1", holder: "acme", at: start.addingTimeInterval(7200), transferId: "t-2", decision: .activated,
                                  operator: "op-acme")
        return [a, b, c]
    }

    @Test("a built chain links and verifies")
    func build() {
        let c = Self.chain()
        #expect(c.map(\.seq) == [1, 2, 3])
        #expect(c[0].previousHash == CustodyEntry.genesis)
        #expect(c[0].previousHolder == nil)
        #expect(c[1].previousHash == c[0].hash)
        #expect(c[2].previousHolder == "reseller")
        #expect(c.allSatisfy { $0.hash.count == 64 && $0.hash == $0.computedHash })
        let v = CustodyChain.verify(c)
        #expect(v.valid && v.entries == 3 && v.brokenAt == nil && v.problem == nil)
    }

    @Test("an empty chain is valid with no entries")
    func empty() {
        let v = CustodyChain.verify([])
        #expect(v.valid && v.entries == 0 && v.brokenAt == nil && v.problem == nil)
    }

    @Test("the hash is fixed by its canonical line (stable across releases)")
    func stableHash() {
        let e = CustodyEntry.next(after: nil, device: "d1", holder: "oem", at: Fx.t0, transferId: nil, decision: .provisioned)
        let line = "d1|1|oem||1749974400000||provisioned|" + CustodyEntry.genesis
        #expect(e.hash == SHA256.hex(Array(line.utf8)))
        // An operator is a tenth field after the (here empty) reason; a reason alone stays the ninth.
        let o = CustodyEntry.next(after: nil, device: "d1", holder: "oem", at: Fx.t0, transferId: nil, decision: .provisioned, operator: "op-oem")
        #expect(o.hash == SHA256.hex(Array((line + "||op-oem").utf8)))
        let r = CustodyEntry.next(after: nil, device: "d1", holder: "oem", at: Fx.t0, transferId: nil, decision: .retired, reason: "water")
        #expect(r.hash == SHA256.hex(Array("d1|1|oem||1749974400000||retired|\(CustodyEntry.genesis)|water".utf8)))
        #expect(o.hash != CustodyEntry.next(after: nil, device: "d1", holder: "oem", at: Fx.t0, transferId: nil, decision: .provisioned,
                                            reason: "op-oem").hash, "an operator and a reason of the same text hash apart")
    }

    enum Field: String, CaseIterable, Sendable { case deviceId, seq, holder, previousHolder, at, transferId, decision, operatorName, previousHash, hash }

    @Test("tampering with any field of any entry is detected at that entry", arguments: Field.allCases, [0, 1, 2])
    func tamper(_ field: Field, _ index: Int) {
        var c = Self.chain()
        switch field {
        case .deviceId: c[index].deviceId = "d2"
        case .seq: c[index].seq += 10
        case .holder: c[index].holder = "mallory"
        case .previousHolder: c[index].previousHolder = c[index].previousHolder == nil ? "mallory" : nil
        case .at: c[index].at = c[index].at.addingTimeInterval(1)
        case .transferId: c[index].transferId = "t-forged"
        case .decision: c[index].decision = c[index].decision == .held ? .activated : .held
        case .operatorName: c[index].operator = c[index].operator == nil ? "op-mallory" : nil
        case .previousHash: c[index].previousHash = String(repeating: "f", count: 64)
        case .hash: c[index].hash = String(repeating: "a", count: 64)
        }
        let v = CustodyChain.verify(c)
        #expect(!v.valid)
        #expect(v.entries == 3)
        #expect(v.brokenAt == index + 1, "\(field) at \(index): \(v.problem ?? "")")
        #expect(v.problem != nil)
    }

    @Test("a rewritten entry with a recomputed hash breaks the link of the next one")
    func rehashed() {
        var c = Self.chain()
        c[1].holder = "mallory"
        c[1].hash = c[1].computedHash
        let v = CustodyChain.verify(c)
        #expect(v.brokenAt == 3)
        #expect(v.problem?.contains("link") == true)
    }

    @Test("reordering is detected at the first displaced position")
    func reorder() {
        let c = Self.chain()
        #expect(CustodyChain.verify([c[0], c[2], c[1]]).brokenAt == 2)
        #expect(CustodyChain.verify([c[1], c[0], c[2]]).brokenAt == 1)
    }

    @Test("deleting the first or a middle entry is detected")
    func deletion() {
        let c = Self.chain()
        #expect(CustodyChain.verify([c[1], c[2]]).brokenAt == 1)
        #expect(CustodyChain.verify([c[0], c[2]]).brokenAt == 2)
    }

    @Test("a chain survives the wire: sub-second times do not break verification")
    func survivesWire() throws {
        let c = Self.chain(start: Fx.t0.addingTimeInterval(0.789))
        let data = try WireCodec.encoder.encode(c)
        let back = try WireCodec.decoder.decode([CustodyEntry].self, from: data)
        #expect(CustodyChain.verify(back).valid)
        #expect(back == c)
    }
}

@Suite("Access policy")
struct AccessPolicyTests {
    static let accounts: [Account] = [
        .init(id: "oem", name: "OEM", kind: .provisioner),
        .init(id: "zeta", name: "Zeta", kind: .customer, managedBy: "oem"),
        .init(id: "acme", name: "Acme", kind: .customer, managedBy: "oem"),
        .init(id: "solo", name: "Solo", kind: .customer),
        .init(id: "resale", name: "Resale", kind: .reseller),
        .init(id: "sub", name: "Sub", kind: .customer, managedBy: "resale"),
    ]

    @Test("an operator reaches its own account first, then the accounts it manages, sorted")
    func reach() {
        #expect(AccessPolicy.accounts(reachableBy: "oem", in: Self.accounts) == ["oem", "acme", "zeta"])
        #expect(AccessPolicy.accounts(reachableBy: "solo", in: Self.accounts) == ["solo"])
        #expect(AccessPolicy.accounts(reachableBy: "acme", in: Self.accounts) == ["acme"])
        #expect(AccessPolicy.accounts(reachableBy: "resale", in: Self.accounts) == ["resale", "sub"])
    }

    @Test("no one but its own operators reaches a standalone account")
    func standalone() {
        let solo = Self.accounts[3]
        #expect(solo.isStandalone)
        for a in Self.accounts where a.id != "solo" {
            #expect(!AccessPolicy.mayAct(operatorOf: a.id, in: solo))
            #expect(!AccessPolicy.accounts(reachableBy: a.id, in: Self.accounts).contains("solo"))
        }
        #expect(AccessPolicy.mayAct(operatorOf: "solo", in: solo))
    }

    @Test("management is one level: it is not transitive and not reciprocal")
    func oneLevel() {
        let acme = Self.accounts[2], oem = Self.accounts[0]
        #expect(AccessPolicy.mayAct(operatorOf: "oem", in: acme))
        #expect(!AccessPolicy.mayAct(operatorOf: "acme", in: oem))
        #expect(!AccessPolicy.mayAct(operatorOf: "oem", in: Self.accounts[5]))
        #expect(!AccessPolicy.mayAct(operatorOf: "zeta", in: acme))
    }

    @Test("account kinds are the documented strings")
    func kinds() {
        #expect(Account.Kind.allCases.map(\.rawValue) == ["provisioner", "reseller", "customer"])
    }
}
