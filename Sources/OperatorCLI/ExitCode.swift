import EscrowCore
import MQTT

/// escrowctl's exit statuses (sysexits.h values), one per kind of failure a script may want to handle.
public enum ExitCode: Int32, Sendable, CaseIterable {
    case ok = 0
    /// Anything not covered below (an internal error of escrowd, an unexpected reply).
    case failure = 1
    /// EX_USAGE: unknown command or option, missing or malformed arguments.
    case usage = 64
    /// EX_DATAERR: escrowd refused the arguments (invalid_argument, malformed, unsupported_schema, too_large).
    case dataError = 65
    /// EX_NOINPUT: not_found (an account, device or transfer that does not exist in the account).
    case notFound = 66
    /// EX_NOUSER: conflict (already exists, not eligible, already decided).
    case conflict = 67
    /// EX_UNAVAILABLE: the broker cannot be reached.
    case unavailable = 69
    /// EX_IOERR: escrowd cannot write its database (storage_unavailable); retry later.
    case storageUnavailable = 74
    /// EX_TEMPFAIL: no reply within --timeout (escrowd may be down).
    case timeout = 75
    /// EX_NOPERM: forbidden, or the broker refused the login or the topic.
    case refused = 77

    /// The exit status for an error code carried in a `CommandReply`.
    public init(_ code: ErrorCode) {
        switch code {
        case .invalidArgument, .malformed, .unsupportedSchema, .tooLarge: self = .dataError
        case .notFound: self = .notFound
        case .conflict: self = .conflict
        case .forbidden: self = .refused
        case .storageUnavailable: self = .storageUnavailable
        case .unknownCommand: self = .usage
        case .internalError: self = .failure
        }
    }

    /// The exit status for a failure of the MQTT connection itself.
    public init(_ kind: MQTTError.Kind) {
        switch kind {
        case .unreachable, .tls, .timeout, .disconnected: self = .unavailable
        case .refused, .notAuthorized: self = .refused
        case .invalidArgument: self = .usage
        case .protocolError, .library: self = .failure
        }
    }
}
