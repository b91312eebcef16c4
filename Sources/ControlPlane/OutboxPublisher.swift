import Foundation
import MQTT
import Synchronization

/// The outbox rows handed to the broker and not yet acknowledged: which may be deleted (the
/// contiguous acknowledged prefix, so nothing after an unacknowledged row is forgotten) and which
/// to read next. The actor owns it; PUBACKs are reported from libmosquitto's thread into a lock.
final class OutboxPublisher: Sendable {
    /// Rows sent and unacknowledged at most; the rest wait in the ledger (memory stays bounded).
    static let maxInFlight = 10_000

    private struct Shared {
        var acked: [Int64] = []
        var refused: [(Int64, String)] = []
        /// A collect is already scheduled: further acks only join it.
        var scheduled = false
    }
    private struct Owned {
        /// Sent rows, oldest first (ids ascend).
        var inFlight: [Int64] = []
        var head = 0
        var done: Set<Int64> = []
        var sentThrough: Int64 = 0
        /// Bumped by `restart`: reports from before it are ignored.
        var generation = 0
    }
    private let shared = Mutex(Shared())
    private let owned = Mutex(Owned())

    var inFlightCount: Int { owned.withLock { $0.inFlight.count - $0.head } }
    var sentThrough: Int64 { owned.withLock { $0.sentThrough } }

    /// Records `id` as sent; returns the reporter for its PUBACK, which returns true when the caller
    /// must schedule `collect` (once per burst of acks).
    func send(_ id: Int64) -> @Sendable (Result<Void, MQTTError>) -> Bool {
        let generation = owned.withLock { o in
            o.inFlight.append(id)
            o.sentThrough = id
            return o.generation
        }
        return { [self] result in
            guard owned.withLock({ $0.generation }) == generation else { return false }
            if case .failure(let error) = result, error.kind == .disconnected {
                return false // closing: the row stays and is published at the next start
            }
            return shared.withLock { s in
                if case .failure(let error) = result { s.refused.append((id, "\(error)")) }
                s.acked.append(id)
                defer { s.scheduled = true }
                return !s.scheduled
            }
        }
    }

    /// Takes the acknowledgements so far; returns the id through which rows may be deleted, and the
    /// rows the broker refused (counted as done: sending them again would be refused again).
    func collect() -> (through: Int64?, refused: [(Int64, String)]) {
        let (acked, refused) = shared.withLock { s in
            defer { s.acked = []; s.refused = []; s.scheduled = false }
            return (s.acked, s.refused)
        }
        return owned.withLock { o in
            o.done.formUnion(acked)
            var through: Int64?
            while o.head < o.inFlight.count, o.done.remove(o.inFlight[o.head]) != nil {
                through = o.inFlight[o.head]
                o.head += 1
            }
            if o.head > 4_096 { o.inFlight.removeFirst(o.head); o.head = 0 }
            return (through, refused)
        }
    }

    /// After a reconnect: forget what was in flight so every remaining row is sent again.
    func restart() {
        owned.withLock { o in o = Owned(generation: o.generation + 1) }
        shared.withLock { $0 = Shared() }
    }
}
