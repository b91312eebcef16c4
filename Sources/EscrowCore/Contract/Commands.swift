import Foundation

/// Arguments and results of every command (`accounts/{accountId}/cmd/{command}`).
/// The account in the topic is the account acted in; payloads never name the actor.
public enum Commands {
    // MARK: accounts and operators (platform administrators: `accounts/platform/cmd/...`)
    public struct AccountCreate: Codable, Equatable, Sendable {
        public var id: AccountID
        public var name: String
        public var kind: Account.Kind
        public var managedBy: AccountID?
        public init(id: AccountID, name: String, kind: Account.Kind, managedBy: AccountID? = nil) {
            self.id = id; self.name = name; self.kind = kind; self.managedBy = managedBy
        }
    }
    public struct AccountListResult: Codable, Equatable, Sendable { public var accounts: [Account]; public init(accounts: [Account]) { self.accounts = accounts } }
    /// Names one account (`account.show`, `account.delete`).
    public struct AccountRef: Codable, Equatable, Sendable {
        public var id: AccountID
        public init(id: AccountID) { self.id = id }
    }
    /// `account.show`: the account and what it holds.
    public struct AccountShowResult: Codable, Equatable, Sendable {
        /// Devices the account holds (it is their `owner`), by state.
        public struct DeviceCounts: Codable, Equatable, Sendable {
            public var total: Int
            public var escrow: Int
            public var active: Int
            public var online: Int
            /// Decommissioned devices (read-only records; counted in `total`).
            public var retired: Int
            public init(total: Int, escrow: Int, active: Int, online: Int, retired: Int = 0) {
                self.total = total; self.escrow = escrow; self.active = active; self.online = online; self.retired = retired
            }
            public init(from decoder: any Decoder) throws {
                let c = try decoder.container(keyedBy: CodingKeys.self)
                total = try c.decode(Int.self, forKey: .total); escrow = try c.decode(Int.self, forKey: .escrow)
                active = try c.decode(Int.self, forKey: .active); online = try c.decode(Int.self, forKey: .online)
                // Absent from replies of escrowd before device.retire existed.
                retired = try c.decodeIfPresent(Int.self, forKey: .retired) ?? 0
            }
        }
        public var account: Account
        public var createdAt: Date
        /// The customer accounts it manages; present for provisioners and resellers only.
        public var manages: [AccountID]?
        public var devices: DeviceCounts
        /// Transfer requests sent or received that still have pending devices.
        public var openTransfers: Int
        public var operators: Int
        public var profiles: Int
        public init(account: Account, createdAt: Date, manages: [AccountID]?, devices: DeviceCounts, openTransfers: Int, operators: Int, profiles: Int) {
            self.account = account; self.createdAt = createdAt; self.manages = manages; self.devices = devices
            self.openTransfers = openTransfers; self.operators = operators; self.profiles = profiles
        }
    }
    /// `account.delete`: the account removed and what went with it.
    public struct AccountDeleteResult: Codable, Equatable, Sendable {
        public var account: Account
        /// The operator logins removed with it (the broker refuses them from the reply on).
        public var operators: [String]
        /// How many of its profiles were removed.
        public var profiles: Int
        public init(account: Account, operators: [String], profiles: Int) { self.account = account; self.operators = operators; self.profiles = profiles }
    }

    /// What an operator may do where it may act: everything (`full`), or only the read-only
    /// commands (`support`: an OEM's support staff looking at the customers it manages). The
    /// broker enforces it: a support login may publish only to the read-only commands' topics.
    public enum OperatorRole: String, Codable, CaseIterable, Sendable {
        case full, support
    }
    public struct OperatorCreate: Codable, Equatable, Sendable {
        public var username: String
        public var password: String
        public var account: AccountID
        /// Default `full`.
        public var role: OperatorRole?
        public init(username: String, password: String, account: AccountID, role: OperatorRole? = nil) {
            self.username = username; self.password = password; self.account = account; self.role = role
        }
    }
    public struct OperatorList: Codable, Equatable, Sendable {
        /// Only the operators of this account; omitted: all.
        public var account: AccountID?
        public init(account: AccountID? = nil) { self.account = account }
    }
    public struct OperatorListResult: Codable, Equatable, Sendable {
        public struct Entry: Codable, Equatable, Sendable {
            public var username: String
            public var account: AccountID
            public var role: OperatorRole
            public init(username: String, account: AccountID, role: OperatorRole = .full) { self.username = username; self.account = account; self.role = role }
        }
        public var operators: [Entry]
        public init(operators: [Entry]) { self.operators = operators }
    }
    public struct OperatorPasswd: Codable, Equatable, Sendable {
        public var username: String
        public var password: String
        public init(username: String, password: String) { self.username = username; self.password = password }
    }
    public struct OperatorRef: Codable, Equatable, Sendable {
        public var username: String
        public init(username: String) { self.username = username }
    }
    public struct OperatorResult: Codable, Equatable, Sendable {
        public init(username: String, account: AccountID, reach: [AccountID], role: OperatorRole = .full) {
            self.username = username; self.account = account; self.reach = reach; self.role = role
        }
        public var username: String
        public var account: AccountID
        public var role: OperatorRole
        /// Accounts this operator may act in (its own plus those its account manages).
        public var reach: [AccountID]
    }

