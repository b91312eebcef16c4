import Foundation
import Storage
import EscrowCore
import MQTT
import Broker
import Identity
import HTTPServer
import Synchronization
import POSIX

/// `escrowd` as a whole: the data directory, the broker it manages (or the external one it
/// uses), the MQTT connection, and the `ControlPlane` service.
public final class Daemon: Sendable {
    public struct Settings: Sendable {
        public var dataDirectory: String
        /// Where the ledger lives (`--store`); nil: the SQLite file DATA/escrow.db.
        public var store: StoreLocation?
        /// nil: start and manage a local mosquitto. Otherwise `mqtt://` or `mqtts://` URL.
        public var externalBroker: String?
        public var username = "svc-escrowd"
        public var password: String?
        public var bindHost = "127.0.0.1"
        public var devicePort = 8883
        public var operatorPort = 1883
        /// The host name devices use to reach the broker (goes into bundles and the server certificate).
        public var publicHost = "127.0.0.1"
        public var reconcileInterval: Duration = .seconds(30)
        /// See `ControlPlane.Options.presenceLeaseIntervals`.
        public var presenceLeaseIntervals: Double = 3
        /// See `ControlPlane.Options.lastSeenFlushInterval`.
        public var lastSeenFlushInterval: Duration = .seconds(5)
        /// The managed broker's binary (`--mosquitto`); nil: `mosquitto` from PATH, else /usr/sbin/mosquitto.
        public var mosquitto: String?
        /// See `ControlPlane.Options.escrowGrace`.
        public var escrowGrace: Duration = .seconds(30 * 86_400)
        /// See `ControlPlane.Options.eventRetention`.
        public var eventRetention: Duration = .seconds(30 * 86_400)
        public var mqttVersion: MQTTVersion = .v5
        /// Managed broker: TLS on the operator listener too (certificate from the platform CA), for
        /// operators on other hosts. escrowctl then needs `ca = DATA/platform-ca.pem` (admin.conf has it).
        public var operatorTLS = false
        /// With an external broker that mounts DATA/broker (docker-compose.yml): its pid file;
        /// escrowd sends SIGHUP after each rewrite of the broker's files.
        public var brokerPIDFile: String?
        /// The broker logs to its stderr instead of DATA/broker/mosquitto.log (a container's log stream).
        public var brokerLogToStderr = false
        /// `HOST:PORT` of the HTTP endpoint for `/metrics`, `/healthz` and `/readyz`; nil: none.
        public var httpAddress: String?
        /// Take the data directory's lock (everything but `--print-broker-config`, which only reads).
        public var lockDataDirectory = true
        public init(dataDirectory: String) { self.dataDirectory = dataDirectory }
        /// Where escrowd and local operators reach the managed broker's listeners.
        var localHost: String { bindHost == "0.0.0.0" ? "127.0.0.1" : bindHost }
    }

    public let settings: Settings
    public let layout: BrokerLayout
    let log: Log
    let broker: ManagedBroker?
    let client: MQTTClient
    public let service: ControlPlane
    let credentials: IdentityCredentials
    let platformCA: CertificateAuthority
    let httpServer = Mutex<HTTPServer?>(nil)
    /// Held from `init` on: a second escrowd on the same data directory is refused before it
    /// rewrites a file (or stops the first one's broker).
    let dataLock: DirectoryLock?

    public var databasePath: String { settings.dataDirectory + "/escrow.db" }
    /// The ledger's database: `--store`, or the SQLite file in the data directory.
    public var store: StoreLocation { settings.store ?? .sqlite(path: databasePath) }
    /// `key = value` file escrowctl reads for the platform administrator (mode 0600).
    public var adminCredentialsPath: String { settings.dataDirectory + "/admin.conf" }
    public var brokerPID: Int32? { broker?.pid }

