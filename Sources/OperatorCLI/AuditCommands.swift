import EscrowCore
import Foundation

/// The audit log: who changed what in an account.
public enum AuditCommands {
    public struct List: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["audit", "list"], group: .watching, summary: "Who changed what in the account, newest first (the broker vouches for who)",
            usage: ["audit list [--limit N] [--before ID]"],
            options: """
                  --limit N      at most N entries (1...1000, default 100)
                  --before ID    entries older than ID (the last ID of the previous page)
                  --json         the reply as JSON
                """,
            examples: ["escrowctl --account acme audit list", "escrowctl --account oem audit list --limit 20 --json"],
            valued: ["limit", "before"], booleans: [])
        public var args: Commands.AuditList
        public init(_ a: Arguments) throws(UsageError) {
            args = .init(limit: try a.int("limit", in: 1...Commands.AuditList.maxLimit), before: try a.int("before", in: 1...Int.max))
        }
        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.auditList, args)
            if c.global.json { return c.console.json(json) }
            let r = try c.decode(json, as: Commands.AuditListResult.self, .auditList)
            c.console.out(Table(["ID", "AT", "OPERATOR", "COMMAND", "REQUEST", "RESULT"], r.entries.map {
                [String($0.id), Format.date($0.at), $0.operator ?? "-", $0.command, $0.requestId ?? "-", $0.ok ? "ok" : ($0.code?.rawValue ?? "refused")]
            }).render())
            c.console.note(plural(r.entries.count, "entry") + (r.more ? "; older ones with --before \(r.entries.last.map { String($0.id) } ?? "")" : ""))
        }
    }
}
