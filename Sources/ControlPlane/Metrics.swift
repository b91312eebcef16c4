import Foundation
import Synchronization
import EscrowCore
import Storage

/// Command and commit latencies, recorded where they happen (the actor) and read by a scrape
/// (an HTTP thread): behind a mutex, never on the actor's queue.
final class LatencyRecorder: Sendable {
    struct State {
        /// command name ("unknown" for names outside the contract: bounded label values) -> result code -> latencies.
        var commands: [String: [String: PrometheusText.Histogram]] = [:]
        var commits = PrometheusText.Histogram(bounds: PrometheusText.Histogram.latencyBounds)
    }
    private let state = Mutex(State())

    func command(_ name: String, code: String, seconds: Double) {
        let label = CommandName(rawValue: name) != nil ? name : "unknown"
        state.withLock { s in
            s.commands[label, default: [:]][code, default: PrometheusText.Histogram(bounds: PrometheusText.Histogram.latencyBounds)].observe(seconds)
        }
    }

    func commit(seconds: Double) { state.withLock { $0.commits.observe(seconds) } }
    var snapshot: State { state.withLock { $0 } }
}

/// What `GET /metrics` reports, gathered on the actor in one go.
public struct MetricsSnapshot: Sendable {
    public var devicesByState: [String: Int]
    public var devicesOnline: Int
    public var transfersByStatus: [String: Int]
    public var outboxDepth: Int
    /// Seconds since the oldest outbox row was committed (0 when empty).
    public var outboxOldestAge: Double
    public var brokerConnected: Bool
    public var counters: ControlPlane.Counters
    var latencies: LatencyRecorder.State
    /// When the snapshot was taken, for rates: heartbeats received/s = rate(escrowd_heartbeats_received_total).
    public var at: Date

    /// The Prometheus text exposition of this snapshot.
    public func render() -> String {
        typealias F = PrometheusText.Family
        var families: [F] = []
        families.append(F("escrowd_devices", .gauge, "Devices in the ledger by lifecycle state (escrow, active, ...).",
                          samples: devicesByState.sorted { $0.key < $1.key }.map { .init([("state", $0.key)], Double($0.value)) }))
        let total = devicesByState.values.reduce(0, +)
        families.append(F("escrowd_devices_presence", .gauge, "Devices by presence: their retained status, ended by the presence lease after a silence.",
                          samples: [.init([("presence", "online")], Double(devicesOnline)), .init([("presence", "offline")], Double(max(0, total - devicesOnline)))]))
        families.append(F("escrowd_transfers", .gauge, "Transfer requests by status.",
                          samples: transfersByStatus.sorted { $0.key < $1.key }.map { .init([("status", $0.key)], Double($0.value)) }))
        families.append(F("escrowd_heartbeats_received_total", .counter, "Heartbeats received from known devices since start.", samples: [.init([], Double(counters.heartbeats))]))
        families.append(F("escrowd_config_acks_received_total", .counter, "Configuration acks received since start.", samples: [.init([], Double(counters.acks))]))
        families.append(F("escrowd_configs_published_total", .counter, "Configurations published (first push and reconciliation) since start.", samples: [.init([], Double(counters.configsPublished))]))
        families.append(F("escrowd_device_errors_total", .counter, "Device messages answered on the device's error topic since start.", samples: [.init([], Double(counters.deviceErrors))]))
        families.append(F("escrowd_stale_statuses_total", .counter, "Statuses (mostly wills) from an older connection, ignored.", samples: [.init([], Double(counters.staleStatuses))]))
        var commands = F("escrowd_commands_total", .counter, "Operator commands by name and result code (ok or the contract's error code).")
        var latency = F("escrowd_command_duration_seconds", .histogram, "Time from receiving a command to publishing its reply, by name and result code.")
        for (name, byCode) in latencies.commands.sorted(by: { $0.key < $1.key }) {
            for (code, h) in byCode.sorted(by: { $0.key < $1.key }) {
                commands.samples.append(.init([("command", name), ("code", code)], Double(h.count)))
                latency.histograms.append(([("command", name), ("code", code)], h))
            }
        }
        families += [commands, latency]
        var commits = F("escrowd_ledger_commit_duration_seconds", .histogram, "Duration of ledger transactions (commands, acks, presence), fsync included.")
        commits.histograms = [([], latencies.commits)]
        families.append(commits)
        families.append(F("escrowd_outbox_depth", .gauge, "Committed events and messages the broker has not yet acknowledged (PUBACK).", samples: [.init([], Double(outboxDepth))]))
        families.append(F("escrowd_outbox_oldest_age_seconds", .gauge, "Age of the oldest committed message the broker has not yet acknowledged (0 when none).", samples: [.init([], outboxOldestAge)]))
        families.append(F("escrowd_broker_connected", .gauge, "1 while escrowd's MQTT connection to the broker is up.", samples: [.init([], brokerConnected ? 1 : 0)]))
        return PrometheusText.render(families)
    }
}

extension ControlPlane {
    /// Everything `/metrics` shows, read in one actor turn.
    public func metricsSnapshot() -> MetricsSnapshot {
        let byState = (try? ledger.db.query("SELECT state, count(*) AS n FROM devices GROUP BY state")
            .map { (try $0.string("state"), Int(try $0.int("n"))) }) ?? []
        let transfers = (try? ledger.db.query("SELECT status, count(*) AS n FROM transfers GROUP BY status")
            .map { (try $0.string("status"), Int(try $0.int("n"))) }) ?? []
        let depth = (try? ledger.db.scalar("SELECT count(*) FROM outbox").intValue) ?? nil
        let oldest = (try? ledger.db.scalar("SELECT min(created_at) FROM outbox").doubleValue) ?? nil
        return MetricsSnapshot(devicesByState: Dictionary(byState, uniquingKeysWith: +), devicesOnline: onlineCount,
                               transfersByStatus: Dictionary(transfers, uniquingKeysWith: +), outboxDepth: depth ?? 0,
                               outboxOldestAge: oldest.map { max(0, Date().timeIntervalSince1970 - $0) } ?? 0,
                               brokerConnected: client.isConnected, counters: counters, latencies: latencies.snapshot, at: Date())
    }

    /// `/readyz`: the broker connection is up and the ledger takes writes (a write rolled back).
    public func readiness() -> [String] {
        var problems: [String] = []
        if !client.isConnected { problems.append("not connected to the broker") }
        struct Probe: Error {}
        do {
            try ledger.db.transaction {
                _ = try ledger.db.execute("UPDATE accounts SET name = name WHERE id = ?", [.text(AccountID.platform.rawValue)])
                throw Probe()
            }
        } catch is Probe {
        } catch {
            problems.append("the ledger refuses writes (\(error))")
        }
        return problems
    }
}
