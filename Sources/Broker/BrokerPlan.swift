import EscrowCore
#if canImport(Glibc)
import Glibc
#endif

/// Everything mosquitto.conf says, as a value. `mosquittoConf()` renders it.
public struct BrokerPlan: Sendable, Equatable {
    public struct TLSFiles: Sendable, Equatable {
        public var caFile: String
        public var certFile: String
        public var keyFile: String
        /// Concatenated CRLs, one per CA in `caFile`; nil disables revocation checks.
        public var crlFile: String?
        /// Revoked serials enforced by the broker plugin (`BrokerLayout.revokedFile`).
        public var revokedFile: String?
        public init(caFile: String, certFile: String, keyFile: String, crlFile: String? = nil, revokedFile: String? = nil) {
            self.caFile = caFile; self.certFile = certFile; self.keyFile = keyFile; self.crlFile = crlFile; self.revokedFile = revokedFile
        }
    }

    /// Devices: mutual TLS, the certificate CN is the username.
    public struct DeviceListener: Sendable, Equatable {
        public var host: String
        public var port: Int
        public var tls: TLSFiles
        public init(host: String, port: Int, tls: TLSFiles) { self.host = host; self.port = port; self.tls = tls }
    }

    /// Control plane and operators: username + password, optionally over TLS.
    public struct OperatorListener: Sendable, Equatable {
        public var host: String
        public var port: Int
        /// Server-side TLS only (no client certificate required); nil = plain TCP.
        public var tls: TLSFiles?
        public init(host: String, port: Int, tls: TLSFiles? = nil) { self.host = host; self.port = port; self.tls = tls }
    }

    public var deviceListener: DeviceListener
    public var operatorListener: OperatorListener
    public var aclFile: String
    public var passwordFile: String
    /// The EscrowFleet broker plugin (`libEscrowBrokerPlugin.so`): refuses at SUBSCRIBE time what
    /// `acl_file` only filters at delivery (`$share/...` from non-services, filters outside the
    /// login's read rules) and client ids that are not the login's own. nil: not loaded (a broker
    /// without it is open to shared-subscription starvation; see docs/threat-model.md).
    public var plugin: String?
    /// With the plugin: confirm every reload on `BrokerNames.reloadTopic` with this file's token
    /// (a managed broker; escrowd then answers access changes once they are in force).
    public var reloadTokenFile: String?
    /// nil disables persistence.
    public var persistenceDirectory: String?
    /// Seconds between persistence saves. 60 rather than mosquitto's 1800: a
    /// crash loses at most a minute of retained/queued state, and the control
    /// plane reconciles from its own store whatever the broker loses, so a
    /// rewrite on every change (`autosave_on_changes true`) is not worth its cost.
    public var autosaveInterval: Int = 60
    /// Per-client queue while offline or beyond the in-flight window. Default
    /// 1000 drops silently under load; 100,000 absorbs escrowd's fan-in bursts
    /// (the only subscriber with volume; a device's own queue stays tiny).
    /// Worst case ~100 B x 100k = ~10 MB for one stuck subscriber.
    public var maxQueuedMessages: Int = 100_000
    /// QoS 1/2 messages in flight per client. Bounded (not 0 = unlimited) so a
    /// slow consumer's backlog sits in the counted queue above, not unacked in flight.
    public var maxInflightMessages: Int = 1000
    public var logFile: String?
    /// Mosquitto writes its pid here, so a supervisor in another container can SIGHUP it.
    public var pidFile: String?
    /// `user root`: mosquitto otherwise drops to user `mosquitto`, which cannot
    /// read root-owned 0600 keys in the data directory.
    public var runAsRoot: Bool

    public init(deviceListener: DeviceListener, operatorListener: OperatorListener, aclFile: String,
                passwordFile: String, persistenceDirectory: String?, logFile: String?,
                runAsRoot: Bool = getuid() == 0) {
        self.deviceListener = deviceListener
        self.operatorListener = operatorListener
        self.aclFile = aclFile
        self.passwordFile = passwordFile
        self.persistenceDirectory = persistenceDirectory
        self.logFile = logFile
        self.runAsRoot = runAsRoot
    }

