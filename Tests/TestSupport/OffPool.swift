import POSIX

/// Runs blocking work (waiting for a child process, a whole fleetsim run) on a thread of its own
/// (`BlockingWork.run`, the one definition), so no thread of Swift's cooperative pool waits: on 2
/// cores the pool has two threads, and tests that held them starved every other suite into its
/// time limit.
public func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await BlockingWork.run("test-blocking", work)
}
