import Foundation
import Testing
import EscrowCore

/// Keeps `topics.md` honest: every example decodes with the type its marker names and
/// re-encodes to the same JSON, and every topic, command, event type and error code is documented.
///
/// Marker convention: a line `<!-- example: TYPE -->` directly followed (blank lines allowed) by a
/// fenced ```json block. TYPE is a payload type (`DeviceStatus`), `CommandEnvelope<Commands.X>`
/// (args decoded as `Commands.X`) or `CommandReply<R>` (result decoded as `R`).
@Suite("Contract document (topics.md)")
struct ContractDocumentTests {
    struct Example: CustomStringConvertible, Sendable {
        var type: String
        var json: String
        var line: Int
        var description: String { "topics.md:\(line) \(type)" }
    }

    static let documentURL: URL = {
        // Tests/EscrowCoreTests/ContractDocumentTests.swift -> package root.
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("topics.md")
    }()

    static let document: String = (try? String(contentsOf: documentURL, encoding: .utf8)) ?? ""

    static let lines: [String] = document.components(separatedBy: "\n")

    /// Every marked example, plus the line numbers of json blocks without a marker.
    static let parsed: (examples: [Example], unmarked: [Int], problems: [String]) = {
        var examples: [Example] = [], unmarked: [Int] = [], problems: [String] = []
        var pendingMarker: (type: String, line: Int)?
        var i = 0
        while i < lines.count {
            let line = lines[i].trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("<!-- example:") {
                if let m = pendingMarker { problems.append("topics.md:\(m.line) marker \(m.type) is not followed by a json block") }
                guard line.hasSuffix("-->") else { problems.append("topics.md:\(i + 1) unterminated marker"); i += 1; continue }
                let type = line.dropFirst("<!-- example:".count).dropLast(3).trimmingCharacters(in: .whitespaces)
                pendingMarker = (type, i + 1)
            } else if line.hasPrefix("```") {
                let isJSON = line == "```json"
                var body: [String] = []
                i += 1
                while i < lines.count, lines[i].trimmingCharacters(in: .whitespaces) != "```" { body.append(lines[i]); i += 1 }
                if isJSON {
                    if let m = pendingMarker { examples.append(Example(type: m.type, json: body.joined(separator: "\n"), line: m.line)) }
                    else { unmarked.append(i + 1) }
                } else if let m = pendingMarker {
                    problems.append("topics.md:\(m.line) marker \(m.type) is followed by a non-json block")
                }
                pendingMarker = nil
            } else if !line.isEmpty, let m = pendingMarker {
                problems.append("topics.md:\(m.line) marker \(m.type) is followed by text, not a json block")
                pendingMarker = nil
            }
            i += 1
        }
        if let m = pendingMarker { problems.append("topics.md:\(m.line) marker \(m.type) at end of file") }
        return (examples, unmarked, problems)
    }()

    // MARK: decoding

    /// Decodes `value` as `T`, re-encodes it and returns both sides as comparable JSON.
    static func roundTrip<T: Codable>(_ type: T.Type, _ value: JSONValue) throws -> (JSONValue, JSONValue) {
        let typed = try value.decode(T.self)
        return (value, try JSONValue(encoding: typed))
    }

    static func roundTripPayload<T: Codable>(_ type: T.Type, _ bytes: [UInt8]) throws -> (JSONValue, JSONValue) {
        let typed = try WireCodec.decode(T.self, from: bytes)
        return (try Fx.json(bytes), try Fx.json(WireCodec.encode(typed)))
    }

