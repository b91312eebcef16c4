import EscrowCore
import Foundation

/// Which devices a command names: explicit ids, a CSV file, or a numbered range.
public enum DeviceSelection: Sendable, Equatable {
    case ids([DeviceID])
    case csv(String)
    /// `prefix` + six-digit number, from `start`, `count` devices (escrowd's numbering: `sn-000001`).
    case range(prefix: String, count: Int, start: Int)

    /// Parses `--ids`, `--csv`, or (when `allowRange`) `--prefix` with `--count` and `--start`; exactly one.
    static func parse(_ a: Arguments, allowRange: Bool) throws(UsageError) -> DeviceSelection {
        let given = ["ids", "csv", "prefix"].filter { a.value($0) != nil }
        let forms = allowRange ? "--ids a,b, --csv FILE or --prefix P --count N" : "--ids a,b or --csv FILE"
        guard given.count == 1 else {
            throw UsageError(given.isEmpty ? "name the devices with \(forms)" : "use only one of \(given.map { "--\($0)" }.joined(separator: ", "))")
        }
        switch given[0] {
        case "ids":
            let ids = try Parse.devices(a.list("ids"))
            guard !ids.isEmpty else { throw UsageError("--ids needs at least one device id") }
            return .ids(ids)
        case "csv":
            return .csv(a.value("csv")!)
        default:
            guard allowRange else { throw UsageError("--prefix is not accepted here; use \(forms)") }
            let prefix = a.value("prefix")!
            guard let count = try a.int("count", in: 1...10_000_000) else { throw UsageError("--prefix needs --count N") }
            let start = try a.int("start", in: 0...99_999_999) ?? 1
            guard DeviceSelection.rangeID(prefix, start + count - 1) != nil, DeviceSelection.rangeID(prefix, start) != nil else {
                throw UsageError.invalid("--prefix '\(prefix.prefix(80))' does not make valid device ids ([A-Za-z0-9._-]{1,64})")
            }
            return .range(prefix: prefix, count: count, start: start)
        }
    }

    /// escrowd's id for number `n` of a range.
    public static func rangeID(_ prefix: String, _ n: Int) -> DeviceID? {
        let s = String(n)
        return DeviceID(prefix + String(repeating: "0", count: max(0, 6 - s.count)) + s)
    }

    /// Reads device ids from CSV text: the first column of each row; blank lines, `#` comments and a
    /// header row (`id`, `device`, `device_id`, `deviceId`) are skipped; duplicates keep the first.
    public static func readCSV(_ text: String, file: String = "CSV") throws(UsageError) -> [DeviceID] {
        var out: [DeviceID] = []
        var seen = Set<DeviceID>()
        for (n, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            var field = String(line.split(separator: ",", maxSplits: 1, omittingEmptySubsequences: false)[0]).trimmingCharacters(in: .whitespaces)
            if field.count >= 2, field.hasPrefix("\""), field.hasSuffix("\"") { field = String(field.dropFirst().dropLast()) }
            if out.isEmpty, ["id", "device", "device_id", "deviceid", "device-id"].contains(field.lowercased()) { continue }
            guard let d = DeviceID(field) else {
                throw UsageError("\(file) line \(n + 1): '\(field.prefix(80))' is not a device id ([A-Za-z0-9._-]{1,64})")
            }
            if seen.insert(d).inserted { out.append(d) }
        }
        guard !out.isEmpty else { throw UsageError("\(file) names no devices") }
        return out
    }

    /// The explicit ids (reading the CSV file); nil for a range.
    func resolveIDs() throws -> [DeviceID]? {
        switch self {
        case .ids(let ids): return ids
        case .range: return nil
        case .csv(let path):
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw CLIError(.dataError, "invalid_argument", "cannot read CSV file \(path)", hint: "Check the path given to --csv.")
            }
            do { return try Self.readCSV(text, file: path) } catch { throw CLIError(.dataError, "invalid_argument", error.message) }
        }
    }
}