    public init(settings: Settings, log: Log) throws {
        self.settings = settings
        self.log = log
        guard settings.username.hasPrefix(BrokerNames.servicePrefix) else {
            throw BrokerError.invalidName(settings.username, reason: "escrowd's broker login must start with '\(BrokerNames.servicePrefix)' (only services may hold shared subscriptions)")
        }
        let dir = settings.dataDirectory
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        dataLock = settings.lockDataDirectory ? try DirectoryLock(directory: dir) : nil
        layout = BrokerLayout(dataDirectory: dir)
        try layout.createDirectories()

        // The platform CA signs the broker's server certificate; devices trust it.
        let caCert = dir + "/platform-ca.pem", caKey = dir + "/platform-ca.key"
        if FileManager.default.fileExists(atPath: caCert) {
            platformCA = try CertificateAuthority.load(certificatePath: caCert, keyPath: caKey)
        } else {
            platformCA = try CertificateAuthority.create(commonName: "EscrowFleet platform CA")
            try platformCA.save(certificatePath: caCert, keyPath: caKey)
        }
        let deviceURL = settings.externalBroker ?? "mqtts://\(settings.publicHost):\(settings.devicePort)"
        credentials = IdentityCredentials(brokerCA: try platformCA.certificate.pem(), deviceBrokerURL: deviceURL)

        let password = try settings.password ?? Self.secret(at: dir + "/escrowd.secret")
        var options: MQTTOptions
        var plan = BrokerPlan(layout: layout, deviceHost: settings.bindHost, devicePort: settings.devicePort,
                              operatorHost: settings.bindHost, operatorPort: settings.operatorPort, operatorTLS: settings.operatorTLS)
        if settings.brokerLogToStderr { plan.logFile = nil }
        // A managed broker confirms each reload (the plugin publishes the token back), so an access
        // change is answered once it is in force; an external broker is signalled, not awaited.
        if settings.externalBroker == nil && settings.brokerPIDFile == nil { plan.reloadTokenFile = layout.reloadTokenFile }
        // The broker's files are always kept current in DATA/broker: a managed broker reads them,
        // an external one is given them (see --print-broker-config).
        do {
            if !FileManager.default.fileExists(atPath: layout.serverCertificate) {
                // Also the external broker's own host name: clients on its network (fleetsim in docker-compose) use it.
                let brokerHost = settings.externalBroker.flatMap { try? BrokerURL.parse($0).host }
                try layout.installServerIdentity(ca: platformCA, serverNames: Array(Set([settings.publicHost, "127.0.0.1", "localhost"] + [brokerHost].compactMap { $0 })).sorted())
            }
            try layout.install(plan: plan, acl: "", passwords: "")
        }
        // USERNAME:SUFFIX: the broker plugin lets no other login use (and so take over) it.
        let clientID = BrokerNames.clientID(settings.username, suffix: "escrowd-\(getpid())")
        if let url = settings.externalBroker {
            options = try MQTTOptions.parse(url: url, clientID: clientID)
            broker = nil
        } else {
            // Without the plugin one hostile login starves escrowd's shared subscriptions: refuse to run.
            guard plan.plugin != nil else { throw BrokerError.launchFailed(BrokerPlugin.missingMessage) }
            options = MQTTOptions(clientID: clientID, host: settings.localHost, port: settings.operatorPort)
            if settings.operatorTLS { options.tls = MQTTTLS(caFile: caCert) }
            var brokerOptions = ManagedBroker.Options()
            if let m = settings.mosquitto {
                guard FileManager.default.isExecutableFile(atPath: m) else {
                    throw BrokerError.launchFailed("--mosquitto \(m) is not an executable file")
                }
                brokerOptions.executable = m
            }
            broker = ManagedBroker(layout: layout, plan: plan, options: brokerOptions)
        }
        options.username = settings.username
        options.password = password
        options.version = settings.mqttVersion
        options.cleanSession = true
        client = try MQTTClient(options)
        var cpOptions = ControlPlane.Options(store: settings.store ?? .sqlite(path: dir + "/escrow.db"))
        cpOptions.reconcileInterval = settings.reconcileInterval
        cpOptions.presenceLeaseIntervals = settings.presenceLeaseIntervals
        cpOptions.lastSeenFlushInterval = settings.lastSeenFlushInterval
        cpOptions.escrowGrace = settings.escrowGrace
        cpOptions.eventRetention = settings.eventRetention
        let layout = self.layout, platformCA = self.platformCA, managed = broker, username = settings.username
        let log = self.log, pidFile = settings.brokerPIDFile, external = settings.externalBroker != nil && pidFile == nil
        cpOptions.confirmsReloads = plan.reloadTokenFile != nil
        let tokens = ReloadTokens(file: plan.reloadTokenFile)
        service = try ControlPlane(options: cpOptions, client: client, credentials: credentials, log: log, onAccessChanged: { snapshot -> UInt64? in
            do {
                try Self.writeAccess(snapshot, layout: layout, platformCA: platformCA, controlPlane: (username, password))
                // The token after the files: a confirmation carrying it means they are all in force.
                let token = try tokens.next()
                if let managed { try managed.reload() } else if let pidFile { try Self.signalBroker(pidFile: pidFile) }
                log(.info, "broker access files rewritten (\(snapshot.accounts.count) accounts, \(snapshot.operators.count) operators)"
                    + (external ? "; copy them to the external broker and SIGHUP it (escrowd --print-broker-config)" : ""))
                return token
            } catch {
                log(.error, "could not update broker access files: \(error)")
                return nil
            }
        })
    }

