import Foundation
import Synchronization
import EscrowCore
import MQTT

/// Heartbeats, off the control plane's actor: the hot path of a large fleet.
///
/// Each heartbeat is parsed on the MQTT client's network thread (`MQTTClient.consumeInline`), never
/// queued, and only its latest last-seen time is kept per
/// device, so memory is bounded by the number of devices however far the flush falls behind, and
/// commands never queue behind a heartbeat flood. `ControlPlane.flushLastSeen` takes the batch.
final class HeartbeatIngest: Sendable {
    private struct State {
        var known: Set<DeviceID> = []
        var latest: [DeviceID: Date] = [:]
        var heartbeats = 0
        var errors = 0
    }
    private let state = Mutex(State())

    func setKnown(_ ids: Set<DeviceID>) { state.withLock { $0.known = ids } }
    func addKnown(_ ids: some Sequence<DeviceID>) { state.withLock { $0.known.formUnion(ids) } }
    func isKnown(_ id: DeviceID) -> Bool { state.withLock { $0.known.contains(id) } }
    var knownCount: Int { state.withLock { $0.known.count } }
    var heartbeats: Int { state.withLock { $0.heartbeats } }
    var errors: Int { state.withLock { $0.errors } }

    /// Records one heartbeat, or answers the device on its error topic. Never throws.
    func receive(_ device: DeviceID, _ m: MQTTMessage, client: MQTTClient) {
        receive(device, payload: m.payload, topic: m.topic, client: client)
    }

    /// The same from the bytes (the heartbeat connection's path).
    func receive(_ device: DeviceID, payload: [UInt8], topic: String, client: MQTTClient) {
        let failure: WireError?
        do throws(WireError) {
            // The one-pass scanner, or the full decoder for the exact error of anything it declines.
            let hb: Heartbeat
            if let fast = Heartbeat.scan(payload) { hb = fast } else {
                hb = try WireCodec.decode(Heartbeat.self, from: payload, limit: WireCodec.maxDevicePayloadBytes)
            }
            // The limits topics.md gives each field.
            if hb.seq < 1 { throw WireError(.malformed, "seq must be >= 1 (got \(hb.seq))") }
            if hb.uptime < 0 { throw WireError(.malformed, "uptime must be >= 0 (got \(hb.uptime))") }
            if hb.configVersion < 0 { throw WireError(.malformed, "configVersion must be >= 0 (got \(hb.configVersion))") }
            let now = Date()
            failure = state.withLock { s -> WireError? in
                guard s.known.contains(device) else { s.errors += 1; return WireError(.notFound, "device \(device) is not provisioned") }
                s.heartbeats += 1
                s.latest[device] = now
                return nil
            }
        } catch {
            state.withLock { $0.errors += 1 }
            failure = error
        }
        if let failure {
            _ = try? client.publishNoWait(Topic.deviceError(device).path,
                                          WireCodec.encode(DeviceErrorReport(code: failure.code, message: failure.message, topic: topic)),
                                          qos: .atMostOnce)
        }
    }

    /// The last-seen times gathered since the previous call.
    func take() -> [DeviceID: Date] {
        state.withLock { s in
            defer { s.latest = [:] }
            return s.latest
        }
    }

    /// Puts back a batch that could not be written; newer heartbeats win.
    func restore(_ batch: [DeviceID: Date]) {
        state.withLock { s in s.latest.merge(batch) { newer, _ in newer } }
    }
}
