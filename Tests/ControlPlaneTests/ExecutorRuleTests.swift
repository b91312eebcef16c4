import Foundation
import Synchronization
import Testing
import ControlPlane
import POSIX
import Storage
import TestSupport

/// The executor rule (docs/ARCHITECTURE.md): blocking work never runs on the cooperative pool.
/// Every escrowd the harness launches enforces it (`ESCROW_EXECUTOR_CHECK=1`: a violation ends
/// escrowd with a message naming the call, failing the test that ran it); these tests show the
/// check sees a violation, and that the ledger's methods run on a thread of their own.
@Suite("The executor rule")
struct ExecutorRuleTests {
    @Test("a blocking call on the cooperative pool is caught; on the ledger thread, BlockingWork threads and the main thread it is not")
    func checkFires() async throws {
        let before = BlockingWork.enforcement
        // Recording, not crashing: this process also runs tests that use SQLite from the pool.
        if before == .off { BlockingWork.enforcement = .record }
        let marker = "marker-\(UUID().uuidString.prefix(8))"
        await Task.detached { BlockingWork.check("\(marker)-pool") }.value
        await BlockingWork.run { BlockingWork.check("\(marker)-own-thread") }
        let dir = try TempDirectory(prefix: "executor-rule")
        let db = try Database(path: dir.file("t.sqlite"))
        await Task.detached { _ = try? db.execute("CREATE TABLE IF NOT EXISTS t (x)") }.value
        let seen = BlockingWork.violations
        #expect(seen["\(marker)-pool"] == 1, "\(seen.keys.sorted().prefix(10))")
        #expect(seen["\(marker)-own-thread"] == nil)
        #expect(seen["sqlite", default: 0] >= 1, "a SQLite statement from a task is caught")
        if before == .off { BlockingWork.enforcement = .off }
    }

    @Test("the control plane's methods run on the ledger thread, not the pool")
    func ledgerThread() async throws {
        let p = try await PlatformFixture()
        #expect(await p.service.runsOnBlockingThread())
        #expect(!BlockingWork.mayBlockHere || Thread.isMainThread, "this test itself runs on the pool")
        await p.shutdown()
    }

    @Test("parallel work runs every iteration once, on threads that may block")
    func parallel() {
        let hits = Mutex([Int](repeating: 0, count: 100))
        let blocking = Atomic<Int>(0)
        BlockingWork.parallel(iterations: 100) { i in
            hits.withLock { $0[i] += 1 }
            if BlockingWork.mayBlockHere { blocking.add(1, ordering: .relaxed) }
        }
        #expect(hits.withLock { $0 } == [Int](repeating: 1, count: 100))
        #expect(blocking.load(ordering: .relaxed) == 100)
    }
}
