import Foundation
import Broker
import POSIX
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What to put in a generated mosquitto.conf. The plain listener on 127.0.0.1 is always present.
public struct BrokerConfig: Sendable {
    public struct TLSListener: Sendable {
        public var caFile: String
        public var certFile: String
        public var keyFile: String
        public var requireCertificate: Bool
        public var useIdentityAsUsername: Bool
        /// 0 picks a free port when the broker starts.
        public var port: Int
        public init(caFile: String, certFile: String, keyFile: String,
                    requireCertificate: Bool = true, useIdentityAsUsername: Bool = true, port: Int = 0) {
            self.caFile = caFile; self.certFile = certFile; self.keyFile = keyFile
            self.requireCertificate = requireCertificate; self.useIdentityAsUsername = useIdentityAsUsername
            self.port = port
        }
    }

    public var allowAnonymous: Bool = true
    /// Users written with `mosquitto_passwd -b`; nil means no password file.
    public var passwords: [String: String]? = nil
    /// Raw `acl_file` contents; nil means no ACL file.
    public var acl: String? = nil
    public var tls: TLSListener? = nil
    public var persistence: Bool = false
    public var autosaveInterval: Int = 1800
    public var maxQueuedMessages: Int = 1000
    /// Appended verbatim, one per line, after everything else.
    public var extraLines: [String] = []

    public init(allowAnonymous: Bool = true, passwords: [String: String]? = nil, acl: String? = nil,
                tls: TLSListener? = nil, persistence: Bool = false, autosaveInterval: Int = 1800,
                maxQueuedMessages: Int = 1000, extraLines: [String] = []) {
        self.allowAnonymous = allowAnonymous; self.passwords = passwords; self.acl = acl; self.tls = tls
        self.persistence = persistence; self.autosaveInterval = autosaveInterval
        self.maxQueuedMessages = maxQueuedMessages; self.extraLines = extraLines
    }
}

/// A real Mosquitto broker in a child process on a free loopback port, with its own temp directory.
/// Stopped (SIGTERM, then SIGKILL) by `stop()` or deinit; only its own process is ever signalled.
public final class MosquittoBroker: Sendable {
    public static let installHint = "apt-get install -y mosquitto"

    public let port: Int
    public let tlsPort: Int?
    public let config: BrokerConfig
    public let directory: TempDirectory
    public let configPath: String
    public let logPath: String
    public let persistenceDirectory: String
    /// The one Mosquitto launcher (escrowd's): clean signal mask, readiness by connecting, pidfd exit.
    private let managed: ManagedBroker

    public var host: String { "127.0.0.1" }
    /// `mqtt://127.0.0.1:port`.
    public var url: String { "mqtt://127.0.0.1:\(port)" }

    /// Writes the config and starts the broker; returns once it accepts TCP connections.
    public init(_ config: BrokerConfig = BrokerConfig(), startTimeout: Duration = .seconds(10)) async throws {
        var options = ManagedBroker.Options()
        guard FileManager.default.isExecutableFile(atPath: options.executable) else {
            throw TestSupportError("mosquitto broker binary not found on PATH or in /usr/sbin; install it with `\(Self.installHint)`")
        }
        self.config = config
        directory = try TempDirectory(prefix: "mosquitto")
        let ports = try freePorts(2)
        port = ports[0]
        if let tls = config.tls { tlsPort = tls.port == 0 ? ports[1] : tls.port } else { tlsPort = nil }
        configPath = directory.file("mosquitto.conf")
        logPath = directory.file("mosquitto.log")
        persistenceDirectory = try directory.subdirectory("data")
        options.maxRestarts = 0 // a test that kills the broker restarts it itself
        options.startTimeout = startTimeout
        managed = ManagedBroker(configFile: configPath,
                                readinessEndpoints: ([port] + (tlsPort.map { [$0] } ?? [])).map { ("127.0.0.1", $0) },
                                outputFile: logPath, options: options)
        try writeConfig()
        try await start()
    }

    /// The broker's process id, or nil when it is not running.
    public var pid: Int32? { managed.pid }

    public var isRunning: Bool { pid != nil }

    /// The last `lines` lines of the broker log (startup errors included).
    public func logTail(lines: Int = 30) -> String {
        guard let text = try? String(contentsOfFile: logPath, encoding: .utf8) else { return "(no log at \(logPath))" }
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }

    /// Sends `signal` to the broker process (SIGHUP reloads password and ACL files).
    public func kill(signal: Int32) {
        guard let pid else { return }
        _ = Glibc.kill(pid, signal)
    }

    /// Stops the broker and starts it again on the same ports with the same data directory.
    /// `graceful: false` uses SIGKILL, so nothing since the last persistence save survives.
    public func restart(graceful: Bool = true) async throws {
        stop(graceful: graceful)
        try await start()
    }

    /// SIGTERM (or SIGKILL when not graceful), escalating to SIGKILL after `grace`; waits for exit.
    public func stop(graceful: Bool = true) {
        if graceful { managed.stopSynchronously() } else { managed.killSynchronously() }
    }

    deinit { managed.stopSynchronously() }

    private func start() async throws {
        do { try await managed.start() } catch {
            throw TestSupportError("mosquitto did not start on port \(port): \(error). Log tail:\n\(logTail())")
        }
    }

    private func writeConfig() throws {
        var lines: [String] = [
            "# generated by TestSupport.MosquittoBroker",
            "per_listener_settings false",
            "allow_anonymous \(config.allowAnonymous)",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
            "max_queued_messages \(config.maxQueuedMessages)",
            // As escrowd's generated config: small request/reply packets must not wait for delayed ACKs.
            "set_tcp_nodelay true",
        ]
        if getuid() == 0 { lines.append("user root") }
        if config.persistence {
            lines += ["persistence true", "persistence_location \(persistenceDirectory)/",
                      "autosave_interval \(config.autosaveInterval)"]
        } else {
            lines.append("persistence false")
        }
        if let passwords = config.passwords {
            let file = directory.file("passwd")
            _ = FileManager.default.createFile(atPath: file, contents: nil)
            let tool = locateExecutable("mosquitto_passwd") ?? "/usr/bin/mosquitto_passwd"
            for (user, password) in passwords.sorted(by: { $0.key < $1.key }) {
                try runCommand(tool, ["-b", file, user, password], installHint: Self.installHint)
            }
            lines.append("password_file \(file)")
        }
        if let acl = config.acl {
            let file = directory.file("acl")
            try acl.write(toFile: file, atomically: true, encoding: .utf8)
            lines.append("acl_file \(file)")
        }
        lines += ["", "listener \(port) 127.0.0.1"]
        if let tls = config.tls, let tlsPort {
            lines += [
                "", "listener \(tlsPort) 127.0.0.1",
                "cafile \(tls.caFile)", "certfile \(tls.certFile)", "keyfile \(tls.keyFile)",
                "require_certificate \(tls.requireCertificate)",
                "use_identity_as_username \(tls.useIdentityAsUsername)",
            ]
        }
        lines += config.extraLines
        try (lines.joined(separator: "\n") + "\n").write(toFile: configPath, atomically: true, encoding: .utf8)
    }
}