    /// Types a `CommandEnvelope<...>` marker may name for its args.
    static func args(_ name: String, _ v: JSONValue) throws -> (JSONValue, JSONValue)? {
        switch name {
        case "Commands.AccountCreate": try roundTrip(Commands.AccountCreate.self, v)
        case "Commands.AccountRef": try roundTrip(Commands.AccountRef.self, v)
        case "Commands.OperatorCreate": try roundTrip(Commands.OperatorCreate.self, v)
        case "Commands.OperatorList": try roundTrip(Commands.OperatorList.self, v)
        case "Commands.OperatorPasswd": try roundTrip(Commands.OperatorPasswd.self, v)
        case "Commands.OperatorRef": try roundTrip(Commands.OperatorRef.self, v)
        case "Commands.DeviceProvision": try roundTrip(Commands.DeviceProvision.self, v)
        case "Commands.DeviceList": try roundTrip(Commands.DeviceList.self, v)
        case "Commands.DeviceShow": try roundTrip(Commands.DeviceShow.self, v)
        case "Commands.DeviceRetire": try roundTrip(Commands.DeviceRetire.self, v)
        case "Commands.DeviceRebundle": try roundTrip(Commands.DeviceRebundle.self, v)
        case "Commands.AuditList": try roundTrip(Commands.AuditList.self, v)
        case "Commands.TransferRequest": try roundTrip(Commands.TransferRequest.self, v)
        case "Commands.TransferList": try roundTrip(Commands.TransferList.self, v)
        case "Commands.TransferRef": try roundTrip(Commands.TransferRef.self, v)
        case "Commands.TransferApprove": try roundTrip(Commands.TransferApprove.self, v)
        case "Commands.TransferReject": try roundTrip(Commands.TransferReject.self, v)
        case "Commands.ProfilePut": try roundTrip(Commands.ProfilePut.self, v)
        case "Commands.ProfileRef": try roundTrip(Commands.ProfileRef.self, v)
        case "Commands.ConfigPush": try roundTrip(Commands.ConfigPush.self, v)
        case "Commands.ConfigStatus": try roundTrip(Commands.ConfigStatus.self, v)
        case "Commands.EventsSince": try roundTrip(Commands.EventsSince.self, v)
        default: nil
        }
    }

    /// Types a `CommandReply<...>` marker may name for its result.
    static func result(_ name: String, _ v: JSONValue) throws -> (JSONValue, JSONValue)? {
        switch name {
        case "Account": try roundTrip(Account.self, v)
        case "Commands.AccountListResult": try roundTrip(Commands.AccountListResult.self, v)
        case "Commands.AccountShowResult": try roundTrip(Commands.AccountShowResult.self, v)
        case "Commands.AccountDeleteResult": try roundTrip(Commands.AccountDeleteResult.self, v)
        case "Commands.OperatorResult": try roundTrip(Commands.OperatorResult.self, v)
        case "Commands.OperatorListResult": try roundTrip(Commands.OperatorListResult.self, v)
        case "Commands.OperatorListResult.Entry": try roundTrip(Commands.OperatorListResult.Entry.self, v)
        case "Commands.DeviceProvisionResult": try roundTrip(Commands.DeviceProvisionResult.self, v)
        case "Commands.DeviceListResult": try roundTrip(Commands.DeviceListResult.self, v)
        case "Commands.DeviceShowResult": try roundTrip(Commands.DeviceShowResult.self, v)
        case "Commands.DeviceRetireResult": try roundTrip(Commands.DeviceRetireResult.self, v)
        case "Commands.DeviceRebundleResult": try roundTrip(Commands.DeviceRebundleResult.self, v)
        case "Commands.AuditListResult": try roundTrip(Commands.AuditListResult.self, v)
        case "Commands.TransferListResult": try roundTrip(Commands.TransferListResult.self, v)
        case "Commands.TransferResult": try roundTrip(Commands.TransferResult.self, v)
        case "TransferView": try roundTrip(TransferView.self, v)
        case "Commands.Profile": try roundTrip(Commands.Profile.self, v)
        case "Commands.ProfileListResult": try roundTrip(Commands.ProfileListResult.self, v)
        case "Commands.ProfileShowResult": try roundTrip(Commands.ProfileShowResult.self, v)
        case "Commands.ConfigPushResult": try roundTrip(Commands.ConfigPushResult.self, v)
        case "Commands.ConfigStatusResult": try roundTrip(Commands.ConfigStatusResult.self, v)
        case "Commands.EventsSinceResult": try roundTrip(Commands.EventsSinceResult.self, v)
        default: nil
        }
    }

