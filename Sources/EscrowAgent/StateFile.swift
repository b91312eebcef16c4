import Foundation
import POSIX
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

    /// Writes `bytes` atomically (temp file, fsync, rename, fsync of the directory).
    static func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t) throws {
        do { try AtomicFile.write(bytes, to: path, mode: mode) } catch {
            throw AgentError.storage(error.description)
        }
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
