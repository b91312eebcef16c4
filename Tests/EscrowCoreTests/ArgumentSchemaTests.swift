import Foundation
import Testing
import EscrowCore

/// `CommandSchema` is the one definition of the commands' arguments: every command has one, and
/// topics.md's Args tables say exactly what it says (names in order, types, required, limits).
@Suite("Argument schema: one definition, and topics.md agrees with it")
struct ArgumentSchemaTests {
    @Test("every command has exactly one schema")
    func coverage() {
        #expect(CommandSchema.all.map(\.command) == CommandName.allCases)
        #expect(Set(CommandSchema.byName.keys) == Set(CommandName.allCases))
    }

    /// How the Required column of topics.md spells a field's presence rule.
    static func requiredCell(_ f: CommandSchema.Field, in s: CommandSchema) -> String {
        if f.required { return "yes" }
        if s.exactlyOne.contains(where: { $0.contains(f.name) }) { return "one of" }
        if let needs = s.requires.first(where: { $0.0 == f.name })?.1 { return "with `\(needs)`" }
        return "no"
    }

    static func limitsCell(_ f: CommandSchema.Field) -> String { f.limits.map(\.documented).joined(separator: "; ") }

    /// The rows of the Args table of a command's section: `[field, type, required, meaning, limits]`.
    static func documentedRows(_ c: CommandName) -> [[String]]? {
        guard let section = ContractDocumentTests.section("### `\(c.rawValue)`") else { return nil }
        let lines = section.components(separatedBy: "\n")
        guard let header = lines.firstIndex(where: { $0.hasPrefix("| Field | Type | Required | Meaning | Limits |") }) else { return nil }
        return lines[(header + 2)...].prefix { $0.hasPrefix("| `") }.map { line in
            line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast().map { $0.trimmingCharacters(in: .whitespaces) }
        }
    }

    @Test("topics.md documents each command's arguments as the schema defines them", arguments: CommandName.allCases)
    func documented(_ c: CommandName) throws {
        let schema = try #require(CommandSchema.byName[c])
        if schema.fields.isEmpty {
            let section = try #require(ContractDocumentTests.section("### `\(c.rawValue)`"))
            #expect(section.contains("Args: none"), "\(c.rawValue): say 'Args: none' in topics.md")
            return
        }
        let rows = try #require(Self.documentedRows(c), "\(c.rawValue): no '| Field | Type | Required | Meaning | Limits |' table in its section")
        let expected = schema.fields.map { f in
            "| `\(f.name)` | \(f.type.rawValue) | \(Self.requiredCell(f, in: schema)) | ... | \(Self.limitsCell(f)) |"
        }
        #expect(rows.map { $0[0] } == schema.fields.map { "`\($0.name)`" }, "\(c.rawValue) fields; expected rows:\n\(expected.joined(separator: "\n"))")
        for (row, f) in zip(rows, schema.fields) where row.count == 5 {
            #expect(row[1] == f.type.rawValue, "\(c.rawValue).\(f.name) type")
            #expect(row[2] == Self.requiredCell(f, in: schema), "\(c.rawValue).\(f.name) required: expected \(Self.requiredCell(f, in: schema))")
            #expect(row[4].hasPrefix(Self.limitsCell(f)), "\(c.rawValue).\(f.name) limits: expected to start with '\(Self.limitsCell(f))', got '\(row[4])'")
        }
    }

    @Test("validation: structure is malformed, values are invalid_argument, null is absent")
    func validation() throws {
        let s = try #require(CommandSchema.byName[.configPush])
        func code(_ args: [String: JSONValue]) -> ErrorCode? {
            do { try s.validate(args); return nil } catch { return error.code }
        }
        #expect(code(["all": true]) == nil)
        #expect(code(["all": true, "profile": .null]) == nil)
        #expect(code(["all": true, "profil": "x"]) == .malformed, "a typo is refused, not ignored")
        #expect(code(["all": "yes"]) == .malformed)
        #expect(code(["deviceIds": ["a", 1]]) == .malformed)
        #expect(code(["all": true, "deviceIds": ["a"]]) == .invalidArgument)
        #expect(code([:]) == .invalidArgument)
        #expect(code(["all": true, "profile": "p", "settings": [:]]) == .invalidArgument)
        #expect(code(["all": true, "heartbeatInterval": 4]) == .invalidArgument)
        #expect(code(["all": true, "heartbeatInterval": 4.5]) == .malformed)
        #expect(code(["all": false]) == .invalidArgument)
        let provision = try #require(CommandSchema.byName[.deviceProvision])
        #expect(throws: WireError.self) { try provision.validate(["prefix": "x-"]) }
        #expect(throws: Never.self) { try provision.validate(["prefix": "x-", "count": 3, "start": 0]) }
        #expect(throws: WireError.self) { try provision.validate(["deviceIds": ["a"], "start": 1]) }
    }
}

/// `EventType.shape` is the one definition of the events; topics.md's events table agrees.
@Suite("Event shapes: one definition, and topics.md agrees with it")
struct EventShapeTests {
    @Test("each event type's row names exactly its details and references", arguments: EventType.allCases)
    func documented(_ t: EventType) throws {
        let row = try #require(ContractDocumentTests.lines.first { $0.hasPrefix("| `\(t.rawValue)` |") }, "no row for \(t.rawValue)")
        let cells = row.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast().map { $0.trimmingCharacters(in: .whitespaces) }
        try #require(cells.count == 5)
        let refs = cells[3], details = cells[4]
        #expect(refs.contains("deviceId") == t.shape.device && refs.contains("transferId") == t.shape.transfer, "\(t.rawValue) references: \(refs)")
        // Backticked names; `name?` is optional. Text after a closing parenthesis is commentary.
        var required: [String] = [], optional: [String] = []
        for part in details.split(separator: "`", omittingEmptySubsequences: false).enumerated() where part.offset % 2 == 1 {
            let name = String(part.element)
            if name.hasSuffix("?") { optional.append(String(name.dropLast())) } else { required.append(name) }
        }
        #expect(required == t.shape.required && optional == t.shape.optional, "\(t.rawValue): documented \(required) / \(optional)")
    }
}