    /// Writes the ACL, the password file and the device trust bundle from the ledger's accounts.
    static func writeAccess(_ s: ControlPlane.AccessSnapshot, layout: BrokerLayout, platformCA: CertificateAuthority,
                            controlPlane: (username: String, password: String)) throws {
        let operators = s.operators.map { op in
            (username: op.username, accounts: op.account == .platform ? ["platform"] : AccessPolicy.accounts(reachableBy: op.account, in: s.accounts).map(\.rawValue))
        }
        // Support logins may publish only the read-only commands (CommandSchema.readOnly).
        let readOnly = CommandSchema.all.filter(\.readOnly).map(\.command.rawValue)
        var input = ACLInput(controlPlaneUser: controlPlane.username, operators: operators)
        input.readOnlyOperators = Set(s.operators.filter { $0.role == .support }.map(\.username))
        input.readOnlyCommands = readOnly
        let acl = try ACLFile.render(input)
        let passwords = try PasswordFile.render([(controlPlane.username, MosquittoPassword.hash(password: controlPlane.password))]
                                               + s.operators.map { ($0.username, $0.passwordHash) })
        try writeBrokerFile(acl, to: layout.aclFile, mode: 0o644)
        try writeBrokerFile(passwords, to: layout.passwordFile, mode: 0o600)
        var authorities = [platformCA]
        var revoked: [String: [String]] = [:]
        for a in s.authorities {
            let ca = try CertificateAuthority(certificatePEM: a.certificate, keyPEM: a.privateKey)
            authorities.append(ca)
            if let serials = s.revokedSerials[a.account] { revoked[ca.commonName] = serials }
        }
        try layout.installTrust(authorities: authorities, revokedSerials: revoked)
    }

    /// The reload tokens escrowd writes before each SIGHUP: strictly increasing, also across
    /// restarts (they start from the Unix time in microseconds), so a confirmation of an older
    /// reload is never taken for a newer one.
    final class ReloadTokens: Sendable {
        private let file: String?
        private let last = Mutex<UInt64>(UInt64(Date().timeIntervalSince1970 * 1_000_000))
        init(file: String?) { self.file = file }
        /// Writes the next token; nil when reloads are not confirmed.
        func next() throws -> UInt64? {
            guard let file else { return nil }
            let token = last.withLock { $0 += 1; return $0 }
            try writeBrokerFile("\(token)\n", to: file, mode: 0o644)
            return token
        }
    }

    /// SIGHUP to the broker whose pid is in `pidFile` (a broker escrowd does not start itself).
    static func signalBroker(pidFile: String) throws {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1 else {
            throw BrokerError.notRunning
        }
        guard kill(pid, SIGHUP) == 0 else { throw BrokerError.notRunning }
    }

