import Dispatch
import EscrowCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Follows the account's events (`accounts/{account}/events/+`) until --count, --for or Ctrl-C.
public struct TailCommand: OperatorCommand {
    public static let spec = CommandSpec(
        path: ["tail"], group: .watching, summary: "Print the account's events as they happen",
        usage: ["tail [--type T[,T]] [--device D] [--json] [--count N] [--for 30s]"],
        options: """
              --type T[,T]   only these event types: \(EventType.allCases.map(\.rawValue).joined(separator: ", "))
              --device D     only events about device D
              --json         one raw event JSON per line
              --count N      stop after N events
              --for 30s      stop after this long (default: until Ctrl-C)
            """,
        examples: ["escrowctl --account cust tail", "escrowctl tail --type transfer.requested,transfer.approved --for 10m",
                   "escrowctl tail --device sn-000042 --json --count 1"],
        valued: ["type", "device", "count", "for"], booleans: [])

    public var types: Set<EventType>?
    public var device: DeviceID?
    public var count: Int?
    public var duration: Duration?

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
            guard let d = GlobalOptions.parseDuration(f), d > .zero else { throw UsageError.invalid("--for expects a duration like 30s or 10m, got '\(f)'") }
            duration = d
        }
    }

    public func run(_ c: CommandContext) async throws {
        let session = try await c.connect()
        let events = try await session.events(types)
        c.console.note("escrowctl: following events of account \(c.account) (Ctrl-C to stop)")
        let timer = duration.map { d in Task { try? await Task.sleep(for: d); await session.close() } }
        signal(SIGINT, SIG_IGN)
        let interrupt = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        interrupt.setEventHandler { Task { await session.close() } }
        interrupt.resume()
        defer { interrupt.cancel(); signal(SIGINT, SIG_DFL); timer?.cancel() }
        var printed = 0
        for await received in events {
            if let device, !Self.concerns(received.event, device) { continue }
            if c.global.json {
                c.console.out(String(decoding: received.payload, as: UTF8.self))
            } else if let e = received.event {
                c.console.out(Self.line(e))
            } else {
                c.console.err("escrowctl: note: unreadable event on \(received.topic): \(received.problem ?? "?")")
                continue
            }
            printed += 1
            if let count, printed >= count { break }
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
