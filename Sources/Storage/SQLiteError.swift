import CSQLite

/// An error reported by SQLite, or by this wrapper when a call is misused.
///
/// `code` is the extended result code (extended codes are enabled on every connection), so
/// `code & 0xFF` is the primary code: `19` is SQLITE_CONSTRAINT, `2067` is SQLITE_CONSTRAINT_UNIQUE.
public struct SQLiteError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Extended result code; `primaryCode` is its low byte.
    public let code: Int32
    /// SQLite's message for this failure (`sqlite3_errmsg`), or `sqlite3_errstr(code)` without a connection.
    public let message: String
    /// The SQL that failed, when the failure belongs to a statement.
    public let sql: String?

    public init(code: Int32, message: String, sql: String? = nil) {
        self.code = code
        self.message = message
        self.sql = sql
    }

    /// The only place where a C result code becomes a Swift error.
    ///
    /// The caller must hold the connection's lock, so that `sqlite3_errmsg` still describes this
    /// failure and not one from another thread.
    init(resultCode: Int32, connection: OpaquePointer?, sql: String?) {
        var code = resultCode
        var message: String?
        if let connection {
            // The connection's message is only about this failure if its error code agrees.
            let extended = sqlite3_extended_errcode(connection)
            if extended & 0xFF == resultCode & 0xFF {
                code = extended
                if let text = sqlite3_errmsg(connection) { message = String(cString: text) }
            }
        }
        self.init(
            code: code,
            message: message ?? sqlite3_errstr(code).map { String(cString: $0) } ?? "unknown error",
            sql: sql
        )
    }

    /// Throws unless `resultCode` is SQLITE_OK (or SQLITE_ROW / SQLITE_DONE).
    static func check(_ resultCode: Int32, connection: OpaquePointer?, sql: String? = nil) throws(SQLiteError) {
        switch resultCode {
        case SQLITE_OK, SQLITE_ROW, SQLITE_DONE: return
        default: throw SQLiteError(resultCode: resultCode, connection: connection, sql: sql)
        }
    }

    /// Misuse detected by the wrapper before SQLite saw it (wrong parameter count, several statements...).
    static func misuse(_ message: String, sql: String?) -> SQLiteError {
        SQLiteError(code: SQLITE_MISUSE, message: message, sql: sql)
    }

    /// The primary result code (`SQLITE_CONSTRAINT`, `SQLITE_FULL`, ...).
    public var primaryCode: Int32 { code & 0xFF }
    /// The database or disk is full (SQLITE_FULL), including `PRAGMA max_page_count` being reached.
    public var isFull: Bool { primaryCode == SQLITE_FULL }
    /// A write was attempted on a read-only connection or file (SQLITE_READONLY).
    public var isReadOnly: Bool { primaryCode == SQLITE_READONLY }
    /// The operating system reported an I/O error (SQLITE_IOERR and its extended codes).
    public var isIOError: Bool { primaryCode == SQLITE_IOERR }
    /// Another connection held a lock longer than the busy timeout (SQLITE_BUSY).
    public var isBusy: Bool { primaryCode == SQLITE_BUSY }
    /// A UNIQUE, NOT NULL, CHECK, FOREIGN KEY or PRIMARY KEY constraint was violated.
    public var isConstraint: Bool { primaryCode == SQLITE_CONSTRAINT }
    /// The file is not a database or is damaged (SQLITE_CORRUPT / SQLITE_NOTADB).
    public var isCorrupt: Bool { primaryCode == SQLITE_CORRUPT || primaryCode == SQLITE_NOTADB }

    public var description: String {
        let name = sqlite3_errstr(code).map { String(cString: $0) } ?? "error"
        var text = "SQLite error \(code) (\(name)): \(message)"
        if let sql { text += " [SQL: \(sql)]" }
        return text
    }
}
