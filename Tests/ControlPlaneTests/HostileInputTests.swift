import Foundation
import Testing
import EscrowCore
import ControlPlane
import MQTT
import Storage
import TestSupport

/// Seeded, reproducible hostile input for every topic a device or an operator may publish to.
/// escrowd must stay up, answer or report a clear error, and change nothing.
@Suite("Hostile input", .timeLimit(.minutes(3)))
struct HostileInputTests {

    /// Everything durable that a refused input must not touch.

    /// Valid commands whose mutations make them invalid.
    static func validCommands(transfer: String) -> [(account: AccountID, command: String, args: JSONValue)] {
        [
            (.platform, "account.create", ["id": "newco", "name": "New Co", "kind": "customer"]),
            (.platform, "operator.create", ["username": "op-x", "password": "password1", "account": "acme"]),
            ("oem", "device.provision", ["deviceIds": ["h-1", "h-2"], "issueIdentity": false]),
            ("oem", "device.list", ["state": "escrow"]),
            ("oem", "device.show", ["deviceId": "dev-000001"]),
            ("oem", "transfer.request", ["to": "acme", "deviceIds": ["dev-000003"], "expiresIn": 3600]),
            ("acme", "transfer.list", ["direction": "incoming"]),
            ("acme", "transfer.show", ["transferId": .string(transfer)]),
            ("acme", "transfer.approve", ["transferId": .string(transfer), "action": "activate"]),
            ("acme", "transfer.reject", ["transferId": .string(transfer), "reason": "no"]),
            ("oem", "transfer.cancel", ["transferId": .string(transfer)]),
            ("acme", "profile.put", ["name": "p1", "settings": ["a": 1], "heartbeatInterval": 30]),
            ("acme", "profile.list", [:]),
            ("acme", "config.push", ["all": true]),
            ("acme", "config.status", [:]),
        ]
    }

    /// Commands that are well formed but aimed at the wrong account, device or state.
    static func wrongTarget(transfer: String) -> [(AccountID, String, JSONValue)] {
        [
            ("oem", "transfer.approve", ["transferId": .string(transfer), "action": "activate"]),      // the sender approving
            ("acme", "transfer.cancel", ["transferId": .string(transfer)]),                            // the receiver cancelling
            ("reseller", "transfer.show", ["transferId": .string(transfer)]),                          // a third party
            ("reseller", "transfer.reject", ["transferId": .string(transfer), "reason": "mine now"]),
            ("acme", "device.show", ["deviceId": "dev-000001"]),                                     // someone else's device
            ("acme", "transfer.request", ["to": "reseller", "deviceIds": ["dev-000001"]]),          // not the owner
            ("oem", "transfer.request", ["to": "oem", "deviceIds": ["dev-000004"]]),                // to itself
            ("oem", "account.create", ["id": "evil", "name": "Evil", "kind": "provisioner"]),       // not platform
            ("acme", "device.provision", ["deviceIds": ["z-1"], "issueIdentity": false]),          // not a provisioner
            ("acme", "config.push", ["deviceIds": ["dev-000001"]]),                                  // not its device
            ("acme", "transfer.approve", ["transferId": "tr-does-not-exist", "action": "hold"]),
            ("nobody", "device.list", [:]),                                                            // unknown account
            ("oem", "frobnicate", [:]),                                                                // unknown command
            (.platform, "operator.create", ["username": "dev-000001", "password": "password1", "account": "oem"]), // device-like name
            ("acme", "transfer.approve", ["transferId": .string(transfer), "deviceIds": [], "action": "hold"]),
        ]
    }

