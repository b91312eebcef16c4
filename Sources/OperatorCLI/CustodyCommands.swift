import EscrowCore
import Foundation

/// Chains of custody, verified on the operator's side: escrowd's verdict is not taken on trust.
public enum CustodyCommands {
    public struct Verify: OperatorCommand {
        public static let spec = CommandSpec(
            path: ["custody", "verify"], group: .devices,
            summary: "Re-verify devices' chains of custody here, hash by hash (exit 65 when one is broken)",
            usage: ["custody verify ID...", "custody verify --file SHOW.json"],
            options: """
                  ID...          devices the account can see (as device show), at most 1000; each
                                 chain is fetched and verified here with the rule of topics.md
                                 (device.show), whatever escrowd's own verdict says
                  --file F       a saved `escrowctl device show ID --json` reply (or its custody
                                 array, or a file of either per line): verified offline, no broker
                  --json         one object per chain: deviceId, valid, entries, brokenAt, problem,
                                 decisions, and platformValid (escrowd's verdict; absent with --file)
                Exit 0 when every chain verifies; 65 (invalid data) when one does not, naming the
                first entry that breaks it and why.
                """,
            examples: ["escrowctl custody verify sn-000042 sn-000043",
                       "escrowctl --account cust device show sn-000042 --json > chain.json && escrowctl custody verify --file chain.json"],
            valued: ["file"], booleans: [], positionals: ["[ID...]"])

        public var deviceIds: [DeviceID]
        public var file: String?
        public var needsBroker: Bool { file == nil }

        public init(_ a: Arguments) throws(UsageError) {
            file = a.value("file")
            deviceIds = try a.positionals.isEmpty ? [] : Parse.devices(a.positionals, what: "ID")
            if file == nil && deviceIds.isEmpty { throw UsageError("name devices (ID...) or a saved chain (--file F)") }
            if file != nil && !deviceIds.isEmpty { throw UsageError("either ID... or --file, not both") }
            guard deviceIds.count <= 1000 else { throw UsageError("at most 1000 devices per run; run it several times") }
        }

        /// One verified chain.
        struct Outcome {
            var deviceId: String
            var verification: CustodyChain.Verification
            var chain: [CustodyEntry]
            var platformValid: Bool?
        }

        public func run(_ c: CommandContext) async throws {
            var outcomes: [Outcome] = []
            if let file {
                outcomes = try Self.chains(inFile: file).map { Outcome(deviceId: $0.first?.deviceId.rawValue ?? "-", verification: CustodyChain.verify($0), chain: $0, platformValid: nil) }
            } else {
                for (i, d) in deviceIds.enumerated() {
                    let json = try await c.call(.deviceShow, Commands.DeviceShow(deviceId: d))
                    let r = try c.decode(json, as: Commands.DeviceShowResult.self, .deviceShow)
                    outcomes.append(Outcome(deviceId: d.rawValue, verification: CustodyChain.verify(r.custody), chain: r.custody, platformValid: r.verification.valid))
                    if deviceIds.count > 20 { c.console.progress("verified \(i + 1)/\(deviceIds.count)", final: i + 1 == deviceIds.count) }
                }
            }
            if c.global.json {
                for o in outcomes { c.console.out(Console.compactJSON(Self.json(o))) }
            } else {
                c.console.out(Table(["DEVICE", "CHAIN", "ENTRIES", "HISTORY"], outcomes.map { o in
                    let v = o.verification
                    var verdict = v.valid ? "verified" : "BROKEN at entry \(v.brokenAt.map(String.init) ?? "?"): \(v.problem ?? "")"
                    if let p = o.platformValid, p != v.valid { verdict += " (escrowd says \(p ? "valid" : "broken"))" }
                    return [o.deviceId, verdict, String(v.entries), o.chain.map { "\($0.decision.rawValue) \($0.holder)" }.joined(separator: " -> ")]
                }).render())
            }
            let broken = outcomes.filter { !$0.verification.valid }
            if !broken.isEmpty {
                throw CLIError(.dataError, "custody_broken", "\(plural(broken.count, "chain")) of \(outcomes.count) do not verify: "
                               + broken.prefix(3).map { "\($0.deviceId) at entry \($0.verification.brokenAt.map(String.init) ?? "?")" }.joined(separator: ", "),
                               hint: "a stored entry was altered, removed or reordered; compare with a backup (escrowd restore refuses a broken chain)")
            }
            c.console.note("\(plural(outcomes.count, "chain")) verified")
        }

        static func json(_ o: Outcome) -> JSONValue {
            var obj: [String: JSONValue] = ["deviceId": .string(o.deviceId), "valid": .bool(o.verification.valid), "entries": .number(Double(o.verification.entries)),
                                            "decisions": .array(o.chain.map { .string($0.decision.rawValue) })]
            if let b = o.verification.brokenAt { obj["brokenAt"] = .number(Double(b)) }
            if let p = o.verification.problem { obj["problem"] = .string(p) }
            if let p = o.platformValid { obj["platformValid"] = .bool(p) }
            return .object(obj)
        }

        /// The chains in a saved file: a `device show --json` reply, its `custody` array, or one of
        /// either per line.
        static func chains(inFile path: String) throws -> [[CustodyEntry]] {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw CLIError(.notFound, "not_found", "--file \(path) cannot be read", hint: "save a chain with: escrowctl device show ID --json > \(path)")
            }
            // An empty chain is no chain: every device has at least its provisioning entry.
            func decode(_ d: Data) -> [CustodyEntry]? {
                let chain = (try? WireCodec.decoder.decode(Commands.DeviceShowResult.self, from: d))?.custody
                    ?? (try? WireCodec.decoder.decode([CustodyEntry].self, from: d))
                return chain?.isEmpty == false ? chain : nil
            }
            if let one = decode(data) { return [one] }
            let lines = data.split(separator: UInt8(ascii: "\n")).filter { !$0.allSatisfy { $0 == 32 || $0 == 13 } }
            let chains = lines.compactMap { decode(Data($0)) }
            guard !chains.isEmpty, chains.count == lines.count else {
                throw CLIError(.dataError, "malformed", "--file \(path) holds no custody chain (expected the JSON of `escrowctl device show ID --json` or its custody array)")
            }
            return chains
        }
    }
}
