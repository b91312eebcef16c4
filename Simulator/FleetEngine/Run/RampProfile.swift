import EscrowCore

/// `--ramp`: when devices are released for connecting (the engine then paces them with `--rate`
/// and `--window`). A pure function of time, tested without I/O.
public enum RampProfile: Sendable, Equatable {
    /// Everything at the start; `--rate` alone paces (the default).
    case constant
    /// `linear:DUR`: released at an even pace, the last one at DUR seconds.
    case linear(seconds: Double)
    /// `step:N/DUR`: N more devices every DUR seconds, the first N at once.
    case step(devices: Int, every: Double)
    /// `spike:N`: all but N at the start; once those are connected, the last N at once.
    case spike(devices: Int)

    public static func parse(_ text: String) throws(FleetError) -> RampProfile {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        let usage = "--ramp expects linear:DUR, step:N/DUR or spike:N (e.g. linear:10s, step:1000/5s, spike:5000), got '\(text.prefix(60))'"
        guard parts.count == 2 else {
            if text == "constant" { return .constant }
            throw .usage(usage)
        }
        switch parts[0] {
        case "linear":
            guard let d = Arguments.parseSeconds(parts[1]), d > 0 else { throw .usage(usage) }
            return .linear(seconds: d)
        case "step":
            let nd = parts[1].split(separator: "/", maxSplits: 1).map(String.init)
            guard nd.count == 2, let n = Int(nd[0]), n >= 1, let d = Arguments.parseSeconds(nd[1]), d > 0 else { throw .usage(usage) }
            return .step(devices: n, every: d)
        case "spike":
            guard let n = Int(parts[1]), n >= 1 else { throw .usage(usage) }
            return .spike(devices: n)
        default:
            throw .usage(usage)
        }
    }

    /// How it is written on the command line.
    public var label: String {
        switch self {
        case .constant: return "constant"
        case .linear(let d): return "linear:\(d)s"
        case .step(let n, let d): return "step:\(n)/\(d)s"
        case .spike(let n): return "spike:\(n)"
        }
    }

    /// How many of `n` devices are released by `t` seconds. `releasedConnected`: every device
    /// released so far is connected (what a spike waits for).
    public func released(at t: Double, of n: Int, releasedConnected: Bool) -> Int {
        switch self {
        case .constant: return n
        case .linear(let d): return t >= d ? n : min(n, Int((Double(n) * t / d).rounded(.up)))
        case .step(let k, let d): return min(n, k * (Int(t / d) + 1))
        case .spike(let k):
            let base = max(0, n - k)
            return base == 0 || releasedConnected ? n : base
        }
    }

    /// The spike's size among `n` devices (0 for other profiles).
    public func spikeSize(of n: Int) -> Int {
        if case .spike(let k) = self { return min(k, n) }
        return 0
    }

    /// A worker's share of the profile (device counts divided, rounded up; times unchanged).
    public func share(workers: Int) -> RampProfile {
        let k = max(1, workers)
        switch self {
        case .constant, .linear: return self
        case .step(let n, let d): return .step(devices: (n + k - 1) / k, every: d)
        case .spike(let n): return .spike(devices: (n + k - 1) / k)
        }
    }
}