/// Writes what a factory puts on a device: `DIR/{id}/device.crt`, `device.key` (0600), `broker-ca.pem`, `agent.conf`.
public enum DeviceBundleWriter {
    /// Creates the `--out` directory bundles are written into (a clear storage error otherwise).
    public static func createDirectory(_ out: String) throws {
        do { try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true) } catch {
            throw CLIError(.storageUnavailable, "io", "cannot create --out directory \(out): \(error.localizedDescription)")
        }
    }

    /// Returns the device's directory.
    @discardableResult
    public static func write(_ b: Commands.DeviceBundle, into dir: String) throws -> String {
        let fm = FileManager.default
        let deviceDir = DeviceBundleLayout.directory(root: dir, device: b.deviceId)
        try fm.createDirectory(atPath: deviceDir, withIntermediateDirectories: true)
        func put(_ name: String, _ text: String, _ mode: Int) throws {
            let path = deviceDir + "/" + name
            try? fm.removeItem(atPath: path)
            // Created with its final mode, so a private key is never readable by others, even briefly.
            guard fm.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: mode]) else {
                throw CLIError(.storageUnavailable, "io", "cannot write \(path)", hint: "Check that --out is writable and has space.")
            }
        }
        try put(DeviceBundleLayout.certificate, b.certificate, 0o644)
        try put(DeviceBundleLayout.privateKey, b.privateKey, 0o600)
        try put(DeviceBundleLayout.brokerCA, b.brokerCA, 0o644)
        try put(DeviceBundleLayout.agentConf, agentConf(b), 0o644)
        return deviceDir
    }

    /// escrow-agent's settings file for the bundle; paths are relative to the file's directory.
    public static func agentConf(_ b: Commands.DeviceBundle) -> String {
        DeviceBundleLayout.agentConf(device: b.deviceId, brokerURL: b.brokerURL)
    }
}

