/// Time-aligned merging of several reports' series (workers of one run, or runs on several hosts).
///
/// Each part's times are shifted by its start's offset from the earliest start and put into buckets
/// of `interval` seconds. Per bucket, rates are summed over the parts that sampled it; levels
/// (connected, cumulative errors, RSS, fds) are summed with each part's last value carried forward
/// while that part ran (a part contributes 0 connected before its first and after its last sample;
/// its cumulative errors stay).
enum SeriesMerge {
    static func samples(_ parts: [[Sample]], offsets: [Double], interval: Double) -> [Sample] {
        let byPart = bucketed(parts, offsets: offsets, interval: interval, t: \.t)
        return buckets(byPart).map { b in
            var m = Sample(t: round3(Double(b) * interval), connected: 0, connectsPerSec: 0, msgsOutPerSec: 0, msgsInPerSec: 0, errors: 0)
            for part in byPart {
                guard let (s, exact, running) = part.at(b) else { continue }
                if running { m.connected += s.connected }
                m.errors += s.errors
                guard exact else { continue }
                m.connectsPerSec += s.connectsPerSec; m.msgsOutPerSec += s.msgsOutPerSec; m.msgsInPerSec += s.msgsInPerSec
                for kind in LatencyKind.allCases {
                    guard let v = s.interval(kind) else { continue }
                    let old = m.interval(kind)
                    m.setInterval(kind, (max(old?.p50 ?? 0, v.p50), max(old?.p99 ?? 0, v.p99)))
                }
            }
            return m
        }
    }

    static func resources(_ parts: [[ResourceSample]], offsets: [Double], interval: Double) -> [ResourceSample] {
        let byPart = bucketed(parts, offsets: offsets, interval: interval, t: \.t)
        return buckets(byPart).map { b in
            var m = ResourceSample(t: round3(Double(b) * interval), rssKB: 0, fds: 0, connected: 0)
            for part in byPart {
                guard let (s, _, running) = part.at(b), running else { continue }
                m.rssKB += s.rssKB; m.fds += s.fds; m.connected += s.connected
            }
            return m
        }
    }

    /// Phases of the same name become one: earliest start, latest end, counts and errors summed,
    /// latencies merged exactly. Ordered by start.
    static func phases(_ parts: [[Phase]], offsets: [Double]) -> [Phase] {
        var merged: [Phase] = []
        for (phases, offset) in zip(parts, offsets) {
            for var p in phases {
                p.start = round3(p.start + offset); p.end = round3(p.end + offset)
                guard let i = merged.firstIndex(where: { $0.name == p.name }) else { merged.append(p); continue }
                var m = merged[i]
                m.start = min(m.start, p.start); m.end = max(m.end, p.end)
                m.count += p.count; m.errors += p.errors
                if let a = m.latency, let b = p.latency { m.latency = a.merged(b) } else { m.latency = m.latency ?? p.latency }
                m.latencyName = m.latencyName ?? p.latencyName
                merged[i] = m
            }
        }
        return merged.sorted { $0.start < $1.start }
    }

    /// One part's samples keyed by bucket (the last sample of a bucket wins).
    struct Part<S> {
        var byBucket: [Int: S]
        var first: Int
        var last: Int
        var sorted: [Int]

        /// The part's value at bucket `b`: the sample there (exact) or the latest one before it;
        /// `running` is false after the part's last bucket. Nil before its first bucket.
        func at(_ b: Int) -> (S, exact: Bool, running: Bool)? {
            if let s = byBucket[b] { return (s, true, true) }
            guard b > first else { return nil }
            // The latest bucket before b (binary search over the sorted keys).
            var lo = 0, hi = sorted.count - 1
            while lo < hi { let mid = (lo + hi + 1) / 2; if sorted[mid] < b { lo = mid } else { hi = mid - 1 } }
            return (byBucket[sorted[lo]]!, false, b <= last)
        }
    }

    static func bucketed<S>(_ parts: [[S]], offsets: [Double], interval: Double, t: KeyPath<S, Double>) -> [Part<S>] {
        zip(parts, offsets).compactMap { samples, offset in
            var map: [Int: S] = [:]
            for s in samples { map[Int(((s[keyPath: t] + offset) / interval).rounded())] = s }
            let keys = map.keys.sorted()
            guard let f = keys.first, let l = keys.last else { return nil }
            return Part(byBucket: map, first: f, last: l, sorted: keys)
        }
    }

    static func buckets<S>(_ parts: [Part<S>]) -> [Int] { Set(parts.flatMap(\.sorted)).sorted() }

    static func round3(_ v: Double) -> Double { (v * 1000).rounded() / 1000 }
}