    // MARK: provisioning
    public struct DeviceProvision: Codable, Equatable, Sendable {
        /// Explicit ids, or `prefix` + `count` (+ `start`, default 1) for a range like `sim-000001`.
        public var deviceIds: [DeviceID]?
        public var prefix: String?
        public var count: Int?
        public var start: Int?
        /// Issue a certificate identity per device and return its bundle (default true).
        public var issueIdentity: Bool?
        public init(deviceIds: [DeviceID]? = nil, prefix: String? = nil, count: Int? = nil, start: Int? = nil, issueIdentity: Bool? = nil) {
            self.deviceIds = deviceIds; self.prefix = prefix; self.count = count; self.start = start; self.issueIdentity = issueIdentity
        }
        public static let maxPerCommand = 1_000
    }
    /// What a factory writes onto a device: the minimum to identify it and reach the platform.
    public struct DeviceBundle: Codable, Equatable, Sendable {
        public var deviceId: DeviceID
        public var certificate: String
        public var privateKey: String
        /// The CA that signed the broker's server certificate (what the device trusts).
        public var brokerCA: String
        public var brokerURL: String
        public var fingerprint: String
        public init(deviceId: DeviceID, certificate: String, privateKey: String, brokerCA: String, brokerURL: String, fingerprint: String) {
            self.deviceId = deviceId; self.certificate = certificate; self.privateKey = privateKey
            self.brokerCA = brokerCA; self.brokerURL = brokerURL; self.fingerprint = fingerprint
        }
    }
    public struct DeviceProvisionResult: Codable, Equatable, Sendable {
        public init(provisioned: [DeviceID], bundles: [DeviceBundle], refused: [Transfer.Refusal]) { self.provisioned = provisioned; self.bundles = bundles; self.refused = refused }
        public var provisioned: [DeviceID]
        public var bundles: [DeviceBundle]
        public var refused: [Transfer.Refusal]
    }

    public struct DeviceList: Codable, Equatable, Sendable {
        public var state: DeviceView.State?
        public var online: Bool?
        public var prefix: String?
        public var limit: Int?
        public var offset: Int?
        public init(state: DeviceView.State? = nil, online: Bool? = nil, prefix: String? = nil, limit: Int? = nil, offset: Int? = nil) {
            self.state = state; self.online = online; self.prefix = prefix; self.limit = limit; self.offset = offset
        }
    }
    public struct DeviceListResult: Codable, Equatable, Sendable {
        public init(devices: [DeviceView], total: Int) { self.devices = devices; self.total = total }
        public var devices: [DeviceView]
        public var total: Int
    }
    public struct DeviceShow: Codable, Equatable, Sendable {
        public var deviceId: DeviceID
        public init(deviceId: DeviceID) { self.deviceId = deviceId }
    }
    public struct DeviceShowResult: Codable, Equatable, Sendable {
        public init(device: DeviceView, custody: [CustodyEntry], verification: CustodyChain.Verification) { self.device = device; self.custody = custody; self.verification = verification }
        public var device: DeviceView
        public var custody: [CustodyEntry]
        public var verification: CustodyChain.Verification
    }

    /// `device.retire`: decommission devices the acted-in account holds.
    public struct DeviceRetire: Codable, Equatable, Sendable {
        public var deviceIds: [DeviceID]
        /// Why (kept in the custody chain), 1 ... 500 characters.
        public var reason: String?
        public init(deviceIds: [DeviceID], reason: String? = nil) { self.deviceIds = deviceIds; self.reason = reason }
        public static let maxPerCommand = 1_000
    }
    public struct DeviceRetireResult: Codable, Equatable, Sendable {
        /// Devices retired by this command, by id.
        public var retired: [DeviceID]
        /// Devices named but not retired, each with its reason.
        public var refused: [Transfer.Refusal]
        /// Certificate serials added to the broker's revocation set by this command.
        public var revokedCertificates: Int
        public init(retired: [DeviceID], refused: [Transfer.Refusal], revokedCertificates: Int) {
            self.retired = retired; self.refused = refused; self.revokedCertificates = revokedCertificates
        }
    }

