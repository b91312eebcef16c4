import Foundation

/// Everything needed to connect. Defaults suit a local broker; `reconnect = nil` disables automatic reconnect.
public struct MQTTOptions: Sendable, Equatable {
    public var host: String = "127.0.0.1"
    public var port: Int = 1883
    public var clientID: String
    public var version: MQTTVersion = .v5
    public var cleanSession: Bool = true
    /// Seconds; libmosquitto requires >= 5.
    public var keepAlive: Int = 60
    public var username: String?
    public var password: String?
    public var will: MQTTWill?
    public var tls: MQTTTLS?
    /// Automatic reconnect after an unexpected disconnect; nil = none (the streams then finish).
    public var reconnect: Backoff? = Backoff()
    /// QoS 1 messages in flight at once (MOSQ_OPT_SEND_MAXIMUM, 1...65535); more are queued in the library.
    public var maxInflight: Int = 1000

    /// Default system CA bundle used by `mqtts://` URLs.
    public static let systemCAFile = "/etc/ssl/certs/ca-certificates.crt"

    public init(clientID: String, host: String = "127.0.0.1", port: Int = 1883) {
        self.clientID = clientID
        self.host = host
        self.port = port
    }

    /// Parses `mqtt://[user[:password]@]host[:port]` (default 1883) or `mqtts://...` (default 8883, TLS
    /// verified against `systemCAFile` until you set `tls`). `tcp://` and `ssl://` are accepted as aliases.
    public static func parse(url: String, clientID: String) throws -> MQTTOptions {
        let operation = "parse URL \(url)"
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw MQTTError.invalid(operation, "not a URL; expected mqtt://host:port or mqtts://host:port")
        }
        let secure: Bool
        switch scheme {
        case "mqtt", "tcp": secure = false
        case "mqtts", "ssl", "tls": secure = true
        default: throw MQTTError.invalid(operation, "unsupported scheme '\(scheme)'; use mqtt:// or mqtts://")
        }
        guard var host = components.host, !host.isEmpty else {
            throw MQTTError.invalid(operation, "missing host; expected \(scheme)://host:port")
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let path = components.path
        guard path.isEmpty || path == "/" else {
            throw MQTTError.invalid(operation, "unexpected path '\(path)'; an MQTT URL has no path")
        }
        let port = components.port ?? (secure ? 8883 : 1883)
        guard (1...65535).contains(port) else {
            throw MQTTError.invalid(operation, "port \(port) out of range 1...65535")
        }
        var options = MQTTOptions(clientID: clientID, host: host, port: port)
        options.username = components.user
        options.password = components.password
        if secure { options.tls = MQTTTLS(caFile: systemCAFile) }
        return options
    }
}
