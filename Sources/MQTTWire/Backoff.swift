/// Exponential backoff with full jitter: attempt n waits uniformly in [0, min(maximum, initial * 2^n)].
/// Full jitter spreads a fleet's reconnects after a broker restart instead of synchronising them.
public struct Backoff: Sendable, Equatable {
    public var initial: Duration = .seconds(1)
    public var maximum: Duration = .seconds(120)

    public init(initial: Duration = .seconds(1), maximum: Duration = .seconds(120)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The upper bound for `attempt` (0-based): min(maximum, initial * 2^attempt).
    public func ceiling(attempt: Int) -> Duration {
        let maxNs = Self.nanoseconds(maximum)
        var cap = min(Self.nanoseconds(initial), maxNs)
        var n = max(0, attempt)
        while n > 0 && cap < maxNs {
            let (doubled, overflow) = cap.multipliedReportingOverflow(by: 2)
            cap = overflow ? maxNs : min(doubled, maxNs)
            n -= 1
        }
        return .nanoseconds(max(0, cap))
    }

    /// A delay drawn uniformly from [0, ceiling(attempt:)].
    public func delay(attempt: Int, random: inout some RandomNumberGenerator) -> Duration {
        let cap = Self.nanoseconds(ceiling(attempt: attempt))
        guard cap > 0 else { return .zero }
        return .nanoseconds(Int64.random(in: 0...cap, using: &random))
    }

    /// `delay(attempt:random:)` with the system generator.
    public func delay(attempt: Int) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return delay(attempt: attempt, random: &generator)
    }

    /// The same in seconds, for callers on a `Double` clock (fleetsim's engine): attempt `n`
    /// (1-based there) waits uniformly in [0, min(max, base * 2^(n-1))].
    public static func ceiling(attempt: Int, base: Double, max: Double) -> Double {
        seconds(Backoff(initial: .nanoseconds(Int64(base * 1e9)), maximum: .nanoseconds(Int64(max * 1e9))).ceiling(attempt: attempt - 1))
    }

    public static func delay(attempt: Int, base: Double, max: Double) -> Double {
        Double.random(in: 0...ceiling(attempt: attempt, base: base, max: max))
    }

    static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

    public static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? 0 : .max }
        let (sum, overflow2) = whole.addingReportingOverflow(attoseconds / 1_000_000_000)
        return overflow2 ? .max : sum
    }
}