    /// The standard plan for files in `layout`.
    public init(layout: BrokerLayout, deviceHost: String = "0.0.0.0", devicePort: Int = 8883,
                operatorHost: String = "127.0.0.1", operatorPort: Int = 1883, operatorTLS: Bool = false) {
        let tls = TLSFiles(caFile: layout.caBundle, certFile: layout.serverCertificate,
                           keyFile: layout.serverKey, crlFile: layout.crlFile, revokedFile: layout.revokedFile)
        self.init(deviceListener: DeviceListener(host: deviceHost, port: devicePort, tls: tls),
                  operatorListener: OperatorListener(host: operatorHost, port: operatorPort,
                                                     tls: operatorTLS ? TLSFiles(caFile: layout.caBundle, certFile: layout.serverCertificate, keyFile: layout.serverKey) : nil),
                  aclFile: layout.aclFile, passwordFile: layout.passwordFile,
                  persistenceDirectory: layout.persistenceDirectory, logFile: layout.logFile)
        pidFile = layout.pidFile
        plugin = BrokerPlugin.locate()
    }

    /// The global (non-listener) settings, shared with `describeForExternalBroker`.
    func globalLines() -> [String] {
        var lines = [
            "# Generated by EscrowFleet. Do not edit: regenerated on every change.",
            "# Auth settings are global: they apply to both listeners.",
            "per_listener_settings false",
            "allow_anonymous false",
            "password_file \(passwordFile)",
            "acl_file \(aclFile)",
        ]
        if let plugin {
            lines += [
                "# Refuses at SUBSCRIBE time what acl_file only filters at delivery, and foreign client ids.",
                "plugin \(plugin)",
                "plugin_opt_acl_file \(aclFile)",
                "plugin_opt_service_prefix \(BrokerNames.servicePrefix)",
            ]
            if let revoked = deviceListener.tls.revokedFile { lines.append("plugin_opt_revoked_file \(revoked)") }
            if let token = reloadTokenFile {
                lines += ["plugin_opt_reload_topic \(BrokerNames.reloadTopic)", "plugin_opt_reload_token_file \(token)"]
            }
        }
        if let pidFile { lines.append("pid_file \(pidFile)") }
        if let dir = persistenceDirectory {
            lines += [
                "persistence true",
                "persistence_location \(dir.hasSuffix("/") ? dir : dir + "/")",
                "persistence_file mosquitto.db",
                "# The control plane reconciles whatever a crash loses; see BrokerPlan.autosaveInterval.",
                "autosave_interval \(autosaveInterval)",
                "autosave_on_changes false",
            ]
        } else {
            lines.append("persistence false")
        }
        lines += [
            "max_queued_messages \(maxQueuedMessages)",
            "max_inflight_messages \(maxInflightMessages)",
            "# Replies and configurations are small packets: without it Nagle and delayed ACKs add ~40 ms each way.",
            "set_tcp_nodelay true",
        ]
        return lines
    }

    func listenerLines() -> [String] {
        var lines = [
            "",
            "# Devices: mutual TLS; the certificate CN becomes the username.",
            "listener \(deviceListener.port) \(deviceListener.host)",
            "max_connections -1",
        ]
        lines += tlsLines(deviceListener.tls)
        // The client id becomes the CN too: no device can take over (disconnect) another's session.
        lines += ["require_certificate true", "use_identity_as_username true", "use_username_as_clientid true"]
        lines += [
            "",
            "# Control plane and operators: username and password.",
            "listener \(operatorListener.port) \(operatorListener.host)",
            "max_connections -1",
        ]
        if let tls = operatorListener.tls {
            lines += tlsLines(tls)
            lines.append("require_certificate false")
        }
        return lines
    }

    private func tlsLines(_ tls: TLSFiles) -> [String] {
        var lines = ["cafile \(tls.caFile)", "certfile \(tls.certFile)", "keyfile \(tls.keyFile)"]
        if let crl = tls.crlFile { lines.append("crlfile \(crl)") }
        return lines
    }

    /// The complete mosquitto.conf text.
    public func mosquittoConf() -> String {
        var lines = globalLines()
        if let log = logFile {
            lines += ["log_dest file \(log)", "log_type error", "log_type warning", "log_type notice",
                      "log_type information", "connection_messages true", "log_timestamp true"]
        } else {
            lines.append("log_dest stderr")
        }
        if runAsRoot { lines.append("user root") }
        lines += listenerLines()
        return lines.joined(separator: "\n") + "\n"
    }
}