public enum DeviceCommands {
    public struct Provision: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["device", "provision"], group: .devices, summary: "Provision devices into escrow (and write their bundles)",
            usage: ["device provision (--ids a,b | --csv FILE | --prefix P --count N [--start K]) [--out DIR]"],
            options: """
                  --ids a,b          explicit device ids (repeatable)
                  --csv FILE         device ids in the first column (a header row is skipped)
                  --prefix P         number devices P000001, P000002, ... (with --count, from --start, default 1)
                  --out DIR          write DIR/{id}/device.crt, device.key (0600), broker-ca.pem, agent.conf
                Devices are sent \(Commands.DeviceProvision.maxPerCommand) per command; progress is shown on a terminal.
                """,
            examples: ["escrowctl device provision --prefix sn- --count 10000 --out ./bundles",
                       "escrowctl device provision --ids gw-1,gw-2",
                       "escrowctl device provision --csv factory-batch-7.csv --out /mnt/factory"],
            valued: ["ids", "csv", "prefix", "count", "start", "out"], booleans: [])

        public var selection: DeviceSelection
        public var out: String?

        public init(selection: DeviceSelection, out: String? = nil) { self.selection = selection; self.out = out }

        public init(_ a: Arguments) throws(UsageError) {
            selection = try DeviceSelection.parse(a, allowRange: true)
            if case .range = selection {} else if a.value("count") != nil || a.value("start") != nil {
                throw UsageError("--count and --start go with --prefix")
            }
            out = a.value("out")
            if out?.isEmpty == true { throw UsageError("--out needs a directory") }
        }

        /// The commands to send, each with at most `maxPerCommand` devices.
        public func batches() throws -> [Commands.DeviceProvision] {
            let max = Commands.DeviceProvision.maxPerCommand
            switch selection {
            case .range(let prefix, let count, let start):
                return stride(from: 0, to: count, by: max).map { .init(prefix: prefix, count: Swift.min(max, count - $0), start: start + $0) }
            default:
                let ids = try selection.resolveIDs() ?? []
                return stride(from: 0, to: ids.count, by: max).map { .init(deviceIds: Array(ids[$0..<Swift.min(ids.count, $0 + max)])) }
            }
        }

        public func run(_ c: CommandContext) async throws {
            let batches = try batches()
            let total = batches.reduce(0) { $0 + ($1.deviceIds?.count ?? $1.count ?? 0) }
            if let out { try DeviceBundleWriter.createDirectory(out) }
            var merged = Commands.DeviceProvisionResult(provisioned: [], bundles: [], refused: [])
            var done = 0, written = 0
            let started = ContinuousClock.now
            c.console.progress(ProgressBar.render(done: 0, total: total, perSecond: 0))
            for batch in batches {
                let r: Commands.DeviceProvisionResult
                do {
                    r = try c.decode(try await c.call(.deviceProvision, batch), as: Commands.DeviceProvisionResult.self, .deviceProvision)
                } catch {
                    c.console.progress("", final: true)
                    if done > 0 { c.console.err("escrowctl: note: \(merged.provisioned.count) of \(total) devices were provisioned before this failure") }
                    throw error
                }
                if let out { for b in r.bundles { try DeviceBundleWriter.write(b, into: out); written += 1 } }
                merged.provisioned += r.provisioned
                merged.refused += r.refused
                if out == nil { merged.bundles += r.bundles }
                done += batch.deviceIds?.count ?? batch.count ?? 0
                let elapsed = (ContinuousClock.now - started).seconds
                c.console.progress(ProgressBar.render(done: done, total: total, perSecond: elapsed > 0 ? Double(done) / elapsed : 0), final: done == total)
            }
            if c.global.json { return c.console.json(try JSONValue(encoding: merged)) }
            c.console.out("provisioned \(plural(merged.provisioned.count, "device")) in escrow in account \(c.account)"
                          + (merged.refused.isEmpty ? "" : "; \(merged.refused.count) refused"))
            if let out { c.console.out("wrote \(plural(written, "bundle")) to \(out)/{id}/ (device.crt, device.key, broker-ca.pem, agent.conf)") }
            else if !merged.bundles.isEmpty { c.console.note("escrowctl: note: the devices' keys were not saved; use --out DIR (or --json) to keep bundles") }
            RefusalList.print(merged.refused, c)
            if merged.provisioned.isEmpty, let first = merged.refused.first {
                throw CLIError(.conflict, "conflict", "no device was provisioned (\(first.reason))")
            }
        }
    }

    public struct List: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["device", "list"], group: .devices, summary: "List the account's devices",
            usage: ["device list [--state escrow|active|retired] [--online] [--prefix P] [--limit N] [--offset K]"],
            options: """
                  --state S    escrow (waiting for an owner), active, or retired (decommissioned)
                  --online     only devices connected now
                  --prefix P   only ids starting with P
                  --limit N    at most N devices (1...1000; default 100)
                  --offset K   skip the first K devices in id order (default 0): the next page is --offset K+N
                """,
            examples: ["escrowctl device list --state escrow --prefix sn- --limit 20", "escrowctl device list --online --json",
                       "escrowctl device list --limit 1000 --offset 1000"],
            valued: ["state", "prefix", "limit", "offset"], booleans: ["online"])

        public var args: Commands.DeviceList

        public init(_ a: Arguments) throws(UsageError) {
            var state: DeviceView.State?
            if let s = a.value("state") {
                guard let v = DeviceView.State(rawValue: s) else { throw UsageError.invalid("--state must be escrow, active or retired, got '\(s)'") }
                state = v
            }
            args = .init(state: state, online: a.flag("online") ? true : nil, prefix: a.value("prefix"), limit: try a.int("limit", in: 1...1_000),
                         offset: try a.int("offset", in: 0...Int.max))
        }

        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.deviceList, args)
            if c.global.json { return c.console.json(json) }
            let r = try c.decode(json, as: Commands.DeviceListResult.self, .deviceList)
            if !r.devices.isEmpty { c.console.out(Self.table(r.devices).render()) }
            let offset = args.offset ?? 0
            let more = offset + r.devices.count < r.total ? "; next page: --offset \(offset + r.devices.count)" : ""
            c.console.note("\(r.devices.count) of \(plural(r.total, "device")) in account \(c.account)" + (offset > 0 ? " from #\(offset + 1)" : "") + more)
        }

        public static func table(_ devices: [DeviceView]) -> Table {
            Table(["ID", "STATE", "MODE", "ONLINE", "LAST SEEN", "CONFIG", "TRANSFER"], devices.map {
                [$0.id.rawValue, $0.state.rawValue, $0.mode.rawValue, $0.online ? "yes" : "no", Format.date($0.lastSeen),
                 "v\($0.appliedVersion)/v\($0.configVersion) \($0.configState.rawValue)", $0.pendingTransfer ?? "-"]
            })
        }
    }

    public struct Show: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["device", "show"], group: .devices, summary: "Show a device and its verified chain of custody",
            usage: ["device show ID"], options: "",
            examples: ["escrowctl device show sn-000042", "escrowctl --account cust device show sn-000042 --json"],
            valued: [], booleans: [], positionals: ["ID"])

        public var deviceId: DeviceID

        public init(_ a: Arguments) throws(UsageError) {
            deviceId = try Parse.devices([a.positionals[0]], what: "ID")[0]
        }

        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.deviceShow, Commands.DeviceShow(deviceId: deviceId))
            if c.global.json { return c.console.json(json) }
            c.console.out(Self.render(try c.decode(json, as: Commands.DeviceShowResult.self, .deviceShow)))
        }

        public static func render(_ r: Commands.DeviceShowResult) -> String {
            let d = r.device
            let fields = Table([], [
                ["device", d.id.rawValue], ["owner", d.owner.rawValue], ["state", "\(d.state.rawValue) (mode \(d.mode.rawValue))"],
                ["online", d.online ? "yes" : "no"], ["last seen", Format.date(d.lastSeen)], ["created", Format.date(d.createdAt)],
                ["agent", d.agentVersion ?? "-"], ["fingerprint", d.fingerprint ?? "-"],
                ["config", "desired v\(d.configVersion), applied v\(d.appliedVersion) (\(d.configState.rawValue))"],
                ["transfer", d.pendingTransfer ?? "-"],
            ]).render().split(separator: "\n").map { "  " + $0 }.joined(separator: "\n")
            let chain = Table(["SEQ", "AT", "HOLDER", "FROM", "DECISION", "TRANSFER", "HASH"], r.custody.map {
                [String($0.seq), Format.date($0.at), $0.holder.rawValue, $0.previousHolder?.rawValue ?? "-", $0.decision.rawValue,
                 $0.transferId ?? "-", String($0.hash.prefix(12))]
            }).render()
            let v = r.verification
            let verdict = v.valid ? "chain verified: yes (\(plural(v.entries, "entry").replacingOccurrences(of: "entrys", with: "entries")))"
                : "chain verified: NO, broken at entry \(v.brokenAt.map(String.init) ?? "?")" + (v.problem.map { ": \($0)" } ?? "")
            return fields + "\n\ncustody\n" + chain + "\n" + verdict
        }
    }
}

