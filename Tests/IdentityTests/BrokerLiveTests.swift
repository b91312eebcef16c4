import Foundation
import Synchronization
import TestSupport
import POSIX
import Testing
@testable import Broker
import Identity
#if canImport(Glibc)
import Glibc
#endif

/// Real mosquitto 2.0.11 brokers started from the generated files.
@Suite("Broker: generated files enforced by a real mosquitto", .timeLimit(.minutes(1)))
struct BrokerLiveTests {
    init() {
        precondition(FileManager.default.isExecutableFile(atPath: "/usr/sbin/mosquitto"), "mosquitto is not installed at /usr/sbin/mosquitto")
    }

    @Test func generatedConfigStartsAndStopsWithoutOrphans() async throws {
        let f = try BrokerFixture()
        try await f.start()
        let pid = try #require(f.broker.pid)
        #expect(kill(pid, 0) == 0)
        #expect(FileManager.default.fileExists(atPath: f.layout.pidFile))
        #expect(ManagedBroker.accepts(host: "127.0.0.1", port: f.plan.deviceListener.port))
        await f.shutdown()
        #expect(kill(pid, 0) != 0, "mosquitto \(pid) still alive after stop")
        #expect(f.broker.pid == nil)
    }

    @Test func passwordHashIsAcceptedAndWrongPasswordOrAnonymousRefused() async throws {
        let f = try BrokerFixture(operators: [("op1", "op1-pass", ["acct1"])])
        try await f.start()
        defer { f.close() }
        let good = try f.pub(f.userArgs("op1", "op1-pass"), "accounts/acct1/cmd/ping", "x")
        #expect(good.status == 0, "\(good.output)")
        let cp = try f.pub(f.controlPlane, "accounts/acct1/events/x", "x")
        #expect(cp.status == 0, "\(cp.output)")
        let bad = try f.pub(f.userArgs("op1", "wrong"), "accounts/acct1/cmd/ping", "x")
        #expect(bad.status != 0)
        #expect(bad.output.lowercased().contains("not authori") || bad.output.contains("Bad user name or password"), "\(bad.output)")
        let anon = try run("/usr/bin/mosquitto_pub", ["-h", "127.0.0.1", "-p", "\(f.plan.operatorListener.port)", "-V", "5", "-t", "a", "-m", "x"])
        #expect(anon.status != 0, "\(anon.output)")
    }

    @Test func deviceCannotPublishAsAnotherDevice() async throws {
        let f = try BrokerFixture()
        try await f.start()
        defer { f.close() }
        let watcher = try f.sub(f.controlPlane, ["devices/#"], count: 1)
        let denied = try f.pub(f.deviceTLS("devA"), "devices/devB/heartbeat", "forged")
        #expect(denied.output.contains("Not authorized") || denied.output.isEmpty, "\(denied.output)")
        let allowed = try f.pub(f.deviceTLS("devA"), "devices/devA/heartbeat", "own")
        #expect(allowed.status == 0, "\(allowed.output)")
        _ = watcher.finish(timeout: .seconds(5))
        #expect(BrokerFixture.messages(watcher) == ["devices/devA/heartbeat own"])
    }

    @Test func deviceCannotReadAnotherDevicesConfig() async throws {
        let f = try BrokerFixture()
        try await f.start()
        defer { f.close() }
        let devA = try f.sub(f.deviceTLS("devA"), ["devices/devB/config", "devices/devA/config", "devices/+/config"], count: 1)
        #expect(devA.text.contains("SUBACK"), "\(devA.text)")
        #expect(try f.pub(f.controlPlane, "devices/devB/config", "for-B").status == 0)
        #expect(try f.pub(f.controlPlane, "devices/devA/config", "for-A").status == 0)
        _ = devA.finish(timeout: .seconds(5))
        #expect(BrokerFixture.messages(devA) == ["devices/devA/config for-A"])
    }

