import Foundation
import Synchronization
import TestSupport
@testable import FleetEngine

/// What one `FleetMain.run` returned and printed.
struct FleetsimRun: Sendable {
    var code: Int32
    var out: [String]
    var err: [String]
}

/// Runs fleetsim's main on a thread of its own (`offPool`), as the executable does: the engine
/// drives its sockets on the calling thread for the whole run, which must never be a thread of
/// the cooperative pool (two here, shared by every test running in parallel). Expectations are
/// checked by the caller, back on the test's task.
func fleetsim(_ args: [String], stop: StopFlag = StopFlag(), version: String? = nil) async throws -> FleetsimRun {
    let box = Printed()
    let code = try await offPool {
        if let version { return FleetMain.run(args, stop: stop, version: version, stdout: { box.out($0) }, stderr: { box.err($0) }) }
        return FleetMain.run(args, stop: stop, stdout: { box.out($0) }, stderr: { box.err($0) })
    }
    return FleetsimRun(code: code, out: box.outLines, err: box.errLines)
}

/// Lines printed from the engine's thread.
final class Printed: Sendable {
    private let lines = Mutex<(out: [String], err: [String])>(([], []))
    func out(_ l: String) { lines.withLock { $0.out.append(l) } }
    func err(_ l: String) { lines.withLock { $0.err.append(l) } }
    var outLines: [String] { lines.withLock { $0.out } }
    var errLines: [String] { lines.withLock { $0.err } }
}
