import Foundation

/// What a `transfer` run did and measured, next to the engine's numbers in `FleetReport`.
public struct TransferReport: Codable, Sendable {
    public struct Step: Codable, Sendable {
        /// The step's letter in the story (a accounts ... g verify).
        public var name: String
        public var seconds: Double
        /// Seconds from the start of the run to the start of the step (nil in old reports).
        public var start: Double?
    }

    public var runID: String
    /// Role -> account id (oem, reseller, customer).
    public var accounts: [String: String]
    public var route: String
    public var devices: Int
    /// Per outcome of the customer's transfer request: activated, rejected, cancelled (left pending, then cancelled).
    public var outcomes: [String: Int]
    /// Approved devices whose simulated agent persisted the normal-mode configuration.
    public var appliedOnDevices: Int
    /// Approved devices `config.status` reports `applied` in the customer account.
    public var appliedOnPlatform: Int
    public var verified: Bool
    /// Why verification failed (empty when it passed).
    public var verificationProblems: [String]
    public var steps: [Step]
    /// Approval reply (per batch of up to 1,000 devices) to the device's persist of its normal-mode configuration.
    public var approvalToAppliedMs: HistogramSummary
    /// Approval command sent to the same persist.
    public var approveSentToAppliedMs: HistogramSummary
    /// The device received its configuration to the customer's operator receiving `config.applied` for it.
    public var pushToAckMs: HistogramSummary
    /// Devices that persisted before the approval reply arrived (counted as 0 ms in `approvalToAppliedMs`).
    public var appliedBeforeReply: Int
    /// Life after activation (`--resell`, `--return`, `--retire`), in the order run; nil without them.
    public var lifecycle: [LifecycleStage]?

    /// One lifecycle step on devices the customer activated: a resale to a second standalone
    /// customer (approved with activate), a return to the sender (approved with hold: back to
    /// escrow) or a retirement (`device.retire`).
    public struct LifecycleStage: Codable, Sendable {
        /// `resell`, `return` or `retire`.
        public var name: String
        public var from: String
        /// The receiving account (the retiring one for `retire`).
        public var to: String
        public var devices: Int
        /// Devices approved by the receiver, or retired.
        public var decided: Int
        /// Devices whose agent persisted the receiver's configuration (normal mode for a resale,
        /// escrow mode for a return); 0 for `retire`.
        public var appliedOnDevices: Int
        /// Per command batch of up to 1,000 devices (`transfer.approve` or `device.retire`): sent to reply.
        public var commandMs: HistogramSummary
        /// Per device, from the command sent (escrowd answers an access change once the broker has
        /// reloaded, so the devices often act before the reply): `transfer.approve` sent to the
        /// device persisting the receiver's configuration (resell, return), or `device.retire` sent
        /// to the account's operator receiving `device.retired` for it (retire).
        public var latencyMs: HistogramSummary
        /// Retire only: retired devices whose connection the broker closed (after the revocation
        /// reload); each then stays off, so its refused reconnects do not fill the errors.
        /// The close itself counts once in the engine's errors (a reset).
        public var cutOff: Int?
        /// Retire only: `device.retire` sent to the broker closing the device's connection.
        public var cutOffMs: HistogramSummary?
        /// Devices that applied (resell, return) or were cut off (retire) before the command's reply.
        public var beforeReply: Int?
        /// The latency's name in thresholds, CSV and HTML: `resell_applied`, `return_applied`, `retire_event`.
        public var latencyName: String { name == "retire" ? "retire_event" : "\(name)_applied" }
    }