    static func mutations(of bytes: [UInt8], rng: inout SplitMix64) -> [[UInt8]] {
        var out: [[UInt8]] = []
        // Truncated at a random point: never valid JSON.
        out.append(Array(bytes.prefix(Int.random(in: 0..<max(1, bytes.count - 1), using: &rng))))
        // Random bytes.
        out.append((0..<Int.random(in: 0...200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
        // A random byte flipped into a structural character (kept only if that breaks the JSON).
        var flipped = bytes
        if !flipped.isEmpty { flipped[Int.random(in: 0..<flipped.count, using: &rng)] = [UInt8(ascii: "{"), UInt8(ascii: "\""), 0, 0xFF].randomElement(using: &rng)! }
        if (try? JSONSerialization.jsonObject(with: Data(flipped))) == nil { out.append(flipped) }
        // Oversized.
        out.append(Array(repeating: UInt8(ascii: " "), count: WireCodec.maxPayloadBytes + 1) + bytes)
        return out
    }

    static func typeMutations(_ value: JSONValue, versioned: Bool = true, rng: inout SplitMix64) -> [JSONValue] {
        guard case .object(var o) = value, !o.isEmpty else { return [] }
        var out: [JSONValue] = []
        // A value of another JSON type than the field's (never null: optional fields accept it).
        func wrong(for v: JSONValue) -> [JSONValue] {
            switch v {
            case .string: [.number(3.5), .bool(true), .array([1]), .object(["x": 1])]
            case .number: [.string("x"), .bool(true), .number(3.5), .array([])]
            case .bool: [.string("yes"), .number(1), .object([:])]
            case .object: [.string("x"), .number(1), .array([1])]
            case .array: [.string("x"), .number(2), .object(["a": 1])]
            case .null: [.number(1)]
            }
        }
        for key in o.keys.sorted() {
            var copy = o
            copy[key] = wrong(for: o[key]!).randomElement(using: &rng)!
            out.append(.object(copy))
        }
        guard versioned else { return out }
        o["schema"] = [.number(0), .number(2), .string("1"), .null].randomElement(using: &rng)!
        out.append(.object(o))
        o.removeValue(forKey: "schema")
        out.append(.object(o))
        return out
    }

    @Test("thousands of malformed, truncated, oversized, wrong-type, wrong-version and misdirected inputs change nothing", arguments: [20261129 as UInt64])
    func hostile(seed: UInt64) async throws {
        let p = try await PlatformFixture()
        let op = p.operators
        for (id, kind) in [("oem", "provisioner"), ("reseller", "reseller"), ("acme", "customer")] {
            _ = try await op.send(.platform, "account.create", ["id": .string(id), "name": .string(id), "kind": .string(kind)]).result(Account.self)
        }
        let devices = (1...4).map { "dev-00000\($0)" }
        _ = try await op.send("oem", "device.provision", ["deviceIds": ids(devices), "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
        let t = try await op.send("oem", "transfer.request", ["to": "acme", "deviceIds": ids(["dev-000002"])]).result(Commands.TransferResult.self)
        let before = try TestStore.snapshot(p.store)
        let countersBefore = await p.service.counters

        var rng = SplitMix64(state: seed)
        let publisher = op.client
        var commandCases = 0, deviceCases = 0
        // Operator topics: every command, mutated many ways.
        for round in 0..<8 {
            for c in Self.validCommands(transfer: t.transfer.id) {
                let env = CommandEnvelope(requestId: "hostile-\(round)-\(commandCases)", args: c.args)
                let valid = WireCodec.encode(env)
                for bad in Self.mutations(of: valid, rng: &rng) {
                    try await publisher.publish(Topic.accountCommand(c.account, command: c.command).path, bad); commandCases += 1
                }
                var envelopeJSON = try JSONValue(encoding: env)
                for badArgs in Self.typeMutations(c.args, versioned: false, rng: &rng) {
                    envelopeJSON = ["schema": 1, "requestId": .string("hostile-args-\(commandCases)"), "args": badArgs]
                    try await publisher.publish(Topic.accountCommand(c.account, command: c.command).path, WireCodec.encode(envelopeJSON)); commandCases += 1
                }
                for badEnvelope in Self.typeMutations(try JSONValue(encoding: env), rng: &rng) {
                    try await publisher.publish(Topic.accountCommand(c.account, command: c.command).path, WireCodec.encode(badEnvelope)); commandCases += 1
                }
            }
            for (account, command, args) in Self.wrongTarget(transfer: t.transfer.id) {
                let env = CommandEnvelope(requestId: "wrong-\(round)-\(commandCases)", args: args)
                try await publisher.publish(Topic.accountCommand(account, command: command).path, WireCodec.encode(env)); commandCases += 1
            }
        }
        // Device topics: heartbeats, status, acks and CSRs, mutated; valid acks for versions never pushed.
        let deviceValid: [(Topic, [UInt8])] = [
            (.deviceHeartbeat("dev-000001"), WireCodec.encode(Heartbeat(seq: 1, mode: .escrow, uptime: 5, configVersion: 0))),
            (.deviceStatus("dev-000001"), WireCodec.encode(DeviceStatus(state: .online, mode: .escrow, configVersion: 0))),
            (.deviceConfigAck("dev-000001"), WireCodec.encode(ConfigAck(version: 1, result: .applied))),
            (.deviceCSR("dev-000001"), WireCodec.encode(CertificateRequest(csr: "-----BEGIN CERTIFICATE REQUEST-----"))),
        ]
        for _ in 0..<60 {
            for (topic, valid) in deviceValid {
                for bad in Self.mutations(of: valid, rng: &rng) {
                    try await publisher.publish(topic.path, bad); deviceCases += 1
                }
                if let v = try? WireCodec.decoder.decode(JSONValue.self, from: Data(valid)) {
                    for m in Self.typeMutations(v, rng: &rng) where topic != .deviceCSR("dev-000001") || m["csr"]?.stringValue == nil {
                        try await publisher.publish(topic.path, WireCodec.encode(m)); deviceCases += 1
                    }
                }
            }
            // Well-formed but wrong: acks of versions that were never pushed, an unknown device.
            try await publisher.publish(Topic.deviceConfigAck("dev-000003").path, WireCodec.encode(ConfigAck(version: Int.random(in: 1...99, using: &rng), result: .applied))); deviceCases += 1
            try await publisher.publish(Topic.deviceConfigAck("ghost-1").path, WireCodec.encode(ConfigAck(version: 1, result: .applied))); deviceCases += 1
        }
        print("hostile input: \(commandCases) command cases, \(deviceCases) device cases, seed \(seed)")
        #expect(commandCases + deviceCases >= 2_000)

        // Still serving, in order: a sentinel sent after the flood is answered.
        let sentinel = try await op.send("oem", "device.list", [:], timeout: .seconds(60))
        #expect(sentinel.ok)
        try await waitUntil(timeout: .seconds(30), "every hostile command is processed") {
            await p.service.counters.commands - countersBefore.commands >= commandCases
        }
        // A type mutation can leave a read-only command valid (an optional filter set to null);
        // everything else is refused with an error.
        let refused = await p.service.counters.commandErrors - countersBefore.commandErrors
        #expect(refused >= commandCases * 9 / 10, "\(refused) of \(commandCases) refused")
        await p.service.flushAcks()
        let after = try TestStore.snapshot(p.store)
        #expect(before == after, "state changed: \(Array(Set(after).symmetricDifference(Set(before))).prefix(5))")
        // Replies carry stable codes.
        let failures = await op.events(of: .commandFailed)
        let codes = Set(failures.compactMap { $0.details["code"]?.stringValue })
        #expect(codes.isSubset(of: Set(ErrorCode.allCases.map(\.rawValue))))
        #expect(!codes.contains(ErrorCode.internalError.rawValue), "no internal errors: \(failures.filter { $0.details["code"]?.stringValue == "internal" }.prefix(3))")
        await p.shutdown()
    }
}
