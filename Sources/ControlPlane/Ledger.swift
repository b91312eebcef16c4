import Foundation
import EscrowCore
import Storage

/// The control plane's durable state: every read and write of the database (SQLite or
/// PostgreSQL, `SQLDatabase`) goes here, in SQL both accept.
/// Not thread-safe by itself: the `ControlPlane` actor is its only user.
final class Ledger {
    let db: any SQLDatabase
    /// Rows read ahead for a bulk decision (`readingAhead`); nil otherwise.
    var readAhead: DeviceReadAhead?
    /// False: every read goes to the database (what the read-ahead must be indistinguishable from).
    var readsAhead = true

    init(store: StoreLocation) throws {
        db = try store.open()
        try db.migrate(Schema.migrations)
    }

    /// Reads through an already open database (a backup being checked), without migrating it.
    init(database: any SQLDatabase) { db = database }

    // MARK: accounts
    /// A live account; a deleted one (a tombstone) is not found.
    func account(_ id: AccountID) throws -> Account? {
        try db.query("SELECT id, name, kind, managed_by FROM accounts WHERE id = ? AND deleted_at IS NULL", [.text(id.rawValue)]).first.map(Self.account)
    }
    func accounts() throws -> [Account] {
        try db.query("SELECT id, name, kind, managed_by FROM accounts WHERE deleted_at IS NULL ORDER BY id").map(Self.account)
    }
    /// When the account was created and, for a tombstone, deleted; nil when the id was never used.
    func accountDates(_ id: AccountID) throws -> (created: Date, deleted: Date?)? {
        try db.query("SELECT created_at, deleted_at FROM accounts WHERE id = ?", [.text(id.rawValue)]).first.map {
            (Date(timeIntervalSince1970: try $0.double("created_at")), try $0.optionalDouble("deleted_at").map(Date.init(timeIntervalSince1970:)))
        }
    }
    /// The live accounts whose `managedBy` is `id`, by id.
    func managedAccounts(by id: AccountID) throws -> [AccountID] {
        try db.query("SELECT id FROM accounts WHERE managed_by = ? AND deleted_at IS NULL ORDER BY id", [.text(id.rawValue)]).map {
            guard let a = AccountID(try $0.string("id")) else { throw DomainError(.internalError, "accounts row managed by \(id): id is not an account id") }
            return a
        }
    }
    /// Devices the account holds, by state, and how many of them are online.
    func deviceCounts(owner: AccountID) throws -> Commands.AccountShowResult.DeviceCounts {
        var c = Commands.AccountShowResult.DeviceCounts(total: 0, escrow: 0, active: 0, online: 0)
        for r in try db.query("SELECT state, count(*) AS n, sum(online) AS o FROM devices WHERE owner = ? GROUP BY state", [.text(owner.rawValue)]) {
            let n = Int(try r.int("n"))
            switch try r.string("state") {
            case DeviceView.State.escrow.rawValue: c.escrow += n
            case DeviceView.State.active.rawValue: c.active += n
            case DeviceView.State.retired.rawValue: c.retired += n
            case let other: throw DomainError(.internalError, "devices of \(owner): unknown state '\(other)'")
            }
            c.total += n
            c.online += Int(try r.int("o"))
        }
        return c
    }
    /// Transfer requests sent or received by the account that still have pending devices.
    func openTransferCount(_ id: AccountID) throws -> Int {
        Int(try db.query("SELECT count(*) AS n FROM transfers WHERE status IN ('pending', 'partially_approved') AND (from_account = ?1 OR to_account = ?1)",
                         [.text(id.rawValue)]).first?.int("n") ?? 0)
    }
    /// Devices held by other accounts whose current or pending certificate the account's authority
    /// issued (escrow identities of a provisioner, or identities not yet confirmed): removing the
    /// authority would lock them out of the broker.
    func devicesTrusting(_ id: AccountID) throws -> Int {
        Int(try db.query("""
            SELECT count(*) AS n FROM devices WHERE owner != ?1 AND state != 'retired' AND (coalesce(cert_issuer, provisioner) = ?1 OR next_issuer = ?1)
            """, [.text(id.rawValue)]).first?.int("n") ?? 0)
    }
    /// Removes the account's operators, profiles and certificate authority, and leaves its row as a
    /// tombstone (`deleted_at`). Runs inside the command's transaction.
    func deleteAccount(_ id: AccountID, at: Date) throws {
        try db.write("DELETE FROM operators WHERE account_id = ?", [.text(id.rawValue)])
        try db.write("DELETE FROM profiles WHERE account_id = ?", [.text(id.rawValue)])
        try db.write("DELETE FROM authorities WHERE account_id = ?", [.text(id.rawValue)])
        try db.write("UPDATE accounts SET deleted_at = ? WHERE id = ?", [.real(at.timeIntervalSince1970), .text(id.rawValue)])
    }
    func insert(_ a: Account, at: Date) throws {
        try db.write("INSERT INTO accounts (id, name, kind, managed_by, created_at) VALUES (?, ?, ?, ?, ?)",
                       [.text(a.id.rawValue), .text(a.name), .text(a.kind.rawValue), a.managedBy.map { .text($0.rawValue) } ?? .null, .real(at.timeIntervalSince1970)])
    }
    private static func account(_ r: Row) throws -> Account {
        Account(id: AccountID(try r.string("id"))!, name: try r.string("name"), kind: Account.Kind(rawValue: try r.string("kind")) ?? .customer,
                managedBy: try r.optionalString("managed_by").flatMap(AccountID.init))
    }

    // MARK: operators
    struct OperatorRecord { var username: String; var account: AccountID; var passwordHash: String; var role: Commands.OperatorRole }
    func operators() throws -> [OperatorRecord] {
        try db.query("SELECT username, account_id, password_hash, role FROM operators ORDER BY username").map {
            let role = try $0.string("role")
            guard let account = AccountID(try $0.string("account_id")), let r = Commands.OperatorRole(rawValue: role) else {
                throw DomainError(.internalError, "operators row \(try $0.string("username")): account or role '\(role)' unreadable")
            }
            return OperatorRecord(username: try $0.string("username"), account: account, passwordHash: try $0.string("password_hash"), role: r)
        }
    }
    func operatorExists(_ username: String) throws -> Bool {
        try !db.query("SELECT 1 FROM operators WHERE username = ?", [.text(username)]).isEmpty
    }
    func insertOperator(_ username: String, account: AccountID, passwordHash: String, role: Commands.OperatorRole = .full, at: Date) throws {
        try db.write("INSERT INTO operators (username, account_id, password_hash, created_at, role) VALUES (?, ?, ?, ?, ?)",
                       [.text(username), .text(account.rawValue), .text(passwordHash), .real(at.timeIntervalSince1970), .text(role.rawValue)])
    }