    /// Decodes an example as its marker says; returns (as written, as re-encoded) pairs to compare.
    static func check(_ ex: Example) throws -> [(JSONValue, JSONValue)] {
        let bytes = Array(ex.json.utf8)
        func generic(_ prefix: String) -> String? {
            guard ex.type.hasPrefix(prefix + "<"), ex.type.hasSuffix(">") else { return nil }
            return String(ex.type.dropFirst(prefix.count + 1).dropLast())
        }
        switch ex.type {
        case "DeviceStatus": return [try roundTripPayload(DeviceStatus.self, bytes)]
        case "Heartbeat": return [try roundTripPayload(Heartbeat.self, bytes)]
        case "DeviceConfig": return [try roundTripPayload(DeviceConfig.self, bytes)]
        case "ConfigAck": return [try roundTripPayload(ConfigAck.self, bytes)]
        case "CertificateRequest": return [try roundTripPayload(CertificateRequest.self, bytes)]
        case "DeviceErrorReport": return [try roundTripPayload(DeviceErrorReport.self, bytes)]
        case "Event": return [try roundTripPayload(Event.self, bytes)]
        case "CommandReply": return [try roundTripPayload(CommandReply.self, bytes)]
        case "CommandEnvelope": return [try roundTripPayload(CommandEnvelope.self, bytes)]
        default: break
        }
        if let argsType = generic("CommandEnvelope") {
            let envelope = try WireCodec.decode(CommandEnvelope.self, from: bytes)
            let outer = try roundTripPayload(CommandEnvelope.self, bytes)
            guard let inner = try args(argsType, envelope.args) else { throw WireError(.unknownCommand, "unknown args type \(argsType)") }
            return [outer, inner]
        }
        if let resultType = generic("CommandReply") {
            let reply = try WireCodec.decode(CommandReply.self, from: bytes)
            let outer = try roundTripPayload(CommandReply.self, bytes)
            guard reply.ok, let value = reply.result else { throw WireError(.invalidArgument, "a typed reply example must be ok with a result") }
            guard let inner = try result(resultType, value) else { throw WireError(.unknownCommand, "unknown result type \(resultType)") }
            return [outer, inner]
        }
        throw WireError(.unknownCommand, "unknown example type \(ex.type)")
    }

    // MARK: tests

    @Test("topics.md is found next to Package.swift")
    func documentExists() {
        #expect(!Self.document.isEmpty, "could not read \(Self.documentURL.path)")
    }

    @Test("markers are well formed and every json block has one")
    func markers() {
        #expect(Self.parsed.problems == [])
        #expect(Self.parsed.unmarked == [], "json blocks without an example marker")
        #expect(Self.parsed.examples.count >= 40)
    }

    @Test("every example decodes with its marked type and re-encodes to the same JSON", arguments: parsed.examples)
    func example(_ ex: Example) {
        do {
            for (written, reencoded) in try Self.check(ex) {
                #expect(written == reencoded, "\(ex): fields the type does not know, or a different encoding")
            }
        } catch {
            Issue.record("\(ex): \(error)")
        }
    }

    @Test("every payload type and every command has examples")
    func coverage() {
        let types = Set(Self.parsed.examples.map(\.type))
        for t in ["DeviceStatus", "Heartbeat", "DeviceConfig", "ConfigAck", "CertificateRequest", "DeviceErrorReport", "Event", "CommandReply"] {
            #expect(types.contains(t), "no example of \(t)")
        }
        // Each command's section (### `name`) holds at least one request and one reply example.
        for c in CommandName.allCases {
            guard let section = Self.section("### `\(c.rawValue)`") else { Issue.record("no section for \(c.rawValue)"); continue }
            #expect(section.contains("<!-- example: CommandEnvelope"), "\(c.rawValue): no request example")
            #expect(section.contains("<!-- example: CommandReply"), "\(c.rawValue): no reply example")
            #expect(section.contains("accounts/"), "\(c.rawValue): no topic")
            #expect(section.contains("`escrowctl "), "\(c.rawValue): no escrowctl line")
            for ex in Self.parsed.examples where section.contains(ex.json) && ex.type.hasPrefix("CommandEnvelope") {
                #expect(ex.json.contains(#""requestId""#))
            }
        }
    }

    /// The text from `heading` to the next heading of the same or a higher level.
    static func section(_ heading: String) -> String? {
        guard let start = lines.firstIndex(of: heading) else { return nil }
        let end = lines[(start + 1)...].firstIndex { $0.hasPrefix("## ") || $0.hasPrefix("### ") } ?? lines.count
        return lines[start..<end].joined(separator: "\n")
    }

