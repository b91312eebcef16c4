/// A binary min-heap of per-device timers. Cancellation is lazy: each entry carries the
/// device's connection generation and is dropped when it no longer matches.
struct TimerHeap {
    struct Entry {
        var deadline: UInt64
        var slot: Int32
        var generation: UInt32
        var kind: TimerKind
        var token: UInt8
    }
    private(set) var entries: [Entry] = []

    var count: Int { entries.count }
    var nextDeadline: UInt64? { entries.first?.deadline }

    mutating func push(_ e: Entry) {
        entries.append(e)
        var i = entries.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard entries[i].deadline < entries[p].deadline else { break }
            entries.swapAt(i, p); i = p
        }
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    mutating func popDue(_ now: UInt64) -> Entry? {
        guard let first = entries.first, first.deadline <= now else { return nil }
        let last = entries.removeLast()
        if !entries.isEmpty {
            entries[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < entries.count && entries[l].deadline < entries[m].deadline { m = l }
                if r < entries.count && entries[r].deadline < entries[m].deadline { m = r }
                if m == i { break }
                entries.swapAt(i, m); i = m
            }
        }
        return first
    }
}

enum TimerKind: UInt8 {
    case connectTimeout, keepAlive, reconnect, behavior
}
