import Foundation
import Synchronization
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
    private let watched = Mutex(false)

    private init(pid: pid_t, executable: String) { self.pid = pid; self.executable = executable }

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
            // glibc >= 2.29; hidden by Swift's Glibc module like addclosefrom_np.
            guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addchdir_np") else {
                throw SpawnError(executable: executable, errno: ENOSYS)
            }
            let addChdir = unsafeBitCast(symbol, to: AddChdir.self)
            guard addChdir(&actions, directory) == 0 else { throw SpawnError(executable: executable, errno: errno) }
        }

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        let env = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in env { free(p) } }
        var pid = pid_t()
        let rc = posix_spawn(&pid, executable, &actions, &attr, argv, env)
        guard rc == 0 else { throw SpawnError(executable: executable, errno: rc) }
        return ChildProcess(pid: pid, executable: executable)
    }

    private typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?) -> Int32

    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32

    /// Closes every descriptor above stderr in the child: an inherited copy of another child's pipe
    /// or a listening socket would otherwise outlive its owner.
    private static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
        // glibc >= 2.34 has posix_spawn_file_actions_addclosefrom_np, which Swift's Glibc module hides.
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
            let addCloseFrom = unsafeBitCast(symbol, to: AddCloseFrom.self)
            if addCloseFrom(&actions, 3) == 0 { return }
        }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for fd in open.compactMap(Int32.init) where fd > 2 { posix_spawn_file_actions_addclose(&actions, fd) }
    }

    public func signal(_ sig: Int32) {
        guard exitStatus == nil else { return }
        kill(pid, sig)
    }

    /// Calls `handler` with the exit status when the process ends (from a dedicated thread that
    /// reaps it). Call at most once, right after spawning.
    public func onExit(_ handler: @escaping @Sendable (Int32) -> Void) {
        watched.withLock { $0 = true }
        let pid = self.pid
        let thread = Thread { [self] in
            var raw: Int32 = 0
            var r: pid_t
            repeat { r = waitpid(pid, &raw, 0) } while r < 0 && errno == EINTR
            let code = r == pid ? Self.decode(raw) : -1
            status.withLock { $0 = code }
            handler(code)
        }
        thread.name = "wait-\(pid)"
        thread.start()
    }

    /// The exit status once the process has ended (reaps it without blocking), else nil.
    public var exitStatus: Int32? {
        if watched.withLock({ $0 }) { return status.withLock { $0 } }
        return status.withLock { s in
            if let s { return s }
            var raw: Int32 = 0
            let r = waitpid(pid, &raw, WNOHANG)
            if r == pid { s = Self.decode(raw); return s }
            if r < 0 && errno == ECHILD { s = -1; return s }
            return nil
        }
    }

    public var isRunning: Bool { exitStatus == nil }

    /// Waits up to `timeout` for the process to end; true if it did.
    @discardableResult
    public func waitForExit(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while exitStatus == nil {
            if ContinuousClock.now >= deadline { return false }
            usleep(5_000)
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
