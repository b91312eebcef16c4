import Foundation
import Testing
import EscrowCore
import ControlPlane
import MQTT
import TestSupport

/// Issue 14: the conformance suite, generated from the contract's one definition (`CommandSchema`).
/// For every command: each required field missing, each field of each wrong JSON type, each limit
/// below and above its bound (and at it, through the validator), unknown fields, exclusive and
/// missing alternatives, replays, wrong accounts, oversized and deeply nested envelopes; for every
/// device topic the same classes. Every refused case must get the documented code on the
/// documented topic and change nothing (ledger rows, configurations published, events other than
/// `command.failed`). Seeded and reproducible; the seed and the number of cases are printed.
@Suite("Conformance: every command and device topic behaves as topics.md says", .serialized, .timeLimit(.minutes(4)))
struct ConformanceTests {
    struct Case: CustomStringConvertible {
        var account: AccountID
        var command: String
        var args: [String: JSONValue]
        var expected: ErrorCode
        var what: String
        var description: String { "\(command) \(what)" }
    }

    /// A base of the right shape per command (whether it would succeed does not matter).
    static func base(_ c: CommandName, transfer: String) -> (AccountID, [String: JSONValue]) {
        switch c {
        case .accountCreate: (.platform, ["id": "conf-new", "name": "N", "kind": "customer"])
        case .accountList: ("oem", [:])
        case .accountShow: (.platform, ["id": "acme"])
        case .accountDelete: (.platform, ["id": "conf-none"])
        case .operatorCreate: (.platform, ["username": "op-conf", "password": "password-1", "account": "acme"])
        case .operatorList: (.platform, [:])
        case .operatorPasswd: (.platform, ["username": "op-conf-none", "password": "password-1"])
        case .operatorDelete: (.platform, ["username": "op-conf-none"])
        case .deviceProvision: ("oem", ["deviceIds": ["conf-1"], "issueIdentity": false])
        case .deviceList: ("oem", [:])
        case .deviceShow: ("oem", ["deviceId": "dev-000001"])
        case .deviceRetire: ("oem", ["deviceIds": ["dev-000001"], "reason": "conformance"])
        case .deviceRebundle: ("oem", ["deviceIds": ["dev-000002"]])
        case .transferRequest: ("oem", ["to": "acme", "deviceIds": ["dev-000003"]])
        case .transferList: ("acme", [:])
        case .transferShow: ("acme", ["transferId": .string(transfer)])
        case .transferApprove: ("acme", ["transferId": .string(transfer), "action": "hold"])
        case .transferReject: ("acme", ["transferId": .string(transfer), "reason": "r"])
        case .transferCancel: ("oem", ["transferId": .string(transfer)])
        case .profilePut: ("acme", ["name": "p1", "settings": [:]])
        case .profileList: ("acme", [:])
        case .profileShow: ("acme", ["name": "p1"])
        case .profileDelete: ("acme", ["name": "p-conf-none"])
        case .configPush: ("acme", ["all": true])
        case .configStatus: ("acme", [:])
        case .eventsSince: ("acme", [:])
        case .auditList: ("acme", [:])
        }
    }

    static func wrongTypes(_ t: CommandSchema.FieldType, rng: inout SplitMix64) -> [JSONValue] {
        let all: [JSONValue] = switch t {
        case .string: [1, true, [], ["k": 1]]
        case .integer: ["1", true, 1.5, [], ["k": 1]]
        case .boolean: ["true", 1, [], ["k": 1]]
        case .object: ["x", 1, true, []]
        case .stringArray: ["x", 1, true, ["k": 1], [1], [true]]
        }
        return all.shuffled(using: &rng)
    }

    /// A valid value for a field, to add it where the base lacks it.
    static func valid(_ f: CommandSchema.Field) -> JSONValue {
        switch f.type {
        case .boolean: return true
        case .object: return [:]
        case .stringArray: return ["dev-000001"]
        case .integer:
            for l in f.limits { if case .range(let r) = l { return .number(Double(r.lowerBound)) }; if case .atLeast(let m) = l { return .number(Double(m)) } }
            return 1
        case .string:
            for l in f.limits {
                if case .oneOf(let xs) = l { return .string(xs[0]) }
                if case .length(let r) = l { return .string(String(repeating: "a", count: max(1, r.lowerBound))) }
            }
            return "x1"
        }
    }

