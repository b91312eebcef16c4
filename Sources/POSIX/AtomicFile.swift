import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Replaces a file atomically: write a temp file created with `mode`, fsync it, rename it over
/// the target, fsync the directory. A crash or power cut leaves the old file or the new one,
/// never a mix; a reader (mosquitto on SIGHUP, an agent at boot) never sees half a file.
public enum AtomicFile {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let operation: String
        public let path: String
        public let errno: Int32
        public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
    }

    public static func write(_ bytes: [UInt8], to path: String, mode: mode_t) throws(Failure) {
        BlockingWork.check("atomic write of \(path)")
        let tmp = path + ".tmp.\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw Failure(operation: "open", path: tmp, errno: errno) }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                let e = errno; close(fd); unlink(tmp)
                throw Failure(operation: "write", path: tmp, errno: e)
            }
            offset += n
        }
        // The umask may have narrowed the mode, or the file pre-existed.
        guard fchmod(fd, mode) == 0, fsync(fd) == 0 else {
            let e = errno; close(fd); unlink(tmp)
            throw Failure(operation: "fsync", path: tmp, errno: e)
        }
        close(fd)
        guard rename(tmp, path) == 0 else {
            let e = errno; unlink(tmp)
            throw Failure(operation: "rename", path: tmp, errno: e)
        }
        let dfd = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    public static func write(_ text: String, to path: String, mode: mode_t) throws(Failure) {
        try write(Array(text.utf8), to: path, mode: mode)
    }
}