    /// `device.rebundle`: fresh identity bundles for devices whose files were lost.
    public struct DeviceRebundle: Codable, Equatable, Sendable {
        public var deviceIds: [DeviceID]
        public init(deviceIds: [DeviceID]) { self.deviceIds = deviceIds }
        public static let maxPerCommand = 1_000
    }
    public struct DeviceRebundleResult: Codable, Equatable, Sendable {
        /// One bundle per device re-bundled, by id: install it on the device (its key is in it).
        public var bundles: [DeviceBundle]
        public var refused: [Transfer.Refusal]
        /// Certificate serials added to the broker's revocation set by this command.
        public var revokedCertificates: Int
        public init(bundles: [DeviceBundle], refused: [Transfer.Refusal], revokedCertificates: Int) {
            self.bundles = bundles; self.refused = refused; self.revokedCertificates = revokedCertificates
        }
    }

    // MARK: transfers
    public struct TransferRequest: Codable, Equatable, Sendable {
        public var to: AccountID
        public var deviceIds: [DeviceID]
        public var note: String?
        /// Seconds until the request expires (default 7 days, 60 s ... 90 days).
        public var expiresIn: Int?
        public init(to: AccountID, deviceIds: [DeviceID], note: String? = nil, expiresIn: Int? = nil) {
            self.to = to; self.deviceIds = deviceIds; self.note = note; self.expiresIn = expiresIn
        }
        public static let expiryRange = 1...(90 * 24 * 3600)
    }
    public struct TransferList: Codable, Equatable, Sendable {
        public enum Direction: String, Codable, Sendable { case incoming, outgoing, all }
        public var direction: Direction?
        public var status: Transfer.Status?
        /// Page size (default 100) and how many to skip, newest first.
        public var limit: Int?
        public var offset: Int?
        public init(direction: Direction? = nil, status: Transfer.Status? = nil, limit: Int? = nil, offset: Int? = nil) {
            self.direction = direction; self.status = status; self.limit = limit; self.offset = offset
        }
    }
    public struct TransferListResult: Codable, Equatable, Sendable {
        public var transfers: [TransferView]
        /// How many match, over all pages.
        public var total: Int
        public init(transfers: [TransferView], total: Int) { self.transfers = transfers; self.total = total }
    }
    public struct TransferRef: Codable, Equatable, Sendable {
        public var transferId: String
        public init(transferId: String) { self.transferId = transferId }
    }
    public struct TransferApprove: Codable, Equatable, Sendable {
        public var transferId: String
        /// Omit to approve every pending device.
        public var deviceIds: [DeviceID]?
        public var action: ApprovalAction
        /// Profile for the initial configuration (default: the account's default profile).
        public var profile: String?
        public init(transferId: String, deviceIds: [DeviceID]? = nil, action: ApprovalAction, profile: String? = nil) {
            self.transferId = transferId; self.deviceIds = deviceIds; self.action = action; self.profile = profile
        }
    }
    public struct TransferReject: Codable, Equatable, Sendable {
        public var transferId: String
        public var deviceIds: [DeviceID]?
        public var reason: String
        public init(transferId: String, deviceIds: [DeviceID]? = nil, reason: String) {
            self.transferId = transferId; self.deviceIds = deviceIds; self.reason = reason
        }
    }
    public struct TransferResult: Codable, Equatable, Sendable {
        public init(transfer: TransferView, decided: [DeviceID], refused: [Transfer.Refusal]) { self.transfer = transfer; self.decided = decided; self.refused = refused }
        public var transfer: TransferView
        /// Devices decided by this command.
        public var decided: [DeviceID]
        /// Devices named but not decided, each with its reason.
        public var refused: [Transfer.Refusal]
    }