    /// Writes everything a broker needs (configuration, certificates, ACL, passwords) and the
    /// administrator's escrowctl settings, without connecting: `escrowd --init-broker-files`.
    public func prepareBrokerFiles() async throws {
        let snapshot = try await bootstrap()
        let layout = self.layout, platformCA = self.platformCA, user = settings.username
        let password = try await BlockingWork.run("secrets") { try self.brokerPassword() }
        try await BlockingWork.run("broker-files") { try Self.writeAccess(snapshot, layout: layout, platformCA: platformCA, controlPlane: (user, password)) }
    }

    private func brokerPassword() throws -> String {
        try settings.password ?? Self.secret(at: settings.dataDirectory + "/escrowd.secret")
    }

    /// Starts the broker (when managed), connects and serves until `shutdown()`.
    public func run() async throws {
        let snapshot = try await bootstrap()
        let password = try await BlockingWork.run("secrets") { try self.brokerPassword() }
        let layout = self.layout, platformCA = self.platformCA, user = settings.username
        // Atomic, fsync'd writes: on a thread of their own (the executor rule).
        try await BlockingWork.run("broker-files") { try Self.writeAccess(snapshot, layout: layout, platformCA: platformCA, controlPlane: (user, password)) }
        if broker == nil, let pidFile = settings.brokerPIDFile { try? Self.signalBroker(pidFile: pidFile) }
        if broker == nil, settings.brokerPIDFile == nil, let url = settings.externalBroker {
            log(.info, "external broker \(url): the configuration it needs is in \(layout.directory) (escrowd --print-broker-config explains it)")
        }
        if let broker {
            let log = self.log
            broker.onEvent = { e in
                switch e {
                case .gaveUp: log(.error, "broker: \(e): escrowd stops (exit status 1)")
                case .exited(_, expected: false): log(.warn, "broker: \(e)")
                default: log(.info, "broker: \(e)")
                }
            }
            try await broker.start()
            let adopted = broker.adoptedAtStart
            log(.info, "managed mosquitto \(adopted ? "adopted from the previous escrowd, connections kept" : "started") (pid \(broker.pid ?? 0)): devices on mqtts://\(settings.bindHost):\(settings.devicePort), operators on mqtt://\(settings.bindHost):\(settings.operatorPort)")
        }
        try await client.connect()
        log(.info, "connected to the broker as \(settings.username)")
        if let address = settings.httpAddress {
            let server: HTTPServer
            do { server = try Self.startHTTP(address, service: service) } catch { throw HTTPServerError("--http \(address): \(error)") }
            httpServer.withLock { $0 = server }
            log(.info, "http: /metrics, /healthz and /readyz on http://\(server.host):\(server.port)")
        }
        guard let broker else { return try await service.run() }
        // The service runs until it stops; a broker the supervisor gave up on ends the run with an error.
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.service.run() }
            group.addTask { throw await broker.supervisionEnded() }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// First start: the platform administrator (random password) and escrowctl's admin.conf.
    private func bootstrap() async throws -> ControlPlane.AccessSnapshot {
        var snapshot = try await service.accessSnapshot()
        let secretPath = settings.dataDirectory + "/admin.secret"
        // Secret files are written atomically (fsync): on a thread of their own, as is the hash.
        let admin = try await BlockingWork.run("secrets") { try Self.secret(at: secretPath) }
        if !snapshot.operators.contains(where: { $0.username == "op-admin" }) {
            // First start: a platform administrator for escrowctl, with a random password.
            let credentials = self.credentials
            let hash = await BlockingWork.run("password-hash") { credentials.passwordHash(admin) }
            try await service.bootstrapAdmin(username: "op-admin", passwordHash: hash)
            snapshot = try await service.accessSnapshot()
        }
        let brokerURL = settings.externalBroker
            ?? "\(settings.operatorTLS ? "mqtts" : "mqtt")://\(settings.localHost):\(settings.operatorPort)"
        let adminConf = """
            # escrowctl settings for the platform administrator (written by escrowd)
            broker = \(brokerURL)
            user = op-admin
            password = \(admin)
            account = platform
            """ + (settings.operatorTLS && settings.externalBroker == nil ? "\nca = \(settings.dataDirectory)/platform-ca.pem" : "")
        let adminPath = adminCredentialsPath
        try await BlockingWork.run("secrets") { try writeSecretFile(adminPath, adminConf) }
        return snapshot
    }

