import Foundation

/// A device's mode: escrow (lightweight, waiting for an owner) or normal (activated).
public enum DeviceMode: String, Codable, Sendable, CaseIterable { case escrow, normal }

/// `devices/{id}/status`, device to platform, QoS 1, retained. The will message is the same
/// payload with `state: offline`.
public struct DeviceStatus: VersionedPayload, Codable, Equatable, Sendable {
    public enum State: String, Codable, Sendable { case online, offline }
    public var schema: Int = WireCodec.schemaVersion
    public var state: State
    public var mode: DeviceMode?
    public var configVersion: Int?
    public var agentVersion: String?
    /// The connection this status belongs to: strictly increasing per device across connections
    /// (`escrow-agent` uses the Unix time in milliseconds when it opened the connection). The will
    /// of a connection carries the same value as its online status, so the platform can ignore a
    /// will that an older connection leaves behind. Absent: always applied.
    public var session: Int?
    public init(state: State, mode: DeviceMode? = nil, configVersion: Int? = nil, agentVersion: String? = nil, session: Int? = nil) {
        self.state = state; self.mode = mode; self.configVersion = configVersion; self.agentVersion = agentVersion; self.session = session
    }
}

/// `devices/{id}/heartbeat`, device to platform, QoS 0.
public struct Heartbeat: VersionedPayload, Codable, Equatable, Sendable {
    public var schema: Int = WireCodec.schemaVersion
    public var seq: Int
    public var mode: DeviceMode
    public var uptime: Int
    public var configVersion: Int
    public init(seq: Int, mode: DeviceMode, uptime: Int, configVersion: Int) {
        self.seq = seq; self.mode = mode; self.uptime = uptime; self.configVersion = configVersion
    }
}

/// `devices/{id}/config`, platform to device, QoS 1, retained: the desired configuration.
public struct DeviceConfig: VersionedPayload, Codable, Equatable, Sendable {
    public var schema: Int = WireCodec.schemaVersion
    /// Strictly increasing per device; the agent ignores a version <= the applied one.
    public var version: Int
    public var mode: DeviceMode
    /// Seconds between heartbeats, 5...86400.
    public var heartbeatInterval: Int
    /// The account that owns the device once this configuration is applied.
    public var owner: AccountID
    /// The owner's settings, opaque to the platform.
    public var settings: [String: JSONValue]
    /// PEM certificate issued for the new owner on activation (answer to `devices/{id}/csr`).
    public var certificate: String?
    /// The device changed owner while on an identity its previous owner issued: make a new key and
    /// send a CSR for it (`devices/{id}/csr`); a later configuration carries the new certificate.
    public var renewIdentity: Bool?
    public init(version: Int, mode: DeviceMode, heartbeatInterval: Int, owner: AccountID,
                settings: [String: JSONValue] = [:], certificate: String? = nil, renewIdentity: Bool? = nil) {
        self.version = version; self.mode = mode; self.heartbeatInterval = heartbeatInterval
        self.owner = owner; self.settings = settings; self.certificate = certificate; self.renewIdentity = renewIdentity
    }
    public static let heartbeatRange = 5...86_400
    public static let defaultEscrowHeartbeat = 300
}

/// `devices/{id}/config/ack`, device to platform, QoS 1.
public struct ConfigAck: VersionedPayload, Codable, Equatable, Sendable {
    public enum Result: String, Codable, Sendable { case applied, rejected }
    public var schema: Int = WireCodec.schemaVersion
    public var version: Int
    public var result: Result
    public var reason: String?
    public init(version: Int, result: Result, reason: String? = nil) {
        self.version = version; self.result = result; self.reason = reason
    }
}

/// `devices/{id}/csr`, device to platform, QoS 1: a PEM certificate signing request for the
/// identity the device will use after activation.
public struct CertificateRequest: VersionedPayload, Codable, Equatable, Sendable {
    public var schema: Int = WireCodec.schemaVersion
    public var csr: String
    public init(csr: String) { self.csr = csr }
}

/// `devices/{id}/error`, platform to device, QoS 0: why a device's message was refused.
public struct DeviceErrorReport: VersionedPayload, Codable, Equatable, Sendable {
    public var schema: Int = WireCodec.schemaVersion
    public var code: ErrorCode
    public var message: String
    public var topic: String
    public init(code: ErrorCode, message: String, topic: String) {
        self.code = code; self.message = message; self.topic = topic
    }
}