    // MARK: configuration
    public struct ProfilePut: Codable, Equatable, Sendable {
        public var name: String
        public var settings: [String: JSONValue]
        public var heartbeatInterval: Int?
        public var makeDefault: Bool?
        public init(name: String, settings: [String: JSONValue], heartbeatInterval: Int? = nil, makeDefault: Bool? = nil) {
            self.name = name; self.settings = settings; self.heartbeatInterval = heartbeatInterval; self.makeDefault = makeDefault
        }
    }
    public struct Profile: Codable, Equatable, Sendable {
        public var name: String
        public var version: Int
        public var settings: [String: JSONValue]
        public var heartbeatInterval: Int
        public var isDefault: Bool
        public init(name: String, version: Int, settings: [String: JSONValue], heartbeatInterval: Int, isDefault: Bool) {
            self.name = name; self.version = version; self.settings = settings; self.heartbeatInterval = heartbeatInterval; self.isDefault = isDefault
        }
        public static let builtinDefault = Profile(name: "default", version: 0, settings: [:], heartbeatInterval: 60, isDefault: true)
    }
    public struct ProfileListResult: Codable, Equatable, Sendable { public var profiles: [Profile]; public init(profiles: [Profile]) { self.profiles = profiles } }
    /// Names one profile of the acted-in account (`profile.show`, `profile.delete`).
    public struct ProfileRef: Codable, Equatable, Sendable {
        public var name: String
        public init(name: String) { self.name = name }
    }
    /// `profile.show`: the profile and the devices whose desired configuration comes from it.
    public struct ProfileShowResult: Codable, Equatable, Sendable {
        /// How many devices were last configured from one version of the profile.
        public struct VersionUse: Codable, Equatable, Sendable {
            public var version: Int
            public var devices: Int
            public init(version: Int, devices: Int) { self.version = version; self.devices = devices }
        }
        public var profile: Profile
        /// Devices of the account whose desired configuration was pushed from this profile (any version).
        public var devices: Int
        /// The same devices per profile version, newest first; versions no device uses are absent.
        public var versions: [VersionUse]
        public init(profile: Profile, devices: Int, versions: [VersionUse]) { self.profile = profile; self.devices = devices; self.versions = versions }
    }

    /// `events.since`: the account's stored events after a sequence number or from a time.
    /// `audit.list`: who changed what in the account, newest first.
    public struct AuditList: Codable, Equatable, Sendable {
        /// At most this many entries (default 100).
        public var limit: Int?
        /// Entries older than this id (the last one of the previous page).
        public var before: Int?
        public init(limit: Int? = nil, before: Int? = nil) { self.limit = limit; self.before = before }
        public static let defaultLimit = 100
        public static let maxLimit = 1_000
    }
    public struct AuditEntry: Codable, Equatable, Sendable {
        public var id: Int
        public var at: Date
        /// The sender's authenticated username, as the broker stamped it (`escrow-operator`);
        /// absent when the broker does not stamp commands (no EscrowFleet plugin).
        public var `operator`: String?
        public var command: String
        public var requestId: String?
        public var ok: Bool
        /// The error code when `ok` is false.
        public var code: ErrorCode?
        public init(id: Int, at: Date, operator: String?, command: String, requestId: String?, ok: Bool, code: ErrorCode?) {
            self.id = id; self.at = at; self.operator = `operator`; self.command = command; self.requestId = requestId; self.ok = ok; self.code = code
        }
    }
    public struct AuditListResult: Codable, Equatable, Sendable {
        /// Newest first.
        public var entries: [AuditEntry]
        /// True when older entries remain (ask again with `before`).
        public var more: Bool
        public init(entries: [AuditEntry], more: Bool) { self.entries = entries; self.more = more }
    }

    public struct EventsSince: Codable, Equatable, Sendable {
        /// Events with `seq` greater than this (the last one the caller has).
        public var after: Int?
        /// Events that happened at or after this time (exclusive with `after`).
        public var since: Date?
        /// At most this many events (default 500).
        public var limit: Int?
        public init(after: Int? = nil, since: Date? = nil, limit: Int? = nil) { self.after = after; self.since = since; self.limit = limit }
        public static let defaultLimit = 500
    }
    public struct EventsSinceResult: Codable, Equatable, Sendable {
        /// In `seq` order.
        public var events: [Event]
        /// The account's newest sequence number (0 when it has had no event).
        public var latestSeq: Int
        /// The oldest sequence number still stored (absent when none is).
        public var oldestSeq: Int?
        /// More events follow the last one returned: ask again with `after` = its `seq`.
        public var more: Bool
        /// How many of the events asked for (after `after`) are past the retention period and gone.
        public var pruned: Int?
        public init(events: [Event], latestSeq: Int, oldestSeq: Int?, more: Bool, pruned: Int? = nil) {
            self.events = events; self.latestSeq = latestSeq; self.oldestSeq = oldestSeq; self.more = more; self.pruned = pruned
        }
    }

