/// One result row: values in column order, addressable by index or by column name.
public struct Row: Sendable, Equatable, CustomStringConvertible {
    let columnIndex: ColumnIndex
    /// The values in column order.
    public let values: [SQLValue]

    init(columnIndex: ColumnIndex, values: [SQLValue]) {
        self.columnIndex = columnIndex
        self.values = values
    }

    /// Column names in result order (as named by `AS` or by SQLite).
    public var columns: [String] { columnIndex.names }
    public var count: Int { values.count }

    /// The value at a column position; traps when out of range, like an array.
    public subscript(index: Int) -> SQLValue { values[index] }
    /// The value of a column, or nil when the row has no such column.
    public subscript(column: String) -> SQLValue? {
        columnIndex.position(of: column).map { values[$0] }
    }

    /// The value of a column; throws `RowError.noSuchColumn` when there is none.
    public func value(_ column: String) throws(RowError) -> SQLValue {
        guard let position = columnIndex.position(of: column) else {
            throw .noSuchColumn(column, available: columns)
        }
        return values[position]
    }

    public func int(_ column: String) throws(RowError) -> Int { try required(column, "integer") { $0.intValue } }
    public func int64(_ column: String) throws(RowError) -> Int64 { try required(column, "integer") { $0.int64Value } }
    public func double(_ column: String) throws(RowError) -> Double { try required(column, "real") { $0.doubleValue } }
    public func string(_ column: String) throws(RowError) -> String { try required(column, "text") { $0.stringValue } }
    public func blob(_ column: String) throws(RowError) -> [UInt8] { try required(column, "blob") { $0.blobValue } }
    /// Integers 0 / non-zero read as false / true.
    public func bool(_ column: String) throws(RowError) -> Bool { try required(column, "boolean integer") { $0.boolValue } }

    public func optionalInt(_ column: String) throws(RowError) -> Int? { try optional(column, "integer") { $0.intValue } }
    public func optionalInt64(_ column: String) throws(RowError) -> Int64? { try optional(column, "integer") { $0.int64Value } }
    public func optionalDouble(_ column: String) throws(RowError) -> Double? { try optional(column, "real") { $0.doubleValue } }
    public func optionalString(_ column: String) throws(RowError) -> String? { try optional(column, "text") { $0.stringValue } }
    public func optionalBlob(_ column: String) throws(RowError) -> [UInt8]? { try optional(column, "blob") { $0.blobValue } }
    public func optionalBool(_ column: String) throws(RowError) -> Bool? { try optional(column, "boolean integer") { $0.boolValue } }

    private func required<T>(_ column: String, _ expected: String, _ convert: (SQLValue) -> T?) throws(RowError) -> T {
        let value = try value(column)
        guard let converted = convert(value) else {
            throw .typeMismatch(column: column, expected: expected, actual: value)
        }
        return converted
    }

    private func optional<T>(_ column: String, _ expected: String, _ convert: (SQLValue) -> T?) throws(RowError) -> T? {
        let value = try value(column)
        if value == .null { return nil }
        guard let converted = convert(value) else {
            throw .typeMismatch(column: column, expected: expected, actual: value)
        }
        return converted
    }

    public var description: String {
        "[" + zip(columns, values).map { "\($0): \($1)" }.joined(separator: ", ") + "]"
    }
}

/// Reading a row failed: the column is missing or holds another kind of value.
public enum RowError: Error, Sendable, Equatable, CustomStringConvertible {
    case noSuchColumn(String, available: [String])
    case typeMismatch(column: String, expected: String, actual: SQLValue)

    public var description: String {
        switch self {
        case .noSuchColumn(let name, let available):
            "no column named '\(name)' in the row (columns: \(available.joined(separator: ", ")))"
        case .typeMismatch(let column, let expected, let actual):
            "column '\(column)' holds \(actual), expected \(expected)"
        }
    }
}

/// Column names of one result set, shared by all its rows.
final class ColumnIndex: Sendable, Equatable {
    let names: [String]
    private let exact: [String: Int]
    private let folded: [String: Int]

    init(names: [String]) {
        self.names = names
        var exact: [String: Int] = [:]
        var folded: [String: Int] = [:]
        for (position, name) in names.enumerated() {
            // With duplicate names (joins), the first column wins, as in SQLite's own lookups.
            if exact[name] == nil { exact[name] = position }
            if folded[name.lowercased()] == nil { folded[name.lowercased()] = position }
        }
        self.exact = exact
        self.folded = folded
    }

    /// Exact match first, then case-insensitive, since SQL identifiers are case-insensitive.
    func position(of name: String) -> Int? { exact[name] ?? folded[name.lowercased()] }

    static func == (lhs: ColumnIndex, rhs: ColumnIndex) -> Bool { lhs === rhs || lhs.names == rhs.names }
}
