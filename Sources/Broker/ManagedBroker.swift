import Foundation
import POSIX
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What the supervisor reports.
public enum BrokerEvent: Sendable, Equatable {
    case started(pid: Int32)
    /// A broker left running by a supervisor that died, with the same configuration, was taken
    /// over instead of restarted: its device connections stay up.
    case adopted(pid: Int32)
    /// The process ended; `expected` is true after `stop()`.
    /// `status` is the exit code, or 128 + the signal number when a signal ended it (as a shell reports it).
    case exited(status: Int32, expected: Bool)
    /// An unexpected exit was followed by a relaunch (`attempt` counts from 1) that listens:
    /// sent after its READY=1, so a client may connect at once.
    case restarted(pid: Int32, attempt: Int)
    case reloaded
    /// Too many unexpected exits in a row: the supervisor stopped relaunching.
    case gaveUp(attempts: Int)
}

/// Runs `mosquitto -c <config>` as a child process and keeps it alive.
///
/// - `start()` launches it and waits until every listener accepts TCP.
/// - An unexpected exit is relaunched after a backoff (doubling up to
///   `maxBackoff`), at most `maxRestarts` times in a row; a run that lasted
///   `stableAfter` resets the count.
/// - `reload()` sends SIGHUP (mosquitto re-reads password, ACL, CA and CRL files).
/// - `stop()` sends SIGTERM, then SIGKILL after `grace`; deinit does the same.
/// - The broker runs in its own process group, so it outlives a supervisor killed with SIGKILL.
///   With a pid file, the next `start()` adopts that broker when it runs the same configuration
///   (byte for byte: a copy is kept next to the pid file at launch) and sends it SIGHUP, so a
///   control-plane crash drops no device connection; a broker with another configuration is stopped
///   and a new one launched.
public final class ManagedBroker: Sendable {
    public struct Options: Sendable {
        /// The broker binary: `mosquitto` from PATH, else Debian's /usr/sbin/mosquitto.
        public var executable: String = ManagedBroker.locateMosquitto()
        public var maxRestarts: Int = 5
        public var initialBackoff: Duration = .milliseconds(200)
        public var maxBackoff: Duration = .seconds(10)
        public var stableAfter: Duration = .seconds(30)
        public var startTimeout: Duration = .seconds(10)
        public var stopGrace: Duration = .seconds(5)
        /// mosquitto 2.0.11 clears its reload flag when a reload ends, and on an idle broker a
        /// reload starts up to 100 ms after the signal, so a SIGHUP sent within ~250 ms of the
        /// previous one can be lost (measured by bench/crl-scale.sh). Every request is signalled at
        /// once (usually it takes effect); a request made within this spacing of the previous
        /// signal also gets one trailing SIGHUP, sent when this long has passed since the latest
        /// signal, so the newest files are always read (they are written before the call).
        public var reloadSpacing: Duration = .milliseconds(300)
        public init() {}
    }

    private struct State {
        var process: ChildProcess?
        var stopping = false
        var launchedAt = ContinuousClock.now
        var consecutiveRestarts = 0
        var onEvent: (@Sendable (BrokerEvent) -> Void)?
        var lastReload: ContinuousClock.Instant?
        /// A trailing SIGHUP is scheduled: it will read whatever the files say by then.
        var reloadScheduled = false
    }

    public let configFile: String
    /// host:port pairs that must accept before the broker counts as started.
    public let readinessEndpoints: [(host: String, port: Int)]
    public let pidFile: String?
    public let outputFile: String?
    public let options: Options
    /// Every event, in order. Finishes when the supervisor is deallocated.
    public let events: AsyncStream<BrokerEvent>
    private let continuation: AsyncStream<BrokerEvent>.Continuation
    private let state = Mutex(State())

