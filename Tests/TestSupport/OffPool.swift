import Foundation

/// Runs blocking work (waiting for a child process, a whole fleetsim run) on a new thread and
/// resumes the caller with its result, so no thread of Swift's cooperative pool waits (STYLE.md,
/// point 11): on 2 cores the pool has two threads, and tests that held them starved every other
/// suite into its time limit.
public func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}
