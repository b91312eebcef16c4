import MQTTWire
import Glibc
import Identity

/// How the engine connects and paces its devices.
public struct EngineConfiguration: Sendable {
    public var brokerHost: String = "127.0.0.1"
    public var brokerPort: UInt16 = 1883
    /// Source addresses assigned round-robin by device index; empty lets the kernel choose.
    public var sourceAddresses: [String] = []
    public var mqttVersion: MQTTVersion = .v311
    public var keepAlive: UInt16 = 60
    /// New TCP connects per second; 0 means unlimited.
    public var connectRate: Double = 0
    /// Connections allowed between TCP connect and CONNACK at once (the broker's backlog is 100).
    public var connectWindow: Int = 64
    /// Seconds from TCP connect to CONNACK before the attempt counts as a timeout.
    public var connectTimeout: Double = 10
    /// Reconnect backoff: full jitter over min(max, base * 2^attempt).
    public var backoffBase: Double = 1
    public var backoffMax: Double = 120
    /// Reconnect after a drop or failure (off for one-shot tests).
    public var reconnect: Bool = true
    /// The monotonic instant (ns) that is time 0 of `Engine.now` (nil: the engine's creation).
    /// Engines given the same origin (0 = CLOCK_MONOTONIC itself, shared by every process on the
    /// host) have comparable clocks, so a send time in a payload can be measured by a receiver.
    public var clockOrigin: UInt64?
    /// Mutual TLS for every connection (nil: plain MQTT). Each device's identity is given to `Engine.init`.
    public var tls: TLSSettings?
    public init() {}
}

/// What every TLS connection of a fleet shares: the context trusting the broker's CA, the name
/// the broker's certificate must carry, and how many handshakes may run at once.
public struct TLSSettings: Sendable {
    public var context: TLSClientContext
    /// Checked against the server certificate (an IP literal against its IP SANs); nil checks only the CA.
    public var serverName: String?
    /// Connections between TCP connect and CONNACK (which includes the handshake) when TLS is on:
    /// handshakes cost CPU on both sides, so fewer run at once than plain connects.
    public var maxHandshakes: Int
    public init(context: TLSClientContext, serverName: String?, maxHandshakes: Int = 32) {
        self.context = context; self.serverName = serverName; self.maxHandshakes = maxHandshakes
    }
}

/// One device's TLS client identity, parsed once (reconnects reuse it).
public struct DeviceTLSIdentity: Sendable {
    /// Kept as DER (~450 bytes) and the key as its raw P-256 parts (97 bytes), rebuilt at
    /// each connect: parsed, a certificate and its key hold ~6.8 KB of OpenSSL objects, and
    /// a connected device needs neither (the session drops them after the handshake).
    /// Rebuilding costs ~175 us (d2i_X509 ~150 us, the key ~25 us: bench/openssl-parse-cost.sh);
    /// libmosquitto's mosquitto_tls_set loads and parses the files at every connect.
    public let certificateDER: [UInt8]
    public let privateScalar: [UInt8]
    public let publicPoint: [UInt8]

    /// With `--tls-identities parsed`: the parsed certificate kept for the process's life
    /// (~4.6 KB more per device; parsing it is ~150 of the ~175 us a connect spends here).
    private let parsedCertificate: Certificate?

    /// Checks once that both parse and belong together; `keepParsed` keeps the parsed objects.
    public init(certificatePEM: String, privateKeyPEM: String, keepParsed: Bool = false) throws(IdentityError) {
        certificateDER = try der(pem: certificatePEM, labels: ["CERTIFICATE"])
        let certificate = try Certificate(der: certificateDER)
        let key = try PrivateKey(der: der(pem: privateKeyPEM, labels: ["PRIVATE KEY", "EC PRIVATE KEY"]))
        guard try key.publicKey().matches(certificate.publicKey()) else {
            throw IdentityError.invalidInput("the private key does not belong to certificate \(certificate.commonName)")
        }
        (privateScalar, publicPoint) = try key.rawP256()
        parsedCertificate = keepParsed ? certificate : nil
    }

    public func certificate() throws(IdentityError) -> Certificate {
        if let parsedCertificate { return parsedCertificate }
        return try Certificate(der: certificateDER)
    }

    public func privateKey() throws(IdentityError) -> PrivateKey {
        try PrivateKey(p256Private: privateScalar, publicPoint: publicPoint)
    }
}

/// A device's connection state as seen from outside the engine.
public enum ConnectionState: UInt8, Sendable {
    case idle, queued, connecting, awaitingConnAck, connected, backoff, stopped
}
