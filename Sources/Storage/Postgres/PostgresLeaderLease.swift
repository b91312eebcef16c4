import CLibPQ
import POSIX
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One leader among the escrowd instances that share a PostgreSQL ledger (replicas): the holder of
/// a session-level advisory lock named for the ledger's schema. The background jobs that must run
/// once (expiry sweep, reconciliation, event retention, the broker's access files) run on the
/// leader only.
///
/// A thread of its own holds a connection of its own: it waits in `pg_advisory_lock` (the server
/// answers when the lock is free: when the leader's session ends, which for a killed process is
/// as soon as the kernel closes its socket), then watches that connection's socket; if the
/// connection is lost the lock is gone with it, leadership ends at once and the thread queues for
/// the lock again. No polling: both waits are the server's answer or the socket's hang-up.
public final class PostgresLeaderLease: Sendable {
    private let url: String
    private let state = Mutex<State>(State())
    private let wake: WakeSignal

    private struct State {
        var leader = false
        var stopped = false
        var backendPID: Int32 = 0
        /// Cancels the lock wait in progress.
        var cancel: Canceller?
        var changes: [@Sendable (Bool) -> Void] = []
        var notifications: [@Sendable () -> Void] = []
    }

    /// The channel a transaction that queued outbox rows notifies (payload: its schema), so the
    /// leader publishes what another escrowd committed at once (`Ledger.enqueue`).
    public static let outboxChannel = "escrowfleet_outbox"

    /// `url` as for the ledger (the same schema on `search_path`). Register the handlers, then `start()`.
    public init(url: String) throws {
        self.url = url
        wake = try WakeSignal()
    }

    /// Starts competing for leadership (once; the handlers registered before see every change).
    public func start() {
        let thread = Thread { [self] in self.run() }
        thread.name = "escrowd-leader"
        thread.start()
    }

    /// True while this process holds the lock.
    public var isLeader: Bool { state.withLock { $0.leader } }

    /// The server process of the lease's connection while it waits or leads (for tests and drills).
    public var backendPID: Int32 { state.withLock { $0.backendPID } }

    /// Called (on the lease's thread) each time leadership is gained (true) or lost (false).
    public func onChange(_ handler: @escaping @Sendable (Bool) -> Void) {
        state.withLock { $0.changes.append(handler) }
    }

    /// Called (on the lease's thread) while leading, when another escrowd's transaction queued
    /// outbox rows in this ledger (several commits may come as one call).
    public func onOutboxRows(_ handler: @escaping @Sendable () -> Void) {
        state.withLock { $0.notifications.append(handler) }
    }

    /// Gives leadership up (closing the connection ends the lock) and stops the thread.
    public func stop() {
        state.withLock { s in
            s.stopped = true
            s.cancel?.cancel()
        }
        wake.wake()
    }

    private func set(leader: Bool) {
        let handlers: [@Sendable (Bool) -> Void] = state.withLock { s in
            guard s.leader != leader else { return [] }
            s.leader = leader
            return s.changes
        }
        for h in handlers { h(leader) }
    }

    private var stopped: Bool { state.withLock { $0.stopped } }

    private func run() {
        BlockingWork.markThread()
        var backoffMs: Int32 = 100
        while !stopped {
            guard let conn = PQconnectdb(url), PQstatus(conn) == CONNECTION_OK else {
                // The server is unreachable: try again after a short, growing pause (a timed
                // wait on the wake signal, so stop() still ends it at once).
                waitForWakeOrTimeout(backoffMs)
                backoffMs = min(backoffMs * 2, 2_000)
                continue
            }
            backoffMs = 100
            let cancel = Canceller(PQgetCancel(conn))
            let pid = PQbackendPID(conn)
            state.withLock { $0.backendPID = pid; $0.cancel = cancel }
            // Blocks until the lock is ours (or the connection breaks, or stop() cancels it).
            let got = PQexec(conn, "SELECT pg_advisory_lock(hashtext('escrowfleet-leader'), hashtext(current_schema()))")
            let ok = got.map { PQresultStatus($0) == PGRES_TUPLES_OK } ?? false
            PQclear(got)
            state.withLock { $0.cancel = nil }
            if ok && !stopped, let schema = Self.listen(conn) {
                set(leader: true)
                watch(conn, schema: schema)
                set(leader: false)
            }
            PQfinish(conn)
            state.withLock { $0.backendPID = 0 }
        }
    }

    /// LISTENs on the outbox channel; returns the connection's schema (nil when the connection failed).
    private static func listen(_ conn: OpaquePointer) -> String? {
        guard let r = PQexec(conn, "LISTEN \(outboxChannel); SELECT current_schema()") else { return nil }
        defer { PQclear(r) }
        guard PQresultStatus(r) == PGRES_TUPLES_OK, PQntuples(r) == 1, let v = PQgetvalue(r, 0, 0) else { return nil }
        return String(cString: v)
    }

    /// Returns when the connection is lost or `stop()` is called; hands on outbox notifications.
    private func watch(_ conn: OpaquePointer, schema: String) {
        let fd = PQsocket(conn)
        while !stopped {
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.fd, events: Int16(POLLIN), revents: 0)]
            let r = poll(&fds, 2, -1)
            if r < 0 { if errno == EINTR { continue } else { return } }
            if fds[1].revents != 0 { wake.drain(); continue }  // stop() or a spurious wake: the loop re-checks
            if fds[0].revents != 0 {
                // Something from the server (a notice, or the end): consume it; a lost connection ends the lease.
                if PQconsumeInput(conn) == 0 || PQstatus(conn) != CONNECTION_OK { return }
                var rows = false
                while let n = PQnotifies(conn) {
                    if let extra = n.pointee.extra, String(cString: extra) == schema { rows = true }
                    PQfreemem(n)
                }
                if rows { for h in state.withLock({ $0.notifications }) { h() } }
            }
        }
    }

    private func waitForWakeOrTimeout(_ ms: Int32) { wake.wait(milliseconds: ms) }
}

/// libpq's cancel handle for one connection. `@unchecked Sendable`: `PQcancel` is documented as
/// safe to call from any thread (it opens a connection of its own); freed once, in deinit.
final class Canceller: @unchecked Sendable {
    private let handle: OpaquePointer?
    init(_ handle: OpaquePointer?) { self.handle = handle }
    deinit { PQfreeCancel(handle) }
    func cancel() {
        guard let handle else { return }
        var buffer = [CChar](repeating: 0, count: 256)
        _ = PQcancel(handle, &buffer, Int32(buffer.count))
    }
}
