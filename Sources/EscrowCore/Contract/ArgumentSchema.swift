/// The one definition of every command's arguments: names, JSON types, which are required, which
/// exclude each other, and their limits. `CommandSchema.validate` runs it on every command before
/// anything else looks at the arguments; `topics.md`'s Args tables are held against it by
/// `ContractDocumentTests`, and the conformance suite generates its cases from it.
public struct CommandSchema: Sendable {
    public enum FieldType: String, Sendable, CaseIterable {
        case string, integer, boolean, object
        case stringArray = "[string]"
    }

    public enum Limit: Sendable, Equatable {
        /// An integer within the range.
        case range(ClosedRange<Int>)
        /// At least this integer.
        case atLeast(Int)
        /// A string of this many characters.
        case length(ClosedRange<Int>)
        /// `[A-Za-z0-9._-]{1,64}` (`Identifier`); for an array, every element.
        case identifier
        /// One of these strings.
        case oneOf([String])
        /// An array of this many elements.
        case count(ClosedRange<Int>)

        /// The Limits column of topics.md's Args tables.
        public var documented: String {
            func n(_ v: Int) -> String {
                var s = String(v), out = ""
                while s.count > 3 { out = "," + String(s.suffix(3)) + out; s = String(s.dropLast(3)) }
                return s + out
            }
            switch self {
            case .range(let r): return "\(n(r.lowerBound)) ... \(n(r.upperBound))"
            case .atLeast(let v): return ">= \(n(v))"
            case .length(let r): return "\(n(r.lowerBound)) ... \(n(r.upperBound)) chars"
            case .identifier: return "identifier"
            case .oneOf(let xs): return xs.map { "`\($0)`" }.joined(separator: ", ")
            case .count(let r): return "\(n(r.lowerBound)) ... \(n(r.upperBound)) items"
            }
        }
    }

    public struct Field: Sendable {
        public var name: String
        public var type: FieldType
        public var required: Bool
        public var limits: [Limit]
        public init(_ name: String, _ type: FieldType, required: Bool = false, _ limits: [Limit] = []) {
            self.name = name; self.type = type; self.required = required; self.limits = limits
        }
    }

    public var command: CommandName
    public var fields: [Field]
    /// Groups of which exactly one member must be given.
    public var exactlyOne: [[String]]
    /// Pairs that may not be given together.
    public var exclusive: [[String]]
    /// Fields that need another one: `(field, needs)`.
    public var requires: [(String, String)]
    /// Read-only commands are answered afresh on a replayed request id (topics.md, Idempotency).
    public var readOnly: Bool

    init(_ command: CommandName, readOnly: Bool = false, _ fields: [Field], exactlyOne: [[String]] = [], exclusive: [[String]] = [],
         requires: [(String, String)] = []) {
        self.command = command; self.fields = fields; self.exactlyOne = exactlyOne; self.exclusive = exclusive
        self.requires = requires; self.readOnly = readOnly
    }

    public func field(_ name: String) -> Field? { fields.first { $0.name == name } }

