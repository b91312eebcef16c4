import Foundation
import EscrowCore
#if canImport(Glibc)
import Glibc
#endif

/// The agent's durable state: one JSON file, replaced atomically
/// (write a temp file, fsync it, rename over the old one, fsync the directory).
/// A power cut leaves either the old state or the new one, never a mix.
public struct StateFile: Sendable {
    public let path: String
    public init(directory: String) { path = directory + "/agent-state.json" }

    public func load(default factory: AgentState) throws -> AgentState {
        guard FileManager.default.fileExists(atPath: path) else { return factory }
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        do { return try WireCodec.decode(AgentState.self, from: Array(data), limit: 1 << 20) } catch {
            throw AgentError.corruptState("\(path): \(error)")
        }
    }

    public func save(_ state: AgentState) throws {
        try Self.writeAtomically(WireCodec.encode(state), to: path, mode: 0o600)
    }

    /// Writes `bytes` to a temp file created with `mode`, fsyncs it, renames it over `path`
    /// and fsyncs the directory.
    static func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw AgentError.storage("open \(tmp): \(String(cString: strerror(errno)))") }
        var ok = bytes.withUnsafeBytes { buf -> Bool in
            var off = 0
            while off < buf.count {
                let n = write(fd, buf.baseAddress! + off, buf.count - off)
                if n < 0 { if errno == EINTR { continue }; return false }
                off += n
            }
            return true
        }
        ok = ok && fchmod(fd, mode) == 0 && fsync(fd) == 0
        let err = errno
        close(fd)
        guard ok else { unlink(tmp); throw AgentError.storage("write \(tmp): \(String(cString: strerror(err)))") }
        guard rename(tmp, path) == 0 else { throw AgentError.storage("rename \(tmp): \(String(cString: strerror(errno)))") }
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }
}

public enum AgentError: Error, CustomStringConvertible, Sendable {
    case usage(String)
    case identity(String)
    case corruptState(String)
    case storage(String)
    case unreachable(String)
    case refused(String)

    public var description: String {
        switch self {
        case .usage(let m): "usage: \(m)"
        case .identity(let m): "identity: \(m)"
        case .corruptState(let m): "state file is corrupt: \(m); move it away to start from the factory state"
        case .storage(let m): "storage: \(m)"
        case .unreachable(let m): "broker unreachable: \(m)"
        case .refused(let m): "broker refused the login: \(m)"
        }
    }

    /// Distinct exit codes (sysexits.h) for the failures the agent cannot retry.
    public var exitCode: Int32 {
        switch self {
        case .usage: 64
        case .identity: 66
        case .corruptState: 65
        case .storage: 74
        case .unreachable: 69
        case .refused: 77
        }
    }
}
