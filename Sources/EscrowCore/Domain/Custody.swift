import Foundation

/// One change of holder in a device's chain of custody, or its end (`retired`: the holder
/// decommissioned it and stays its holder for good).
/// Each entry carries the hash of the previous one, so a rewritten history is detectable.
public struct CustodyEntry: Codable, Equatable, Sendable {
    public enum Decision: String, Codable, Sendable { case provisioned, held, activated, retired, rebundled }
    public var deviceId: DeviceID
    public var seq: Int
    public var holder: AccountID
    public var previousHolder: AccountID?
    public var at: Date
    public var transferId: String?
    public var decision: Decision
    /// Why, for a `retired` entry when the operator gave a reason (hashed too).
    public var reason: String?
    /// The operator whose command made this step, as the broker vouched for it (the
    /// `escrow-operator` stamp; hashed too); nil for steps no operator made (expiry) or made
    /// behind a broker that does not stamp commands.
    public var `operator`: String?
    public var previousHash: String
    public var hash: String

    public init(deviceId: DeviceID, seq: Int, holder: AccountID, previousHolder: AccountID?, at: Date, transferId: String?,
                decision: Decision, reason: String? = nil, operator: String? = nil, previousHash: String, hash: String) {
        self.deviceId = deviceId; self.seq = seq; self.holder = holder; self.previousHolder = previousHolder; self.at = at
        self.transferId = transferId; self.decision = decision; self.reason = reason; self.operator = `operator`
        self.previousHash = previousHash; self.hash = hash
    }

    /// The hash that precedes the first entry.
    public static let genesis = String(repeating: "0", count: 64)

    /// Builds the next entry after `previous` (nil for the first).
    public static func next(after previous: CustodyEntry?, device: DeviceID, holder: AccountID,
                            at: Date, transferId: String?, decision: Decision, reason: String? = nil, operator: String? = nil) -> CustodyEntry {
        // Whole seconds: the wire's ISO-8601 dates carry no fraction, and a hash over a
        // fraction would no longer verify after an entry has crossed the wire.
        let at = Date(timeIntervalSince1970: at.timeIntervalSince1970.rounded(.down))
        var e = CustodyEntry(deviceId: device, seq: (previous?.seq ?? 0) + 1, holder: holder,
                             previousHolder: previous?.holder, at: at, transferId: transferId,
                             decision: decision, reason: reason, operator: `operator`, previousHash: previous?.hash ?? genesis, hash: "")
        e.hash = e.computedHash
        return e
    }

    /// SHA-256 over a canonical line of every field but `hash`. Dates at millisecond precision.
    /// A `reason` is appended as a ninth field only when present, so entries without one (every
    /// entry before `device.retire` existed) hash as they always did; an `operator` as a tenth
    /// (with the ninth, empty without a reason), so entries without one hash as before too.
    public var computedHash: String {
        let ms = Int64((at.timeIntervalSince1970 * 1000).rounded())
        var fields = [deviceId.rawValue, String(seq), holder.rawValue, previousHolder?.rawValue ?? "",
                      String(ms), transferId ?? "", decision.rawValue, previousHash]
        if let reason { fields.append(reason) }
        if let op = `operator` {
            if reason == nil { fields.append("") }
            fields.append(op)
        }
        let line = fields.joined(separator: "|")
        return SHA256.hex(Array(line.utf8))
    }
}

public enum CustodyChain {
    public struct Verification: Codable, Equatable, Sendable {
        public var valid: Bool
        public var entries: Int
        /// The first entry that does not verify, and why.
        public var brokenAt: Int?
        public var problem: String?
        public init(valid: Bool, entries: Int, brokenAt: Int?, problem: String?) {
            self.valid = valid; self.entries = entries; self.brokenAt = brokenAt; self.problem = problem
        }
    }

    public static func verify(_ chain: [CustodyEntry]) -> Verification {
        var previous: CustodyEntry?
        for (i, e) in chain.enumerated() {
            let expectedPrev = previous?.hash ?? CustodyEntry.genesis
            // brokenAt is the position in the chain (1-based), not the entry's own (possibly forged) seq.
            if e.seq != i + 1 { return .init(valid: false, entries: chain.count, brokenAt: i + 1, problem: "entry \(i + 1) has sequence number \(e.seq)") }
            if e.previousHash != expectedPrev { return .init(valid: false, entries: chain.count, brokenAt: e.seq, problem: "entry \(e.seq) does not link to entry \(e.seq - 1)") }
            if e.previousHolder != previous?.holder { return .init(valid: false, entries: chain.count, brokenAt: e.seq, problem: "entry \(e.seq) names a previous holder that did not hold the device") }
            if e.hash != e.computedHash { return .init(valid: false, entries: chain.count, brokenAt: e.seq, problem: "entry \(e.seq) was altered (hash mismatch)") }
            previous = e
        }
        return .init(valid: true, entries: chain.count, brokenAt: nil, problem: nil)
    }
}