    @Test func clientWithoutCertificateOrFromUnknownCAIsRefused() async throws {
        let f = try BrokerFixture()
        try await f.start()
        defer { f.close() }
        let base = ["-h", "127.0.0.1", "-p", "\(f.plan.deviceListener.port)", "--cafile", f.dir.file("server-ca.pem"), "-V", "5", "-t", "devices/x/status", "-m", "x"]
        let noCert = try run("/usr/bin/mosquitto_pub", base)
        #expect(noCert.status != 0, "\(noCert.output)")
        let rogue = try CertificateAuthority.create(commonName: "EscrowFleet Provisioner CA") // same name, other key
        let id = try rogue.issueDeviceIdentity(deviceID: "devA")
        let cert = try f.dir.write("rogue.pem", id.certificatePEM), key = try f.dir.write("rogue.key", id.privateKeyPEM)
        let refused = try run("/usr/bin/mosquitto_pub", base + ["--cert", cert, "--key", key])
        #expect(refused.status != 0, "\(refused.output)")
        let ok = try f.pub(f.deviceTLS("devA"), "devices/devA/status", "x")
        #expect(ok.status == 0, "\(ok.output)")
    }

    @Test func devicesOfBothCAsConnectWithOneCRLPerCA() async throws {
        let f = try BrokerFixture(devices: ["devA"], ownerDevices: ["devO"])
        try await f.start()
        defer { f.close() }
        #expect(try f.pub(f.deviceTLS("devA"), "devices/devA/status", "x").status == 0)
        #expect(try f.pub(f.deviceTLS("devO"), "devices/devO/status", "x").status == 0)
    }

