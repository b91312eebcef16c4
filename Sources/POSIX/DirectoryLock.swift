import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An exclusive `flock` on `DIR/NAME` held for the life of the process (or until `release`): two
/// escrowd processes on one data directory would fight over its broker and its ledger. The file
/// holds the owner's pid, so the refusal can name it. The kernel drops the lock when the process
/// dies, so a crash never leaves a stale lock behind.
public final class DirectoryLock: @unchecked Sendable {
    public let path: String
    private var fd: Int32

    public struct Held: Error, CustomStringConvertible, Sendable {
        public let path: String
        public let owner: Int32?
        public var description: String {
            "another escrowd\(owner.map { " (pid \($0))" } ?? "") is using this data directory (\(path) is locked); stop it first, or give this one its own --data"
        }
    }

    public init(directory: String, name: String = "escrowd.lock") throws {
        path = directory + "/" + name
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Held(path: path, owner: nil) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let owner = (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            close(fd)
            fd = -1
            throw Held(path: path, owner: owner)
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    public func release() {
        guard fd >= 0 else { return }
        close(fd)
        fd = -1
    }

    deinit { release() }
}