    /// The schema of every command, in `CommandName` order.
    public static let all: [CommandSchema] = [
        CommandSchema(.accountCreate, [
            Field("id", .string, required: true, [.identifier]),
            Field("name", .string, required: true, [.length(1...200)]),
            Field("kind", .string, required: true, [.oneOf(Account.Kind.allCases.map(\.rawValue))]),
            Field("managedBy", .string, [.identifier]),
        ]),
        CommandSchema(.accountList, readOnly: true, []),
        CommandSchema(.accountShow, readOnly: true, [Field("id", .string, required: true, [.identifier])]),
        CommandSchema(.accountDelete, [Field("id", .string, required: true, [.identifier])]),
        CommandSchema(.operatorCreate, [
            Field("username", .string, required: true, [.identifier]),
            Field("password", .string, required: true, [.length(8...256)]),
            Field("account", .string, required: true, [.identifier]),
            Field("role", .string, [.oneOf(Commands.OperatorRole.allCases.map(\.rawValue))]),
        ]),
        CommandSchema(.operatorList, readOnly: true, [Field("account", .string, [.identifier])]),
        CommandSchema(.operatorPasswd, [
            Field("username", .string, required: true, [.identifier]),
            Field("password", .string, required: true, [.length(8...256)]),
        ]),
        CommandSchema(.operatorDelete, [Field("username", .string, required: true, [.identifier])]),
        CommandSchema(.deviceProvision, [
            Field("deviceIds", .stringArray, [.count(1...Commands.DeviceProvision.maxPerCommand), .identifier]),
            Field("prefix", .string, [.length(1...58)]),
            Field("count", .integer, [.range(1...Commands.DeviceProvision.maxPerCommand)]),
            Field("start", .integer, [.atLeast(0)]),
            Field("issueIdentity", .boolean),
        ], exactlyOne: [["deviceIds", "prefix"]], requires: [("count", "prefix"), ("start", "prefix"), ("prefix", "count")]),
        CommandSchema(.deviceList, readOnly: true, [
            Field("state", .string, [.oneOf(DeviceView.State.allCases.map(\.rawValue))]),
            Field("online", .boolean),
            Field("prefix", .string, [.length(1...64)]),
            Field("limit", .integer, [.range(1...1_000)]),
            Field("offset", .integer, [.atLeast(0)]),
        ]),
        CommandSchema(.deviceShow, readOnly: true, [Field("deviceId", .string, required: true, [.identifier])]),
        CommandSchema(.deviceRetire, [
            Field("deviceIds", .stringArray, required: true, [.count(1...Commands.DeviceRetire.maxPerCommand), .identifier]),
            Field("reason", .string, [.length(1...500)]),
        ]),
        CommandSchema(.deviceRebundle, [
            Field("deviceIds", .stringArray, required: true, [.count(1...Commands.DeviceRebundle.maxPerCommand), .identifier]),
        ]),
        CommandSchema(.transferRequest, [
            Field("to", .string, required: true, [.identifier]),
            Field("deviceIds", .stringArray, required: true, [.count(1...Transfer.maxDevicesPerRequest), .identifier]),
            Field("note", .string, [.length(0...500)]),
            Field("expiresIn", .integer, [.range(Commands.TransferRequest.expiryRange)]),
        ]),
        CommandSchema(.transferList, readOnly: true, [
            Field("direction", .string, [.oneOf(["incoming", "outgoing", "all"])]),
            Field("status", .string, [.oneOf(Transfer.Status.allCases.map(\.rawValue))]),
            Field("limit", .integer, [.range(1...1_000)]),
            Field("offset", .integer, [.atLeast(0)]),
        ]),
        CommandSchema(.transferShow, readOnly: true, [Field("transferId", .string, required: true, [.identifier])]),
        CommandSchema(.transferApprove, [
            Field("transferId", .string, required: true, [.identifier]),
            Field("deviceIds", .stringArray, [.count(1...Transfer.maxDevicesPerRequest), .identifier]),
            Field("action", .string, required: true, [.oneOf(["activate", "hold"])]),
            Field("profile", .string, [.identifier]),
        ]),
        CommandSchema(.transferReject, [
            Field("transferId", .string, required: true, [.identifier]),
            Field("deviceIds", .stringArray, [.count(1...Transfer.maxDevicesPerRequest), .identifier]),
            Field("reason", .string, required: true, [.length(1...500)]),
        ]),
        CommandSchema(.transferCancel, [Field("transferId", .string, required: true, [.identifier])]),
        CommandSchema(.profilePut, [
            Field("name", .string, required: true, [.identifier]),
            Field("settings", .object, required: true),
            Field("heartbeatInterval", .integer, [.range(DeviceConfig.heartbeatRange)]),
            Field("makeDefault", .boolean),
        ]),
        CommandSchema(.profileList, readOnly: true, []),
        CommandSchema(.profileShow, readOnly: true, [Field("name", .string, required: true, [.identifier])]),
        CommandSchema(.profileDelete, [Field("name", .string, required: true, [.identifier])]),
        CommandSchema(.configPush, [
            Field("deviceIds", .stringArray, [.count(1...Transfer.maxDevicesPerRequest), .identifier]),
            Field("all", .boolean, [.oneOf(["true"])]),
            Field("profile", .string, [.identifier]),
            Field("settings", .object),
            Field("heartbeatInterval", .integer, [.range(DeviceConfig.heartbeatRange)]),
        ], exactlyOne: [["deviceIds", "all"]], exclusive: [["profile", "settings"]]),
        CommandSchema(.configStatus, readOnly: true, [
            Field("deviceIds", .stringArray, [.count(1...Transfer.maxDevicesPerRequest), .identifier]),
        ]),
        CommandSchema(.eventsSince, readOnly: true, [
            Field("after", .integer, [.atLeast(0)]),
            Field("since", .string, [.length(20...35)]),
            Field("limit", .integer, [.range(1...1_000)]),
        ], exclusive: [["after", "since"]]),
        CommandSchema(.auditList, readOnly: true, [
            Field("limit", .integer, [.range(1...Commands.AuditList.maxLimit)]),
            Field("before", .integer, [.atLeast(1)]),
        ]),
    ]

