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
    /// An automatic reconnect that has no CONNACK after this long is abandoned and retried with backoff.
    public var connectTimeout: Duration = .seconds(5)
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
        let parsed: BrokerURL
        do { parsed = try BrokerURL.parse(url) } catch { throw MQTTError.invalid("parse URL \(url)", error.message) }
        var options = MQTTOptions(clientID: clientID, host: parsed.host, port: parsed.port)
        options.username = parsed.username
        options.password = parsed.password
        if parsed.tls { options.tls = MQTTTLS(caFile: systemCAFile) }
        return options
    }
}
