import Foundation
import EscrowCore
@testable import ControlPlane
import Storage
import TestSupport

/// A ledger (a connection of its own) and a command processor over it: commands run as escrowd
/// runs them (one transaction, their events appended), without a broker.
final class LedgerWriter: @unchecked Sendable {
    let ledger: Ledger
    var processor: CommandProcessor

    /// Ids are `name-1`, `name-2`, ...; the operator is `actor` (default `op-name`).
    init(_ store: StoreLocation, name: String, actor: String? = nil, now: @escaping () -> Date = { Date() }) throws {
        ledger = try Ledger(store: store)
        var ids = 0
        processor = CommandProcessor(ledger: ledger, credentials: nil, now: now, newID: { ids += 1; return "\(name)-\(ids)" })
        processor.actor = actor ?? "op-\(name)"
    }

    func run(_ account: AccountID, _ command: String, _ args: JSONValue) throws -> JSONValue {
        try ledger.db.transaction {
            let outcome = try processor.execute(account: account, command: command, args: args)
            try ledger.appendEvents(outcome.effects.events)
            return outcome.result
        }
    }

    /// The id of the transfer a `transfer.request` result describes.
    static func transferID(_ result: JSONValue) throws -> String {
        guard case .object(let o) = result, case .object(let t)? = o["transfer"], case .string(let id)? = t["id"] else {
            throw TestSupportError("no transfer id in \(result)")
        }
        return id
    }
}
