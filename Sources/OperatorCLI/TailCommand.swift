import Dispatch
import EscrowCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Follows the account's events (`accounts/{account}/events/+`) until --count, --for or Ctrl-C,
/// first catching up from the event log (`events.since`) where it left off or from --since.
public struct TailCommand: OperatorCommand {
    public static let spec = CommandSpec(
        path: ["tail"], group: .watching, summary: "Print the account's events: the missed ones, then as they happen",
        usage: ["tail [--since SEQ|TIME|10m|all|now] [--type T[,T]] [--device D] [--json] [--count N] [--for 30s]"],
        options: """
              --since S      start after event number S, at a time (2026-12-03T08:00:00Z), this long
                             ago (10m, 2h, 7d), from the oldest stored event (all) or with new events
                             only (now). Default: after the last event the previous tail of this
                             account saw (kept in $ESCROW_STATE_DIR, else ~/.local/state/escrowctl),
                             else now. Events past escrowd's retention (30 days) are reported missing
              --type T[,T]   only these event types: \(EventType.allCases.map(\.rawValue).joined(separator: ", "))
              --device D     only events about device D
              --json         one raw event JSON per line (with its seq and id)
              --count N      stop after N events
              --for 30s      stop after this long (default: until Ctrl-C)
            """,
        examples: ["escrowctl --account cust tail", "escrowctl tail --since 1h --type transfer.requested,transfer.approved --for 10m",
                   "escrowctl tail --since 0 --json > all-events.jsonl", "escrowctl tail --device sn-000042 --json --count 1"],
        valued: ["type", "device", "count", "for", "since"], booleans: [])

    /// Where the catch-up starts.
    public enum Start: Equatable, Sendable {
        /// After the last event the previous tail saw; new events only when there is none.
        case resume
        case after(Int)
        case at(Date)
        case now
    }

    public var types: Set<EventType>?
    public var device: DeviceID?
    public var count: Int?
    public var duration: Duration?
    public var start: Start = .resume