    public init(configFile: String, readinessEndpoints: [(host: String, port: Int)],
                pidFile: String? = nil, outputFile: String? = nil, options: Options = Options()) {
        self.configFile = configFile
        self.readinessEndpoints = readinessEndpoints
        self.pidFile = pidFile
        self.outputFile = outputFile
        self.options = options
        (events, continuation) = AsyncStream.makeStream(of: BrokerEvent.self, bufferingPolicy: .bufferingNewest(1000))
    }

    /// Supervises the broker of `plan`, with files in `layout`.
    public convenience init(layout: BrokerLayout, plan: BrokerPlan, options: Options = Options()) {
        self.init(configFile: layout.configFile,
                  readinessEndpoints: [(plan.deviceListener.host, plan.deviceListener.port),
                                       (plan.operatorListener.host, plan.operatorListener.port)],
                  pidFile: layout.pidFile, outputFile: layout.stderrFile, options: options)
    }

    /// `mosquitto` on PATH (then /usr/sbin, where Debian puts it and where PATH often does not reach).
    public static func locateMosquitto(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        let dirs = (environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/local/sbin"]
        return dirs.map { $0 + "/mosquitto" }.first { FileManager.default.isExecutableFile(atPath: $0) } ?? "/usr/sbin/mosquitto"
    }

    deinit {
        terminate(grace: options.stopGrace)
        continuation.finish()
    }

    /// Also called for every event, before it is put on `events`. Runs on a background thread.
    public var onEvent: (@Sendable (BrokerEvent) -> Void)? {
        get { state.withLock { $0.onEvent } }
        set { state.withLock { $0.onEvent = newValue } }
    }

    /// The supervised broker was adopted from a crashed supervisor, not launched by this one.
    public var adoptedAtStart: Bool { state.withLock { $0.process?.adopted ?? false } }

    /// The running broker's pid.
    public var pid: Int32? {
        state.withLock { s in s.process.flatMap { $0.isRunning ? $0.pid : nil } }
    }

    /// Launches mosquitto (or adopts the one a crashed supervisor left running with this very
    /// configuration) and waits until all endpoints accept connections.
    public func start() async throws(BrokerError) {
        let notice: ReadinessNotice
        do { notice = try ReadinessNotice() } catch { throw .launchFailed("\(error)") }
        let timeout = options.startTimeout, endpoints = readinessEndpoints
        // Spawning, waiting for readiness, and stopping an orphan block: on a thread of their own.
        let outcome: (process: ChildProcess, ready: ReadinessNotice.Outcome)
        do { outcome = try await BlockingWork.run("broker-start") { () throws -> (ChildProcess, ReadinessNotice.Outcome) in
            if let orphan = self.adoptOrphan() {
                self.emit(.adopted(pid: orphan.pid))
                self.signalReload() // the access files were rewritten before start()
                return (orphan, .ready)
            }
            let p = try self.launch(environment: notice.environment)
            self.emit(.started(pid: p.pid))
            // mosquitto (built with systemd support) sends READY=1 once its listeners are open.
            return (p, notice.wait(for: p, timeout: timeout))
        } } catch let e as BrokerError { throw e } catch { throw .launchFailed("\(error)") }
        let process = outcome.process
        if !process.isRunning || outcome.ready == .exited {
            throw BrokerError.exitedDuringStartup(status: (process.exitStatus ?? -1), output: outputTail())
        }
        // Checked once, not polled: after READY=1 (or for an adopted broker, which was serving)
        // every listener accepts; a broker without sd_notify support that never said READY fails
        // here after startTimeout with the ports named.
        let closed = endpoints.filter { !Self.accepts(host: $0.host, port: $0.port) }
        guard closed.isEmpty else {
            let ports = closed.map { "\($0.host):\($0.port)" }
            throw BrokerError.notReady(outcome.ready == .timedOut
                ? "no READY=1 from mosquitto within \(timeout) (built without systemd support?) and ports \(ports) not accepting"
                : "ports \(ports) not accepting after mosquitto said READY=1")
        }
    }

    /// SIGHUP: mosquitto re-reads its password, ACL, CA and CRL files.
    /// Requests made while one is due coalesce into it (the files are written before the call).
    public func reload() throws(BrokerError) {
        guard pid != nil else { throw BrokerError.notRunning }
        let spacing = options.reloadSpacing
        let trailing: Bool = state.withLock { s in
            let now = ContinuousClock.now
            defer { s.lastReload = now }
            guard let last = s.lastReload, now - last < spacing, !s.reloadScheduled else { return false }
            s.reloadScheduled = true
            return true
        }
        signalReload()
        if trailing { scheduleTrailingReload(after: spacing) }
    }

    /// Sends the trailing SIGHUP once `reloadSpacing` has passed since the latest signal.
    private func scheduleTrailingReload(after delay: Duration) {
        let nanoseconds = delay.components.seconds * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(max(1, nanoseconds)))) {
            let spacing = self.options.reloadSpacing
            let wait: Duration? = self.state.withLock { s in
                let now = ContinuousClock.now
                if let last = s.lastReload, now - last < spacing { return spacing - (now - last) }
                s.reloadScheduled = false
                s.lastReload = now
                return nil
            }
            if let wait { self.scheduleTrailingReload(after: wait) } else { self.signalReload() }
        }
    }

    private func signalReload() {
        guard let pid else { return }
        kill(pid, SIGHUP)
        emit(.reloaded)
    }

    /// SIGTERM, then SIGKILL after the grace period. Never relaunches afterwards.
    public func stop() async {
        let grace = options.stopGrace
        await BlockingWork.run("broker-stop") { self.terminate(grace: grace) }
    }

    /// Blocking form of `stop()`, for shutdown paths that cannot await.
    public func stopSynchronously() { terminate(grace: options.stopGrace) }

    /// SIGKILL, as a crash would (nothing since the last persistence save survives), and waits for
    /// the exit. Never relaunches afterwards; `start()` launches again.
    public func killSynchronously() {
        let process = state.withLock { s -> ChildProcess? in
            s.stopping = true
            return s.process
        }
        process?.signal(SIGKILL)
        process?.waitForExit(timeout: .seconds(30))
    }

    // MARK: - Internals

    private func launch(environment: [String: String]? = nil) throws(BrokerError) -> ChildProcess {
        let process = try state.withLock { s throws(BrokerError) -> ChildProcess in
            s.stopping = false
            let p: ChildProcess
            do { p = try ChildProcess.spawn(options.executable, ["-c", configFile], stdout: outputFile, environment: environment) } catch {
                throw BrokerError.launchFailed("\(error)")
            }
            p.onExit { [weak self] _ in self?.exited(p) }
            s.process = p
            s.launchedAt = .now
            return p
        }
        if let pidFile {
            try? "\(process.pid)\n".write(toFile: pidFile, atomically: true, encoding: .utf8)
            if let config = FileManager.default.contents(atPath: configFile) {
                try? config.write(to: URL(fileURLWithPath: launchedConfigFile(pidFile)), options: .atomic)
            }
        }
        return process
    }

    private func exited(_ process: ChildProcess) {
        let status = process.exitStatus ?? -1
        let decision: (expected: Bool, attempt: Int?, backoff: Duration) = state.withLock { s in
            guard s.process === process else { return (true, nil, .zero) }
            if s.stopping { return (true, nil, .zero) }
            if ContinuousClock.now - s.launchedAt >= options.stableAfter { s.consecutiveRestarts = 0 }
            s.consecutiveRestarts += 1
            let attempt = s.consecutiveRestarts
            var backoff = options.initialBackoff
            for _ in 1..<attempt { backoff = min(backoff * 2, options.maxBackoff) }
            return (false, attempt, backoff)
        }
        emit(.exited(status: status, expected: decision.expected))
        guard let attempt = decision.attempt else { return }
        guard attempt <= options.maxRestarts else {
            emit(.gaveUp(attempts: attempt - 1))
            return
        }
        let delay = Double(decision.backoff.components.seconds) + Double(decision.backoff.components.attoseconds) / 1e18
        DispatchQueue.global().asyncAfter(deadline: .now() + delay) { [weak self] in
            guard let self, !self.state.withLock({ $0.stopping }) else { return }
            BlockingWork.detach("broker-relaunch") {
                // A binary that cannot even be started again will not start on a later attempt.
                // Announced once it listens (READY=1), as at the first start: whoever reacts to
                // `.restarted` may connect at once. An exit meanwhile is the next attempt's business.
                do {
                    let notice = try ReadinessNotice()
                    let p = try self.launch(environment: notice.environment)
                    if notice.wait(for: p, timeout: self.options.startTimeout) != .exited {
                        self.emit(.restarted(pid: p.pid, attempt: attempt))
                    }
                } catch {
                    self.emit(.gaveUp(attempts: attempt))
                }
            }
        }
    }

    /// Blocking: SIGTERM, wait up to `grace`, SIGKILL, wait.
    private func terminate(grace: Duration) {
        let process = state.withLock { s -> ChildProcess? in
            s.stopping = true
            return s.process
        }
        process?.terminate(grace: grace)
        removePidFile()
    }

    private func removePidFile() {
        guard let pidFile else { return }
        unlink(pidFile)
        unlink(launchedConfigFile(pidFile))
    }

    /// The configuration the running broker was launched with (adoption compares it with today's).
    private func launchedConfigFile(_ pidFile: String) -> String { pidFile + ".conf" }

    /// A mosquitto left running with our config file by a supervisor that died: adopted (and
    /// supervised from now on) when the configuration it was launched with is today's, else
    /// stopped (SIGTERM, SIGKILL after the grace period) so a new one can take its ports.
    private func adoptOrphan() -> ChildProcess? {
        guard let pidFile, let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1,
              let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return nil }
        let args = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard args.contains(where: { $0.hasSuffix("mosquitto") }), args.contains(configFile),
              let orphan = ChildProcess.adopt(pid: pid, executable: options.executable) else { return nil }
        let launched = FileManager.default.contents(atPath: launchedConfigFile(pidFile))
        guard let launched, launched == FileManager.default.contents(atPath: configFile) else {
            orphan.terminate(grace: options.stopGrace)
            return nil
        }
        state.withLock { s in
            s.stopping = false
            s.process = orphan
            s.launchedAt = .now
        }
        orphan.onExit { [weak self] _ in self?.exited(orphan) }
        return orphan
    }

    private func emit(_ event: BrokerEvent) {
        state.withLock { $0.onEvent }?(event)
        continuation.yield(event)
    }

    /// Returns when the supervisor gives up relaunching the broker, with that error (never, while it runs).
    public func supervisionEnded() async -> BrokerError {
        for await event in events { if case .gaveUp(let n) = event { return .gaveUp(attempts: n, output: outputTail()) } }
        return .notRunning
    }

    private func outputTail() -> String {
        guard let outputFile, let text = try? String(contentsOfFile: outputFile, encoding: .utf8) else { return "" }
        return String(text.suffix(2000))
    }

    /// True when a TCP connect to host:port succeeds (wildcard hosts probe loopback).
    static func accepts(host: String, port: Int) -> Bool {
        let probe = (host == "0.0.0.0" || host.isEmpty) ? "127.0.0.1" : (host == "::" ? "::1" : host)
        var v6 = in6_addr()
        let isV6 = inet_pton(AF_INET6, probe, &v6) == 1
        let fd = socket(isV6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        if isV6 {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6); a.sin6_port = in_port_t(UInt16(port).bigEndian); a.sin6_addr = v6
            return withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0 } }
        }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET); a.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, probe == "localhost" ? "127.0.0.1" : probe, &a.sin_addr) == 1 else { return false }
        return withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 } }
    }
}
