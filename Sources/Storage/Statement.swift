import CSQLite

/// A prepared statement; the only owner of its `sqlite3_stmt`, finalized in `deinit`.
///
/// Statements belong to one `Database` and are only used while that database's lock is held.
final class Statement {
    let pointer: OpaquePointer
    let sql: String
    /// Set while a caller is stepping it, so a re-entrant use of the same SQL gets its own statement.
    var inUse = false
    private var columnIndex: ColumnIndex?

    /// Prepares exactly one statement; empty SQL or trailing statements are refused.
    init(connection: OpaquePointer, sql: String, persistent: Bool) throws(SQLiteError) {
        var statement: OpaquePointer?
        let flags = persistent ? UInt32(SQLITE_PREPARE_PERSISTENT) : 0
        let result: Result<OpaquePointer, SQLiteError> = sql.withCString { text in
            var tail: UnsafePointer<CChar>?
            let rc = sqlite3_prepare_v3(connection, text, -1, flags, &statement, &tail)
            guard rc == SQLITE_OK else {
                return .failure(SQLiteError(resultCode: rc, connection: connection, sql: sql))
            }
            guard let statement else {
                return .failure(.misuse("no SQL statement to prepare", sql: sql))
            }
            if let tail, tail.pointee != 0 {
                // Whitespace and comments are fine; another statement would be silently ignored.
                var extra: OpaquePointer?
                sqlite3_prepare_v2(connection, tail, -1, &extra, nil)
                if let extra {
                    sqlite3_finalize(extra)
                    sqlite3_finalize(statement)
                    return .failure(.misuse(
                        "several statements given where one is expected; use executeScript for scripts",
                        sql: sql))
                }
            }
            return .success(statement)
        }
        pointer = try result.get()
        self.sql = sql
    }

    deinit { sqlite3_finalize(pointer) }

    func bind(_ parameters: [SQLValue]) throws(SQLiteError) {
        let expected = Int(sqlite3_bind_parameter_count(pointer))
        guard expected == parameters.count else {
            throw .misuse("statement has \(expected) parameter(s) but \(parameters.count) value(s) were given", sql: sql)
        }
        for (offset, value) in parameters.enumerated() {
            let index = Int32(offset + 1)
            let rc: Int32
            switch value {
            case .null:
                rc = sqlite3_bind_null(pointer, index)
            case .integer(let v):
                rc = sqlite3_bind_int64(pointer, index, v)
            case .real(let v):
                rc = sqlite3_bind_double(pointer, index, v)
            case .text(let v) where v.isEmpty:
                // An empty buffer has no base address, and a NULL pointer would bind SQL NULL.
                rc = sqlite3_bind_text(pointer, index, "", 0, csqlite_transient())
            case .text(let v):
                // Bound by length so embedded NULs survive.
                var copy = v
                rc = copy.withUTF8 { bytes in
                    bytes.withMemoryRebound(to: CChar.self) { chars in
                        sqlite3_bind_text64(
                            pointer, index, chars.baseAddress, sqlite3_uint64(chars.count),
                            csqlite_transient(), UInt8(SQLITE_UTF8))
                    }
                }
            case .blob(let v):
                if v.isEmpty {
                    rc = sqlite3_bind_zeroblob(pointer, index, 0)
                } else {
                    rc = v.withUnsafeBytes { bytes in
                        sqlite3_bind_blob64(pointer, index, bytes.baseAddress, sqlite3_uint64(bytes.count), csqlite_transient())
                    }
                }
            }
            try SQLiteError.check(rc, connection: sqlite3_db_handle(pointer), sql: sql)
        }
    }

    /// Advances; true when a row is available.
    func step() throws(SQLiteError) -> Bool {
        let rc = sqlite3_step(pointer)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw SQLiteError(resultCode: rc, connection: sqlite3_db_handle(pointer), sql: sql)
        }
    }

    /// Makes the statement ready for its next use; errors were already reported by `step`.
    /// Column names are forgotten too: a schema change may rename them before the next use.
    func reset() {
        sqlite3_reset(pointer)
        sqlite3_clear_bindings(pointer)
        columnIndex = nil
    }

    /// The current row; column names are read once per execution and shared by its rows.
    func currentRow() -> Row {
        let count = Int(sqlite3_column_count(pointer))
        let columns: ColumnIndex
        if let cached = columnIndex {
            columns = cached
        } else {
            columns = ColumnIndex(names: (0..<count).map { String(cString: sqlite3_column_name(pointer, Int32($0))) })
            columnIndex = columns
        }
        var values: [SQLValue] = []
        values.reserveCapacity(count)
        for column in 0..<Int32(count) { values.append(value(at: column)) }
        return Row(columnIndex: columns, values: values)
    }

    func value(at column: Int32) -> SQLValue {
        switch sqlite3_column_type(pointer, column) {
        case SQLITE_INTEGER:
            return .integer(sqlite3_column_int64(pointer, column))
        case SQLITE_FLOAT:
            return .real(sqlite3_column_double(pointer, column))
        case SQLITE_TEXT:
            guard let text = sqlite3_column_text(pointer, column) else { return .text("") }
            let length = Int(sqlite3_column_bytes(pointer, column))
            return .text(String(decoding: UnsafeBufferPointer(start: text, count: length), as: UTF8.self))
        case SQLITE_BLOB:
            let length = Int(sqlite3_column_bytes(pointer, column))
            guard length > 0, let bytes = sqlite3_column_blob(pointer, column) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: bytes, count: length)))
        default:
            return .null
        }
    }
}
