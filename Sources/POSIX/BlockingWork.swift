import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The executor rule (docs/ARCHITECTURE.md): blocking work (SQLite, OpenSSL signing, starting and
/// awaiting processes, fsync'd file writes) never runs on a thread of Swift's cooperative pool,
/// which has one thread per core (two here) and on Linux shares libdispatch's global threads, so
/// one blocked thread stalls every task of the process.
///
/// Threads that may block are marked: `ThreadExecutor` threads (the ledger's, the agent's),
/// `BlockingWork.run`, `.detach` and `.parallel` threads (process waiters among them), and the
/// main thread. Each blocking call site calls
/// `check(_:)`. With `ESCROW_EXECUTOR_CHECK=1` in the environment (the test harness sets it for
/// every escrowd it launches) a call from an unmarked thread ends the process with a message naming
/// the call; with `ESCROW_EXECUTOR_CHECK=record` it is recorded in `violations` instead. Otherwise
/// the check costs one load of a constant.
public enum BlockingWork {
    public enum Enforcement: Sendable, Equatable { case off, record, crash }

    private static let mode = Atomic<Int>(initialMode())
    private static let recorded = Mutex<[String: Int]>([:])

    private static func initialMode() -> Int {
        switch ProcessInfo.processInfo.environment["ESCROW_EXECUTOR_CHECK"] {
        case "1", "crash": return 2
        case "record": return 1
        default: return 0
        }
    }

    public static var enforcement: Enforcement {
        get { [Enforcement.off, .record, .crash][mode.load(ordering: .relaxed)] }
        set { mode.store(newValue == .off ? 0 : newValue == .record ? 1 : 2, ordering: .relaxed) }
    }

    /// Violations seen in `.record` mode: how many times each call (`what`) ran on an unmarked thread.
    public static var violations: [String: Int] { recorded.withLock { $0 } }

    /// Marks the calling thread as one that may block (for the rest of its life).
    public static func markThread() { ThreadMark.set(true) }

    /// True on a marked thread or the main thread.
    public static var mayBlockHere: Bool { ThreadMark.get() || Thread.isMainThread }

    /// Called by every blocking call site with what it is about to do ("sqlite", "sign", "spawn").
    @inline(__always)
    public static func check(_ what: @autoclosure () -> String) {
        guard mode.load(ordering: .relaxed) != 0 else { return }
        checkSlow(what())
    }

    private static func checkSlow(_ what: String) {
        guard !mayBlockHere else { return }
        let line = "\(what) on thread \(ThreadMark.name())"
        if mode.load(ordering: .relaxed) == 2 {
            let message = "executor rule broken: \(line), a thread of Swift's cooperative pool; run it on the ledger executor, BlockingWork.run or a thread of its own (docs/ARCHITECTURE.md)\n"
            FileHandle.standardError.write(Data(message.utf8))
            abort()
        }
        recorded.withLock { counts in
            if counts[what] != nil || counts.count < 10_000 { counts[what, default: 0] += 1 }
        }
    }

    /// Runs `work` on a new marked thread and resumes the caller with its result: no thread of the
    /// cooperative pool waits meanwhile.
    public static func run<T: Sendable>(_ name: String = "blocking", _ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            detach(name) { continuation.resume(with: Result { try work() }) }
        }
    }

    /// The same for work that cannot fail.
    public static func run<T: Sendable>(_ name: String = "blocking", _ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            detach(name) { continuation.resume(returning: work()) }
        }
    }

    /// Starts `work` on a new marked thread and returns at once.
    public static func detach(_ name: String, _ work: @escaping @Sendable () -> Void) {
        let thread = Thread {
            markThread()
            work()
        }
        thread.name = name
        thread.start()
    }

    /// `DispatchQueue.concurrentPerform` on marked threads of its own (one per core, at most
    /// `iterations`), the calling thread among them; returns when every iteration has run.
    public static func parallel(iterations: Int, _ body: @escaping @Sendable (Int) -> Void) {
        guard iterations > 0 else { return }
        let workers = max(1, min(iterations, ProcessInfo.processInfo.activeProcessorCount))
        let next = Atomic<Int>(0)
        let done = DispatchSemaphore(value: 0)
        let drain: @Sendable () -> Void = {
            while true {
                let i = next.add(1, ordering: .relaxed).oldValue
                guard i < iterations else { return }
                body(i)
            }
        }
        for w in 1..<workers { detach("parallel-\(w)") { drain(); done.signal() } }
        let wasMarked = ThreadMark.get()
        markThread()
        drain()
        if !wasMarked { ThreadMark.set(false) }
        for _ in 1..<workers { done.wait() }
    }
}

/// The "may block" mark, per thread (a pthread key: works for threads Foundation did not create).
enum ThreadMark {
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k, nil)
        return k
    }()
    static func set(_ on: Bool) { pthread_setspecific(key, on ? UnsafeRawPointer(bitPattern: 1) : nil) }
    static func get() -> Bool { pthread_getspecific(key) != nil }

    /// The thread's name as the kernel knows it (`comm`).
    static func name() -> String {
        ((try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "?").trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// A serial executor that runs its jobs, in order, on one dedicated, marked thread: an actor that
/// owns blocking resources (the ledger's SQLite connection) sets it as its `unownedExecutor`, so
/// its methods block that thread and never the cooperative pool (as GRDB gives each database
/// connection a serial queue of its own).
public final class ThreadExecutor: SerialExecutor, @unchecked Sendable {
    private let lock = NSCondition()
    private var jobs: [UnownedJob] = []
    private var head = 0

    public init(name: String) {
        // The thread keeps the executor alive: an executor serves a long-lived service (the ledger,
        // an agent) and is never released.
        let thread = Thread { self.serve() }
        thread.name = name
        thread.start()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        lock.lock()
        jobs.append(unowned)
        lock.signal()
        lock.unlock()
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor { UnownedSerialExecutor(ordinary: self) }

    /// The executor lives as long as the process (actors that use it are long-lived services); its
    /// thread waits on a condition between jobs.
    private func serve() {
        BlockingWork.markThread()
        while true {
            lock.lock()
            while head == jobs.count { lock.wait() }
            let job = jobs[head]
            head += 1
            if head > 1024, head * 2 > jobs.count { jobs.removeFirst(head); head = 0 }
            lock.unlock()
            job.runSynchronously(on: asUnownedSerialExecutor())
        }
    }
}
