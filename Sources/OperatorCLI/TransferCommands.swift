import EscrowCore
import Foundation

/// Transfers: moving devices to another account, which approves (hold or activate) or rejects them.
public enum TransferCommands {
    public struct Request: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["transfer", "request"], group: .transfers, summary: "Offer devices to another account (escrow ones; active ones to resell or return them)",
            usage: ["transfer request --to ACCT (--ids a,b | --csv FILE | --prefix P [--count N]) [--note TEXT] [--expires 7d]"],
            options: """
                  --to ACCT      the receiving account
                  --ids a,b      explicit device ids; or --csv FILE (first column). Active devices too: a
                                 resale, or a return (RMA) that the OEM approves with hold; the device
                                 gets a new identity from the receiver and the old one is revoked
                  --prefix P     the account's escrow devices whose id starts with P, not already in a transfer
                                 (the first N by id with --count N)
                  --note TEXT    shown to the receiver (at most 500 characters)
                  --expires 7d   how long the receiver has to decide (1s ... 90d; default 7d)
                """,
            examples: ["escrowctl transfer request --to resell --prefix sn- --count 500 --note \"PO 4711\"",
                       "escrowctl transfer request --to cust --ids sn-000001,sn-000002 --expires 2d",
                       "escrowctl transfer request --to oem --ids sn-000042 --note \"RMA 4711\"   # as the customer: send it back"],
            valued: ["to", "ids", "csv", "prefix", "count", "note", "expires"], booleans: [])

        public enum Devices: Sendable, Equatable {
            case listed(DeviceSelection)
            case prefix(String, count: Int?)
        }
        public var to: AccountID
        public var devices: Devices
        public var note: String?
        public var expiresIn: Int?

        public init(_ a: Arguments) throws(UsageError) {
            guard let t = a.value("to") else { throw UsageError("--to ACCT is required (the receiving account)") }
            to = try Parse.account(t, what: "--to")
            if let p = a.value("prefix") {
                guard a.value("ids") == nil, a.value("csv") == nil else { throw UsageError("use only one of --ids, --csv, --prefix") }
                guard !p.isEmpty else { throw UsageError("--prefix needs a value") }
                devices = .prefix(p, count: try a.int("count", in: 1...1_000_000))
            } else {
                if a.value("count") != nil { throw UsageError("--count goes with --prefix") }
                devices = .listed(try DeviceSelection.parse(a, allowRange: false))
            }
            note = a.value("note")
            if let n = note, n.count > 500 { throw UsageError("--note is at most 500 characters") }
            expiresIn = try a.seconds("expires")
            if let e = expiresIn, !Commands.TransferRequest.expiryRange.contains(e) {
                throw .invalid("--expires must be within \(Commands.TransferRequest.expiryRange.lowerBound)s and 90d, got \(e)s")
            }
        }

        public func run(_ c: CommandContext) async throws {
            let ids: [DeviceID]
            switch devices {
            case .listed(let s): ids = try s.resolveIDs() ?? []
            case .prefix(let p, let count): ids = try await Self.escrowDevices(prefix: p, count: count, c)
            }
            let args = Commands.TransferRequest(to: to, deviceIds: ids, note: note, expiresIn: expiresIn)
            let size = WireCodec.encode(CommandEnvelope(requestId: "x", args: try JSONValue(encoding: args))).count
            if size > WireCodec.maxPayloadBytes - 1024 {
                throw CLIError(.dataError, "too_large", "\(ids.count) devices do not fit in one request (\(size) bytes)", hint: "Split them with --count or several CSV files.")
            }
            let json = try await c.call(.transferRequest, args)
            if c.global.json { return c.console.json(json) }
            let r = try c.decode(json, as: Commands.TransferResult.self, .transferRequest)
            c.console.out("transfer \(r.transfer.id) requested: \(plural(r.decided.count, "device")) \(r.transfer.from) -> \(r.transfer.to), expires \(Format.date(r.transfer.expiresAt))")
            RefusalList.print(r.refused, c)
        }

        /// The account's escrow devices with `prefix` that are in no pending transfer, first `count` by id.
        static func escrowDevices(prefix: String, count: Int?, _ c: CommandContext) async throws -> [DeviceID] {
            var picked: [DeviceID] = []
            var offset = 0
            let page = 1000
            while count.map({ picked.count < $0 }) ?? true {
                let r = try c.decode(try await c.call(.deviceList, Commands.DeviceList(state: .escrow, prefix: prefix, limit: page, offset: offset)),
                                     as: Commands.DeviceListResult.self, .deviceList)
                for d in r.devices where d.pendingTransfer == nil && d.id.rawValue.hasPrefix(prefix) && d.state == .escrow {
                    if let count, picked.count >= count { break }
                    picked.append(d.id)
                }
                offset += r.devices.count
                if r.devices.count < page || offset >= r.total { break }
            }
            guard !picked.isEmpty else {
                throw CLIError(.notFound, "not_found", "account \(c.account) has no escrow device with prefix '\(prefix)' outside a pending transfer",
                               hint: "See 'escrowctl device list --state escrow --prefix \(prefix)'.")
            }
            if let count, picked.count < count { c.console.note("escrowctl: note: only \(picked.count) of \(count) requested devices are available") }
            return picked
        }
    }

    public struct Inbox: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["transfer", "inbox"], group: .transfers, summary: "List transfers to and from the account",
            usage: ["transfer inbox [--incoming | --outgoing] [--status S] [--limit N] [--offset K]"],
            options: """
                  --incoming    only transfers offered to this account
                  --outgoing    only transfers this account offered
                  --status S    \(Transfer.Status.allCases.map(\.rawValue).joined(separator: ", "))
                  --limit N     at most N transfers, newest first (1...1000; default 100)
                  --offset K    skip the K newest (default 0): the next page is --offset K+N
                """,
            examples: ["escrowctl --account resell transfer inbox --incoming --status pending", "escrowctl transfer inbox --json",
                       "escrowctl transfer inbox --limit 50 --offset 50"],
            valued: ["status", "limit", "offset"], booleans: ["incoming", "outgoing"])

        public var args: Commands.TransferList

        public init(_ a: Arguments) throws(UsageError) {
            if a.flag("incoming") && a.flag("outgoing") { throw UsageError("use --incoming or --outgoing, not both (neither lists both)") }
            let direction: Commands.TransferList.Direction = a.flag("incoming") ? .incoming : a.flag("outgoing") ? .outgoing : .all
            var status: Transfer.Status?
            if let s = a.value("status") {
                guard let v = Transfer.Status(rawValue: s) else {
                    throw UsageError.invalid("--status must be one of \(Transfer.Status.allCases.map(\.rawValue).joined(separator: ", ")), got '\(s)'")
                }
                status = v
            }
            args = .init(direction: direction, status: status, limit: try a.int("limit", in: 1...1_000), offset: try a.int("offset", in: 0...Int.max))
        }

        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.transferList, args)
            if c.global.json { return c.console.json(json) }
            let r = try c.decode(json, as: Commands.TransferListResult.self, .transferList)
            if r.transfers.isEmpty { return c.console.note(r.total == 0 ? "no transfers" : "no transfers on this page (\(r.total) in all)") }
            c.console.out(Self.table(r.transfers, account: c.account).render())
            let offset = args.offset ?? 0
            if offset + r.transfers.count < r.total {
                c.console.note("\(r.transfers.count) of \(r.total) transfers; next page: --offset \(offset + r.transfers.count)")
            }
        }

        public static func table(_ ts: [TransferView], account: AccountID) -> Table {
            Table(["ID", "DIR", "FROM", "TO", "STATUS", "DEVICES", "EXPIRES", "NOTE"], ts.map {
                [$0.id, $0.to == account ? "in" : "out", $0.from.rawValue, $0.to.rawValue, $0.status.rawValue,
                 Format.counts($0.counts), Format.date($0.expiresAt), $0.note ?? ""]
            })
        }
    }

    public struct Show: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["transfer", "show"], group: .transfers, summary: "Show a transfer and each device's outcome",
            usage: ["transfer show TID"], options: "",
            examples: ["escrowctl transfer show tr-3f9c1a", "escrowctl transfer show tr-3f9c1a --json"],
            valued: [], booleans: [], positionals: ["TID"])

        public var transferId: String
        public init(_ a: Arguments) throws(UsageError) { transferId = try TransferCommands.transferID(a) }

        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.transferShow, Commands.TransferRef(transferId: transferId))
            if c.global.json { return c.console.json(json) }
            c.console.out(Self.render(try c.decode(json, as: TransferView.self, .transferShow)))
        }

        public static func render(_ t: TransferView) -> String {
            var s = "transfer \(t.id): \(t.from) -> \(t.to), \(t.status.rawValue)\n"
            s += "created \(Format.date(t.createdAt)), expires \(Format.date(t.expiresAt))" + (t.note.map { ", note: \($0)" } ?? "") + "\n"
            s += "devices: \(Format.counts(t.counts))\n\n"
            s += Table(["DEVICE", "OUTCOME", "DETAIL"], (t.items ?? []).map {
                [$0.deviceId.rawValue, $0.outcome, $0.action?.rawValue ?? $0.reason ?? ""]
            }).render()
            return s
        }
    }

    public struct Approve: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["transfer", "approve"], group: .transfers, summary: "Accept offered devices: hold them in escrow or activate them",
            usage: ["transfer approve TID [--ids a,b] (--activate | --hold) [--profile P]"],
            options: """
                  --ids a,b     only these devices (default: every pending device)
                  --hold        become the new escrow owner (a reseller), free to transfer onward
                  --activate    take the devices into service and push their first configuration
                  --profile P   configuration profile for --activate (default: the account's default)
                """,
            examples: ["escrowctl --account resell transfer approve tr-3f9c1a --hold",
                       "escrowctl --account cust transfer approve tr-77ab02 --activate --profile office"],
            valued: ["ids", "profile"], booleans: ["activate", "hold"], positionals: ["TID"])

        public var args: Commands.TransferApprove

        public init(_ a: Arguments) throws(UsageError) {
            let tid = try TransferCommands.transferID(a)
            guard a.flag("activate") != a.flag("hold") else { throw UsageError("choose exactly one of --activate or --hold") }
            let action: ApprovalAction = a.flag("activate") ? .activate : .hold
            if a.value("profile") != nil, action == .hold { throw UsageError("--profile goes with --activate") }
            let ids = a.value("ids") == nil ? nil : try Parse.devices(a.list("ids"))
            args = .init(transferId: tid, deviceIds: ids, action: action, profile: a.value("profile"))
        }

        public func run(_ c: CommandContext) async throws {
            try await TransferCommands.decide(.transferApprove, args, verb: "approved (\(args.action.rawValue))", c)
        }
    }

    public struct Reject: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["transfer", "reject"], group: .transfers, summary: "Refuse offered devices (they stay with the sender)",
            usage: ["transfer reject TID [--ids a,b] --reason TEXT"],
            options: """
                  --ids a,b       only these devices (default: every pending device)
                  --reason TEXT   why (1 to 500 characters; the sender sees it)
                """,
            examples: ["escrowctl --account resell transfer reject tr-3f9c1a --reason \"wrong model\"",
                       "escrowctl transfer reject tr-3f9c1a --ids sn-000007 --reason \"damaged\""],
            valued: ["ids", "reason"], booleans: [], positionals: ["TID"])

        public var args: Commands.TransferReject

        public init(_ a: Arguments) throws(UsageError) {
            let tid = try TransferCommands.transferID(a)
            guard let reason = a.value("reason"), !reason.isEmpty else { throw UsageError("--reason is required") }
            guard reason.count <= 500 else { throw UsageError("--reason is at most 500 characters") }
            let ids = a.value("ids") == nil ? nil : try Parse.devices(a.list("ids"))
            args = .init(transferId: tid, deviceIds: ids, reason: reason)
        }

        public func run(_ c: CommandContext) async throws {
            try await TransferCommands.decide(.transferReject, args, verb: "rejected", c)
        }
    }

    public struct Cancel: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["transfer", "cancel"], group: .transfers, summary: "Withdraw a transfer this account offered",
            usage: ["transfer cancel TID"], options: "",
            examples: ["escrowctl transfer cancel tr-3f9c1a"],
            valued: [], booleans: [], positionals: ["TID"])

        public var args: Commands.TransferRef
        public init(_ a: Arguments) throws(UsageError) { args = .init(transferId: try TransferCommands.transferID(a)) }

        public func run(_ c: CommandContext) async throws {
            try await TransferCommands.decide(.transferCancel, args, verb: "cancelled", c)
        }
    }

    static func transferID(_ a: Arguments) throws(UsageError) -> String {
        let t = a.positionals[0]
        guard Identifier.isValid(t) else { throw UsageError("transfer id '\(t.prefix(80))' must match [A-Za-z0-9._-]{1,64} (like tr-3f9c1a)") }
        return t
    }

    static func decide<Args: Encodable & Sendable>(_ name: CommandName, _ args: Args, verb: String, _ c: CommandContext) async throws {
        let json = try await c.call(name, args)
        if c.global.json { return c.console.json(json) }
        let r = try c.decode(json, as: Commands.TransferResult.self, name)
        c.console.out("\(plural(r.decided.count, "device")) \(verb) in transfer \(r.transfer.id) (\(r.transfer.from) -> \(r.transfer.to)); status now \(r.transfer.status.rawValue) (\(Format.counts(r.transfer.counts)))")
        RefusalList.print(r.refused, c)
        // A decision that decided nothing changed nothing: say so, and let scripts see it.
        if r.decided.isEmpty, let first = r.refused.first {
            throw CLIError(.conflict, "conflict", "nothing changed: no named device could be \(verb.split(separator: " ").first ?? "decided") (\(first.reason))")
        }
    }
}