    public init(_ a: Arguments) throws(UsageError) {
        if a.value("type") != nil {
            var set = Set<EventType>()
            for t in a.list("type") {
                guard let e = EventType(rawValue: t) else {
                    throw UsageError.invalid("--type '\(t.prefix(80))' is not an event type; known: \(EventType.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                set.insert(e)
            }
            guard !set.isEmpty else { throw UsageError("--type needs at least one event type") }
            types = set
        }
        device = try a.value("device").map { v throws(UsageError) in try Parse.devices([v], what: "--device")[0] }
        count = try a.int("count", in: 1...Int.max)
        if let f = a.value("for") {
            guard let d = Arguments.parseDuration(f), d > .zero else { throw UsageError.invalid("--for expects a duration like 30s or 10m, got '\(f)'") }
            duration = d
        }
        if let v = a.value("since") { start = try Self.parseStart(v, now: Date()) }
    }

    /// `--since`: `all`, `now`, an event number, an RFC 3339 time, or a duration ago.
    static func parseStart(_ v: String, now: Date) throws(UsageError) -> Start {
        switch v {
        case "all": return .after(0)
        case "now": return .now
        default: break
        }
        if let n = Int(v) {
            guard n >= 0 else { throw UsageError.invalid("--since \(v): an event number is 0 or more") }
            return .after(n)
        }
        if let d = try? Date(v, strategy: .iso8601) { return .at(d) }
        if let d = Arguments.parseDuration(v) { return .at(now.addingTimeInterval(-d.seconds)) }
        throw UsageError.invalid("--since expects an event number (42), a time (2026-12-03T08:00:00Z), a duration ago (10m), all or now; got '\(v.prefix(80))'")
    }

    public func run(_ c: CommandContext) async throws {
        let session = try await c.connect()
        // Subscribe first: nothing that happens while the log is read can slip between the two.
        let events = try await session.events(types)
        let position = TailPosition(broker: c.global.broker, account: c.account)
        var last: Int?
        var printed = 0
        func show(_ e: Event, raw: [UInt8]? = nil) -> Bool {
            if let seq = e.seq { last = max(last ?? 0, seq) }
            if let types, !types.contains(e.type) { return false }
            if let device, !Self.concerns(e, device) { return false }
            c.console.out(c.global.json ? String(decoding: raw ?? WireCodec.encode(e), as: UTF8.self) : Self.line(e))
            printed += 1
            return count.map { printed >= $0 } ?? false
        }
        /// Prints the stored events after `after` (or from `at`) up to `through`; true when --count is reached.
        func catchUp(after: Int?, at: Date?, through: Int? = nil) async throws -> Bool {
            var args = Commands.EventsSince(after: after, since: at, limit: 1_000)
            while true {
                let r = try c.decode(try await c.call(.eventsSince, args), as: Commands.EventsSinceResult.self, .eventsSince)
                if let n = r.pruned, n > 0 {
                    c.console.err("escrowctl: warning: \(plural(n, "event")) after #\(args.after ?? 0) of account \(c.account) are past escrowd's event retention and cannot be shown; the oldest stored is #\(r.oldestSeq.map(String.init) ?? "none")")
                }
                for e in r.events {
                    if let through, let seq = e.seq, seq > through { return false }
                    if show(e) { return true }
                }
                guard r.more, let next = r.events.last?.seq else {
                    // Read to the end of the log as it stood: everything up to latestSeq is seen.
                    if through == nil { last = max(last ?? 0, r.latestSeq) }
                    return false
                }
                args = Commands.EventsSince(after: next, limit: 1_000)
            }
        }

        var startAfter: Int?, startAt: Date?
        switch start {
        case .after(let n): startAfter = n
        case .at(let d): startAt = d
        case .now: break
        case .resume: startAfter = position.load()
        }
        do {
            if startAfter != nil || startAt != nil {
                if try await catchUp(after: startAfter, at: startAt) { position.save(last); return }
            } else {
                // New events only: learn where the log stands, so a gap in what follows can be filled.
                last = try c.decode(try await c.call(.eventsSince, Commands.EventsSince(after: 0, limit: 1)), as: Commands.EventsSinceResult.self, .eventsSince).latestSeq
            }
        } catch OperatorError.command(let w) where w.code == .invalidArgument && start == .resume {
            c.console.err("escrowctl: warning: the saved position #\(startAfter ?? 0) in \(position.path) is ahead of account \(c.account)'s event log (\(w.message)); following new events only")
            last = try c.decode(try await c.call(.eventsSince, Commands.EventsSince(after: 0, limit: 1)), as: Commands.EventsSinceResult.self, .eventsSince).latestSeq
        }
        position.save(last)
        c.console.note("escrowctl: following events of account \(c.account) after #\(last ?? 0) (Ctrl-C to stop)")

        let timer = duration.map { d in Task { try? await Task.sleep(for: d); await session.close() } }
        signal(SIGINT, SIG_IGN)
        let interrupt = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        interrupt.setEventHandler { Task { await session.close() } }
        interrupt.resume()
        defer { interrupt.cancel(); signal(SIGINT, SIG_DFL); timer?.cancel(); position.save(last) }
        var saved = ContinuousClock.now
        for await received in events {
            guard let e = received.event else {
                c.console.err("escrowctl: note: unreadable event on \(received.topic): \(received.problem ?? "?")")
                continue
            }
            if let seq = e.seq, let seen = last {
                if seq <= seen { continue } // a redelivery, or already read from the log
                // Without --type every event of the account arrives here: a jump means the broker lost
                // some (it was restarted); read them from the log.
                if types == nil, seq > seen + 1, try await catchUp(after: seen, at: nil, through: seq - 1) { return }
            }
            if show(e, raw: received.payload) { return }
            if ContinuousClock.now - saved > .seconds(1) { position.save(last); saved = .now }
        }
        if let count, printed >= count { return }
        if let reason = await session.disconnectReason, reason != "closed" { throw OperatorError.connectionLost(reason) }
    }

    /// Whether an event is about `device` (its subject, or listed in its details).
    static func concerns(_ e: Event?, _ device: DeviceID) -> Bool {
        guard let e else { return false }
        if e.deviceId == device { return true }
        if let list = e.details["devices"]?.arrayValue { return list.contains(.string(device.rawValue)) }
        return false
    }

    /// `2026-11-29T10:09:00Z transfer.approved   tr-abc  oem -> reseller  120 devices (hold)`: the event's own
    /// time (RFC 3339, UTC, to the second as on the wire), its type, then the device and transfer it concerns.
    public static func line(_ e: Event) -> String {
        let d = e.details
        var parts: [String] = [e.deviceId?.rawValue, e.transferId].compactMap { $0 }
        if parts.isEmpty { parts = [e.account.rawValue] }
        if let f = d["from"]?.stringValue, let t = d["to"]?.stringValue { parts.append("\(f) -> \(t)") }
        var what: [String] = []
        if let n = d["devices"]?.intValue ?? d["count"]?.intValue { what.append(plural(n, "device")) }
        if let a = d["action"]?.stringValue { what.append("(\(a))") }
        if let s = d["status"]?.stringValue { what.append("status \(s)") }
        if let v = d["version"]?.intValue ?? d["configVersion"]?.intValue { what.append("config v\(v)") }
        if let m = d["mode"]?.stringValue { what.append("mode \(m)") }
        if let k = d["kind"]?.stringValue { what.append(k) }
        if let cmd = d["command"]?.stringValue { what.append(cmd) }
        if let code = d["code"]?.stringValue { what.append("\(code):") }
        if let msg = d["message"]?.stringValue ?? d["reason"]?.stringValue, !msg.isEmpty { what.append(msg) }
        if let n = d["note"]?.stringValue { what.append("note: \(n)") }
        if !what.isEmpty { parts.append(what.joined(separator: " ")) }
        return Format.date(e.at) + " " + e.type.rawValue.padding(toLength: max(18, e.type.rawValue.count), withPad: " ", startingAt: 0)
            + "  " + parts.joined(separator: "  ")
    }
}

/// The last event number `escrowctl tail` saw, per broker and account, so the next tail resumes there.
struct TailPosition {
    let path: String

    init(broker: String, account: AccountID, environment: [String: String] = ProcessInfo.processInfo.environment) {
        let dir: String
        if let d = environment["ESCROW_STATE_DIR"], !d.isEmpty { dir = d }
        else if let x = environment["XDG_STATE_HOME"], !x.isEmpty { dir = x + "/escrowctl" }
        else { dir = (environment["HOME"] ?? NSTemporaryDirectory()) + "/.local/state/escrowctl" }
        let key = broker.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" }
        path = "\(dir)/tail-\(String(key))-\(account).seq"
    }

    func load() -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Best effort: a position that cannot be saved only means the next tail starts elsewhere.
    func save(_ seq: Int?) {
        guard let seq else { return }
        let dir = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try? Data("\(seq)\n".utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
