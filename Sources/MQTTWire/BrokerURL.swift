import Foundation

/// The one broker URL grammar (escrowd's `--broker`, escrowctl's `broker =`, the agent's bundle,
/// fleetsim's `--broker`): `mqtt://[user[:password]@]host[:port]` (port 1883 by default) or
/// `mqtts://...` (TLS, port 8883); `tcp://` and `ssl://`/`tls://` are accepted as aliases. An IPv6
/// host is written in brackets. There is no path.
public struct BrokerURL: Equatable, Sendable {
    public var host: String
    public var port: Int
    public var tls: Bool
    public var username: String?
    public var password: String?

    public init(host: String, port: Int, tls: Bool, username: String? = nil, password: String? = nil) {
        self.host = host; self.port = port; self.tls = tls; self.username = username; self.password = password
    }

    /// What is wrong with a URL, in one line that says what to write instead.
    public struct Invalid: Error, Equatable, Sendable, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    public static func parse(_ text: String) throws(Invalid) -> BrokerURL {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased() else {
            throw Invalid(message: "not a URL; expected mqtt://host:port or mqtts://host:port")
        }
        let tls: Bool
        switch scheme {
        case "mqtt", "tcp": tls = false
        case "mqtts", "ssl", "tls": tls = true
        default: throw Invalid(message: "unsupported scheme '\(scheme)'; use mqtt:// or mqtts://")
        }
        guard var host = components.host, !host.isEmpty else {
            throw Invalid(message: "missing host; expected \(scheme)://host:port")
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard components.path.isEmpty || components.path == "/" else {
            throw Invalid(message: "unexpected path '\(components.path)'; an MQTT URL has no path")
        }
        guard components.query == nil, components.fragment == nil else {
            throw Invalid(message: "unexpected query or fragment; an MQTT URL is scheme://host:port")
        }
        let port = components.port ?? (tls ? 8883 : 1883)
        guard (1...65535).contains(port) else { throw Invalid(message: "port \(port) is not 1...65535") }
        return BrokerURL(host: host, port: port, tls: tls, username: components.user, password: components.password)
    }

    public var description: String { "\(tls ? "mqtts" : "mqtt")://\(host.contains(":") ? "[\(host)]" : host):\(port)" }
}
