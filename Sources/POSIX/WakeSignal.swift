import CSystem
#if canImport(Glibc)
import Glibc
#endif

/// An eventfd that one thread waits on and any thread bumps: how a loop thread blocked in `poll`
/// is woken at once (new output to write, a stop request) instead of at its timeout.
public final class WakeSignal: Sendable {
    /// Poll it for `POLLIN` next to other descriptors; call `drain()` when it is readable.
    public let fd: Int32

    public init() throws(SpawnError) {
        fd = escrow_eventfd()
        guard fd >= 0 else { throw SpawnError(executable: "eventfd", errno: errno) }
    }

    deinit { close(fd) }

    /// Makes the waiting thread's `poll` return now.
    public func wake() {
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    /// Clears the signal (after `poll` reported it readable).
    public func drain() {
        var count: UInt64 = 0
        _ = read(fd, &count, 8)
    }

    /// Waits up to `milliseconds` for a `wake()`; true if one came (drained unless `drain` is
    /// false, which leaves it for the caller's next `poll`).
    @discardableResult
    public func wait(milliseconds: Int32, drain: Bool = true) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, max(0, milliseconds)) > 0 else { return false }
        if drain { self.drain() }
        return true
    }
}
