import Foundation
import EscrowCore
import Storage

/// Executes operator commands against the ledger. Each command runs in one transaction;
/// its reply and effects are released only after the commit.
struct CommandProcessor {
    let ledger: Ledger
    let credentials: (any Credentials)?
    var now: () -> Date
    var newID: () -> String
    /// The sender of the command being executed, as the broker stamped it (`escrow-operator`):
    /// named in the custody entries the command appends. Nil for work no operator asked for.
    var actor: String?

    struct Outcome {
        var result: JSONValue
        var effects: Effects
        /// Read-only commands are not remembered for replay (re-running them changes nothing).
        var mutating: Bool
    }

    func execute(account: AccountID, command name: String, args: JSONValue) throws -> Outcome {
        guard let command = CommandName(rawValue: name) else {
            throw DomainError(.unknownCommand, "unknown command '\(name.prefix(64))'; known: \(CommandName.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        // The contract's one definition of the arguments, before anything else reads them.
        guard case .object(let fields) = args else { throw WireError(.malformed, "args: expected a JSON object") }
        try CommandSchema.byName[command]?.validate(fields)
        if account == .platform, !CommandName.platformCommands.contains(command) {
            throw DomainError.forbidden("\(command.rawValue) acts in a real account; the platform account only administers accounts and operators")
        }
        if account != .platform, try ledger.account(account) == nil {
            throw DomainError.notFound("account \(account)")
        }
        var fx = Effects()
        let result: JSONValue
        switch command {
        case .accountCreate: result = try encode(accountCreate(account, decode(args), &fx))
        case .accountList: return Outcome(result: try encode(accountList(account)), effects: fx, mutating: false)
        case .accountShow: return Outcome(result: try encode(accountShow(account, decode(args))), effects: fx, mutating: false)
        case .accountDelete: result = try encode(accountDelete(account, decode(args), &fx))
        case .operatorCreate: result = try encode(operatorCreate(account, decode(args), &fx))
        case .operatorList:
            try requirePlatform(account, "operator.list")
            let a: Commands.OperatorList = try decode(args)
            let ops = try ledger.operators().filter { a.account == nil || $0.account == a.account }
            return Outcome(result: try encode(Commands.OperatorListResult(operators: ops.map { .init(username: $0.username, account: $0.account, role: $0.role) })), effects: fx, mutating: false)
        case .operatorPasswd: result = try encode(operatorPasswd(account, decode(args), &fx))
        case .operatorDelete: result = try encode(operatorDelete(account, decode(args), &fx))
        case .deviceProvision: result = try encode(provision(account, decode(args), &fx))
        case .deviceList:
            let a: Commands.DeviceList = try decode(args)
            let (devices, total) = try ledger.devices(owner: account, filter: a)
            return Outcome(result: try encode(Commands.DeviceListResult(devices: devices, total: total)), effects: fx, mutating: false)
        case .deviceShow: return Outcome(result: try encode(deviceShow(account, decode(args))), effects: fx, mutating: false)
        case .deviceRetire: result = try encode(retire(account, decode(args), &fx))
        case .deviceRebundle: result = try encode(rebundle(account, decode(args), &fx))
        case .transferRequest: result = try encode(transferRequest(account, decode(args), &fx))
        case .transferList:
            let a: Commands.TransferList = try decode(args)
            let ts = try ledger.transfers(for: account, direction: a.direction ?? .all).filter { a.status == nil || $0.status == a.status }
            let page = ts.dropFirst(a.offset ?? 0).prefix(a.limit ?? 100)
            return Outcome(result: try encode(Commands.TransferListResult(transfers: page.map { TransferView($0, includeItems: false) }, total: ts.count)),
                           effects: fx, mutating: false)
        case .transferShow:
            let a: Commands.TransferRef = try decode(args)
            let t = try visibleTransfer(a.transferId, to: account)
            return Outcome(result: try encode(TransferView(t, includeItems: true)), effects: fx, mutating: false)
        case .transferApprove:
            let a: Commands.TransferApprove = try decode(args)
            if a.deviceIds?.isEmpty == true { throw DomainError.invalid("deviceIds is empty; omit it to approve every pending device") }
            result = try encode(decide(account, a.transferId, .approve(devices: a.deviceIds, action: a.action, by: account), profile: a.profile, &fx))
        case .transferReject:
            let a: Commands.TransferReject = try decode(args)
            if a.deviceIds?.isEmpty == true { throw DomainError.invalid("deviceIds is empty; omit it to reject every pending device") }
            guard !a.reason.isEmpty, a.reason.count <= 500 else { throw DomainError.invalid("reason must be 1 to 500 characters") }
            result = try encode(decide(account, a.transferId, .reject(devices: a.deviceIds, reason: a.reason, by: account), profile: nil, &fx))
        case .transferCancel:
            let a: Commands.TransferRef = try decode(args)
            result = try encode(decide(account, a.transferId, .cancel(by: account), profile: nil, &fx))
        case .profilePut:
            let a: Commands.ProfilePut = try decode(args)
            try requireRealAccount(account)
            guard Identifier.isValid(a.name) else { throw DomainError.invalid("profile name must match [A-Za-z0-9._-]{1,64}") }
            if let h = a.heartbeatInterval, !DeviceConfig.heartbeatRange.contains(h) {
                throw DomainError.invalid("heartbeatInterval must be within \(DeviceConfig.heartbeatRange)")
            }
            try Self.requireConfigFits(a.settings)
            result = try encode(ledger.putProfile(account, a))
        case .profileList:
            return Outcome(result: try encode(Commands.ProfileListResult(profiles: ledger.profiles(account))), effects: fx, mutating: false)
        case .profileShow:
            let a: Commands.ProfileRef = try decode(args)
            let p = try storedProfile(account, a.name)
            let use = try ledger.profileUse(account, name: p.name)
            return Outcome(result: try encode(Commands.ProfileShowResult(profile: p, devices: use.reduce(0) { $0 + $1.devices }, versions: use)),
                           effects: fx, mutating: false)
        case .profileDelete: result = try encode(profileDelete(account, decode(args), &fx))
        case .eventsSince: return Outcome(result: try encode(eventsSince(account, decode(args))), effects: fx, mutating: false)
        case .auditList:
            let a: Commands.AuditList = try decode(args)
            return Outcome(result: try encode(ledger.audit(account: account, limit: a.limit ?? Commands.AuditList.defaultLimit, before: a.before)),
                           effects: fx, mutating: false)
        case .configPush: result = try encode(configPush(account, decode(args), &fx))
        case .configStatus:
            let a: Commands.ConfigStatus = try decode(args)
            return Outcome(result: try encode(Commands.ConfigStatusResult(devices: ledger.configStatus(owner: account, ids: a.deviceIds))), effects: fx, mutating: false)
        }
        return Outcome(result: result, effects: fx, mutating: true)
    }

    // MARK: accounts and operators

    private func requirePlatform(_ account: AccountID, _ what: String) throws {
        guard account == .platform else { throw DomainError.forbidden("\(what) is for platform administrators (accounts/platform/cmd/...)") }
    }
    private func requireRealAccount(_ account: AccountID) throws {
        guard account != .platform else { throw DomainError.forbidden("the platform account holds no devices; act in a real account") }
    }

    private func accountCreate(_ account: AccountID, _ a: Commands.AccountCreate, _ fx: inout Effects) throws -> Account {
        try requirePlatform(account, "account.create")
        guard a.id != .platform else { throw DomainError.invalid("'platform' is reserved") }
        guard !a.name.isEmpty, a.name.count <= 200 else { throw DomainError.invalid("name must be 1 to 200 characters") }
        if let dates = try ledger.accountDates(a.id) {
            if let deleted = dates.deleted {
                throw DomainError.conflict("account \(a.id) was deleted on \(ISO8601DateFormatter().string(from: deleted)); account ids are never reused (custody chains and transfers name it), choose another id")
            }
            throw DomainError.conflict("account \(a.id) already exists")
        }
        if let m = a.managedBy {
            guard let manager = try ledger.account(m) else { throw DomainError.notFound("managing account \(m)") }
            guard a.kind == .customer, manager.kind != .customer else {
                throw DomainError.invalid("only a customer account can be managed, and only by a provisioner or reseller")
            }
        }
        let acct = Account(id: a.id, name: a.name, kind: a.kind, managedBy: a.managedBy)
        try ledger.insert(acct, at: now())
        if let credentials {
            // Every account gets an authority: the identities of devices activated in it are issued by it.
            let ca = try credentials.newAuthority(for: a.id, kind: a.kind)
            try ledger.insertAuthority(a.id, certificate: ca.certificate, privateKey: ca.privateKey)
        }
        fx.notify(.accountCreated, [.platform, a.id] + (a.managedBy.map { [$0] } ?? []), at: now(),
                  details: ["id": .string(a.id.rawValue), "name": .string(a.name), "kind": .string(a.kind.rawValue),
                            "managedBy": a.managedBy.map { .string($0.rawValue) } ?? .null])
        fx.accessChanged = true
        return acct
    }

    private func accountList(_ account: AccountID) throws -> Commands.AccountListResult {
        let all = try ledger.accounts().filter { $0.id != .platform }
        if account == .platform { return .init(accounts: all) }
        let reach = Set(AccessPolicy.accounts(reachableBy: account, in: all))
        return .init(accounts: all.filter { reach.contains($0.id) })
    }

    /// One account in the acted-in account's reach (itself and the customers it manages); from
    /// `platform`, any account. Others are reported exactly like unknown ones.
    private func accountShow(_ account: AccountID, _ a: Commands.AccountRef) throws -> Commands.AccountShowResult {
        let all = try ledger.accounts().filter { $0.id != .platform }
        let visible = account == .platform || AccessPolicy.accounts(reachableBy: account, in: all).contains(a.id)
        guard visible, let acct = all.first(where: { $0.id == a.id }), let dates = try ledger.accountDates(a.id) else {
            throw DomainError.notFound("account \(a.id)" + (account == .platform ? "" : " in the reach of \(account)"))
        }
        return .init(account: acct, createdAt: dates.created,
                     manages: acct.kind == .customer ? nil : try ledger.managedAccounts(by: acct.id),
                     devices: try ledger.deviceCounts(owner: acct.id), openTransfers: try ledger.openTransferCount(acct.id),
                     operators: try ledger.operators().filter { $0.account == acct.id }.count, profiles: try ledger.profiles(acct.id).count)
    }

    /// Removes an account that holds nothing any more: its operators (refused by the broker at
    /// once), profiles and authority go with it, and its row stays as a tombstone so that custody
    /// chains and transfers keep naming it and its id is never reused.
    private func accountDelete(_ account: AccountID, _ a: Commands.AccountRef, _ fx: inout Effects) throws -> Commands.AccountDeleteResult {
        try requirePlatform(account, "account.delete")
        guard a.id != .platform else { throw DomainError.forbidden("platform is the administrators' own account and cannot be deleted") }
        guard let acct = try ledger.account(a.id) else { throw DomainError.notFound("account \(a.id)") }
        let managed = try ledger.managedAccounts(by: acct.id)
        if !managed.isEmpty {
            throw DomainError.conflict("account \(acct.id) manages \(managed.prefix(5).map(\.rawValue).joined(separator: ", "))\(managed.count > 5 ? " and \(managed.count - 5) more" : ""); delete those accounts first")
        }
        // Retired devices are read-only records: they stay with the tombstone and do not block.
        let held = try ledger.deviceCounts(owner: acct.id)
        if held.total - held.retired > 0 {
            throw DomainError.conflict("account \(acct.id) holds \(plural(held.total, "device")) (\(held.escrow) in escrow, \(held.active) active); transfer its escrow devices to another account first, an account is deleted only when it holds none")
        }
        let open = try ledger.openTransferCount(acct.id)
        if open > 0 {
            throw DomainError.conflict("account \(acct.id) has \(plural(open, "open transfer request")); cancel, approve or reject them (or let them expire) first")
        }
        let trusting = try ledger.devicesTrusting(acct.id)
        if trusting > 0 {
            throw DomainError.conflict("\(plural(trusting, "device")) held by other accounts still use certificates issued by \(acct.id)'s authority (escrow identities, or owner identities not yet confirmed); deleting it would lock them out of the broker")
        }
        let operators = try ledger.operators().filter { $0.account == acct.id }.map(\.username)
        let profiles = try ledger.profiles(acct.id).count
        let at = now()
        try ledger.deleteAccount(acct.id, at: at)
        fx.notify(.accountDeleted, [.platform] + (acct.managedBy.map { [$0] } ?? []), at: at,
                  details: ["id": .string(acct.id.rawValue), "name": .string(acct.name), "kind": .string(acct.kind.rawValue),
                            "managedBy": acct.managedBy.map { .string($0.rawValue) } ?? .null, "operatorsRemoved": .number(Double(operators.count))])
        fx.accessChanged = true
        return .init(account: acct, operators: operators, profiles: profiles)
    }

    private func operatorCreate(_ account: AccountID, _ a: Commands.OperatorCreate, _ fx: inout Effects) throws -> Commands.OperatorResult {
        try requirePlatform(account, "operator.create")
        if let problem = BrokerNames.operatorNameProblem(a.username) { throw DomainError.invalid("username '\(a.username.prefix(64))': \(problem)") }
        guard a.password.count >= 8, a.password.count <= 256 else { throw DomainError.invalid("password must be 8 to 256 characters") }
        guard try ledger.account(a.account) != nil else { throw DomainError.notFound("account \(a.account)") }
        if try ledger.operatorExists(a.username) { throw DomainError.conflict("operator \(a.username) already exists") }
        let hash = credentials?.passwordHash(a.password) ?? "plain:" + a.password
        let role = a.role ?? .full
        if role == .support, a.account == .platform { throw DomainError.invalid("role support is for an account's operators; platform administrators are full") }
        try ledger.insertOperator(a.username, account: a.account, passwordHash: hash, role: role, at: now())
        fx.accessChanged = true
        return .init(username: a.username, account: a.account, reach: AccessPolicy.accounts(reachableBy: a.account, in: try ledger.accounts()), role: role)
    }

    /// A new password; the broker refuses the old one from its next reload (at once).
    private func operatorPasswd(_ account: AccountID, _ a: Commands.OperatorPasswd, _ fx: inout Effects) throws -> Commands.OperatorListResult.Entry {
        try requirePlatform(account, "operator.passwd")
        guard a.password.count >= 8, a.password.count <= 256 else { throw DomainError.invalid("password must be 8 to 256 characters") }
        guard let op = try ledger.operators().first(where: { $0.username == a.username }) else { throw DomainError.notFound("operator \(a.username)") }
        let hash = credentials?.passwordHash(a.password) ?? "plain:" + a.password
        try ledger.db.execute("UPDATE operators SET password_hash = ? WHERE username = ?", [.text(hash), .text(a.username)])
        fx.accessChanged = true
        return .init(username: op.username, account: op.account, role: op.role)
    }

    /// Removes a login; `op-admin` stays (escrowd's own administrator).
    private func operatorDelete(_ account: AccountID, _ a: Commands.OperatorRef, _ fx: inout Effects) throws -> Commands.OperatorListResult.Entry {
        try requirePlatform(account, "operator.delete")
        guard a.username != "op-admin" else { throw DomainError.forbidden("op-admin is the platform's own administrator and cannot be deleted; rotate its password with operator.passwd") }
        guard let op = try ledger.operators().first(where: { $0.username == a.username }) else { throw DomainError.notFound("operator \(a.username)") }
        try ledger.db.execute("DELETE FROM operators WHERE username = ?", [.text(a.username)])
        fx.accessChanged = true
        return .init(username: op.username, account: op.account, role: op.role)
    }

    // MARK: devices

    private func provision(_ account: AccountID, _ a: Commands.DeviceProvision, _ fx: inout Effects) throws -> Commands.DeviceProvisionResult {
        try requireRealAccount(account)
        guard let acct = try ledger.account(account), acct.kind == .provisioner else {
            throw DomainError.forbidden("only a provisioner account creates escrow devices")
        }
        var ids: [DeviceID] = a.deviceIds ?? []
        if let prefix = a.prefix {
            guard let count = a.count, count > 0 else { throw DomainError.invalid("with prefix, give count > 0") }
            let start = a.start ?? 1
            for n in start..<(start + min(count, Commands.DeviceProvision.maxPerCommand + 1)) {
                let s = String(n)
                guard let id = DeviceID(prefix + String(repeating: "0", count: max(0, 6 - s.count)) + s) else {
                    throw DomainError.invalid("prefix '\(prefix)' does not make valid device ids")
                }
                ids.append(id)
            }
        }
        guard !ids.isEmpty else { throw DomainError.invalid("name devices with deviceIds, or prefix and count") }
        guard ids.count <= Commands.DeviceProvision.maxPerCommand else {
            throw DomainError.invalid("at most \(Commands.DeviceProvision.maxPerCommand) devices per command; send several")
        }
        var fresh: [DeviceID] = [], refused: [Transfer.Refusal] = []
        var seen = Set<DeviceID>()
        for id in ids where seen.insert(id).inserted {
            // A device's certificate CN is its broker username: the operators' and services'
            // namespaces are closed to devices, or a device named svc-escrowd would get escrowd's ACL.
            if BrokerNames.isReservedForLogins(id.rawValue) {
                refused.append(.init(deviceId: id, reason: "device ids may not start with \(BrokerNames.operatorPrefix) or \(BrokerNames.servicePrefix) (reserved for operators and services)"))
                continue
            }
            if try ledger.deviceExists(id) { refused.append(.init(deviceId: id, reason: "device \(id) already exists")) } else { fresh.append(id) }
        }
        var identities: [DeviceID: IssuedIdentity] = [:]
        if a.issueIdentity ?? true, let credentials, !fresh.isEmpty {
            guard let ca = try ledger.authority(account) else { throw DomainError(.internalError, "account \(account) has no certificate authority") }
            for i in try credentials.issue(fresh, authority: ca) { identities[i.device] = i }
        }
        let at = now()
        for id in fresh {
            let i = identities[id]
            try ledger.insertDevice(id, provisioner: account, fingerprint: i?.fingerprint, serial: i?.serial, at: at)
            try ledger.appendCustody(id, holder: account, at: at, transfer: nil, decision: .provisioned, operator: actor)
        }
        fx.provisioned = fresh
        if !fresh.isEmpty {
            fx.notify(.deviceProvisioned, [account], at: at, details: Effects.deviceList(fresh))
        }
        let bundles = fresh.compactMap { id -> Commands.DeviceBundle? in
            guard let i = identities[id], let key = i.privateKey, let credentials else { return nil }
            return .init(deviceId: id, certificate: i.certificate, privateKey: key, brokerCA: credentials.brokerCA,
                         brokerURL: credentials.deviceBrokerURL, fingerprint: i.fingerprint)
        }
        return .init(provisioned: fresh, bundles: bundles, refused: refused)
    }

    private func deviceShow(_ account: AccountID, _ a: Commands.DeviceShow) throws -> Commands.DeviceShowResult {
        // A device of another account is reported exactly like an unknown one.
        guard let d = try ledger.device(a.deviceId), d.owner == account else { throw DomainError.notFound("device \(a.deviceId) in account \(account)") }
        let chain = try ledger.custody(a.deviceId)
        return .init(device: d, custody: chain, verification: CustodyChain.verify(chain))
    }

    /// Decommissions devices the acted-in account holds (escrow holder or active owner), each in
    /// this one transaction: state `retired`, every certificate revoked (the broker refuses and
    /// disconnects them from its next reload), a `retired` custody entry, the retained config and
    /// status cleared, event `device.retired`. Unknown and foreign ids are refused alike; a device
    /// offered in an open transfer is refused until the transfer is closed.
    private func retire(_ account: AccountID, _ a: Commands.DeviceRetire, _ fx: inout Effects) throws -> Commands.DeviceRetireResult {
        try requireRealAccount(account)
        var retired: [DeviceID] = [], refused: [Transfer.Refusal] = []
        var unknown = 0, revoked = 0
        let at = now()
        for id in Set(a.deviceIds).sorted() {
            guard let d = try ledger.device(id), d.owner == account else {
                unknown += 1
                refused.append(.init(deviceId: id, reason: "device \(id) is not a device of \(account)")); continue
            }
            if d.state == .retired { refused.append(.init(deviceId: id, reason: "device \(id) is already retired")); continue }
            if let t = d.pendingTransfer {
                refused.append(.init(deviceId: id, reason: "device \(id) is offered in open transfer \(t); cancel the transfer first (transfer.cancel), or let the receiver decide")); continue
            }
            revoked += try ledger.retire(id, at: at)
            try ledger.appendCustody(id, holder: account, at: at, transfer: nil, decision: .retired, reason: a.reason, operator: actor)
            fx.clearRetained += [Topic.deviceConfig(id).path, Topic.deviceStatus(id).path]
            fx.retired.append(id)
            fx.notify(.deviceRetired, [account], at: at, device: id,
                      details: ["previousState": .string(d.state.rawValue), "reason": a.reason.map(JSONValue.string) ?? .null])
            retired.append(id)
        }
        if retired.isEmpty {
            let reasons = refused.prefix(3).map(\.reason).joined(separator: "; ") + (refused.count > 3 ? "; and \(refused.count - 3) more" : "")
            if unknown == refused.count { throw DomainError(.notFound, reasons) }
            throw DomainError.conflict("no device was retired: " + reasons)
        }
        if revoked > 0 { fx.accessChanged = true }
        return .init(retired: retired, refused: refused, revokedCertificates: revoked)
    }

    /// Fresh identity bundles for devices the account holds whose files were lost (escrow or
    /// active): every certificate the device has or was issued is revoked, a new key and
    /// certificate are made by the holder's authority (for an escrow device of its provisioner, the
    /// provisioner's, as at provisioning), a `rebundled` custody entry records it, and the bundle is
    /// in the reply (only there: escrowd keeps no private key). The device, reinstalled with it,
    /// connects as before; the lost files can connect no more.
    private func rebundle(_ account: AccountID, _ a: Commands.DeviceRebundle, _ fx: inout Effects) throws -> Commands.DeviceRebundleResult {
        try requireRealAccount(account)
        guard let credentials else { throw DomainError.conflict("escrowd runs without identities (plain MQTT): there is nothing to re-bundle") }
        var bundles: [Commands.DeviceBundle] = [], refused: [Transfer.Refusal] = []
        var unknown = 0, revoked = 0
        let at = now()
        for id in Set(a.deviceIds).sorted() {
            guard let d = try ledger.device(id), d.owner == account else {
                unknown += 1
                refused.append(.init(deviceId: id, reason: "device \(id) is not a device of \(account)")); continue
            }
            if d.state == .retired { refused.append(.init(deviceId: id, reason: "device \(id) is retired; a retired device never connects again")); continue }
            guard let authority = try authority(of: account, credentials, &fx),
                  let issued = try credentials.issue([id], authority: authority).first, let key = issued.privateKey else {
                throw DomainError(.internalError, "could not issue an identity for \(id)")
            }
            revoked += try ledger.revokeIdentities(id, at: at)
            let provisioner = try ledger.identityStatus(id)?.provisioner
            try ledger.setIdentity(id, fingerprint: issued.fingerprint, serial: issued.serial, issuer: account == provisioner ? nil : account)
            try ledger.appendCustody(id, holder: account, at: at, transfer: nil, decision: .rebundled, operator: actor)
            if let current = try ledger.latestConfig(id) {
                // The retained configuration may carry a certificate (the activation's) for a key the
                // reinstalled device does not have, which it would reject: the one in force again, without.
                try repushConfigInForce(id, owner: account, mode: current.mode, at: at, &fx)
            }
            fx.notify(.deviceRebundled, [account], at: at, device: id,
                      details: ["fingerprint": .string(issued.fingerprint), "previousFingerprint": d.fingerprint.map(JSONValue.string) ?? .null])
            bundles.append(.init(deviceId: id, certificate: issued.certificate, privateKey: key, brokerCA: credentials.brokerCA,
                                 brokerURL: credentials.deviceBrokerURL, fingerprint: issued.fingerprint))
        }
        if bundles.isEmpty {
            let reasons = refused.prefix(3).map(\.reason).joined(separator: "; ") + (refused.count > 3 ? "; and \(refused.count - 3) more" : "")
            if unknown == refused.count { throw DomainError(.notFound, reasons) }
            throw DomainError.conflict("no device was re-bundled: " + reasons)
        }
        fx.accessChanged = true // the revocation set
        return .init(bundles: bundles, refused: refused, revokedCertificates: revoked)
    }

    /// Re-pushes the configuration in force (same settings and interval) as a new version: to
    /// deliver a new identity, or to replace a retained one that carries a revoked identity.
    private func repushConfigInForce(_ d: DeviceID, owner: AccountID, mode: DeviceMode, at: Date, _ fx: inout Effects) throws {
        let current = try ledger.latestConfig(d)
        let profile = Commands.Profile(name: Self.rotationProfile, version: 0, settings: current?.settings ?? [:],
                                       heartbeatInterval: current?.heartbeatInterval ?? Commands.Profile.builtinDefault.heartbeatInterval, isDefault: false)
        let config = try ledger.pushConfig(d, owner: owner, mode: mode, profile: profile, certificate: nil, at: at, keepsProfile: true)
        fx.configs.append(d)
        fx.notify(.configPushed, [owner], at: at, device: d, details: ["version": .number(Double(config.version)), "profile": .string(Self.rotationProfile)])
    }

    // MARK: transfers

    private func visibleTransfer(_ id: String, to account: AccountID) throws -> Transfer {
        guard let t = try ledger.transfer(id), t.from == account || t.to == account else { throw DomainError.notFound("transfer \(id.prefix(64)) in account \(account)") }
        return t
    }

    private func transferRequest(_ account: AccountID, _ a: Commands.TransferRequest, _ fx: inout Effects) throws -> Commands.TransferResult {
        try requireRealAccount(account)
        guard let to = try ledger.account(a.to) else { throw DomainError.notFound("account \(a.to)") }
        if let n = a.note, n.count > 500 { throw DomainError.invalid("note is at most 500 characters") }
        let lifetime = TimeInterval(a.expiresIn ?? Int(Transfer.defaultLifetime))
        guard Commands.TransferRequest.expiryRange.contains(Int(lifetime)) else {
            throw DomainError.invalid("expiresIn must be within 1 s and 90 days")
        }
        let (eligible, refused) = try TransferPolicy.eligibility(requester: account, to: to.id, requested: a.deviceIds,
                                                                 known: ledger.candidates(a.deviceIds))
        guard !eligible.isEmpty else {
            throw DomainError.conflict("no requested device is eligible: " + refused.prefix(3).map(\.reason).joined(separator: "; "))
        }
        let at = now()
        let t = Transfer(id: "tr-" + newID(), from: account, to: to.id, note: a.note, createdAt: at, expiresAt: at.addingTimeInterval(lifetime), devices: eligible)
        try ledger.insert(t)
        fx.notify(.transferRequested, [t.from, t.to], at: at, transfer: t.id,
                  details: ["from": .string(t.from.rawValue), "to": .string(t.to.rawValue), "count": .number(Double(eligible.count)),
                            "note": a.note.map(JSONValue.string) ?? .null, "expiresAt": .string(ISO8601DateFormatter().string(from: t.expiresAt))])
        return .init(transfer: TransferView(t, includeItems: true), decided: eligible, refused: refused)
    }

    private func decide(_ account: AccountID, _ id: String, _ event: Transfer.Event, profile: String?, _ fx: inout Effects) throws -> Commands.TransferResult {
        var t = try visibleTransfer(id, to: account)
        var chosenProfile: Commands.Profile?
        if case .approve(_, .activate, _) = event {
            chosenProfile = try profile.map { name in
                guard let p = try ledger.profile(account, name: name) else { throw DomainError.notFound("profile \(name) in account \(account)") }
                return p
            } ?? ledger.profile(account, name: nil) ?? Commands.Profile.builtinDefault
        }
        let at = now()
        let transition = try t.apply(event, now: at)
        var action: ApprovalAction?
        if case .approve(_, let a, _) = event { action = a }
        try apply(transition, of: t, action: action, profile: chosenProfile, at: at, &fx)
        return .init(transfer: TransferView(t, includeItems: true), decided: transition.decided, refused: transition.refused)
    }

    /// Executes a transfer transition's effects inside the current transaction.
    func apply(_ transition: Transfer.Transition, of t: Transfer, action: ApprovalAction?, profile: Commands.Profile?, at: Date, _ fx: inout Effects) throws {
        try ledger.save(t, decided: transition.decided, at: at)
        let moving = transition.effects.compactMap { e -> DeviceID? in
            switch e { case .activate(let d, _), .hold(let d, _): d; default: nil }
        }
        try ledger.readingAhead(moving) { try applyEffects(transition, of: t, action: action, profile: profile, at: at, &fx) }
    }

    private func applyEffects(_ transition: Transfer.Transition, of t: Transfer, action: ApprovalAction?, profile: Commands.Profile?, at: Date, _ fx: inout Effects) throws {
        for effect in transition.effects {
            switch effect {
            case .activate(let d, let owner):
                _ = try leavePreviousOwner(d, at: at, &fx) // a resale or a move between accounts
                try ledger.appendCustody(d, holder: owner, at: at, transfer: t.id, decision: .activated, operator: actor)
                try issueOwnerIdentity(d, owner: owner, &fx)
                // The new owner, active from now, with its first configuration: one row update.
                let config = try ledger.pushConfig(d, owner: owner, mode: .normal, profile: profile ?? .builtinDefault, certificate: nil, at: at, activating: at)
                fx.configs.append(d)
                let profileName: JSONValue = .string((profile ?? .builtinDefault).name)
                fx.notify(.deviceActivated, [owner], at: at, device: d, transfer: t.id,
                          details: ["from": .string(t.from.rawValue), "profile": profileName, "configVersion": .number(Double(config.version))])
                fx.notify(.configPushed, [owner], at: at, device: d, details: ["version": .number(Double(config.version)), "profile": profileName])
            case .hold(let d, let owner):
                let wasActive = try leavePreviousOwner(d, at: at, &fx)
                if wasActive {
                    // A return (RMA, back to the OEM or a reseller): factory-reset semantics. The
                    // device goes back to escrow mode with no settings, under the receiver, and is
                    // asked for a new identity (the previous owner issued the one in force).
                    try ledger.returnToEscrow(d, holder: owner)
                } else {
                    try ledger.setOwner(d, owner: owner, activatedAt: nil)
                }
                try ledger.appendCustody(d, holder: owner, at: at, transfer: t.id, decision: .held, operator: actor)
                fx.notify(.deviceHeld, [owner], at: at, device: d, transfer: t.id, details: ["from": .string(t.from.rawValue)])
                if wasActive {
                    let config = try ledger.pushConfig(d, owner: owner, mode: .escrow, profile: Self.escrowProfile, certificate: nil, at: at)
                    fx.configs.append(d)
                    fx.notify(.configPushed, [owner], at: at, device: d, details: ["version": .number(Double(config.version)), "profile": .string(Self.escrowProfile.name)])
                }
            case .release:
                break // the device stays with the sender, free for another request
            case .notify(let type, let accounts, let devices):
                var details = Effects.deviceList(devices)
                if type == .transferApproved, let action { details["action"] = .string(action.rawValue) }
                if type == .transferRejected, case .rejected(let reason)? = devices.first.flatMap({ t.items[$0] }) { details["reason"] = .string(reason) }
                fx.notify(type, accounts, at: at, transfer: t.id, details: details)
            }
        }
        if !t.isOpen, transition.effects.contains(where: { if case .notify = $0 { true } else { false } }) {
            let counts = TransferView(t, includeItems: false).counts.mapValues { JSONValue.number(Double($0)) }
            fx.notify(.transferCompleted, [t.from, t.to], at: at, transfer: t.id, details: ["status": .string(t.status.rawValue), "counts": .object(counts)])
        }
    }

    /// An active device changes hands: an identity issued for its previous owner and not taken up
    /// is revoked (the broker reloads). Returns whether the device was active.
    private func leavePreviousOwner(_ d: DeviceID, at: Date, _ fx: inout Effects) throws -> Bool {
        guard try ledger.identityStatus(d)?.state == DeviceView.State.active.rawValue else { return false }
        try ledger.dropPendingIdentity(d, at: at)
        fx.accessChanged = true
        return true
    }

    /// Signs the device's CSR with the new owner's authority (created if the account predates
    /// per-account authorities); the activation configuration carries the certificate. Without a
    /// CSR the device keeps its escrow identity.
    private func issueOwnerIdentity(_ d: DeviceID, owner: AccountID, _ fx: inout Effects) throws {
        guard let credentials, let csr = try ledger.csr(d), let authority = try authority(of: owner, credentials, &fx) else { return }
        let issued = try credentials.sign(csr: csr, device: d, authority: authority)
        try ledger.setPendingIdentity(d, certificate: issued.certificate, fingerprint: issued.fingerprint, serial: issued.serial, issuer: owner)
    }

    /// The account's certificate authority, created if the account predates per-account
    /// authorities (the broker must then trust it before a device connects with what it signs).
    private func authority(of account: AccountID, _ credentials: any Credentials, _ fx: inout Effects) throws -> (certificate: String, privateKey: String)? {
        if let existing = try ledger.authority(account) { return existing }
        guard let acct = try ledger.account(account) else { return nil }
        let ca = try credentials.newAuthority(for: account, kind: acct.kind)
        try ledger.insertAuthority(account, certificate: ca.certificate, privateKey: ca.privateKey)
        fx.accessChanged = true
        return ca
    }

    /// A CSR from an **active** device that still runs on an identity its owner did not issue (it was
    /// offline at approval, or its CSR never reached the platform): signs it now and pushes the
    /// configuration in force again, carrying the certificate. The device applies it, reconnects with
    /// the new identity, and its ack revokes the old certificate. Returns false when nothing is due.
    /// The same for a device returned into escrow on an identity its previous owner issued (issuer
    /// neither its holder nor its provisioner): the holder's authority signs, and it stays in escrow mode.
    func rotateActiveIdentity(_ d: DeviceID, _ fx: inout Effects) throws -> Bool {
        guard credentials != nil, let status = try ledger.identityStatus(d), status.issuer != status.owner else { return false }
        let active = status.state == DeviceView.State.active.rawValue
        guard active || (status.state == DeviceView.State.escrow.rawValue && status.issuer != status.provisioner) else { return false }
        try issueOwnerIdentity(d, owner: status.owner, &fx)
        try repushConfigInForce(d, owner: status.owner, mode: active ? .normal : .escrow, at: now(), &fx)
        return true
    }
    /// The `profile` of the `config.pushed` event for a configuration re-pushed to deliver a new identity.
    static let rotationProfile = "identity-rotation"
    /// The configuration of a device returned into escrow: escrow mode, no settings, the escrow heartbeat.
    static let escrowProfile = Commands.Profile(name: "escrow", version: 0, settings: [:],
                                                heartbeatInterval: DeviceConfig.defaultEscrowHeartbeat, isDefault: false)

    // MARK: configuration

    /// "1 device", "12 devices" in error messages.
    private func storedProfile(_ account: AccountID, _ name: String) throws -> Commands.Profile {
        try requireRealAccount(account)
        guard let p = try ledger.profile(account, name: name) else { throw DomainError.notFound("profile \(name.prefix(64)) in account \(account)") }
        return p
    }

    /// Removes a profile no device's desired configuration comes from. The account's default
    /// profile may be deleted too; the built-in default then applies.
    private func profileDelete(_ account: AccountID, _ a: Commands.ProfileRef, _ fx: inout Effects) throws -> Commands.Profile {
        let p = try storedProfile(account, a.name)
        let users = try ledger.profileUse(account, name: p.name).reduce(0) { $0 + $1.devices }
        if users > 0 {
            throw DomainError.conflict("profile \(p.name) is in use by \(plural(users, "device")) of \(account) (their desired configuration comes from it); push another profile to them first")
        }
        try ledger.deleteProfile(account, name: p.name)
        fx.notify(.profileDeleted, [account], at: now(), details: ["name": .string(p.name), "version": .number(Double(p.version))])
        return p
    }

    /// Settings whose configuration would exceed the device limit (64 KiB, with room for the other
    /// fields and a certificate) are refused where they enter: `profile.put` and `config.push`.
    static func requireConfigFits(_ settings: [String: JSONValue]) throws {
        let size = WireCodec.encode(JSONValue.object(settings)).count
        if size > ConfigValidation.maxConfigBytes - 2048 {
            throw DomainError.invalid("settings: \(size) bytes encoded; a configuration may be at most \(ConfigValidation.maxConfigBytes) bytes, so settings may be at most \(ConfigValidation.maxConfigBytes - 2048)")
        }
    }

    private func configPush(_ account: AccountID, _ a: Commands.ConfigPush, _ fx: inout Effects) throws -> Commands.ConfigPushResult {
        try requireRealAccount(account)
        var profile: Commands.Profile
        if let settings = a.settings {
            profile = .init(name: "adhoc", version: 0, settings: settings, heartbeatInterval: a.heartbeatInterval ?? Commands.Profile.builtinDefault.heartbeatInterval, isDefault: false)
        } else if let name = a.profile {
            guard let p = try ledger.profile(account, name: name) else { throw DomainError.notFound("profile \(name) in account \(account)") }
            profile = p
        } else {
            profile = try ledger.profile(account, name: nil) ?? .builtinDefault
        }
        if let h = a.heartbeatInterval {
            guard DeviceConfig.heartbeatRange.contains(h) else { throw DomainError.invalid("heartbeatInterval must be within \(DeviceConfig.heartbeatRange)") }
            profile.heartbeatInterval = h
        }
        try Self.requireConfigFits(profile.settings)
        let targets: [DeviceID]
        if a.all == true {
            targets = try ledger.activeDeviceIDs(owner: account)
        } else if let ids = a.deviceIds, !ids.isEmpty {
            targets = ids
        } else {
            throw DomainError.invalid("name devices with deviceIds, or all: true")
        }
        var pushed: [Commands.ConfigStatusEntry] = [], refused: [Transfer.Refusal] = []
        let at = now()
        for id in Set(targets).sorted() {
            guard let d = try ledger.device(id), d.owner == account else {
                refused.append(.init(deviceId: id, reason: "device \(id) is not a device of \(account)")); continue
            }
            if d.state == .retired { refused.append(.init(deviceId: id, reason: "device \(id) is retired; a retired device is read-only and takes no configuration")); continue }
            guard d.state == .active else { refused.append(.init(deviceId: id, reason: "device \(id) is in escrow; approve a transfer to activate it")); continue }
            let c = try ledger.pushConfig(id, owner: account, mode: .normal, profile: profile, certificate: nil, at: at)
            fx.configs.append(id)
            fx.notify(.configPushed, [account], at: at, device: id, details: ["version": .number(Double(c.version)), "profile": .string(profile.name)])
            pushed.append(.init(deviceId: id, desiredVersion: c.version, appliedVersion: d.appliedVersion, state: .pending))
        }
        return .init(pushed: pushed, refused: refused)
    }

    /// A device's certificate signing request must be a PEM CSR for its own id.
    func validateCSR(_ pem: String, device: DeviceID) throws {
        guard pem.contains("-----BEGIN CERTIFICATE REQUEST-----"), pem.contains("-----END CERTIFICATE REQUEST-----") else {
            throw WireError(.invalidArgument, "csr: expected a PEM certificate signing request")
        }
        try credentials?.validate(csr: pem, device: device)
    }

    /// `events.since`: a page of the account's event log, and whether events asked for are gone.
    private func eventsSince(_ account: AccountID, _ a: Commands.EventsSince) throws -> Commands.EventsSinceResult {
        let limit = a.limit ?? Commands.EventsSince.defaultLimit
        let (latest, oldest) = try ledger.eventBounds(account)
        if let after = a.after, after > latest {
            throw DomainError(.invalidArgument, "args.after: \(after) is past account \(account)'s newest event (\(latest)): the ledger was reset or this is another installation; start again with after = 0")
        }
        // Half the largest payload: the reply's envelope and JSON escaping fit with room to spare.
        let (page, more) = try ledger.events(account, after: a.after, since: a.since, limit: limit, maxBytes: WireCodec.maxPayloadBytes / 2)
        var pruned: Int?
        if let after = a.after {
            let firstKept = oldest ?? (latest + 1)
            if after + 1 < firstKept { pruned = firstKept - 1 - after }
        }
        return Commands.EventsSinceResult(events: page, latestSeq: latest, oldestSeq: oldest, more: more, pruned: pruned)
    }

    // MARK: coding

    private func decode<T: Decodable>(_ args: JSONValue) throws -> T {
        do { return try args.decode(T.self) } catch {
            // A field missing or of the wrong type is `malformed` (topics.md, Errors); values out of
            // range are `invalid_argument`, raised by the command itself.
            throw DomainError(.malformed, "args: " + WireCodec.describe(error))
        }
    }
    private func encode<T: Encodable>(_ value: T) throws -> JSONValue { try JSONValue(encoding: value) }
}
