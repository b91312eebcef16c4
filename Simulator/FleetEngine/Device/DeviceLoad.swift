import MQTTWire

/// Extra traffic a simulated device makes beyond what `AgentMachine` does (`--publish-rate`,
/// `--payload`, `--topic`, `--subscribe`), resolved for one device. Pure values.
public struct DeviceLoad: Sendable, Equatable {
    /// Seconds between two load messages (0: none).
    public var publishInterval: Double
    /// This device's topic for load messages (`--topic` with `%i` and `%n` replaced).
    public var topic: String
    /// Size of each load message (at least `LoadMessage.headerSize`).
    public var payloadBytes: Int
    public var qos: QoS
    /// This device's extra subscription (`--subscribe` resolved); messages on it that carry a
    /// send time are measured as `fanout` latency.
    public var subscription: String?

    public init(publishInterval: Double, topic: String, payloadBytes: Int, qos: QoS, subscription: String?) {
        self.publishInterval = publishInterval; self.topic = topic; self.payloadBytes = payloadBytes
        self.qos = qos; self.subscription = subscription
    }

    /// `%i` -> device id, `%n` -> device index, `%%` -> `%`.
    public static func resolve(_ pattern: String, id: String, index: Int) -> String {
        var out = "", escape = false
        for c in pattern {
            if escape {
                switch c { case "i": out += id; case "n": out += String(index); default: out.append(c) }
                escape = false
            } else if c == "%" { escape = true } else { out.append(c) }
        }
        return out
    }

    /// Nil when `pattern` is a valid topic pattern, else why not (for a usage error).
    public static func problem(in pattern: String, allowWildcards: Bool) -> String? {
        if pattern.isEmpty { return "is empty" }
        var escape = false
        for c in pattern {
            if escape {
                guard "in%".contains(c) else { return "has '%\(c)': only %i (device id), %n (index) and %% are known" }
                escape = false
            } else if c == "%" { escape = true }
        }
        if escape { return "ends in a lone %" }
        if !allowWildcards && (pattern.contains("+") || pattern.contains("#")) { return "has a wildcard (+ or #): a publish topic must be a name" }
        return nil
    }
}

/// The payload of a load message: `FSL1`, the send time (engine seconds, as a big-endian IEEE
/// double), then zero padding up to the requested size. A receiver on the same clock measures
/// publish -> receive from it.
public enum LoadMessage {
    public static let magic: [UInt8] = Array("FSL1".utf8)
    public static let headerSize = 12

    public static func payload(sentAt: Double, size: Int) -> [UInt8] {
        var p = magic
        p.reserveCapacity(max(size, headerSize))
        withUnsafeBytes(of: sentAt.bitPattern.bigEndian) { p.append(contentsOf: $0) }
        if size > headerSize { p.append(contentsOf: repeatElement(0, count: size - headerSize)) }
        return p
    }

    /// The send time in a load message, nil for any other payload.
    public static func sentAt(_ payload: [UInt8]) -> Double? {
        guard payload.count >= headerSize, payload[0..<4].elementsEqual(magic) else { return nil }
        let bits = payload[4..<12].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let t = Double(bitPattern: bits)
        return t.isFinite ? t : nil
    }
}

/// Keeps a steady rate from a timer that fires late: each firing says how many messages are due
/// (catching up, at most `maxBurst`) and when to fire next.
public struct Pacer: Sendable, Equatable {
    public var interval: Double
    public var next: Double
    public static let maxBurst = 100

    public init(interval: Double, first: Double) { self.interval = interval; next = first }

    /// Messages due at `now`, and the delay until the next firing.
    public mutating func fire(now: Double) -> (count: Int, after: Double) {
        guard interval > 0, now >= next else { return (0, max(0, next - now)) }
        var n = Int((now - next) / interval) + 1
        if n > Self.maxBurst { n = Self.maxBurst; next = now } // too far behind: drop the backlog
        next += Double(n) * interval
        return (n, max(0, next - now))
    }
}
