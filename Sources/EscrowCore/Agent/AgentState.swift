/// What a device agent keeps across reboots. Written atomically by the I/O layer
/// (temp file, fsync, rename), so a power cut leaves either the old or the new state.
public struct AgentState: VersionedPayload, Codable, Equatable, Sendable {
    public var schema: Int = WireCodec.schemaVersion
    public var deviceId: DeviceID
    public var mode: DeviceMode
    /// The account that owns the device (nil while the agent has never received a configuration).
    public var owner: AccountID?
    /// Version of the configuration in force; 0 before the first one.
    public var appliedVersion: Int
    public var heartbeatInterval: Int
    public var settings: [String: JSONValue]
    /// Which TLS identity the agent connects with.
    public var identity: IdentitySource
    /// A certificate signing request for the pending key (`next.key`) was published.
    public var certificateRequested: Bool
    /// A configuration asked for a new identity (`renewIdentity`: the device changed owner while on
    /// an issued identity); cleared when a configuration brings the new certificate.
    public var renewalRequested: Bool = false

    /// The identity files in use: the factory bundle's, or those issued for the owner on activation.
    public enum IdentitySource: String, Codable, Sendable {
        /// `certificate` / `private_key` of the agent's settings (the provisioner's escrow identity).
        case factory
        /// `identity.crt` / `identity.key` in the state directory, issued by the owner's authority.
        case issued
    }

    public init(deviceId: DeviceID, mode: DeviceMode = .escrow, owner: AccountID? = nil, appliedVersion: Int = 0,
                heartbeatInterval: Int = DeviceConfig.defaultEscrowHeartbeat, settings: [String: JSONValue] = [:],
                identity: IdentitySource = .factory, certificateRequested: Bool = false) {
        self.deviceId = deviceId; self.mode = mode; self.owner = owner; self.appliedVersion = appliedVersion
        self.heartbeatInterval = heartbeatInterval; self.settings = settings
        self.identity = identity; self.certificateRequested = certificateRequested
    }

    /// Reads state files written before `identity` and `certificateRequested` existed.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        schema = try c.decode(Int.self, forKey: .schema)
        deviceId = try c.decode(DeviceID.self, forKey: .deviceId)
        mode = try c.decode(DeviceMode.self, forKey: .mode)
        owner = try c.decodeIfPresent(AccountID.self, forKey: .owner)
        appliedVersion = try c.decode(Int.self, forKey: .appliedVersion)
        heartbeatInterval = try c.decode(Int.self, forKey: .heartbeatInterval)
        settings = try c.decode([String: JSONValue].self, forKey: .settings)
        identity = try c.decodeIfPresent(IdentitySource.self, forKey: .identity) ?? .factory
        certificateRequested = try c.decodeIfPresent(Bool.self, forKey: .certificateRequested) ?? false
        renewalRequested = try c.decodeIfPresent(Bool.self, forKey: .renewalRequested) ?? false
    }

    /// The factory state of a device: escrow mode, no configuration.
    public static func factory(_ id: DeviceID) -> AgentState { AgentState(deviceId: id) }
}

/// Validation of a configuration before the agent applies it. Shared by the control plane
/// (refuse to push what a device would reject) and every agent.
public enum ConfigValidation {
    public static let maxConfigBytes = 64 * 1024

    public enum Verdict: Equatable, Sendable {
        case apply(DeviceConfig)
        /// Older or equal to the applied version: ignore, re-ack the current version.
        case stale(version: Int)
        case reject(version: Int, reason: String)
    }

    public static func check(_ bytes: some Collection<UInt8>, appliedVersion: Int, currentMode: DeviceMode,
                             currentOwner: AccountID? = nil) -> Verdict {
        let config: DeviceConfig
        do {
            config = try WireCodec.decode(DeviceConfig.self, from: bytes, limit: maxConfigBytes)
        } catch {
            return .reject(version: bestEffortVersion(bytes), reason: error.description)
        }
        if config.version <= appliedVersion { return .stale(version: config.version) }
        if let problem = problem(in: config, currentMode: currentMode, currentOwner: currentOwner) {
            return .reject(version: config.version, reason: problem)
        }
        return .apply(config)
    }

    /// A reason the configuration cannot be applied, or nil.
    /// An activated device returns to escrow mode only with a change of custody (a return to the
    /// OEM, an RMA: `config.owner` differs from `currentOwner`), never under the same owner.
    public static func problem(in config: DeviceConfig, currentMode: DeviceMode, currentOwner: AccountID? = nil) -> String? {
        if config.version < 1 { return "invalid_argument: version must be >= 1" }
        if !DeviceConfig.heartbeatRange.contains(config.heartbeatInterval) {
            return "invalid_argument: heartbeatInterval \(config.heartbeatInterval) is outside \(DeviceConfig.heartbeatRange.lowerBound)...\(DeviceConfig.heartbeatRange.upperBound) s"
        }
        if currentMode == .normal && config.mode == .escrow && (currentOwner == nil || config.owner == currentOwner) {
            return "invalid_argument: an activated device does not return to escrow mode"
        }
        return nil
    }

    private static func bestEffortVersion(_ bytes: some Collection<UInt8>) -> Int {
        guard bytes.count <= maxConfigBytes,
              let v = try? WireCodec.decoder.decode(JSONValue.self, from: .init(bytes)) else { return 0 }
        return v["version"]?.intValue ?? 0
    }
}
