import MQTTWire
import Foundation
import EscrowCore

/// The agent's configuration file (`key = value` lines), written by the factory next to the
/// device bundle. See `escrow-agent --help`.
public struct AgentSettings: Sendable, Equatable {
    public var broker: String
    public var deviceID: DeviceID
    public var certificate: String?
    public var privateKey: String?
    public var brokerCA: String?
    public var stateDirectory: String
    public var mqttVersion: String = "5"
    public var keepAlive: Int = 60
    public var backoffInitial: Int = 1
    public var backoffMaximum: Int = 120
    /// Give up (exit 69) after this many failed first connection attempts; 0 retries forever.
    public var connectAttempts: Int = 0

    public static let keys = ["broker", "device_id", "certificate", "private_key", "broker_ca", "state_dir",
                              "mqtt_version", "keepalive", "backoff_initial", "backoff_max", "connect_attempts"]

    public init(broker: String, deviceID: DeviceID, stateDirectory: String) {
        self.broker = broker; self.deviceID = deviceID; self.stateDirectory = stateDirectory
    }

    /// Parses the file; relative paths are taken relative to the file's directory.
    public static func parse(_ text: String, relativeTo base: String) throws(AgentError) -> AgentSettings {
        let kv: [String: String]
        do { kv = try KeyValueFile.parse(text) } catch { throw .usage(error.message) }
        for k in kv.keys where !keys.contains(k) { throw .usage("unknown setting '\(k)'; known: \(keys.joined(separator: ", "))") }
        guard let broker = kv["broker"] else { throw .usage("missing setting 'broker' (e.g. broker = mqtts://127.0.0.1:8883)") }
        guard let raw = kv["device_id"] else { throw .usage("missing setting 'device_id'") }
        guard let id = DeviceID(raw) else { throw .usage("device_id '\(raw)' must match [A-Za-z0-9._-]{1,64}") }
        func path(_ p: String?) -> String? { p.map { $0.hasPrefix("/") ? $0 : base + "/" + $0 } }
        var s = AgentSettings(broker: broker, deviceID: id, stateDirectory: path(kv["state_dir"]) ?? base + "/" + DeviceBundleLayout.stateDirectory)
        s.certificate = path(kv["certificate"]); s.privateKey = path(kv["private_key"]); s.brokerCA = path(kv["broker_ca"])
        if let v = kv["mqtt_version"] {
            guard ["5", "3.1.1"].contains(v) else { throw .usage("mqtt_version is 5 or 3.1.1") }
            s.mqttVersion = v
        }
        func int(_ k: String, _ range: ClosedRange<Int>) throws(AgentError) -> Int? {
            guard let v = kv[k] else { return nil }
            guard let n = Int(v), range.contains(n) else { throw .usage("\(k) must be a whole number within \(range.lowerBound)...\(range.upperBound)") }
            return n
        }
        s.keepAlive = try int("keepalive", 5...3600) ?? s.keepAlive
        s.backoffInitial = try int("backoff_initial", 1...3600) ?? s.backoffInitial
        s.backoffMaximum = try int("backoff_max", 1...86400) ?? s.backoffMaximum
        s.connectAttempts = try int("connect_attempts", 0...1_000_000) ?? s.connectAttempts
        if (try? BrokerURL.parse(broker))?.tls == true {
            for (k, v) in [("certificate", s.certificate), ("private_key", s.privateKey), ("broker_ca", s.brokerCA)] {
                guard let v else { throw .identity("\(k) is required with an mqtts:// broker") }
                guard FileManager.default.isReadableFile(atPath: v) else { throw .identity("\(k) file \(v) is missing or unreadable") }
                guard let text = try? String(contentsOfFile: v, encoding: .utf8), text.contains("-----BEGIN ") else {
                    throw .identity("\(k) file \(v) is not PEM")
                }
            }
        }
        return s
    }
}