    // MARK: devices
    static let deviceColumns = """
        d.id, d.owner, d.provisioner, d.state, d.mode, d.online, d.last_seen, d.created_at, d.agent_version, d.fingerprint,
        d.desired_version, d.applied_version, d.config_state, d.config_reason,
        (SELECT transfer_id FROM transfer_items ti WHERE ti.device_id = d.id AND ti.outcome = 'pending') AS pending_transfer
        """
    func device(_ id: DeviceID) throws -> DeviceView? {
        try db.query("SELECT \(Self.deviceColumns) FROM devices d WHERE d.id = ?", [.text(id.rawValue)]).first.map(Self.deviceView)
    }
    func deviceExists(_ id: DeviceID) throws -> Bool {
        try !db.query("SELECT 1 FROM devices WHERE id = ?", [.text(id.rawValue)]).isEmpty
    }
    func devices(owner: AccountID, filter: Commands.DeviceList) throws -> (devices: [DeviceView], total: Int) {
        var sql = " FROM devices d WHERE d.owner = ?"
        var params: [SQLValue] = [.text(owner.rawValue)]
        if let s = filter.state { sql += " AND d.state = ?"; params.append(.text(s.rawValue)) }
        if let o = filter.online { sql += " AND d.online = ?"; params.append(.integer(o ? 1 : 0)) }
        // A prefix as an index range: ids are [A-Za-z0-9._-], all below "~", so [p, p + "~") holds
        // exactly the ids that start with p.
        if let p = filter.prefix { sql += " AND d.id >= ? AND d.id < ?"; params += [.text(p), .text(p + "~")] }
        let total = Int(try db.query("SELECT count(*) AS n" + sql, params).first?.int("n") ?? 0)
        let limit = min(max(filter.limit ?? 100, 1), 1_000), offset = max(filter.offset ?? 0, 0)
        let rows = try db.query("SELECT \(Self.deviceColumns)" + sql + " ORDER BY d.id LIMIT ? OFFSET ?", params + [.integer(Int64(limit)), .integer(Int64(offset))])
        return (try rows.map(Self.deviceView), total)
    }
    func activeDeviceIDs(owner: AccountID) throws -> [DeviceID] {
        try db.query("SELECT id FROM devices WHERE owner = ? AND state = 'active' ORDER BY id", [.text(owner.rawValue)]).compactMap { DeviceID(try $0.string("id")) }
    }
    func allDeviceIDs() throws -> [DeviceID] {
        try db.query("SELECT id FROM devices").compactMap { DeviceID(try $0.string("id")) }
    }
    func candidates(_ ids: [DeviceID]) throws -> [DeviceID: TransferPolicy.Candidate] {
        var out: [DeviceID: TransferPolicy.Candidate] = [:]
        for id in ids {
            guard let r = try db.query("""
                SELECT d.owner, d.state, (SELECT transfer_id FROM transfer_items ti WHERE ti.device_id = d.id AND ti.outcome = 'pending') AS p
                FROM devices d WHERE d.id = ?
                """, [.text(id.rawValue)]).first else { continue }
            let state = try r.string("state")
            out[id] = .init(id: id, owner: AccountID(try r.string("owner"))!, pendingTransfer: try r.optionalString("p"),
                            retired: state == DeviceView.State.retired.rawValue)
        }
        return out
    }
    func insertDevice(_ id: DeviceID, provisioner: AccountID, fingerprint: String?, serial: String?, at: Date) throws {
        forgetAhead(id)
        try db.write("""
            INSERT INTO devices (id, owner, provisioner, created_at, fingerprint, cert_serial) VALUES (?, ?, ?, ?, ?, ?)
            """, [.text(id.rawValue), .text(provisioner.rawValue), .text(provisioner.rawValue), .real(at.timeIntervalSince1970),
                  fingerprint.map { .text($0) } ?? .null, serial.map { .text($0) } ?? .null])
    }
    func setOwner(_ id: DeviceID, owner: AccountID, activatedAt: Date?) throws {
        updateAhead(id) { r in r.owner = owner.rawValue; if activatedAt != nil { r.state = DeviceView.State.active.rawValue } }
        if let at = activatedAt {
            try db.write("UPDATE devices SET owner = ?, state = 'active', activated_at = ? WHERE id = ?",
                           [.text(owner.rawValue), .real(at.timeIntervalSince1970), .text(id.rawValue)])
        } else {
            try db.write("UPDATE devices SET owner = ? WHERE id = ?", [.text(owner.rawValue), .text(id.rawValue)])
        }
    }
    /// Retires a device inside the command's transaction: state `retired`, every certificate serial
    /// it has or was issued (current and pending identity) into `revocations`, and no configuration
    /// left to deliver. Returns how many serials were newly revoked.
    func retire(_ id: DeviceID, at: Date) throws -> Int {
        forgetAhead(id)
        let revoked = try revokeIdentities(id, at: at)
        try db.write("""
            UPDATE devices SET state = 'retired', retired_at = ?, online = 0, config_state = CASE config_state WHEN 'pending' THEN 'none' ELSE config_state END,
                csr = NULL, rotation_version = NULL WHERE id = ?
            """, [.real(at.timeIntervalSince1970), .text(id.rawValue)])
        return revoked
    }
    /// Every certificate serial the device has or was issued (its identity in force, escrow or
    /// owner-issued, and one issued but not yet confirmed) into `revocations`. Returns how many were new.
    func revokeIdentities(_ id: DeviceID, at: Date) throws -> Int {
        guard let r = try db.query("""
            SELECT coalesce(cert_issuer, provisioner) AS issuer, cert_serial, next_issuer, next_serial FROM devices WHERE id = ?
            """, [.text(id.rawValue)]).first else { throw DomainError(.internalError, "devices row \(id) vanished") }
        var revoked = 0
        for (issuer, serial) in [(try r.string("issuer"), try r.optionalString("cert_serial")),
                                 (try r.optionalString("next_issuer") ?? "", try r.optionalString("next_serial"))] {
            guard let serial, !issuer.isEmpty else { continue }
            if try revoke(serial: serial, issuer: issuer, device: id.rawValue, at: at) { revoked += 1 }
        }
        return revoked
    }
    /// One certificate serial into the revocation set of its issuer; true when it was not there yet.
    @discardableResult
    func revoke(serial: String, issuer: String, device: String, at: Date) throws -> Bool {
        try db.execute("INSERT INTO revocations (account_id, serial, device_id, revoked_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       [.text(issuer), .text(serial), .text(device), .real(at.timeIntervalSince1970)]) > 0
    }
    /// A fresh identity bundle for a device (`device.rebundle`): after `revokeIdentities`, the
    /// new certificate is the one in force (`issuer` signed it; nil: the provisioner), nothing is pending.
    func setIdentity(_ id: DeviceID, fingerprint: String, serial: String, issuer: AccountID?) throws {
        forgetAhead(id)
        try clearPendingIdentity(id)
        try db.write("UPDATE devices SET fingerprint = ?, cert_serial = ?, cert_issuer = ? WHERE id = ?",
                       [.text(fingerprint), .text(serial), issuer.map { .text($0.rawValue) } ?? .null, .text(id.rawValue)])
    }
    /// No identity pending, no CSR on file: what the next owner's rotation starts from.
    private func clearPendingIdentity(_ id: DeviceID) throws {
        updateAhead(id) { r in r.nextCertificate = nil; r.nextSerial = nil; r.nextIssuer = nil; r.rotationVersion = nil; r.csr = nil }
        try db.write("""
            UPDATE devices SET next_certificate = NULL, next_fingerprint = NULL, next_serial = NULL, next_issuer = NULL,
                rotation_version = NULL, csr = NULL WHERE id = ?
            """, [.text(id.rawValue)])
    }
    func owner(of id: DeviceID) throws -> AccountID? {
        try db.query("SELECT owner FROM devices WHERE id = ?", [.text(id.rawValue)]).first.flatMap { AccountID(try $0.string("owner")) }
    }
    private static func deviceView(_ r: Row) throws -> DeviceView {
        DeviceView(id: DeviceID(try r.string("id"))!, owner: AccountID(try r.string("owner"))!,
                   state: DeviceView.State(rawValue: try r.string("state")) ?? .escrow,
                   mode: DeviceMode(rawValue: try r.string("mode")) ?? .escrow, online: try r.int("online") != 0,
                   lastSeen: try r.optionalDouble("last_seen").map(Date.init(timeIntervalSince1970:)),
                   createdAt: Date(timeIntervalSince1970: try r.double("created_at")),
                   agentVersion: try r.optionalString("agent_version"), fingerprint: try r.optionalString("fingerprint"),
                   configVersion: Int(try r.int("desired_version")), appliedVersion: Int(try r.int("applied_version")),
                   configState: .init(rawValue: try r.string("config_state")) ?? .none, pendingTransfer: try r.optionalString("pending_transfer"))
    }

    // MARK: presence and acks (batched by DeviceIngest)
    /// Records a status; one from an older connection session than the newest recorded changes nothing.
    func recordPresence(_ id: DeviceID, online: Bool, mode: DeviceMode?, agentVersion: String?, session: Int?, at: Date) throws {
        let session: SQLValue = session.map { .integer(Int64($0)) } ?? .null
        try db.write("""
            UPDATE devices SET online = ?1, mode = coalesce(?2, mode), agent_version = coalesce(?3, agent_version),
                last_seen = \(db.dialect.greatest)(coalesce(last_seen, 0), ?4), presence_session = coalesce(?5, presence_session)
            WHERE id = ?6 AND (?5 IS NULL OR presence_session IS NULL OR presence_session <= ?5)
            """, [.integer(online ? 1 : 0), mode.map { .text($0.rawValue) } ?? .null, agentVersion.map { .text($0) } ?? .null,
                  .real(at.timeIntervalSince1970), session, .text(id.rawValue)])
    }
    /// Every device that can be online: whether it is recorded online, and the heartbeat interval
    /// of its newest configuration (nil: the escrow default). `PresenceLease`'s start.
    func leaseState() throws -> [(DeviceID, online: Bool, interval: Int?)] {
        var out: [(DeviceID, online: Bool, interval: Int?)] = []
        try db.forEachRow("SELECT id, online, heartbeat_interval FROM devices WHERE state != 'retired'", []) { r in
            guard let d = DeviceID(try r.string("id")) else { return }
            out.append((d, try r.int("online") != 0, try r.optionalInt("heartbeat_interval")))
        }
        return out
    }
    /// Presence decided by lease (not by a status). Returns the owner when the row changed, nil
    /// when it already said so (or the device is retired or unknown): no event then.
    func setOnline(_ id: DeviceID, _ online: Bool) throws -> AccountID? {
        guard try db.execute("UPDATE devices SET online = ? WHERE id = ? AND online != ? AND state != 'retired'",
                             [.integer(online ? 1 : 0), .text(id.rawValue), .integer(online ? 1 : 0)]) > 0 else { return nil }
        return try owner(of: id)
    }
    /// The newest connection session recorded per device.
    func presenceSessions() throws -> [DeviceID: Int] {
        var out: [DeviceID: Int] = [:]
        for r in try db.query("SELECT id, presence_session FROM devices WHERE presence_session IS NOT NULL") {
            guard let d = DeviceID(try r.string("id")) else { continue }
            out[d] = Int(try r.int("presence_session"))
        }
        return out
    }
    /// Only the time: a heartbeat batched before a mode switch must not undo the mode that the
    /// device's ack and retained status (both ordered, QoS 1) already recorded.
    func recordLastSeen(_ id: DeviceID, at: Date) throws {
        try db.write("UPDATE devices SET last_seen = \(db.dialect.greatest)(coalesce(last_seen, 0), ?) WHERE id = ?",
                       [.real(at.timeIntervalSince1970), .text(id.rawValue)])
    }
    /// Applies a device's ack; returns the state it moved to, or nil when the ack is stale or unknown.
    func recordAck(_ id: DeviceID, _ ack: ConfigAck) throws -> (owner: AccountID, state: Commands.ConfigStatusEntry.State, mode: DeviceMode?)? {
        let row: (owner: String, desired: Int, applied: Int, configState: String)
        if let a = aheadRow(id) { row = (a.owner, a.desiredVersion, a.appliedVersion, a.configState) } else {
            guard let r = try db.query("SELECT owner, desired_version, applied_version, config_state FROM devices WHERE id = ?", [.text(id.rawValue)]).first else { return nil }
            row = (try r.string("owner"), Int(try r.int("desired_version")), Int(try r.int("applied_version")), try r.string("config_state"))
        }
        let desired = row.desired, applied = row.applied
        guard let owner = AccountID(row.owner) else { throw DomainError(.internalError, "devices row \(id): owner is not an account id") }
        switch ack.result {
        case .applied:
            // An ack of an older version (re-ack after a stale delivery) moves nothing backwards.
            guard ack.version > applied || (ack.version == desired && row.configState != "applied") else { return nil }
            guard ack.version <= desired else { return nil }
            let mode = try aheadRow(id)?.modes[ack.version] ?? configMode(id, version: ack.version)
            let state = ack.version == desired ? "applied" : "pending"
            try db.write("UPDATE devices SET applied_version = ?, config_state = ?, config_reason = NULL, mode = coalesce(?, mode) WHERE id = ?",
                           [.integer(Int64(ack.version)), .text(state), mode.map { .text($0.rawValue) } ?? .null, .text(id.rawValue)])
            updateAhead(id) { $0.appliedVersion = ack.version; $0.configState = state }
            return (owner, .init(rawValue: state)!, mode)
        case .rejected:
            guard ack.version == desired, row.configState == "pending" else { return nil }
            try db.write("UPDATE devices SET config_state = 'rejected', config_reason = ? WHERE id = ?",
                           [.text(ack.reason ?? "rejected by the device"), .text(id.rawValue)])
            updateAhead(id) { $0.configState = "rejected" }
            return (owner, .rejected, nil)
        }
    }
    private func configMode(_ id: DeviceID, version: Int) throws -> DeviceMode? {
        guard let r = try db.query("SELECT payload FROM configs WHERE device_id = ? AND version = ?", [.text(id.rawValue), .integer(Int64(version))]).first,
              let c = try? WireCodec.decode(DeviceConfig.self, from: try r.blob("payload"), limit: .max) else { return nil }
        return c.mode
    }

    // MARK: configuration
    /// Records a new desired configuration for a device, with the next version. Returns it.
    /// While an issued identity is unconfirmed, every configuration carries its certificate, so a
    /// device that only ever sees a later version still receives it.
    /// The device records which stored profile (and version) the configuration came from, unless
    /// `keepsProfile` (the configuration in force re-pushed to deliver an identity).
    /// `activating`: the device becomes `owner`'s, active since `activating`, in the same row update
    /// (one new row version instead of two: on PostgreSQL an update that changes an indexed column
    /// writes an entry into every index of the table).
    func pushConfig(_ id: DeviceID, owner: AccountID, mode: DeviceMode, profile: Commands.Profile, certificate: String?, at: Date,
                    keepsProfile: Bool = false, activating: Date? = nil) throws -> DeviceConfig {
        let current: (desired: Int, next: String?, rotation: Int?, issuer: String?)?
        if let a = aheadRow(id) {
            current = (a.desiredVersion, a.nextCertificate, a.rotationVersion, a.certIssuer)
        } else {
            current = try db.query("SELECT desired_version, next_certificate, rotation_version, cert_issuer FROM devices WHERE id = ?", [.text(id.rawValue)]).first.map {
                (Int(try $0.int("desired_version")), try $0.optionalString("next_certificate"), try $0.optionalInt("rotation_version"), try $0.optionalString("cert_issuer"))
            }
        }
        let version = (current?.desired ?? 0) + 1
        let certificate = certificate ?? current?.next
        // The first version that carries the issued certificate, written with the row update below.
        let startsRotation = certificate != nil && current?.rotation == nil
        if startsRotation { updateAhead(id) { $0.rotationVersion = version } }
        updateAhead(id) { $0.desiredVersion = version }
        var config = DeviceConfig(version: version, mode: mode, heartbeatInterval: profile.heartbeatInterval, owner: owner,
                                  settings: profile.settings, certificate: certificate)
        // On an identity a previous owner issued (a resale, a return): every configuration asks the
        // device for a new key and CSR until one carries the new owner's certificate, so a device
        // that only ever sees a later version is still asked.
        if certificate == nil, let issuer = current?.issuer, issuer != owner.rawValue { config.renewIdentity = true }
        try db.write("INSERT INTO configs (device_id, version, payload, created_at) VALUES (?, ?, ?, ?)",
                       [.text(id.rawValue), .integer(Int64(version)), .blob(WireCodec.encode(config)), .real(at.timeIntervalSince1970)])
        var sets = "desired_version = ?, config_state = 'pending', config_reason = NULL, heartbeat_interval = ?"
        var params: [SQLValue] = [.integer(Int64(version)), .integer(Int64(config.heartbeatInterval))]
        if !keepsProfile {
            // Stored profiles have versions from 1; the built-in default and explicit settings have 0.
            let stored = profile.version > 0
            sets += ", profile = ?, profile_version = ?"
            params += [stored ? .text(profile.name) : .null, stored ? .integer(Int64(profile.version)) : .null]
        }
        if startsRotation { sets += ", rotation_version = ?"; params.append(.integer(Int64(version))) }
        if let activating {
            sets += ", owner = ?, state = 'active', activated_at = ?"
            params += [.text(owner.rawValue), .real(activating.timeIntervalSince1970)]
            updateAhead(id) { r in r.owner = owner.rawValue; r.state = DeviceView.State.active.rawValue }
        }
        try db.write("UPDATE devices SET \(sets) WHERE id = ?", params + [.text(id.rawValue)])
        return config
    }
    /// `desiredConfig` of many devices, `readAheadChunk` per query.
    func desiredConfigs(_ ids: [DeviceID]) throws -> [DeviceID: (payload: [UInt8], heartbeatInterval: Int?)] {
        var out: [DeviceID: (payload: [UInt8], heartbeatInterval: Int?)] = [:]
        let sql = """
            SELECT d.id, c.payload, d.heartbeat_interval FROM devices d JOIN configs c ON c.device_id = d.id AND c.version = d.desired_version
            WHERE d.id IN \(Self.chunkPlaces)
            """
        try forEachChunk(of: ids) { params in
            for r in try db.query(sql, params) {
                guard let d = DeviceID(try r.string("id")) else { continue }
                out[d] = (try r.blob("payload"), try r.optionalInt("heartbeat_interval"))
            }
        }
        return out
    }

    /// The desired configuration's payload and heartbeat interval.
    func desiredConfig(_ id: DeviceID) throws -> (payload: [UInt8], heartbeatInterval: Int?)? {
        guard let r = try db.query("""
            SELECT c.payload, d.heartbeat_interval FROM devices d JOIN configs c ON c.device_id = d.id AND c.version = d.desired_version WHERE d.id = ?
            """, [.text(id.rawValue)]).first else { return nil }
        return (try r.blob("payload"), try r.optionalInt("heartbeat_interval"))
    }
    /// Devices whose desired configuration is not yet acknowledged.
    func unconverged() throws -> [DeviceID] {
        try db.query("SELECT id FROM devices WHERE config_state = 'pending' AND state != 'retired'").compactMap { DeviceID(try $0.string("id")) }
    }
    func configStatus(owner: AccountID, ids: [DeviceID]?) throws -> [Commands.ConfigStatusEntry] {
        let rows: [Row]
        if let ids {
            rows = try ids.compactMap { try db.query("SELECT id, desired_version, applied_version, config_state, config_reason FROM devices WHERE id = ? AND owner = ?", [.text($0.rawValue), .text(owner.rawValue)]).first }
        } else {
            rows = try db.query("SELECT id, desired_version, applied_version, config_state, config_reason FROM devices WHERE owner = ? AND state = 'active' ORDER BY id", [.text(owner.rawValue)])
        }
        return try rows.map { r in
            .init(deviceId: DeviceID(try r.string("id"))!, desiredVersion: Int(try r.int("desired_version")), appliedVersion: Int(try r.int("applied_version")),
                  state: .init(rawValue: try r.string("config_state")) ?? .none, reason: try r.optionalString("config_reason"))
        }
    }

    // MARK: profiles
    func profile(_ account: AccountID, name: String?) throws -> Commands.Profile? {
        let rows = try name.map { try db.query("SELECT * FROM profiles WHERE account_id = ? AND name = ?", [.text(account.rawValue), .text($0)]) }
            ?? db.query("SELECT * FROM profiles WHERE account_id = ? AND is_default = 1", [.text(account.rawValue)])
        return try rows.first.map(Self.profile)
    }
    func profiles(_ account: AccountID) throws -> [Commands.Profile] {
        try db.query("SELECT * FROM profiles WHERE account_id = ? ORDER BY name", [.text(account.rawValue)]).map(Self.profile)
    }
    func putProfile(_ account: AccountID, _ p: Commands.ProfilePut) throws -> Commands.Profile {
        let existing = try profile(account, name: p.name)
        let hasDefault = try profile(account, name: nil) != nil
        let makeDefault = p.makeDefault ?? (existing?.isDefault ?? !hasDefault)
        if makeDefault { try db.write("UPDATE profiles SET is_default = 0 WHERE account_id = ?", [.text(account.rawValue)]) }
        let profile = Commands.Profile(name: p.name, version: (existing?.version ?? 0) + 1, settings: p.settings,
                                       heartbeatInterval: p.heartbeatInterval ?? existing?.heartbeatInterval ?? Commands.Profile.builtinDefault.heartbeatInterval,
                                       isDefault: makeDefault)
        let settings = String(decoding: WireCodec.encode(JSONValue.object(p.settings)), as: UTF8.self)
        try db.write("""
            INSERT INTO profiles (account_id, name, version, settings, heartbeat_interval, is_default) VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (account_id, name) DO UPDATE SET version = excluded.version, settings = excluded.settings,
                heartbeat_interval = excluded.heartbeat_interval, is_default = excluded.is_default
            """, [.text(account.rawValue), .text(p.name), .integer(Int64(profile.version)), .text(settings),
                  .integer(Int64(profile.heartbeatInterval)), .integer(makeDefault ? 1 : 0)])
        return profile
    }
    /// Devices of the account whose desired configuration came from the profile, per profile version, newest first.
    func profileUse(_ account: AccountID, name: String) throws -> [Commands.ProfileShowResult.VersionUse] {
        try db.query("""
            SELECT profile_version AS v, count(*) AS n FROM devices WHERE owner = ? AND profile = ? GROUP BY profile_version ORDER BY profile_version DESC
            """, [.text(account.rawValue), .text(name)]).map { .init(version: Int(try $0.int("v")), devices: Int(try $0.int("n"))) }
    }
    func deleteProfile(_ account: AccountID, name: String) throws {
        try db.write("DELETE FROM profiles WHERE account_id = ? AND name = ?", [.text(account.rawValue), .text(name)])
    }
    private static func profile(_ r: Row) throws -> Commands.Profile {
        let settings = (try? WireCodec.decoder.decode([String: JSONValue].self, from: Data(try r.string("settings").utf8))) ?? [:]
        return .init(name: try r.string("name"), version: Int(try r.int("version")), settings: settings,
                     heartbeatInterval: Int(try r.int("heartbeat_interval")), isDefault: try r.int("is_default") != 0)
    }

    // MARK: transfers
    func insert(_ t: Transfer) throws {
        try db.write("INSERT INTO transfers (id, from_account, to_account, note, created_at, expires_at, status) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [.text(t.id), .text(t.from.rawValue), .text(t.to.rawValue), t.note.map { .text($0) } ?? .null,
                        .real(t.createdAt.timeIntervalSince1970), .real(t.expiresAt.timeIntervalSince1970), .text(t.status.rawValue)])
        for (i, d) in t.order.enumerated() {
            try db.write("INSERT INTO transfer_items (transfer_id, position, device_id, outcome) VALUES (?, ?, ?, 'pending')",
                           [.text(t.id), .integer(Int64(i)), .text(d.rawValue)])
        }
    }
    func transfer(_ id: String) throws -> Transfer? {
        guard let r = try db.query("SELECT * FROM transfers WHERE id = ?", [.text(id)]).first else { return nil }
        let items = try db.query("SELECT device_id, outcome, action, reason FROM transfer_items WHERE transfer_id = ? ORDER BY position", [.text(id)])
        var t = Transfer(id: try r.string("id"), from: AccountID(try r.string("from_account"))!, to: AccountID(try r.string("to_account"))!,
                         note: try r.optionalString("note"), createdAt: Date(timeIntervalSince1970: try r.double("created_at")),
                         expiresAt: Date(timeIntervalSince1970: try r.double("expires_at")),
                         devices: try items.compactMap { DeviceID(try $0.string("device_id")) })
        for i in items {
            guard let d = DeviceID(try i.string("device_id")) else { continue }
            switch try i.string("outcome") {
            case "approved": t.items[d] = .approved(ApprovalAction(rawValue: try i.optionalString("action") ?? "") ?? .activate)
            case "rejected": t.items[d] = .rejected(reason: try i.optionalString("reason") ?? "")
            case "cancelled": t.items[d] = .cancelled
            case "expired": t.items[d] = .expired
            default: t.items[d] = .pending
            }
        }
        return t
    }
    func transfers(for account: AccountID, direction: Commands.TransferList.Direction) throws -> [Transfer] {
        let sql: String
        switch direction {
        case .incoming: sql = "SELECT id FROM transfers WHERE to_account = ? ORDER BY created_at DESC"
        case .outgoing: sql = "SELECT id FROM transfers WHERE from_account = ? ORDER BY created_at DESC"
        case .all: sql = "SELECT id FROM transfers WHERE from_account = ?1 OR to_account = ?1 ORDER BY created_at DESC"
        }
        return try db.query(sql, [.text(account.rawValue)]).compactMap { try transfer(try $0.string("id")) }
    }
    /// Saves the outcomes of `decided` devices and the request's status.
    func save(_ t: Transfer, decided: [DeviceID], at: Date) throws {
        for d in decided {
            let o = t.items[d] ?? .pending
            var action: SQLValue = .null, reason: SQLValue = .null
            if case .approved(let a) = o { action = .text(a.rawValue) }
            if case .rejected(let r) = o { reason = .text(r) }
            try db.write("UPDATE transfer_items SET outcome = ?, action = ?, reason = ?, decided_at = ? WHERE transfer_id = ? AND device_id = ?",
                           [.text(o.name), action, reason, .real(at.timeIntervalSince1970), .text(t.id), .text(d.rawValue)])
        }
        try db.write("UPDATE transfers SET status = ? WHERE id = ?", [.text(t.status.rawValue), .text(t.id)])
    }
    func expiredOpenTransfers(now: Date) throws -> [String] {
        try db.query("SELECT id FROM transfers WHERE status IN ('pending', 'partially_approved') AND expires_at <= ?", [.real(now.timeIntervalSince1970)]).map { try $0.string("id") }
    }