extension DeviceCommands {
    public struct Retire: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["device", "retire"], group: .devices, summary: "Decommission devices: revoke their certificates for good, keep their record read-only",
            usage: ["device retire ID... [--reason TEXT]"],
            options: """
                  ID...          devices the account holds (in escrow or active), at most 1000; one in
                                 an open transfer request is refused until the request is closed
                  --reason TEXT  why (1...500 characters), kept in the device's chain of custody
                """,
            examples: ["escrowctl device retire sn-000042 --reason \"water damage, RMA 7781\"",
                       "escrowctl --account cust device retire sn-000001 sn-000002 --json"],
            valued: ["reason"], booleans: [], positionals: ["ID..."])

        public var args: Commands.DeviceRetire

        public init(_ a: Arguments) throws(UsageError) {
            let ids = try Parse.devices(a.positionals, what: "ID")
            guard ids.count <= Commands.DeviceRetire.maxPerCommand else {
                throw UsageError("at most \(Commands.DeviceRetire.maxPerCommand) devices per command; run it several times")
            }
            let reason = a.value("reason")
            if let reason, !(1...500).contains(reason.count) { throw UsageError.invalid("--reason must be 1 to 500 characters") }
            args = .init(deviceIds: ids, reason: reason)
        }

        public func run(_ c: CommandContext) async throws {
            let json = try await c.call(.deviceRetire, args)
            if c.global.json { return c.console.json(json) }
            let r = try c.decode(json, as: Commands.DeviceRetireResult.self, .deviceRetire)
            c.console.out("retired \(plural(r.retired.count, "device")) in account \(c.account) (\(plural(r.revokedCertificates, "certificate")) revoked; the broker refuses them from now on)"
                          + (r.refused.isEmpty ? "" : "; \(r.refused.count) refused"))
            RefusalList.print(r.refused, c)
        }
    }
}