    /// Values just outside each limit (expected `invalid_argument`), and one at it.
    static func outside(_ f: CommandSchema.Field) -> [(JSONValue, String)] {
        var out: [(JSONValue, String)] = []
        for l in f.limits {
            switch l {
            case .range(let r): out += [(.number(Double(r.lowerBound - 1)), "below \(r.lowerBound)"), (.number(Double(r.upperBound + 1)), "above \(r.upperBound)")]
            case .atLeast(let m): out.append((.number(Double(m - 1)), "below \(m)"))
            case .length(let r):
                if r.lowerBound > 0 { out.append((.string(String(repeating: "a", count: r.lowerBound - 1)), "shorter than \(r.lowerBound)")) }
                out.append((.string(String(repeating: "a", count: r.upperBound + 1)), "longer than \(r.upperBound)"))
            case .identifier:
                out.append((f.type == .stringArray ? ["not an id!"] : "not an id!", "not an identifier"))
            case .oneOf(let xs):
                out.append((f.type == .boolean ? false : "not-a-choice", "not one of \(xs)"))
            case .count(let r):
                if r.lowerBound > 0 { out.append((.array(Array(repeating: "a", count: r.lowerBound - 1)), "fewer than \(r.lowerBound) items")) }
                out.append((.array(Array(repeating: "a", count: r.upperBound + 1)), "more than \(r.upperBound) items"))
            }
        }
        return out
    }

    /// Every case the schema implies for one command.
    static func cases(_ s: CommandSchema, transfer: String, rng: inout SplitMix64) -> [Case] {
        let (account, base) = base(s.command, transfer: transfer)
        let name = s.command.rawValue
        var out: [Case] = []
        out.append(Case(account: account, command: name, args: base.merging(["unexpectedField": 1]) { $1 }, expected: .malformed, what: "with an unknown field"))
        for f in s.fields {
            if f.required {
                var a = base; a[f.name] = nil
                out.append(Case(account: account, command: name, args: a, expected: .malformed, what: "without \(f.name)"))
            }
            for wrong in wrongTypes(f.type, rng: &rng) {
                var a = base; a[f.name] = wrong
                out.append(Case(account: account, command: name, args: a, expected: .malformed, what: "\(f.name) = \(wrong)"))
            }
            for (value, why) in outside(f) {
                var a = base; a[f.name] = value
                out.append(Case(account: account, command: name, args: a, expected: .invalidArgument, what: "\(f.name) \(why)"))
            }
        }
        for group in s.exactlyOne {
            var none = base; for g in group { none[g] = nil }
            out.append(Case(account: account, command: name, args: none, expected: .invalidArgument, what: "with none of \(group)"))
            var both = base; for g in group { both[g] = valid(s.field(g)!) }
            if group.contains("prefix") { both["count"] = 1 }
            out.append(Case(account: account, command: name, args: both, expected: .invalidArgument, what: "with all of \(group)"))
        }
        for pair in s.exclusive {
            var both = base; for g in pair { both[g] = valid(s.field(g)!) }
            out.append(Case(account: account, command: name, args: both, expected: .invalidArgument, what: "with both \(pair)"))
        }
        for (f, needs) in s.requires where base[needs] == nil && !s.exactlyOne.joined().contains(f) {
            var a = base; a[f] = valid(s.field(f)!)
            out.append(Case(account: account, command: name, args: a, expected: .invalidArgument, what: "\(f) without \(needs)"))
        }
        return out
    }

