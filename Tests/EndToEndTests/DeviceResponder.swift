import Foundation
import EscrowCore
import MQTT
import TestSupport

/// Answers every configuration pushed to `devices/+/config` with an `applied` ack, on behalf of
/// many devices at once. It logs in as the control plane's own broker user (the only identity the
/// ACL lets publish for many devices), so it stands in for a fleet in tests of escrowd itself.
actor DeviceResponder {
    let client: MQTTClient
    private var pump: Task<Void, Never>?
    private(set) var acked: [String: Int] = [:]

    init(escrowd: EscrowdProcess) async throws {
        let secret = try String(contentsOfFile: escrowd.dataDirectory + "/escrowd.secret", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        var o = MQTTOptions(clientID: BrokerNames.clientID("svc-escrowd", suffix: "responder-\(UUID().uuidString.prefix(6))"), port: escrowd.operatorPort)
        o.username = "svc-escrowd"; o.password = secret
        o.reconnect = Backoff(initial: .milliseconds(200), maximum: .seconds(1))
        client = try MQTTClient(o)
        try await client.connect()
        _ = try await client.subscribe([("devices/+/config", .atLeastOnce)])
        let messages = client.messages, client = self.client
        pump = Task { [weak self] in
            for await m in messages {
                guard case .deviceConfig(let d)? = Topic(path: m.topic), !m.payload.isEmpty,
                      let c = try? WireCodec.decode(DeviceConfig.self, from: m.payload) else { continue }
                _ = try? client.publishNoWait(Topic.deviceConfigAck(d).path, WireCodec.encode(ConfigAck(version: c.version, result: .applied)))
                await self?.record(d.rawValue, c.version)
            }
        }
    }

    private func record(_ d: String, _ v: Int) { acked[d] = max(acked[d] ?? 0, v) }

    func close() async { pump?.cancel(); await client.disconnect() }
}
