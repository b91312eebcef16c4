/// An error reported by PostgreSQL (with its SQLSTATE) or by libpq (connection trouble).
public struct PostgresError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The five-character SQLSTATE ("23505" unique violation, "08006" connection failure, ...);
    /// "08000" when libpq itself failed without one.
    public let sqlState: String
    public let message: String
    public let sql: String?

    public init(sqlState: String, message: String, sql: String? = nil) {
        self.sqlState = sqlState
        self.message = message
        self.sql = sql
    }

    /// Class 23: integrity constraint violation.
    public var isConstraint: Bool { sqlState.hasPrefix("23") }
    /// The server could not take the change now: connection lost (08), out of resources (53),
    /// shutting down or crashed (57P), read only (25006), a serialization failure or deadlock (40).
    public var isUnavailable: Bool {
        sqlState.hasPrefix("08") || sqlState.hasPrefix("53") || sqlState.hasPrefix("57P") || sqlState == "25006" || sqlState.hasPrefix("40")
    }
    /// The transaction was aborted by an earlier error and must be rolled back (25P02).
    public var isInFailedTransaction: Bool { sqlState == "25P02" }

    public var description: String {
        var text = "PostgreSQL error \(sqlState): \(message)"
        if let sql { text += " [SQL: \(sql)]" }
        return text
    }
}

extension PostgresError: StorageFailure {}
