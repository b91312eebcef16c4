import MQTTWire

/// One phase of a run (connect ramp, escrow hold, storm, a `transfer` step) with what it measured.
///
/// Times are seconds since the run started, on the same clock as the samples, so each phase is a
/// marker on every time chart. `count` is the number of measurements of `latency` in the phase
/// (connects for `connect`, recoveries for `storm`, ...), or the messages published when the phase
/// has no latency of its own.
public struct Phase: Codable, Sendable, Equatable {
    public var name: String
    public var start: Double
    public var end: Double
    public var count: Int
    /// Failed connects and lost connections counted during the phase.
    public var errors: Int
    /// The threshold name of the phase's latency (`connect`, `recovery`, `approval_applied`, ...).
    public var latencyName: String?
    public var latency: HistogramSummary?

    public init(name: String, start: Double, end: Double, count: Int, errors: Int, latencyName: String? = nil, latency: HistogramSummary? = nil) {
        self.name = name; self.start = start; self.end = end; self.count = count; self.errors = errors
        self.latencyName = latencyName; self.latency = latency
    }

    public var seconds: Double { Swift.max(0, end - start) }
    /// `count` per second of the phase (0 for an instant phase).
    public var ratePerSec: Double { seconds > 0 ? Double(count) / seconds : 0 }

    /// What each phase name means, for the report's definitions.
    public static let definitions: [String: String] = [
        "connect": "From the start of the run until every device had its first CONNACK (or the run ended). Count: CONNACKs; latency: TCP connect start to CONNACK.",
        "escrow hold": "All devices connected in escrow mode, heartbeating. Count and latency: fan-out deliveries and their latency with --subscribe, else QoS 1 PUBACKs and PUBLISH to PUBACK with --qos 1, else messages published.",
        "spike": "--ramp spike:N: from releasing the last N devices at once (after all others connected) until every device was connected. Count and latency: CONNACKs, TCP connect start to CONNACK.",
        "churn": "All devices connected while --churn drops a share each second. Count and latency: reconnects, connection lost to CONNACK again.",
        "storm": "From dropping every connection at once until all devices were connected again (or the run ended). Count and latency: reconnects, connection lost to CONNACK again.",
        "accounts": "transfer step a: the OEM, reseller and customer accounts and their operators are created.",
        "provisioning": "transfer step b: device identities are provisioned in the OEM account (batches of 1,000). Count: devices.",
        "escrow connect": "transfer step c: the fleet connects over mutual TLS in escrow mode until 99.9 % are connected. Count and latency: CONNACKs, TCP connect start to CONNACK.",
        "reseller hold": "transfer step d: OEM -> reseller requested and approved with hold. Count: devices.",
        "transfer request": "transfer step e: the transfer to the customer is requested and decided in batches (activate, reject). Count: devices decided.",
        "config applied": "transfer step f: every approved device applies its normal-mode configuration. Latency: the approval batch's reply to the device's persist.",
        "config ack": "transfer step f, platform side: the device received its configuration to the customer's operator receiving config.applied.",
        "verify": "transfer step g: the pending rest is cancelled and both sides are verified.",
    ]
}