    public static let byName: [CommandName: CommandSchema] = Dictionary(uniqueKeysWithValues: all.map { ($0.command, $0) })

    /// Checks `args` against the command's schema. Structure (unknown, missing or wrong-typed
    /// fields) is `malformed`; values outside their limits, exclusive or missing alternatives are
    /// `invalid_argument`. A `null` counts as absent. Messages start with the field's path.
    public func validate(_ args: [String: JSONValue]) throws(WireError) {
        let given = args.filter { $0.value != .null }
        for key in given.keys.sorted() where field(key) == nil {
            let known = fields.map(\.name)
            throw WireError(.malformed, "args.\(key.prefix(64)): unknown field; \(command.rawValue) takes " + (known.isEmpty ? "no arguments ({})" : known.joined(separator: ", ")))
        }
        for f in fields {
            guard let value = given[f.name] else {
                if f.required { throw WireError(.malformed, "args.\(f.name): required field is missing") }
                continue
            }
            try Self.check(value, against: f)
        }
        for group in exactlyOne {
            let present = group.filter { given[$0] != nil }
            if present.count > 1 { throw WireError(.invalidArgument, "give \(group.joined(separator: " or ")), not both") }
            if present.isEmpty { throw WireError(.invalidArgument, "give \(group.joined(separator: " or "))") }
        }
        for pair in exclusive where pair.allSatisfy({ given[$0] != nil }) {
            throw WireError(.invalidArgument, "give \(pair.joined(separator: " or ")), not both")
        }
        for (f, needs) in requires where given[f] != nil && given[needs] == nil {
            throw WireError(.invalidArgument, "args.\(f): goes with \(needs)")
        }
    }

    static func check(_ value: JSONValue, against f: Field) throws(WireError) {
        let path = "args.\(f.name)"
        switch (f.type, value) {
        case (.string, .string(let s)):
            for limit in f.limits {
                switch limit {
                case .identifier where !Identifier.isValid(s):
                    throw WireError(.invalidArgument, "\(path): '\(s.prefix(64))' is not an identifier ([A-Za-z0-9._-]{1,64})")
                case .length(let r) where !r.contains(s.count):
                    throw WireError(.invalidArgument, "\(path): \(s.count) characters; must be \(limit.documented)")
                case .oneOf(let xs) where !xs.contains(s):
                    throw WireError(.invalidArgument, "\(path): '\(s.prefix(64))' is not one of \(xs.joined(separator: ", "))")
                default: continue
                }
            }
        case (.integer, .number(let d)):
            guard d.rounded() == d, let n = Int(exactly: d) else { throw WireError(.malformed, "\(path): expected an integer, got \(d)") }
            for limit in f.limits {
                switch limit {
                case .range(let r) where !r.contains(n): throw WireError(.invalidArgument, "\(path): \(n) is outside \(limit.documented)")
                case .atLeast(let m) where n < m: throw WireError(.invalidArgument, "\(path): \(n) must be \(limit.documented)")
                default: continue
                }
            }
        case (.boolean, .bool(let b)):
            if f.limits.contains(.oneOf(["true"])), !b { throw WireError(.invalidArgument, "\(path): only true is meaningful; omit it otherwise") }
        case (.object, .object):
            return
        case (.stringArray, .array(let xs)):
            for limit in f.limits {
                if case .count(let r) = limit, !r.contains(xs.count) {
                    throw WireError(.invalidArgument, "\(path): \(xs.count) items; must be \(limit.documented)")
                }
            }
            for (i, x) in xs.enumerated() {
                guard case .string(let s) = x else { throw WireError(.malformed, "\(path)[\(i)]: expected a string") }
                if f.limits.contains(.identifier), !Identifier.isValid(s) {
                    throw WireError(.invalidArgument, "\(path)[\(i)]: '\(s.prefix(64))' is not an identifier ([A-Za-z0-9._-]{1,64})")
                }
            }
        default:
            throw WireError(.malformed, "\(path): expected \(f.type == .stringArray ? "an array of strings" : f.type == .integer ? "an integer" : f.type == .object ? "an object" : "a \(f.type.rawValue)")")
        }
    }
}