    /// The story's steps as phases (times since the start of the run), with the latency and count
    /// that belong to each; `errorsBetween` counts the engine's errors in a time range.
    public func phases(connect: HistogramSummary, errorsBetween: (Double, Double) -> Int) -> [Phase] {
        let names = ["a": "accounts", "b": "provisioning", "c": "escrow connect", "d": "reseller hold",
                     "e": "transfer request", "f": "config applied", "g": "verify",
                     "h": "resell", "i": "return", "j": "retire", "k": "verify lifecycle"]
        var out: [Phase] = []
        for step in steps {
            guard let start = step.start else { continue }
            let end = ((start + step.seconds) * 1000).rounded() / 1000
            func phase(_ name: String, _ count: Int, _ latencyName: String? = nil, _ h: HistogramSummary? = nil) -> Phase {
                Phase(name: name, start: start, end: end, count: count, errors: errorsBetween(start, end), latencyName: latencyName, latency: h)
            }
            switch step.name {
            case "c": out.append(phase("escrow connect", Int(connect.count), "connect", connect))
            case "e": out.append(phase("transfer request", (outcomes["activated"] ?? 0) + (outcomes["rejected"] ?? 0)))
            case "f":
                out.append(phase("config applied", appliedOnDevices, "approval_applied", approvalToAppliedMs))
                out.append(phase("config ack", Int(pushToAckMs.count), "push_ack", pushToAckMs))
            case "a": out.append(phase("accounts", accounts.count))
            case "h", "i", "j":
                let stage = lifecycle?.first { $0.name == names[step.name] }
                out.append(phase(names[step.name]!, stage?.decided ?? 0, stage?.latencyName, stage?.latencyMs))
            default: out.append(phase(names[step.name] ?? step.name, devices))
            }
        }
        return out
    }

    public var summaryLines: [String] {
        func row(_ k: String, _ v: String) -> String { k.padding(toLength: 26, withPad: " ", startingAt: 0) + v }
        func h(_ s: HistogramSummary) -> String {
            s.count == 0 ? "-" : "p50 \(s.p50) ms  p90 \(s.p90)  p99 \(s.p99)  p99.9 \(s.p999)  max \(s.max)  (n=\(s.count))"
        }
        var lines = [row("run id", runID),
                     row("accounts", ["oem", "reseller", "customer"].compactMap { accounts[$0] }.joined(separator: " -> ")
                         + (accounts["customer2"].map { " (resale to \($0))" } ?? "")),
                     row("devices", "\(devices)")]
        for k in ["activated", "rejected", "cancelled"] { lines.append(row("  " + k, "\(outcomes[k] ?? 0)")) }
        lines.append(row("applied device/platform", "\(appliedOnDevices) / \(appliedOnPlatform)"))
        lines.append(row("approval→applied", h(approvalToAppliedMs)))
        lines.append(row("approve sent→applied", h(approveSentToAppliedMs)))
        lines.append(row("push→ack", h(pushToAckMs)))
        if appliedBeforeReply > 0 { lines.append(row("applied before reply", "\(appliedBeforeReply)")) }
        for stage in lifecycle ?? [] {
            let what = stage.name == "retire" ? "\(stage.decided)/\(stage.devices) retired in \(stage.from)"
                : "\(stage.from) -> \(stage.to): \(stage.decided)/\(stage.devices) approved, \(stage.appliedOnDevices) applied on devices"
            lines.append(row(stage.name, what))
            lines.append(row(stage.name == "retire" ? "  retire sent→event" : "  approve sent→applied", h(stage.latencyMs)))
            if let c = stage.cutOff, let ms = stage.cutOffMs {
                lines.append(row("  cut off by the broker", "\(c)/\(stage.decided)  " + h(ms) + " (retire sent→closed)"))
            }
            if let b = stage.beforeReply, b > 0 {
                lines.append(row("  before the reply", "\(b) (the reply waits for the broker's reload)"))
            }
            lines.append(row("  command sent→reply", h(stage.commandMs)))
        }
        let names = ["a": "accounts", "b": "provision", "c": "connect", "d": "reseller hold", "e": "customer decisions", "f": "configs applied",
                     "g": "cancel + verify", "h": "resell", "i": "return", "j": "retire", "k": "verify lifecycle"]
        if !steps.isEmpty {
            lines.append(row("steps (s)", steps.map { "\($0.name) \(names[$0.name] ?? "") \(String(format: "%.2f", $0.seconds))" }.joined(separator: ", ")))
        }
        lines.append(row("verification", verified ? "passed" : "FAILED"))
        for p in verificationProblems { lines.append("! " + p) }
        return lines
    }
}
