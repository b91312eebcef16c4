import Testing
@testable import FleetEngine

@Suite struct HistogramTests {
    @Test func percentilesOfUniformValuesWithinRelativeError() {
        var h = Histogram()
        for v in 1...100_000 { h.record(UInt64(v)) }
        #expect(h.count == 100_000)
        #expect(h.min == 1 && h.max == 100_000)
        for (p, exact) in [(50.0, 50_000.0), (90, 90_000), (99, 99_000), (99.9, 99_900)] {
            let got = Double(h.percentile(p))
            #expect(abs(got - exact) / exact < 0.035, "p\(p) = \(got), expected ~\(exact)")
        }
        #expect(h.percentile(100) == 100_000)
        #expect(abs(h.mean - 50_000.5) < 0.01)
    }

    @Test func smallValuesExactAndBucketsContiguous() {
        var h = Histogram()
        for v: UInt64 in [0, 1, 2, 3, 31] { h.record(v) }
        #expect(h.percentile(20) == 0)
        #expect(h.percentile(40) == 1)
        #expect(h.percentile(100) == 31)
        // Every value maps into its bucket's bounds; indices never decrease.
        var last = -1
        for v in stride(from: UInt64(0), to: 1 << 40, by: 9_999_991) {
            let i = Histogram.index(of: v)
            let b = Histogram.bounds(of: i)
            #expect(b.lower <= v && v <= b.upper)
            #expect(i >= last); last = i
        }
        #expect(Histogram.index(of: .max) < Histogram.bucketCount)
    }

    @Test func mergeAndSparseRoundTripAreExact() {
        var a = Histogram(), b = Histogram()
        for v in 0..<5000 { a.record(UInt64(v * 3)) }
        for v in 0..<3000 { b.record(UInt64(v * 7 + 100_000)) }
        var m = a; m.merge(b)
        #expect(m.count == 8000)
        #expect(m.max == b.max && m.min == 0)
        let back = Histogram(sparse: m.sparse, min: m.min, max: m.max, sum: m.sum)
        #expect(back == m)
        #expect(Histogram().percentile(99) == 0)
    }
}