    /// The documented template of a topic; exhaustive so a new `Topic` case fails to compile here.
    static func template(_ t: Topic) -> String {
        switch t {
        case .deviceStatus, .deviceHeartbeat, .deviceConfig, .deviceConfigAck, .deviceCSR, .deviceError:
            return t.path.replacingOccurrences(of: "/DEVICE/", with: "/{deviceId}/")
        case .accountCommand:
            return t.path.replacingOccurrences(of: "/ACCOUNT/", with: "/{accountId}/").replacingOccurrences(of: "/COMMAND", with: "/{command}")
        case .accountReply:
            return t.path.replacingOccurrences(of: "/ACCOUNT/", with: "/{accountId}/").replacingOccurrences(of: "/REQUEST", with: "/{requestId}")
        case .accountEvent(_, let type):
            return t.path.replacingOccurrences(of: "/ACCOUNT/", with: "/{accountId}/").replacingOccurrences(of: "/\(type.rawValue)", with: "/{type}")
        }
    }

    static let everyTopic: [Topic] = [
        .deviceStatus("DEVICE"), .deviceHeartbeat("DEVICE"), .deviceConfig("DEVICE"), .deviceConfigAck("DEVICE"),
        .deviceCSR("DEVICE"), .deviceError("DEVICE"), .accountCommand("ACCOUNT", command: "COMMAND"),
        .accountReply("ACCOUNT", requestID: "REQUEST"), .accountEvent("ACCOUNT", type: .deviceOnline),
    ]

    @Test("every topic is documented with a heading or table row")
    func topics() {
        for t in Self.everyTopic {
            let template = Self.template(t)
            #expect(Self.document.contains("| `\(template)` |"), "\(template) missing from the topic tables")
            #expect(Self.document.contains("`\(template)`"), "\(template)")
        }
        #expect(Self.everyTopic.count == 9)
    }

    @Test("every command name is documented", arguments: CommandName.allCases)
    func commands(_ c: CommandName) {
        #expect(Self.document.contains("### `\(c.rawValue)`"))
        #expect(Self.document.contains("accounts/{accountId}/cmd/\(c.rawValue)") || Self.document.contains("accounts/platform/cmd/\(c.rawValue)"))
    }

    @Test("every event type has a row in the events table", arguments: EventType.allCases)
    func events(_ t: EventType) {
        #expect(Self.document.contains("| `\(t.rawValue)` |"))
    }

    @Test("every error code has a row in the errors table", arguments: ErrorCode.allCases)
    func errors(_ c: ErrorCode) {
        #expect(Self.document.contains("| `\(c.rawValue)` |"))
    }

    @Test("the documented limits are the code's limits")
    func limits() {
        #expect(Self.document.contains("256 KiB") && WireCodec.maxPayloadBytes == 256 * 1024)
        #expect(Self.document.contains("16 KiB") && WireCodec.maxDevicePayloadBytes == 16 * 1024)
        #expect(Self.document.contains("64 KiB") && ConfigValidation.maxConfigBytes == 64 * 1024)
        #expect(Self.document.contains("1,000") && Commands.DeviceProvision.maxPerCommand == 1_000)
        #expect(Self.document.contains("20,000") && Transfer.maxDevicesPerRequest == 20_000)
        #expect(Self.document.contains("7,776,000") && Commands.TransferRequest.expiryRange.upperBound == 7_776_000)
        #expect(Self.document.contains("5 ... 86,400") && DeviceConfig.heartbeatRange == 5...86_400)
        #expect(Self.document.contains("604,800") && Transfer.defaultLifetime == 604_800)
    }

    @Test("the documented custody example verifies with the documented hash rule")
    func custodyExample() throws {
        let ex = try #require(Self.parsed.examples.first { $0.type == "CommandReply<Commands.DeviceShowResult>" })
        let reply = try WireCodec.decode(CommandReply.self, from: Array(ex.json.utf8))
        let show = try #require(reply.result).decode(Commands.DeviceShowResult.self)
        let v = CustodyChain.verify(show.custody)
        #expect(v.valid)
        #expect(v == show.verification)
    }

    @Test("the documented transfer views are consistent: counts match items")
    func transferViews() throws {
        for ex in Self.parsed.examples where ex.type == "CommandReply<Commands.TransferResult>" || ex.type == "CommandReply<TransferView>" {
            let reply = try WireCodec.decode(CommandReply.self, from: Array(ex.json.utf8))
            let value = try #require(reply.result)
            let view = try (value["transfer"] ?? value).decode(TransferView.self)
            let items = try #require(view.items, "\(ex)")
            var counts: [String: Int] = [:]
            for i in items { counts[i.outcome, default: 0] += 1 }
            #expect(counts == view.counts, "\(ex)")
        }
    }
}