    // MARK: custody
    func custody(_ id: DeviceID) throws -> [CustodyEntry] {
        try db.query("SELECT * FROM custody WHERE device_id = ? ORDER BY seq", [.text(id.rawValue)]).map(Self.custodyEntry)
    }
    static func custodyEntry(_ r: Row) throws -> CustodyEntry {
        guard let device = DeviceID(try r.string("device_id")), let holder = AccountID(try r.string("holder")) else {
            throw DomainError(.internalError, "custody row: device or holder is not an identifier")
        }
        return CustodyEntry(deviceId: device, seq: Int(try r.int("seq")), holder: holder,
                            previousHolder: try r.optionalString("previous_holder").flatMap(AccountID.init),
                            at: Date(timeIntervalSince1970: try r.double("at")), transferId: try r.optionalString("transfer_id"),
                            decision: try Self.decision(r), reason: try r.optionalString("reason"), operator: try r.optionalString("operator"),
                            previousHash: try r.string("previous_hash"), hash: try r.string("hash"))
    }
    private static func decision(_ r: Row) throws -> CustodyEntry.Decision {
        let raw = try r.string("decision")
        guard let d = CustodyEntry.Decision(rawValue: raw) else { throw DomainError(.internalError, "custody row: unknown decision '\(raw)'") }
        return d
    }
    func appendCustody(_ id: DeviceID, holder: AccountID, at: Date, transfer: String?, decision: CustodyEntry.Decision, reason: String? = nil,
                       operator op: String? = nil) throws {
        let last = try aheadRow(id).map(\.lastCustody)
            ?? db.query("SELECT * FROM custody WHERE device_id = ? ORDER BY seq DESC LIMIT 1", [.text(id.rawValue)]).first.map(Self.custodyEntry)
        // `next` rounds the time to the second, as the wire carries it: stored and hashed times agree.
        let e = CustodyEntry.next(after: last, device: id, holder: holder, at: at, transferId: transfer, decision: decision, reason: reason, operator: op)
        try db.write("""
            INSERT INTO custody (device_id, seq, holder, previous_holder, at, transfer_id, decision, reason, operator, previous_hash, hash)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, [.text(id.rawValue), .integer(Int64(e.seq)), .text(holder.rawValue), e.previousHolder.map { .text($0.rawValue) } ?? .null,
                  .real(e.at.timeIntervalSince1970), transfer.map { .text($0) } ?? .null, .text(decision.rawValue),
                  reason.map { .text($0) } ?? .null, op.map { .text($0) } ?? .null, .text(e.previousHash), .text(e.hash)])
        updateAhead(id) { $0.lastCustody = e }
    }

    // MARK: idempotency and outbox
    func storedReply(account: AccountID, requestID: String) throws -> [UInt8]? {
        try db.query("SELECT reply FROM requests WHERE account_id = ? AND request_id = ?", [.text(account.rawValue), .text(requestID)]).first?.blob("reply")
    }
    func storeReply(account: AccountID, requestID: String, command: String, reply: [UInt8], at: Date) throws {
        try db.write("INSERT INTO requests (account_id, request_id, command, reply, created_at) VALUES (?, ?, ?, ?, ?)",
                       [.text(account.rawValue), .text(requestID), .text(command), .blob(reply), .real(at.timeIntervalSince1970)])
    }
    // MARK: audit
    func appendAudit(account: AccountID, at: Date, operator op: String?, command: String, requestID: String?, code: ErrorCode?) throws {
        try db.write("INSERT INTO audit (account_id, at, operator, command, request_id, ok, code) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [.text(account.rawValue), .real(at.timeIntervalSince1970), op.map { .text($0) } ?? .null, .text(String(command.prefix(64))),
                        requestID.map { .text($0) } ?? .null, .integer(code == nil ? 1 : 0), code.map { .text($0.rawValue) } ?? .null])
    }
    func audit(account: AccountID, limit: Int, before: Int?) throws -> Commands.AuditListResult {
        let rows = try db.query("""
            SELECT id, at, operator, command, request_id, ok, code FROM audit
            WHERE account_id = ? AND id < ? ORDER BY id DESC LIMIT ?
            """, [.text(account.rawValue), .integer(Int64(before ?? Int.max)), .integer(Int64(limit + 1))])
        let entries = try rows.prefix(limit).map { r in
            Commands.AuditEntry(id: try r.int("id"), at: Date(timeIntervalSince1970: try r.double("at")), operator: try r.optionalString("operator"),
                                command: try r.string("command"), requestId: try r.optionalString("request_id"), ok: try r.int("ok") != 0,
                                code: try r.optionalString("code").flatMap(ErrorCode.init(rawValue:)))
        }
        return .init(entries: entries, more: rows.count > limit)
    }
    func pruneReplies(olderThan: Date) throws {
        try db.write("DELETE FROM requests WHERE created_at < ?", [.real(olderThan.timeIntervalSince1970)])
    }
    /// Queues rows for publishing, in order, in the caller's transaction.
    func enqueue(_ rows: [Outbound]) throws {
        guard !rows.isEmpty else { return }
        let at = Date().timeIntervalSince1970
        for o in rows {
            try db.write("INSERT INTO outbox (topic, payload, created_at, retain) VALUES (?, ?, ?, ?)",
                         [.text(o.topic), .blob(o.payload), .real(at), .integer(o.retain ? 1 : 0)])
        }
        // The leader among escrowd sharing the database publishes them once this commits
        // (PostgreSQL delivers a notification at commit).
        if db.dialect == .postgres {
            try db.write("SELECT pg_notify('\(PostgresLeaderLease.outboxChannel)', current_schema())", [])
        }
    }
    /// Numbers the event in its account's log, stores it there and queues it for publishing, in the
    /// caller's transaction. Returns the event as published (with `seq` and `id`).
    @discardableResult
    func appendEvent(_ event: Event) throws -> Event {
        try appendEvents([event])[0]
    }

    /// `appendEvent` for several events, in their order: one number reservation per account (the
    /// upsert locks the account's row until the transaction ends, so concurrent writers, replicas
    /// included, take turns and numbers never repeat or skip), then the rows.
    @discardableResult
    func appendEvents(_ events: [Event]) throws -> [Event] {
        guard !events.isEmpty else { return [] }
        var counts: [AccountID: Int] = [:]
        for e in events { counts[e.account, default: 0] += 1 }
        var next: [AccountID: Int] = [:]
        for (account, n) in counts.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {  // one lock order
            guard let last = try db.query("""
                INSERT INTO event_sequences (account_id, last_seq) VALUES (?1, ?2)
                ON CONFLICT(account_id) DO UPDATE SET last_seq = event_sequences.last_seq + ?2 RETURNING last_seq
                """, [.text(account.rawValue), .integer(Int64(n))]).first.map({ try $0.int("last_seq") }) else {
                throw DomainError(.internalError, "event_sequences: no number returned for \(account)")
            }
            next[account] = last - n + 1
        }
        var out: [Event] = [], rows: [Outbound] = []
        out.reserveCapacity(events.count)
        rows.reserveCapacity(events.count)
        for event in events {
            var e = event
            let seq = next[e.account]!
            next[e.account] = seq + 1
            e.seq = seq
            e.id = "\(e.account.rawValue)-\(seq)"
            let payload = WireCodec.encode(e)
            try db.write("INSERT INTO events (account_id, seq, type, at, payload) VALUES (?, ?, ?, ?, ?)",
                         [.text(e.account.rawValue), .integer(Int64(seq)), .text(e.type.rawValue), .real(e.at.timeIntervalSince1970), .blob(payload)])
            rows.append(Outbound(topic: Topic.accountEvent(e.account, type: e.type).path, payload: payload))
            out.append(e)
        }
        try enqueue(rows)
        return out
    }
    /// The account's stored events after `after` (by number) or from `since` (by time), oldest first:
    /// at most `limit`, and no more than `maxBytes` of payload (one reply must fit a message); `more`
    /// when others follow.
    func events(_ account: AccountID, after: Int?, since: Date?, limit: Int, maxBytes: Int) throws -> (events: [Event], more: Bool) {
        let rows: [Row]
        if let since {
            rows = try db.query("SELECT payload FROM events WHERE account_id = ? AND at >= ? ORDER BY seq LIMIT ?",
                                [.text(account.rawValue), .real(since.timeIntervalSince1970), .integer(Int64(limit + 1))])
        } else {
            rows = try db.query("SELECT payload FROM events WHERE account_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                                [.text(account.rawValue), .integer(Int64(after ?? 0)), .integer(Int64(limit + 1))])
        }
        var out: [Event] = [], bytes = 0
        for r in rows.prefix(limit) {
            let payload = try r.blob("payload")
            bytes += payload.count
            if bytes > maxBytes, !out.isEmpty { return (out, true) }
            do { out.append(try WireCodec.decode(Event.self, from: payload)) } catch {
                throw DomainError(.internalError, "stored event of \(account) does not decode: \(error)")
            }
        }
        return (out, rows.count > limit)
    }
    /// The account's newest number handed out (0 if none) and its oldest event still stored.
    func eventBounds(_ account: AccountID) throws -> (latest: Int, oldest: Int?) {
        let latest = try db.query("SELECT last_seq FROM event_sequences WHERE account_id = ?", [.text(account.rawValue)]).first.map { try $0.int("last_seq") } ?? 0
        let oldest = try db.scalar("SELECT min(seq) FROM events WHERE account_id = ?", [.text(account.rawValue)]).intValue
        return (latest, oldest)
    }
    /// Forgets events older than `cutoff`; returns how many.
    @discardableResult
    func pruneEvents(olderThan cutoff: Date) throws -> Int {
        try db.execute("DELETE FROM events WHERE at < ?", [.real(cutoff.timeIntervalSince1970)])
    }
    func outbox(after: Int64 = 0, limit: Int) throws -> [(id: Int64, message: Outbound)] {
        try db.query("SELECT id, topic, payload, retain FROM outbox WHERE id > ? ORDER BY id LIMIT ?", [.integer(after), .integer(Int64(limit))]).map {
            (try $0.int64("id"), Outbound(topic: try $0.string("topic"), payload: try $0.blob("payload"), retain: try $0.int("retain") != 0))
        }
    }
    func deleteOutbox(through id: Int64) throws {
        try db.write("DELETE FROM outbox WHERE id <= ?", [.integer(id)])
    }

    // MARK: owner identities and revocation
    /// The latest validated CSR a device sent, if any.
    func csr(_ id: DeviceID) throws -> String? {
        if let a = aheadRow(id) { return a.csr }
        return try db.query("SELECT csr FROM devices WHERE id = ?", [.text(id.rawValue)]).first?.optionalString("csr")
    }
    /// Records the identity `issuer` issued for a device's new owner; the next configuration carries it.
    func setPendingIdentity(_ id: DeviceID, certificate: String, fingerprint: String, serial: String, issuer: AccountID) throws {
        updateAhead(id) { r in r.nextCertificate = certificate; r.nextSerial = serial; r.nextIssuer = issuer.rawValue; r.rotationVersion = nil }
        try db.write("""
            UPDATE devices SET next_certificate = ?, next_fingerprint = ?, next_serial = ?, next_issuer = ?, rotation_version = NULL WHERE id = ?
            """, [.text(certificate), .text(fingerprint), .text(serial), .text(issuer.rawValue), .text(id.rawValue)])
    }
    /// What decides whether an active device still runs on an identity its owner did not issue.
    /// `issuer` signed the certificate in force (the provisioner for the escrow identity).
    struct IdentityStatus { var state: String; var owner: AccountID; var issuer: AccountID; var provisioner: AccountID }
    func identityStatus(_ id: DeviceID) throws -> IdentityStatus? {
        if let a = aheadRow(id) {
            guard let owner = AccountID(a.owner), let issuer = AccountID(a.certIssuer ?? a.provisioner), let provisioner = AccountID(a.provisioner) else {
                throw DomainError(.internalError, "devices row \(id): owner, provisioner or issuer is not an account id")
            }
            return IdentityStatus(state: a.state, owner: owner, issuer: issuer, provisioner: provisioner)
        }
        guard let r = try db.query("SELECT state, owner, provisioner, coalesce(cert_issuer, provisioner) AS issuer FROM devices WHERE id = ?", [.text(id.rawValue)]).first else { return nil }
        guard let owner = AccountID(try r.string("owner")), let issuer = AccountID(try r.string("issuer")),
              let provisioner = AccountID(try r.string("provisioner")) else {
            throw DomainError(.internalError, "devices row \(id): owner, provisioner or issuer is not an account id")
        }
        return IdentityStatus(state: try r.string("state"), owner: owner, issuer: issuer, provisioner: provisioner)
    }
    /// A change of owner: an identity issued for the previous owner and not yet taken up is revoked
    /// (its issuer's CRL) and forgotten, so no later configuration carries it to the new owner's device.
    func dropPendingIdentity(_ id: DeviceID, at: Date) throws {
        let pending: (serial: String?, issuer: String?)
        if let a = aheadRow(id) { pending = (a.nextSerial, a.nextIssuer) } else {
            guard let r = try db.query("SELECT next_serial, next_issuer FROM devices WHERE id = ?", [.text(id.rawValue)]).first else { return }
            pending = (try r.optionalString("next_serial"), try r.optionalString("next_issuer"))
        }
        if let serial = pending.serial, let issuer = pending.issuer {
            try revoke(serial: serial, issuer: issuer, device: id.rawValue, at: at)
        }
        try clearPendingIdentity(id)
    }
    /// An active device taken back into escrow (approved with `hold`): owner, state escrow.
    func returnToEscrow(_ id: DeviceID, holder: AccountID) throws {
        updateAhead(id) { r in r.owner = holder.rawValue; r.state = DeviceView.State.escrow.rawValue }
        try db.write("UPDATE devices SET owner = ?, state = 'escrow', activated_at = NULL WHERE id = ?", [.text(holder.rawValue), .text(id.rawValue)])
    }
    /// The newest configuration recorded for a device, if any.
    func latestConfig(_ id: DeviceID) throws -> DeviceConfig? {
        guard let r = try db.query("SELECT payload FROM configs WHERE device_id = ? ORDER BY version DESC LIMIT 1", [.text(id.rawValue)]).first else { return nil }
        do { return try WireCodec.decode(DeviceConfig.self, from: try r.blob("payload"), limit: .max) } catch {
            throw DomainError(.internalError, "configs row \(id): the stored configuration does not decode (\(WireCodec.describe(error)))")
        }
    }
    /// The device applied `version`: if that configuration carried its issued identity, the identity
    /// becomes the device's and the escrow certificate is revoked. Returns true when something was revoked.
    func confirmIdentity(_ id: DeviceID, appliedVersion version: Int, at: Date) throws -> Bool {
        let row: (issuer: String, serial: String?, rotation: Int?)
        if let a = aheadRow(id) { row = (a.certIssuer ?? a.provisioner, a.certSerial, a.rotationVersion) } else {
            guard let r = try db.query("SELECT coalesce(cert_issuer, provisioner) AS issuer, cert_serial, rotation_version FROM devices WHERE id = ?", [.text(id.rawValue)]).first else { return false }
            row = (try r.string("issuer"), try r.optionalString("cert_serial"), try r.optionalInt("rotation_version"))
        }
        guard let rotation = row.rotation, version >= rotation else { return false }
        forgetAhead(id)  // the identity moves below; the next read goes to the database
        var revoked = false
        if let old = row.serial {
            revoked = try revoke(serial: old, issuer: row.issuer, device: id.rawValue, at: at)
        }
        try db.write("""
            UPDATE devices SET fingerprint = next_fingerprint, cert_serial = next_serial, cert_issuer = next_issuer, next_certificate = NULL,
                next_fingerprint = NULL, next_serial = NULL, next_issuer = NULL, rotation_version = NULL, csr = NULL WHERE id = ?
            """, [.text(id.rawValue)])
        return revoked
    }
    /// Revokes the escrow certificate of every active device that was activated before `cutoff` and
    /// still runs on an identity its owner did not issue. Returns those devices.
    func revokeLapsedEscrowIdentities(activatedBefore cutoff: Date, at: Date) throws -> [DeviceID] {
        let rows = try db.query("""
            SELECT id, coalesce(cert_issuer, provisioner) AS issuer, cert_serial FROM devices d
            WHERE state = 'active' AND activated_at < ? AND cert_serial IS NOT NULL AND coalesce(cert_issuer, provisioner) != owner
              AND NOT EXISTS (SELECT 1 FROM revocations r WHERE r.account_id = coalesce(d.cert_issuer, d.provisioner) AND r.serial = d.cert_serial)
            """, [.real(cutoff.timeIntervalSince1970)])
        var out: [DeviceID] = []
        for r in rows {
            let id = try r.string("id")
            try revoke(serial: try r.string("cert_serial"), issuer: try r.string("issuer"), device: id, at: at)
            if let d = DeviceID(id) { out.append(d) }
        }
        return out
    }
    /// Revoked certificate serials per issuing account.
    func revokedSerials() throws -> [AccountID: [String]] {
        var out: [AccountID: [String]] = [:]
        for r in try db.query("SELECT account_id, serial FROM revocations ORDER BY account_id, serial") {
            guard let a = AccountID(try r.string("account_id")) else { continue }
            out[a, default: []].append(try r.string("serial"))
        }
        return out
    }

    // MARK: certificate authorities
    func authority(_ account: AccountID) throws -> (certificate: String, privateKey: String)? {
        try db.query("SELECT certificate, private_key FROM authorities WHERE account_id = ?", [.text(account.rawValue)]).first.map {
            (try $0.string("certificate"), try $0.string("private_key"))
        }
    }
    func insertAuthority(_ account: AccountID, certificate: String, privateKey: String) throws {
        try db.write("INSERT INTO authorities (account_id, certificate, private_key) VALUES (?, ?, ?)",
                       [.text(account.rawValue), .text(certificate), .text(privateKey)])
    }
}

extension Ledger {
    func authorities() throws -> [(account: AccountID, certificate: String, privateKey: String)] {
        try db.query("SELECT account_id, certificate, private_key FROM authorities ORDER BY account_id").map {
            (AccountID(try $0.string("account_id"))!, try $0.string("certificate"), try $0.string("private_key"))
        }
    }
}
