@testable import MQTT
import Testing
import TestSupport


@Suite("Backoff (full jitter)")
struct BackoffTests {
    @Test("defaults are 1 s doubling to 2 min")
    func defaults() {
        let backoff = Backoff()
        #expect(backoff.initial == .seconds(1))
        #expect(backoff.maximum == .seconds(120))
        #expect(backoff.ceiling(attempt: 0) == .seconds(1))
        #expect(backoff.ceiling(attempt: 1) == .seconds(2))
        #expect(backoff.ceiling(attempt: 6) == .seconds(64))
        #expect(backoff.ceiling(attempt: 7) == .seconds(120))
        #expect(backoff.ceiling(attempt: 10_000) == .seconds(120))
        #expect(backoff.ceiling(attempt: -3) == .seconds(1))
    }

    @Test("every delay lies in [0, min(max, initial * 2^attempt)] and the range is actually used")
    func fullJitterBounds() {
        let backoff = Backoff()
        var random = SplitMix64(state: 42)
        for attempt in 0..<40 {
            let cap = backoff.ceiling(attempt: attempt)
            var low = false, high = false
            for _ in 0..<500 {
                let delay = backoff.delay(attempt: attempt, random: &random)
                #expect(delay >= .zero && delay <= cap)
                if delay < cap / 4 { low = true }
                if delay > cap * 3 / 4 { high = true }
            }
            #expect(low && high, "attempt \(attempt): draws should spread over the whole range")
        }
    }

    @Test("zero initial delay gives zero")
    func zero() {
        var random = SplitMix64(state: 1)
        #expect(Backoff(initial: .zero, maximum: .seconds(5)).delay(attempt: 3, random: &random) == .zero)
    }
}
