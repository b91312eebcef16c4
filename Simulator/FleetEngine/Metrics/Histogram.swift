/// A log-linear histogram (HDR-like) of non-negative integers, fixed memory, ~3% relative error.
///
/// Values below 32 have exact buckets; above, each power of two is split into 32 linear
/// sub-buckets. Recording is O(1) with no allocation; two histograms merge exactly.
public struct Histogram: Sendable, Equatable {
    static let subBits = 5
    static let subCount = 1 << subBits
    static let bucketCount = (64 - subBits + 1) * subCount

    public private(set) var counts: [UInt64]
    public private(set) var count: UInt64 = 0
    public private(set) var min: UInt64 = .max
    public private(set) var max: UInt64 = 0
    public private(set) var sum: Double = 0

    public init() { counts = Array(repeating: 0, count: Self.bucketCount) }

    static func index(of v: UInt64) -> Int {
        if v < UInt64(subCount) { return Int(v) }
        let e = 63 - v.leadingZeroBitCount
        let g = e - subBits + 1
        let sub = Int(v >> UInt64(e - subBits)) - subCount
        return g * subCount + sub
    }

    /// Smallest and largest value that land in bucket `i`.
    static func bounds(of i: Int) -> (lower: UInt64, upper: UInt64) {
        let g = i / subCount, s = i % subCount
        if g == 0 { return (UInt64(s), UInt64(s)) }
        let lower = UInt64(subCount + s) << UInt64(g - 1)
        return (lower, lower + (UInt64(1) << UInt64(g - 1)) - 1)
    }

    public mutating func record(_ value: UInt64, count n: UInt64 = 1) {
        counts[Self.index(of: value)] += n
        count += n
        if value < min { min = value }
        if value > max { max = value }
        sum += Double(value) * Double(n)
    }

    /// Empties the histogram (touches the buckets only when something was recorded).
    public mutating func reset() {
        guard count > 0 else { return }
        for i in counts.indices where counts[i] != 0 { counts[i] = 0 }
        count = 0; min = .max; max = 0; sum = 0
    }

    public mutating func merge(_ other: Histogram) {
        for i in 0..<counts.count where other.counts[i] != 0 { counts[i] += other.counts[i] }
        count += other.count
        sum += other.sum
        if other.count > 0 { min = Swift.min(min, other.min); max = Swift.max(max, other.max) }
    }

    /// The value at percentile `p` (0...100): the midpoint of its bucket, clamped to [min, max].
    public func percentile(_ p: Double) -> UInt64 {
        guard count > 0 else { return 0 }
        let rank = Swift.max(1, UInt64((p / 100 * Double(count)).rounded(.up)))
        if rank >= count { return max }
        var seen: UInt64 = 0
        for (i, c) in counts.enumerated() where c != 0 {
            seen += c
            if seen >= rank {
                let b = Self.bounds(of: i)
                let mid = b.lower + (b.upper - b.lower) / 2
                return Swift.min(Swift.max(mid, min), max)
            }
        }
        return max
    }

    public var mean: Double { count == 0 ? 0 : sum / Double(count) }

    /// Non-empty buckets as (lower bound, upper bound, count), for charts and JSON.
    public var nonEmptyBuckets: [(lower: UInt64, upper: UInt64, count: UInt64)] {
        counts.enumerated().compactMap { i, c in c == 0 ? nil : (Self.bounds(of: i).lower, Self.bounds(of: i).upper, c) }
    }

    /// Sparse (bucket index, count) pairs: the exact, mergeable serialised form.
    public var sparse: [[UInt64]] { counts.enumerated().compactMap { i, c in c == 0 ? nil : [UInt64(i), c] } }

    public init(sparse: [[UInt64]], min: UInt64, max: UInt64, sum: Double) {
        self.init()
        for pair in sparse where pair.count == 2 && Int(pair[0]) < Self.bucketCount {
            counts[Int(pair[0])] += pair[1]; count += pair[1]
        }
        if count > 0 { self.min = min; self.max = max }
        self.sum = sum
    }
}
