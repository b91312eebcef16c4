import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A child process started with `posix_spawn`, with an empty signal mask and default dispositions.
///
/// Foundation's `Process` passes on the spawning thread's signal mask; Dispatch and Swift concurrency
/// threads block SIGTERM/SIGHUP/SIGINT/SIGUSR*, so a broker started from a test would ignore SIGTERM
/// and SIGHUP. This type resets them, and reaps the child itself with `waitpid`.
public final class ChildProcess: Sendable {
    public let pid: pid_t
    public let executable: String
    private let exitStatus = Mutex<Int32?>(nil)

    /// Starts `executable arguments...` with stdin from /dev/null and stdout+stderr appended to `outputPath`.
    public init(_ executable: String, _ arguments: [String], outputPath: String) throws {
        self.executable = executable
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        Self.closeInheritedDescriptors(&actions)

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard rc == 0 else {
            throw TestSupportError("posix_spawn \(executable) failed: \(String(cString: strerror(rc)))")
        }
        self.pid = pid
    }

    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32

    /// Keeps the test process's sockets and pipes out of the child: a broker holding a copy of a client's
    /// socket would keep a "killed" connection alive, and a pipe copy would stop a reader seeing EOF.
    private static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
        // glibc >= 2.34 has posix_spawn_file_actions_addclosefrom_np, which Swift's Glibc module hides.
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
            let addCloseFrom = unsafeBitCast(symbol, to: AddCloseFrom.self)
            if addCloseFrom(&actions, 3) == 0 { return }
        }
        // Fallback: close what is open now (glibc ignores EBADF for fds closed in the meantime).
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for fd in open.compactMap(Int32.init) where fd > 2 {
            posix_spawn_file_actions_addclose(&actions, fd)
        }
    }

    /// Reaps the child if it has exited; true while it still runs.
    public var isRunning: Bool {
        exitStatus.withLock { status in
            if status != nil { return false }
            var raw: Int32 = 0
            let rc = waitpid(pid, &raw, WNOHANG)
            if rc == pid || (rc < 0 && errno == ECHILD) {
                status = raw
                return false
            }
            return true
        }
    }

    /// The raw wait status once exited.
    public var terminationStatus: Int32? {
        _ = isRunning
        return exitStatus.withLock { $0 }
    }

    public func signal(_ signal: Int32) {
        if isRunning { _ = kill(pid, signal) }
    }

    /// Waits (polling waitpid) until the child exits or `timeout` passes; true if it exited.
    @discardableResult
    public func wait(timeout: Duration) -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while isRunning {
            if clock.now >= deadline { return false }
            usleep(2_000)
        }
        return true
    }

    /// SIGTERM, then SIGKILL after `grace`; returns when the child is reaped.
    public func terminate(grace: Duration = .seconds(5)) {
        signal(SIGTERM)
        if !wait(timeout: grace) {
            signal(SIGKILL)
            wait(timeout: .seconds(30))
        }
    }

    deinit {
        if isRunning {
            _ = kill(pid, SIGKILL)
            wait(timeout: .seconds(10))
        }
    }
}