    public struct ConfigPush: Codable, Equatable, Sendable {
        /// Devices of the account to configure; omit with `all: true` for every active device.
        public var deviceIds: [DeviceID]?
        public var all: Bool?
        /// Push this profile (default: the account's default profile) ...
        public var profile: String?
        /// ... or these settings.
        public var settings: [String: JSONValue]?
        public var heartbeatInterval: Int?
        public init(deviceIds: [DeviceID]? = nil, all: Bool? = nil, profile: String? = nil, settings: [String: JSONValue]? = nil, heartbeatInterval: Int? = nil) {
            self.deviceIds = deviceIds; self.all = all; self.profile = profile; self.settings = settings; self.heartbeatInterval = heartbeatInterval
        }
    }
    public struct ConfigPushResult: Codable, Equatable, Sendable {
        public init(pushed: [ConfigStatusEntry], refused: [Transfer.Refusal]) { self.pushed = pushed; self.refused = refused }
        public var pushed: [ConfigStatusEntry]
        public var refused: [Transfer.Refusal]
    }
    public struct ConfigStatus: Codable, Equatable, Sendable {
        public var deviceIds: [DeviceID]?
        public init(deviceIds: [DeviceID]? = nil) { self.deviceIds = deviceIds }
    }
    public struct ConfigStatusEntry: Codable, Equatable, Sendable {
        public enum State: String, Codable, Sendable { case none, pending, applied, rejected }
        public var deviceId: DeviceID
        public var desiredVersion: Int
        public var appliedVersion: Int
        public var state: State
        public var reason: String?
        public init(deviceId: DeviceID, desiredVersion: Int, appliedVersion: Int, state: State, reason: String? = nil) {
            self.deviceId = deviceId; self.desiredVersion = desiredVersion; self.appliedVersion = appliedVersion; self.state = state; self.reason = reason
        }
    }
    public struct ConfigStatusResult: Codable, Equatable, Sendable { public var devices: [ConfigStatusEntry]; public init(devices: [ConfigStatusEntry]) { self.devices = devices } }
}

/// A device as operators see it.
public struct DeviceView: Codable, Equatable, Sendable {
    /// `retired`: decommissioned by `device.retire`; its certificates are revoked and its record
    /// is read-only for good.
    public enum State: String, Codable, Sendable, CaseIterable { case escrow, active, retired }
    public var id: DeviceID
    public var owner: AccountID
    public var state: State
    public var mode: DeviceMode
    public var online: Bool
    public var lastSeen: Date?
    public var createdAt: Date
    public var agentVersion: String?
    public var fingerprint: String?
    public var configVersion: Int
    public var appliedVersion: Int
    public var configState: Commands.ConfigStatusEntry.State
    public var pendingTransfer: String?
    public init(id: DeviceID, owner: AccountID, state: State, mode: DeviceMode, online: Bool, lastSeen: Date?, createdAt: Date,
                agentVersion: String?, fingerprint: String?, configVersion: Int, appliedVersion: Int,
                configState: Commands.ConfigStatusEntry.State, pendingTransfer: String?) {
        self.id = id; self.owner = owner; self.state = state; self.mode = mode; self.online = online; self.lastSeen = lastSeen
        self.createdAt = createdAt; self.agentVersion = agentVersion; self.fingerprint = fingerprint
        self.configVersion = configVersion; self.appliedVersion = appliedVersion; self.configState = configState
        self.pendingTransfer = pendingTransfer
    }
}

/// A transfer request as operators see it.
public struct TransferView: Codable, Equatable, Sendable {
    public struct Item: Codable, Equatable, Sendable {
        public var deviceId: DeviceID
        public var outcome: String
        public var action: ApprovalAction?
        public var reason: String?
        public init(deviceId: DeviceID, outcome: String, action: ApprovalAction? = nil, reason: String? = nil) {
            self.deviceId = deviceId; self.outcome = outcome; self.action = action; self.reason = reason
        }
    }
    public var id: String
    public var from: AccountID
    public var to: AccountID
    public var note: String?
    public var createdAt: Date
    public var expiresAt: Date
    public var status: Transfer.Status
    public var counts: [String: Int]
    /// Omitted in listings.
    public var items: [Item]?

    public init(_ t: Transfer, includeItems: Bool) {
        id = t.id; from = t.from; to = t.to; note = t.note; createdAt = t.createdAt; expiresAt = t.expiresAt
        status = t.status
        var c: [String: Int] = [:]
        for d in t.order { c[t.items[d]?.name ?? "pending", default: 0] += 1 }
        counts = c
        items = includeItems ? t.order.map { d in
            switch t.items[d] ?? .pending {
            case .approved(let a): Item(deviceId: d, outcome: "approved", action: a)
            case .rejected(let r): Item(deviceId: d, outcome: "rejected", reason: r)
            case let o: Item(deviceId: d, outcome: o.name)
            }
        } : nil
    }
}