    /// Verified: mosquitto 2.0.11 re-reads `cafile` and `crlfile` on SIGHUP (no
    /// restart needed; the store is rebuilt, not appended to), a concatenated file
    /// with one CRL per CA works, and a CA with no CRL in the file has all its
    /// certificates refused.
    @Test func revokedCertificateIsRefusedAfterReload() async throws {
        let f = try BrokerFixture(devices: ["devA", "devB"], ownerDevices: ["devO"])
        try await f.start()
        defer { f.close() }
        #expect(try f.pub(f.deviceTLS("devA"), "devices/devA/status", "x").status == 0)
        let serial = try #require(f.devices["devA"]).serialNumber
        try f.layout.installTrust(authorities: [f.provisioner, f.owner], revokedSerials: [f.provisioner.commonName: [serial]])
        try f.broker.reload()
        var refused = false
        for _ in 0..<30 where !refused {
            refused = try f.pub(f.deviceTLS("devA"), "devices/devA/status", "x").status != 0
            if !refused { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(refused, "revoked devA still accepted after SIGHUP")
        #expect(try f.pub(f.deviceTLS("devB"), "devices/devB/status", "x").status == 0)
        #expect(try f.pub(f.deviceTLS("devO"), "devices/devO/status", "x").status == 0)
        // SIGHUP rebuilds the trust store: a CRL file that lacks the owner CA's
        // CRL locks that CA's devices out, while the other CA's devices stay in.
        try writeBrokerFile(f.provisioner.crl(revokedSerials: []), to: f.layout.crlFile, mode: 0o644)
        try f.broker.reload()
        var lockedOut = false
        for _ in 0..<30 where !lockedOut {
            lockedOut = try f.pub(f.deviceTLS("devO"), "devices/devO/status", "x").status != 0
            if !lockedOut { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(lockedOut)
        #expect(try f.pub(f.deviceTLS("devB"), "devices/devB/status", "x").status == 0)
    }

    /// Verified: a CA appended to the bundle (with its CRL) is trusted after SIGHUP.
    @Test func newOwnerCAIsTrustedAfterReload() async throws {
        let f = try BrokerFixture(devices: ["devA"], ownerDevices: ["devO"])
        try f.layout.installTrust(authorities: [f.provisioner])
        try await f.start()
        defer { f.close() }
        #expect(try f.pub(f.deviceTLS("devO"), "devices/devO/status", "x").status != 0)
        try f.layout.installTrust(authorities: [f.provisioner, f.owner])
        try f.broker.reload()
        var accepted = false
        for _ in 0..<30 where !accepted {
            accepted = try f.pub(f.deviceTLS("devO"), "devices/devO/status", "x").status == 0
            if !accepted { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(accepted)
    }

    @Test func operatorCannotReadAnotherAccountsEvents() async throws {
        let f = try BrokerFixture(operators: [("opX", "px", ["acctX"]), ("opY", "py", ["acctY"])])
        try await f.start()
        defer { f.close() }
        let x = try f.sub(f.userArgs("opX", "px"), ["accounts/acctY/events/#", "$share/g/devices/+/status", "accounts/acctX/events/#"], count: 1)
        #expect(try f.pub(f.controlPlane, "accounts/acctY/events/transfer", "secret-of-Y").status == 0)
        #expect(try f.pub(f.deviceTLS("devA"), "devices/devA/status", "device-status").status == 0)
        #expect(try f.pub(f.controlPlane, "accounts/acctX/events/transfer", "for-X").status == 0)
        _ = x.finish(timeout: .seconds(5))
        #expect(BrokerFixture.messages(x) == ["accounts/acctX/events/transfer for-X"])
        // Nor send commands in Y's account.
        let cp = try f.sub(f.controlPlane, ["accounts/+/cmd/#"], count: 1)
        _ = try f.pub(f.userArgs("opX", "px"), "accounts/acctY/cmd/transfer", "forged")
        #expect(try f.pub(f.userArgs("opX", "px"), "accounts/acctX/cmd/transfer", "own").status == 0)
        _ = cp.finish(timeout: .seconds(5))
        #expect(BrokerFixture.messages(cp) == ["accounts/acctX/cmd/transfer own"])
    }

    /// Verified: in 2.0.11 a `$share/<group>/filter` subscription is authorised
    /// and delivered against the plain topic, so `topic readwrite devices/#` suffices.
    @Test func controlPlaneSharedSubscriptionReceivesDeviceTopics() async throws {
        let f = try BrokerFixture()
        try await f.start()
        defer { f.close() }
        let cp = try f.sub(f.controlPlane, ["$share/escrowd/devices/+/status", "$share/escrowd/devices/+/csr"], count: 2)
        #expect(try f.pub(f.deviceTLS("devA"), "devices/devA/status", "s").status == 0)
        #expect(try f.pub(f.deviceTLS("devB"), "devices/devB/csr", "c").status == 0)
        _ = cp.finish(timeout: .seconds(5))
        #expect(BrokerFixture.messages(cp) == ["devices/devA/status s", "devices/devB/csr c"])
    }

    @Test func supervisorRestartsACrashedBrokerAndReportsEvents() async throws {
        let f = try BrokerFixture()
        var options = ManagedBroker.Options()
        options.initialBackoff = .milliseconds(50)
        let broker = ManagedBroker(layout: f.layout, plan: f.plan, options: options)
        defer { f.dir.remove() }
        try await broker.start()
        let first = try #require(broker.pid)
        kill(first, SIGKILL)
        // Every event up to the restart, waited for with a bound (not a deadline checked between
        // events, which a busy test process can pass with the restart already queued).
        let log = Mutex<[BrokerEvent]>([])
        _ = try? await firstElement(of: broker.events, timeout: .seconds(30), "the supervisor's restart") { event in
            log.withLock { $0.append(event) }
            if case .restarted = event { return true }
            return false
        }
        let seen = log.withLock { $0 }
        #expect(seen.first == .started(pid: first))
        #expect(seen.contains(.exited(status: 128 + SIGKILL, expected: false)))
        guard case .restarted(let second, 1)? = seen.last else { Issue.record("no restart: \(seen)"); return }
        #expect(second != first)
        // `.restarted` comes after the new broker's READY=1: it accepts at once, no waiting.
        #expect(ManagedBroker.accepts(host: "127.0.0.1", port: f.plan.deviceListener.port), "the relaunched broker does not listen at .restarted")
        #expect(ManagedBroker.accepts(host: f.plan.operatorListener.host, port: f.plan.operatorListener.port))
        try broker.reload()
        await broker.stop()
        #expect(kill(second, 0) != 0)
    }

    @Test func brokenConfigFailsStartupWithItsOutput() async throws {
        let dir = try TempDirectory(); defer { dir.remove() }
        let conf = try dir.write("bad.conf", "listener \(try freePort())\nno_such_option 1\n")
        let broker = ManagedBroker(configFile: conf, readinessEndpoints: [("127.0.0.1", 1)], outputFile: dir.file("out"))
        do {
            try await broker.start()
            Issue.record("expected failure")
        } catch {
            guard case .exitedDuringStartup(_, let output) = error else { Issue.record("\(error)"); return }
            #expect(output.contains("no_such_option"), "\(output)")
        }
    }

    @Test func startKillsABrokerOrphanedByACrashedSupervisor() async throws {
        let f = try BrokerFixture()
        defer { f.dir.remove() }
        // An orphan: a mosquitto on our config that no supervisor owns, with our pid file.
        let notice = try ReadinessNotice()
        let orphan = try SpawnedProcess("/usr/sbin/mosquitto", ["-c", f.layout.configFile], environment: notice.environment)
        let ready = try await BlockingWork.run("orphan-ready") { notice.wait(for: orphan.child, timeout: .seconds(10)) }
        try #require(ready == .ready, "the orphan broker did not start: \(orphan.text)")
        try "\(orphan.child.pid)\n".write(toFile: f.layout.pidFile, atomically: true, encoding: .utf8)
        try await f.broker.start()
        #expect(!orphan.child.isRunning)
        #expect(f.broker.pid != orphan.child.pid)
        await f.broker.stop()
    }

    /// mosquitto 2.0.11 loses a SIGHUP that arrives during a reload: `ManagedBroker.reload` adds a
    /// trailing signal after a burst, so the newest files always take effect.
    @Test func aBurstOfReloadsNeverLosesTheLastChange() async throws {
        let f = try BrokerFixture(operators: [])
        try await f.start()
        defer { f.close() }
        for i in 1...5 {
            let ops = (1...i).map { (username: "op-b\($0)", password: "pw-b\($0)-secret", accounts: ["acct"]) }
            let acl = try ACLFile.render(ACLInput(controlPlaneUser: f.controlPlaneUser, operators: ops.map { ($0.username, $0.accounts) }))
            let pw = try PasswordFile.render([(f.controlPlaneUser, MosquittoPassword.hash(password: f.controlPlanePassword))]
                                             + ops.map { ($0.username, MosquittoPassword.hash(password: $0.password)) })
            try writeBrokerFile(acl, to: f.layout.aclFile, mode: 0o644)
            try writeBrokerFile(pw, to: f.layout.passwordFile, mode: 0o600)
            try f.broker.reload()
        }
        try await waitUntil(timeout: .seconds(3), "the last of five quick changes takes effect") {
            try f.pub(f.userArgs("op-b5", "pw-b5-secret"), "accounts/acct/cmd/x", "1").status == 0
        }
    }

    /// The plugin follows the ACL file at SUBSCRIBE time: a reload that read the password file after a
    /// rewrite but the ACL file before it cannot leave a new login with its subscriptions refused.
    @Test func aSubscriptionFollowsTheACLFileOnDiskWithoutAReload() async throws {
        let f = try BrokerFixture(operators: [("op-x", "px-secret", ["acctX"])])
        try await f.start()
        defer { f.close() }
        let before = try f.sub(f.userArgs("op-x", "px-secret"), ["accounts/acctZ/events/#"], count: 1, timeout: 1)
        #expect(before.text.contains("Subscribed (mid: 1): 128") || before.text.contains("Subscribed (mid: 1): 135"), "\(before.text)")
        let acl = try ACLFile.render(ACLInput(controlPlaneUser: f.controlPlaneUser, operators: [("op-x", ["acctX", "acctZ"])]))
        try writeBrokerFile(acl, to: f.layout.aclFile, mode: 0o644) // no SIGHUP
        let after = try f.sub(f.userArgs("op-x", "px-secret"), ["accounts/acctZ/events/#"], count: 1, timeout: 1)
        #expect(after.text.contains("Subscribed (mid: 1): 1"), "\(after.text)")
    }
}
