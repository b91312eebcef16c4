import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A child started with `posix_spawn` and reaped by its own thread.
///
/// Not Foundation's `Process`: on Linux it passes the spawning thread's signal
/// mask to the child, and Dispatch/test-runner threads block SIGHUP and SIGTERM.
/// mosquitto never unblocks them, so it would ignore reload and stop requests
/// (observed: SigBlk 0x4a03 in /proc/PID/status). Here the child gets an empty
/// mask and default dispositions.
final class ChildProcess: Sendable {
    let processIdentifier: pid_t
    private struct Exit { var status: Int32? }
    private let exit = Mutex(Exit())

    /// Spawns `executable args`, stdout and stderr appended to `outputPath` (or /dev/null).
    /// `onExit` runs on the reaper thread with the exit code, or the signal number if killed.
    init(executable: String, arguments: [String], outputPath: String?,
         onExit: @escaping @Sendable (ChildProcess) -> Void) throws(BrokerError) {
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t(), all = sigset_t()
        sigemptyset(&empty)
        sigfillset(&all)
        sigdelset(&all, SIGKILL); sigdelset(&all, SIGSTOP)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attr, argv, environ)
        guard rc == 0 else { throw BrokerError.launchFailed("\(executable): \(String(cString: strerror(rc)))") }
        processIdentifier = pid
        let child = pid
        let reaper = Thread { [self] in
            var status: Int32 = 0
            while waitpid(child, &status, 0) < 0 && errno == EINTR {}
            let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : status & 0x7f
            exit.withLock { $0.status = code }
            onExit(self)
        }
        reaper.name = "mosquitto-reaper-\(child)"
        reaper.start()
    }

    var isRunning: Bool { exit.withLock { $0.status == nil } }
    /// Exit code, or the signal number when killed by a signal; -1 while running.
    var terminationStatus: Int32 { exit.withLock { $0.status ?? -1 } }
}