/// Prints devices a command named but did not act on.
enum RefusalList {
    static func print(_ refused: [Transfer.Refusal], _ c: CommandContext, limit: Int = 20) {
        guard !refused.isEmpty else { return }
        c.console.out("refused:")
        c.console.out(Table(["  DEVICE", "REASON"], refused.prefix(limit).map { ["  " + $0.deviceId.rawValue, $0.reason] }).render())
        if refused.count > limit { c.console.out("  ... and \(refused.count - limit) more (use --json for all)") }
    }
}

extension DeviceCommands {
    public struct Rebundle: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["device", "rebundle"], group: .devices, summary: "New identity bundles for devices whose files were lost; the old certificates are revoked",
            usage: ["device rebundle ID... --out DIR"],
            options: """
                  ID...          devices the account holds (in escrow or active), at most 1000
                  --out DIR      write each bundle to DIR/ID/ (device.crt, device.key, broker-ca.pem,
                                 agent.conf), as device provision does; required: the private keys
                                 are in the reply only, escrowd keeps none
                """,
            examples: ["escrowctl device rebundle sn-000042 --out ./bundles",
                       "escrowctl --account cust device rebundle sn-000001 sn-000002 --out /media/usb"],
            valued: ["out"], booleans: [], positionals: ["ID..."])

        public var args: Commands.DeviceRebundle
        public var out: String

        public init(_ a: Arguments) throws(UsageError) {
            let ids = try Parse.devices(a.positionals, what: "ID")
            guard ids.count <= Commands.DeviceRebundle.maxPerCommand else {
                throw UsageError("at most \(Commands.DeviceRebundle.maxPerCommand) devices per command; run it several times")
            }
            guard let out = a.value("out"), !out.isEmpty else {
                throw UsageError("--out DIR is required: the new private keys are in the reply only, so they must be written somewhere")
            }
            args = .init(deviceIds: ids)
            self.out = out
        }

        public func run(_ c: CommandContext) async throws {
            try DeviceBundleWriter.createDirectory(out)
            let json = try await c.call(.deviceRebundle, args)
            let r = try c.decode(json, as: Commands.DeviceRebundleResult.self, .deviceRebundle)
            for b in r.bundles { try DeviceBundleWriter.write(b, into: out) }
            if c.global.json {
                // The keys are on disk now; the JSON names where, not what.
                let summary = Commands.DeviceRebundleResult(bundles: [], refused: r.refused, revokedCertificates: r.revokedCertificates)
                guard case .object(var fields) = try JSONValue(encoding: summary) else { return c.console.json(json) }
                fields["bundles"] = nil
                fields["written"] = .array(r.bundles.map { .string(DeviceBundleLayout.directory(root: out, device: $0.deviceId)) })
                return c.console.json(.object(fields))
            }
            c.console.out("re-bundled \(plural(r.bundles.count, "device")) in account \(c.account) into \(out) (\(plural(r.revokedCertificates, "certificate")) revoked; the broker refuses them from now on)"
                          + (r.refused.isEmpty ? "" : "; \(r.refused.count) refused"))
            RefusalList.print(r.refused, c)
        }
    }
}
