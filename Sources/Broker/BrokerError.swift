/// Failures of broker configuration and supervision.
public enum BrokerError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A user, device or account name that cannot be written into mosquitto files.
    case invalidName(String, reason: String)
    /// A file could not be written.
    case file(operation: String, path: String, errno: Int32)
    /// The mosquitto executable could not be launched.
    case launchFailed(String)
    /// mosquitto exited before its ports accepted; `output` is the tail of its stderr/log.
    case exitedDuringStartup(status: Int32, output: String)
    /// The ports did not accept within the timeout.
    case notReady(String)
    /// The broker is not running (reload on a stopped broker).
    case notRunning
    /// The supervised broker kept exiting: the supervisor stopped relaunching it.
    case gaveUp(attempts: Int, output: String)

    public var description: String {
        switch self {
        case .invalidName(let n, let r): return "invalid name '\(n.prefix(80))' for broker files: \(r)"
        case .file(let op, let p, let e): return "\(op) \(p) failed: errno \(e)"
        case .launchFailed(let m): return "cannot launch mosquitto: \(m)"
        case .exitedDuringStartup(let s, let o): return "mosquitto exited with status \(s) during startup; check the config. Output:\n\(o)"
        case .notReady(let m): return "mosquitto did not become ready: \(m)"
        case .notRunning: return "mosquitto is not running"
        case .gaveUp(let n, let o):
            return "mosquitto exited \(n + 1) times in a row; not relaunching it again. Fix the cause (its log follows) and start escrowd again. Output:\n\(o)"
        }
    }
}