    /// Stops the managed broker at once, from any thread (a test's cleanup after a failure).
    public func stopBrokerSynchronously() { broker?.stopSynchronously() }

    public func shutdown() async {
        httpServer.withLock { $0?.stop() }
        await service.stop()
        await client.disconnect()
        if let broker { await broker.stop() }
    }

    /// The configuration an external broker needs (printed by `escrowd --print-broker-config`).
    public func externalBrokerConfiguration() -> String {
        let plan = BrokerPlan(layout: layout, deviceHost: "0.0.0.0", devicePort: settings.devicePort,
                              operatorHost: "0.0.0.0", operatorPort: settings.operatorPort)
        return describeForExternalBroker(plan)
    }

    /// `/metrics` (Prometheus text), `/healthz` (the process answers), `/readyz` (broker connected and
    /// ledger writable; 503 with the reasons otherwise), on the server's own threads.
    static func startHTTP(_ address: String, service: ControlPlane) throws -> HTTPServer {
        let server = try HTTPServer(listen: address) { request in
            guard request.method == "GET" || request.method == "HEAD" else {
                return HTTPResponse(status: 405, headers: [("Allow", "GET, HEAD")], body: Array("only GET and HEAD\n".utf8))
            }
            switch request.path {
            case "/healthz":
                return HTTPResponse(status: 200, text: "ok\n")
            case "/readyz":
                guard let problems = awaitBlocking({ await service.readiness() }) else { return HTTPResponse(status: 503, text: "not ready: the control plane did not answer within 5 s\n") }
                return problems.isEmpty ? HTTPResponse(status: 200, text: "ready\n") : HTTPResponse(status: 503, text: "not ready: " + problems.joined(separator: "; ") + "\n")
            case "/metrics":
                guard let snapshot = awaitBlocking({ await service.metricsSnapshot() }) else { return HTTPResponse(status: 503, text: "the control plane did not answer within 5 s\n") }
                return HTTPResponse(status: 200, contentType: PrometheusText.contentType, body: Array(snapshot.render().utf8))
            default:
                return HTTPResponse(status: 404, text: "not found: \(request.path.prefix(200)); try /metrics, /healthz or /readyz\n")
            }
        }
        server.start()
        return server
    }

    /// Reads a secret from `path`, creating a random one (mode 0600) the first time.
    static func secret(at path: String) throws -> String {
        if let s = try? String(contentsOfFile: path, encoding: .utf8), !s.isEmpty { return s.trimmingCharacters(in: .whitespacesAndNewlines) }
        var bytes = [UInt8](repeating: 0, count: 18)
        var rng = SystemRandomNumberGenerator()
        for i in bytes.indices { bytes[i] = rng.next() }
        let s = Data(bytes).base64EncodedString().replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "+", with: "-")
        try writeSecretFile(path, s)
        return s
    }
}

func writeSecretFile(_ path: String, _ text: String) throws {
    try writeBrokerFile(text + "\n", to: path, mode: 0o600)
}

extension ControlPlane.AccessSnapshot {
    var authorities: [(account: AccountID, certificate: String, privateKey: String)] { authoritiesList }
}

extension ControlPlane {
    /// Creates the platform administrator login if it does not exist.
    public func bootstrapAdmin(username: String, passwordHash: String) throws {
        guard try !ledger.operatorExists(username) else { return }
        try ledger.db.transaction {
            if try ledger.account(.platform) == nil {
                try ledger.insert(Account(id: .platform, name: "Platform administrators", kind: .provisioner), at: Date())
            }
            try ledger.insertOperator(username, account: .platform, passwordHash: passwordHash, at: Date())
        }
    }
}
