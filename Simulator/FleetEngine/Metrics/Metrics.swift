import Foundation

/// Why a device connection failed or ended; the engine counts each separately.
public enum ErrorCause: String, Codable, Sendable, CaseIterable {
    /// CONNACK with a refusal code other than an authorisation failure.
    case refused
    /// No TCP connect, CONNACK or PINGRESP in time.
    case timeout
    /// Connection reset or closed by the broker.
    case reset
    /// CONNACK "not authorised" / "bad user name or password".
    case auth
    /// EADDRNOTAVAIL: the ephemeral port range of a source address is used up.
    case portExhausted = "port_exhausted"
    /// ECONNREFUSED / ENETUNREACH: nothing listens at the broker address.
    case unreachable
    /// EMFILE/ENFILE: out of file descriptors.
    case fdExhausted = "fd_exhausted"
    /// The broker sent bytes that are not valid MQTT.
    case protocolError = "protocol"
    case other
}

/// One per-second sample for the charts.
public struct Sample: Codable, Sendable, Equatable {
    public var t: Double
    public var connected: Int
    public var connectsPerSec: Double
    public var msgsOutPerSec: Double
    public var msgsInPerSec: Double
    public var errors: Int
}

/// One resource sample (every 10 s and at the end): resident memory and open descriptors.
public struct ResourceSample: Codable, Sendable, Equatable {
    public var t: Double
    public var rssKB: Int
    public var fds: Int
    public var connected: Int
}

/// Counters, histograms and time series of one engine. Owned by the engine's thread.
public final class Metrics {
    public var connectAttempts = 0
    public var connacks = 0
    public var disconnects = 0
    public var errors: [ErrorCause: Int] = [:]
    public var published = 0
    public var publishedQoS1 = 0
    public var pubacks = 0
    public var received = 0
    public var heartbeats = 0
    public var configsApplied = 0
    public var configsIgnored = 0
    public var configsRejected = 0
    public var droppedWhileOffline = 0
    public var bytesOut = 0
    public var bytesIn = 0

    /// TCP connect start to CONNACK, microseconds.
    public var connectLatency = Histogram()
    /// QoS 1 PUBLISH to PUBACK, microseconds.
    public var pubackLatency = Histogram()
    /// Connection lost to CONNACK again, microseconds.
    public var recoveryTime = Histogram()

    public var samples: [Sample] = []
    public var resources: [ResourceSample] = []

    private var last = (connacks: 0, out: 0, inn: 0, t: 0.0)

    public init() {}

    public var totalErrors: Int { errors.values.reduce(0, +) }

    public func count(_ cause: ErrorCause) { errors[cause, default: 0] += 1 }

    /// Appends a per-second sample computed from counter deltas.
    public func sample(t: Double, connected: Int) {
        let dt = Swift.max(t - last.t, 1e-3)
        samples.append(Sample(t: (t * 10).rounded() / 10, connected: connected,
                              connectsPerSec: Double(connacks - last.connacks) / dt,
                              msgsOutPerSec: Double(published - last.out) / dt,
                              msgsInPerSec: Double(received - last.inn) / dt,
                              errors: totalErrors))
        last = (connacks, published, received, t)
    }

    public func sampleResources(t: Double, connected: Int) {
        resources.append(ResourceSample(t: (t * 10).rounded() / 10, rssKB: ProcessStats.rssKB(), fds: ProcessStats.openFDs(), connected: connected))
    }
}

/// Reads this process's resident set size and descriptor count from /proc.
public enum ProcessStats {
    public static func rssKB() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
        return 0
    }
    public static func openFDs() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
    }
}