    @Test("every command: generated refusals get the documented code on the reply topic and change nothing", arguments: [20261202 as UInt64])
    func commands(seed: UInt64) async throws {
        let p = try await PlatformFixture()
        let op = p.operators
        for (id, kind) in [("oem", "provisioner"), ("acme", "customer")] {
            _ = try await op.send(.platform, "account.create", ["id": .string(id), "name": .string(id), "kind": .string(kind)]).result(Account.self)
        }
        _ = try await op.send("oem", "device.provision", ["deviceIds": ids((1...4).map { "dev-00000\($0)" }), "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        let t = try await op.send("oem", "transfer.request", ["to": "acme", "deviceIds": ids(["dev-000002"])]).result(Commands.TransferResult.self)
        try await waitUntil("the set-up's events have arrived") { await op.events(of: .transferRequested).count == 2 }
        await p.service.flushAcks()
        let before = try TestStore.snapshot(p.store)
        let published = await p.service.counters.configsPublished
        await op.clearEvents()

        var rng = SplitMix64(state: seed)
        var all: [Case] = []
        for s in CommandSchema.all { all += Self.cases(s, transfer: t.transfer.id, rng: &rng) }
        // The validator alone accepts every value at its bound (the end-to-end runs below send none,
        // since an accepted value may rightly change state).
        for s in CommandSchema.all {
            let (_, base) = Self.base(s.command, transfer: t.transfer.id)
            for f in s.fields where !f.limits.isEmpty {
                var a = base; a[f.name] = Self.valid(f)
                for g in s.exactlyOne where g.contains(f.name) { for other in g where other != f.name { a[other] = nil } }
                if s.command == .deviceProvision, ["prefix", "count", "start"].contains(f.name) { a["deviceIds"] = nil; a["prefix"] = "x-"; a["count"] = 1 }
                if s.exclusive.contains(where: { $0.contains(f.name) }) { for pair in s.exclusive where pair.contains(f.name) { for o in pair where o != f.name { a[o] = nil } } }
                #expect(throws: Never.self, "\(s.command.rawValue).\(f.name) at its bound: \(a)") { try s.validate(a) }
            }
        }
        var mismatches: [String] = []
        for (i, c) in all.enumerated() {
            let id = "conf-\(i)"
            let reply = try await op.send(c.account, c.command, c.args, requestID: id, timeout: .seconds(20))
            if reply.ok || reply.error?.code != c.expected || reply.requestId != id {
                mismatches.append("\(c): expected \(c.expected.rawValue), got \(reply.ok ? "ok" : reply.error!.code.rawValue): \(reply.error?.message ?? "")")
            }
        }
        #expect(mismatches.isEmpty, Comment(rawValue: "\(mismatches.count) of \(all.count) cases:\n" + mismatches.prefix(20).joined(separator: "\n")))

        // Replays. A failed command runs again (still refused, same code); a read-only one is
        // answered afresh; a succeeded mutating one returns its first reply and changes nothing more.
        let failed1 = try await op.send("acme", "transfer.show", ["transferId": "tr-none"], requestID: "replay-fail")
        let failed2 = try await op.send("acme", "transfer.show", ["transferId": "tr-none"], requestID: "replay-fail")
        #expect(failed1.error?.code == .notFound && failed2.error?.code == .notFound)
        let read1 = try await op.send("oem", "device.list", [:], requestID: "replay-read")
        let read2 = try await op.send("oem", "device.list", [:], requestID: "replay-read")
        #expect(read1.ok && read2.ok && read1.result == read2.result)
        // Wrong account: unknown, or a platform command outside `platform`, or an account command in it.
        #expect(try await op.send("nobody", "device.list", [:]).error?.code == .notFound)
        #expect(try await op.send("oem", "account.create", ["id": "x2", "name": "X", "kind": "customer"]).error?.code == .forbidden)
        #expect(try await op.send(.platform, "device.list", [:]).error?.code == .forbidden)
        // Too large and too deep: never parsed, refused with command.failed events only.
        try await op.sendRaw("oem", "device.list", payload: Array(repeating: UInt8(ascii: " "), count: WireCodec.maxPayloadBytes + 1))
        try await op.sendRaw("oem", "device.list", payload: Array((#"{"schema":1,"requestId":"deep","args":"# + String(repeating: "[", count: 33) + String(repeating: "]", count: 33) + "}").utf8))
        try await waitUntil("both unparsed payloads are reported") {
            let codes = await op.events(of: .commandFailed).compactMap { $0.details["code"]?.stringValue }
            return codes.contains("too_large") && codes.filter { $0 == "malformed" }.count >= 1
        }

        await p.service.flushAcks()
        #expect(try TestStore.snapshot(p.store) == before, "a refused case changed the ledger")
        #expect(await p.service.counters.configsPublished == published, "a refused case published a configuration")
        let others = await op.events.filter { $0.type != .commandFailed }
        #expect(others.isEmpty, "events other than command.failed: \(others.map(\.type).prefix(5))")
        // The one success of the replay rule, last (it changes state on purpose).
        let ok1 = try await op.send("acme", "profile.put", ["name": "replayed", "settings": ["a": 1]], requestID: "replay-ok")
        let ok2 = try await op.send("acme", "profile.put", ["name": "replayed", "settings": ["a": 2]], requestID: "replay-ok")
        #expect(ok1.ok && ok1 == ok2, "a replay returns the first reply")
        let profiles = try await op.send("acme", "profile.list", [:]).result(Commands.ProfileListResult.self).profiles
        #expect(profiles.first { $0.name == "replayed" }?.version == 1 && profiles.first { $0.name == "replayed" }?.settings == ["a": 1])
        let problems = await op.shapeProblems
        #expect(problems.isEmpty, "events off their contract shape: \(problems.prefix(5))")
        print("conformance: \(all.count) generated command cases + 9 replay, account and payload cases, seed \(seed)")
        await p.shutdown()
    }

    @Test("every device topic: missing, wrong-typed, oversized, nested, invalid UTF-8 and wrong-schema payloads are refused on devices/{id}/error and change nothing", arguments: [20261202 as UInt64])
    func deviceTopics(seed: UInt64) async throws {
        let p = try await PlatformFixture()
        _ = try await p.operators.send(.platform, "account.create", ["id": "oem", "name": "oem", "kind": "provisioner"]).result(Account.self)
        _ = try await p.operators.send("oem", "device.provision", ["deviceIds": ["dev-1"], "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        let device = try MQTTClient(MQTTOptions(clientID: "conf-dev-1", port: p.broker.port))
        try await device.connect()
        _ = try await device.subscribe([("devices/dev-1/error", .atLeastOnce)])
        let errors = device.messages
        await p.service.flushAcks()
        let before = try TestStore.snapshot(p.store)

        // Each payload type with its required fields and their JSON types.
        let topics: [(topic: String, valid: [String: JSONValue], required: [String])] = [
            ("devices/dev-1/status", ["schema": 1, "state": "online", "mode": "escrow", "configVersion": 0, "agentVersion": "1", "session": 5], ["state"]),
            ("devices/dev-1/heartbeat", ["schema": 1, "seq": 1, "mode": "escrow", "uptime": 1, "configVersion": 0], ["seq", "mode", "uptime", "configVersion"]),
            ("devices/dev-1/config/ack", ["schema": 1, "version": 1, "result": "applied"], ["version", "result"]),
            ("devices/dev-1/csr", ["schema": 1, "csr": "-----BEGIN CERTIFICATE REQUEST-----\nx\n-----END CERTIFICATE REQUEST-----\n"], ["csr"]),
        ]
        var rng = SplitMix64(state: seed)
        var cases: [(topic: String, payload: [UInt8], expected: ErrorCode, what: String)] = []
        for t in topics {
            for r in t.required + ["schema"] {
                var v = t.valid; v[r] = nil
                cases.append((t.topic, WireCodec.encode(JSONValue.object(v)), .malformed, "without \(r)"))
            }
            for (key, value) in t.valid where key != "schema" {
                let wrong: [JSONValue] = {
                    switch value { case .string: return [1, true, ["k": 1]]; case .number: return ["1", true, 1.5, [1]]; default: return ["x"] }
                }()
                for w in wrong.shuffled(using: &rng) {
                    var v = t.valid; v[key] = w
                    cases.append((t.topic, WireCodec.encode(JSONValue.object(v)), .malformed, "\(key) = \(w)"))
                }
            }
            var v2 = t.valid; v2["schema"] = 2
            cases.append((t.topic, WireCodec.encode(JSONValue.object(v2)), .unsupportedSchema, "schema 2"))
            cases.append((t.topic, Array(repeating: UInt8(ascii: " "), count: WireCodec.maxDevicePayloadBytes + 1), .tooLarge, "oversized"))
            cases.append((t.topic, Array(("{\"schema\":1,\"x\":" + String(repeating: "[", count: 40) + String(repeating: "]", count: 40) + "}").utf8), .malformed, "nested 41 deep"))
            cases.append((t.topic, Array(#"{"schema":1,"x":""#.utf8) + [0xFF, 0xFE] + Array(#""}"#.utf8), .malformed, "invalid UTF-8"))
        }
        var mismatches: [String] = []
        for c in cases {
            try await device.publish(c.topic, c.payload, qos: .atLeastOnce)
            let m = try await firstElement(of: errors, timeout: .seconds(10), "the error for \(c.topic) \(c.what)") { $0.topic == "devices/dev-1/error" }
            let report = try WireCodec.decode(DeviceErrorReport.self, from: m.payload)
            if report.code != c.expected || report.topic != c.topic {
                mismatches.append("\(c.topic) \(c.what): expected \(c.expected.rawValue), got \(report.code.rawValue) (\(report.message)) for \(report.topic)")
            }
        }
        #expect(mismatches.isEmpty, Comment(rawValue: "\(mismatches.count) of \(cases.count):\n" + mismatches.prefix(20).joined(separator: "\n")))
        await p.service.flushAcks()
        #expect(try TestStore.snapshot(p.store) == before, "a refused device message changed the ledger")
        print("conformance: \(cases.count) device topic cases, seed \(seed)")
        await device.disconnect()
        await p.shutdown()
    }
}
