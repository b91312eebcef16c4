import Foundation
import Synchronization
import CSystem
#if canImport(Glibc)
import Glibc
#endif

/// A child process started with a clean signal state.
///
/// Foundation's `Process` passes on the spawning thread's signal mask, and Swift's worker
/// threads block every asynchronous signal: a `mosquitto` started that way never sees
/// SIGHUP (no reload) or SIGTERM (no save of its persistence file at shutdown).
/// `posix_spawn` with an empty mask and default dispositions avoids both.
public final class ChildProcess: Sendable {
    public let pid: pid_t
    public let executable: String
    private let status = Mutex<Int32?>(nil)
    /// Readable once the process has exited (pidfd_open, Linux 5.3): every wait is a poll(2) on it,
    /// never a sleep loop. -1 only where the kernel has no pidfd (then waits fall back to polling).
    private let pidfd: Int32
    /// Not our child (adopted): its exit status belongs to its real parent and reads as -1.
    public let adopted: Bool

    private init(pid: pid_t, executable: String, adopted: Bool) {
        self.pid = pid
        self.executable = executable
        self.adopted = adopted
        let fd = escrow_pidfd_open(pid)
        if fd >= 0 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        pidfd = fd
    }

    deinit { if pidfd >= 0 { close(pidfd) } }

    /// The pidfd (readable once the process has exited), to poll next to other descriptors; -1
    /// where the kernel has none. Owned by this value: do not close it.
    public var exitDescriptor: Int32 { pidfd }

    /// A running process this one did not start (a broker left by a crashed supervisor): signals
    /// reach it and its exit is seen through a pidfd, but its exit status belongs to its real
    /// parent, so it reads as -1. Nil when `pid` is not running.
    public static func adopt(pid: pid_t, executable: String) -> ChildProcess? {
        let p = ChildProcess(pid: pid, executable: executable, adopted: true)
        guard p.pidfd >= 0 else { return nil }
        return p.isRunning ? p : nil
    }

    /// Whether the process has exited, waiting up to `timeoutMs` (-1: until it does).
    private func pidfdReadable(timeoutMs: Int32) -> Bool {
        var p = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
        var r: Int32
        repeat { r = poll(&p, 1, timeoutMs) } while r < 0 && errno == EINTR
        return r > 0
    }

    /// Starts `executable` with `arguments`; stdout and stderr go to files (appended) or /dev/null.
    /// `inheritOutput` keeps the parent's stdout and stderr (worker processes that print alongside it).
    public static func spawn(_ executable: String, _ arguments: [String], stdout: String? = nil, stderr: String? = nil,
                             inheritOutput: Bool = false, environment: [String: String]? = nil) throws -> ChildProcess {
        try spawn(executable, arguments, stdout: stdout, stderr: stderr, inheritOutput: inheritOutput,
                  environment: environment, directory: nil)
    }

    /// The same, started in `directory` (nil: the parent's working directory).
    public static func spawn(_ executable: String, _ arguments: [String], stdout: String?, stderr: String?,
                             inheritOutput: Bool = false, environment: [String: String]?,
                             directory: String?) throws -> ChildProcess {
        BlockingWork.check("spawn \(executable)")
        guard access(executable, X_OK) == 0 else { throw SpawnError(executable: executable, errno: errno) }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t(), all = sigset_t()
        sigemptyset(&empty)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attr, 0) // own process group: a terminal's Ctrl-C reaches the parent only

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if !inheritOutput {
            posix_spawn_file_actions_addopen(&actions, 1, stdout ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o644)
            posix_spawn_file_actions_addopen(&actions, 2, stderr ?? stdout ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o644)
        }

        Self.closeInheritedDescriptors(&actions)
        if let directory {
            guard escrow_spawn_addchdir(&actions, directory) == 0 else { throw SpawnError(executable: executable, errno: errno) }
        }

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        let env = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in env { free(p) } }
        var pid = pid_t()
        let rc = posix_spawn(&pid, executable, &actions, &attr, argv, env)
        guard rc == 0 else { throw SpawnError(executable: executable, errno: rc) }
        return ChildProcess(pid: pid, executable: executable, adopted: false)
    }

    /// Closes every descriptor above stderr in the child: an inherited copy of another child's pipe
    /// or a listening socket would otherwise outlive its owner.
    private static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
        _ = escrow_spawn_addclosefrom(&actions, 3)
    }

    public func signal(_ sig: Int32) {
        guard exitStatus == nil else { return }
        kill(pid, sig)
    }

    /// Calls `handler` with the exit status when the process ends, from a thread that waits on the
    /// pidfd and then reaps it.
    public func onExit(_ handler: @escaping @Sendable (Int32) -> Void) {
        BlockingWork.detach("wait-\(pid)") { [self] in handler(waitUntilExit()) }
    }

    /// The exit status once the process has ended (reaps it without blocking), else nil.
    public var exitStatus: Int32? {
        status.withLock { s in
            if let s { return s }
            if adopted {
                if pidfdReadable(timeoutMs: 0) { s = -1 }
                return s
            }
            var raw: Int32 = 0
            let r = waitpid(pid, &raw, WNOHANG)
            if r == pid { s = Self.decode(raw) } else if r < 0 && errno == ECHILD { s = -1 }
            return s
        }
    }

    public var isRunning: Bool { exitStatus == nil }

    /// Blocks until the process ends; its exit status.
    @discardableResult
    public func waitUntilExit() -> Int32 {
        BlockingWork.check("wait for process \(pid)")
        while true {
            if let s = exitStatus { return s }
            if pidfd >= 0 { _ = pidfdReadable(timeoutMs: -1) } else { usleep(5_000) }
        }
    }

    /// Waits up to `timeout` for the process to end; true if it did.
    @discardableResult
    public func waitForExit(timeout: Duration) -> Bool {
        BlockingWork.check("wait for process \(pid)")
        let deadline = ContinuousClock.now + timeout
        while exitStatus == nil {
            let left = deadline - ContinuousClock.now
            if left <= .zero { return false }
            let ms = Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
            if pidfd >= 0 { _ = pidfdReadable(timeoutMs: ms) } else { usleep(5_000) }
        }
        return true
    }

    /// SIGTERM, then SIGKILL if it has not ended after `grace`.
    public func terminate(grace: Duration = .seconds(5)) {
        signal(SIGTERM)
        if !waitForExit(timeout: grace) {
            signal(SIGKILL)
            waitForExit(timeout: .seconds(5))
        }
    }

    private static func decode(_ raw: Int32) -> Int32 {
        let sig = raw & 0x7f
        return sig == 0 ? (raw >> 8) & 0xff : 128 + sig
    }
}

public struct SpawnError: Error, CustomStringConvertible, Sendable {
    public let executable: String
    public let errno: Int32
    public var description: String { "cannot start \(executable): \(String(cString: strerror(errno)))" }
}
