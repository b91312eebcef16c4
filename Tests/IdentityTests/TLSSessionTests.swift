import Foundation
import Testing
import Identity
import POSIX
#if canImport(Glibc)
import Glibc
#endif

/// `TLSClientSession` against a real mosquitto 2.0 mutual-TLS listener
/// (require_certificate, use_identity_as_username), driven by a small blocking
/// socket loop the way fleetsim's epoll loop drives it: the session does no I/O.
@Suite("TLSClientSession: memory-BIO mutual TLS against a real mosquitto", .serialized, .timeLimit(.minutes(2)))
struct TLSSessionTests {
    init() {
        precondition(FileManager.default.isExecutableFile(atPath: "/usr/sbin/mosquitto"), "mosquitto is not installed at /usr/sbin/mosquitto")
    }

    // MARK: no broker

    @Test func garbagePEMThrowsIdentityError() throws {
        #expect(throws: IdentityError.self) { try TLSClientContext(trustedCAPEM: "not a certificate") }
        let ca = try CertificateAuthority.create(commonName: "TLS Garbage CA")
        let context = try TLSClientContext(trustedCAPEM: ca.certificate.pem())
        let device = try ca.issueDeviceIdentity(deviceID: "dev-garbage")
        do {
            _ = try TLSClientSession(context: context, certificatePEM: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                                     privateKeyPEM: device.privateKeyPEM, serverName: nil)
            Issue.record("garbage certificate PEM accepted")
        } catch {
            guard case .openSSL(let operation, _) = error else { Issue.record("unexpected \(error)"); return }
            #expect(operation == "PEM_read_bio_X509")
        }
        #expect(throws: IdentityError.self) {
            try TLSClientSession(context: context, certificatePEM: device.certificatePEM, privateKeyPEM: "garbage", serverName: nil)
        }
        // A key that is not the certificate's.
        let other = try ca.issueDeviceIdentity(deviceID: "dev-other")
        #expect(throws: IdentityError.self) {
            try TLSClientSession(context: context, certificatePEM: device.certificatePEM, privateKeyPEM: other.privateKeyPEM, serverName: nil)
        }
    }

    @Test func identitiesRoundTripThroughDER() throws {
        let ca = try CertificateAuthority.create(commonName: "TLS DER CA")
        let device = try ca.issueDeviceIdentity(deviceID: "dev-der")
        let certificateDER = try der(pem: device.certificatePEM, labels: ["CERTIFICATE"])
        let keyDER = try der(pem: device.privateKeyPEM, labels: ["PRIVATE KEY", "EC PRIVATE KEY"])
        let certificate = try Certificate(der: certificateDER)
        #expect(certificate.commonName == "dev-der")
        #expect(certificate.sha256Fingerprint == (try Certificate(pem: device.certificatePEM)).sha256Fingerprint)
        #expect(try PrivateKey(der: keyDER).publicKey().matches(certificate.publicKey()))
        let raw = try PrivateKey(der: keyDER).rawP256()
        #expect(raw.privateScalar.count == 32 && raw.publicPoint.count == 65 && raw.publicPoint[0] == 0x04)
        let rebuilt = try PrivateKey(p256Private: raw.privateScalar, publicPoint: raw.publicPoint)
        #expect(try rebuilt.publicKey().matches(certificate.publicKey()))
        #expect(try rebuilt.pem() == PrivateKey(pem: device.privateKeyPEM).pem())
        #expect(throws: IdentityError.self) { try PrivateKey(p256Private: raw.privateScalar, publicPoint: Array(raw.publicPoint.prefix(10))) }
        #expect(throws: IdentityError.self) { try der(pem: device.certificatePEM, labels: ["PRIVATE KEY"]) }
        #expect(throws: IdentityError.self) { try der(pem: "garbage", labels: ["CERTIFICATE"]) }
        #expect(throws: IdentityError.self) { try Certificate(der: Array(certificateDER.prefix(40))) }
        #expect(throws: IdentityError.self) { try PrivateKey(der: [0x30, 0x03, 0x02, 0x01, 0x00]) }
    }

    @Test func firstHandshakeStepProducesClientHelloAndQueuesWrites() throws {
        let ca = try CertificateAuthority.create(commonName: "TLS Hello CA")
        let device = try ca.issueDeviceIdentity(deviceID: "dev-hello")
        let session = try TLSClientSession(context: TLSClientContext(trustedCAPEM: ca.certificate.pem()),
                                           certificatePEM: device.certificatePEM, privateKeyPEM: device.privateKeyPEM,
                                           serverName: "localhost")
        #expect(!session.hasOutgoing)
        try session.write(Array("early".utf8)) // queued until established
        #expect(!session.hasOutgoing)
        #expect(try session.handshake() == false)
        #expect(session.status == .handshaking)
        var hello: [UInt8] = []
        session.takeOutgoing(into: &hello)
        #expect(hello.count > 100)
        #expect(Array(hello.prefix(3)) == [0x16, 0x03, 0x01]) // handshake record
        #expect(hello.count > 5 && hello[5] == 0x01)           // ClientHello
        #expect(!session.hasOutgoing)
        // The server answers with garbage: a failed handshake, with OpenSSL's reason.
        session.feed(Array(repeating: 0x41, count: 64))
        #expect(throws: IdentityError.self) { try session.handshake() }
        guard case .failed(let error) = session.status else { Issue.record("status \(session.status)"); return }
        #expect("\(error)".contains("wrong version number") || "\(error)".contains("record"), "\(error)")
    }

    @Test func endOfStreamDuringHandshakeFails() throws {
        let ca = try CertificateAuthority.create(commonName: "TLS EOF CA")
        let device = try ca.issueDeviceIdentity(deviceID: "dev-eof")
        let session = try TLSClientSession(context: TLSClientContext(trustedCAPEM: ca.certificate.pem()),
                                           certificatePEM: device.certificatePEM, privateKeyPEM: device.privateKeyPEM,
                                           serverName: "127.0.0.1")
        #expect(try session.handshake() == false)
        session.feedEndOfStream()
        #expect(throws: IdentityError.self) { try session.handshake() }
        guard case .failed(let error) = session.status else { Issue.record("status \(session.status)"); return }
        #expect("\(error)".contains("eof") || "\(error)".contains("close_notify"), "\(error)")
        var plaintext: [UInt8] = []
        #expect(throws: error) { try session.read(into: &plaintext) }
    }

    // MARK: live broker

    @Test func handshakeThenMQTTConnectGetsConnAck() throws {
        let broker = try TLSBroker()
        defer { broker.stop() }
        let device = try broker.ca.issueDeviceIdentity(deviceID: "dev-0001")
        let context = try TLSClientContext(trustedCAPEM: broker.ca.certificate.pem())
        for serverName in ["127.0.0.1", "localhost", nil] {
            let session = try TLSClientSession(context: context, certificatePEM: device.certificatePEM,
                                               privateKeyPEM: device.privateKeyPEM, serverName: serverName)
            let link = try TLSLink(port: broker.port, session: session)
            defer { link.close() }
            try session.write(mqttConnect(clientID: device.deviceID)) // before the handshake: queued
            try link.handshake()
            #expect(session.status == .established)
            #expect(session.protocolVersion == "TLSv1.3")
            let reply = try link.receive(atLeast: 4)
            #expect(reply == [0x20, 0x02, 0x00, 0x00], "CONNACK for \(serverName ?? "no name"): \(reply)\n\(broker.log)")
            // PINGREQ / PINGRESP after the handshake, then a clean close.
            try session.write([0xC0, 0x00])
            try link.flush()
            #expect(try link.receive(atLeast: 2) == [0xD0, 0x00])
            session.close()
            #expect(session.status == .closed)
            #expect(session.hasOutgoing) // close_notify
            try link.flush()
            #expect(throws: IdentityError.self) { try session.write([0xC0, 0x00]) }
        }
    }

    @Test func serverFromAnotherCAFailsVerification() throws {
        let broker = try TLSBroker()
        defer { broker.stop() }
        let device = try broker.ca.issueDeviceIdentity(deviceID: "dev-wrong-ca")
        let stranger = try CertificateAuthority.create(commonName: "Some Other CA")
        let session = try TLSClientSession(context: TLSClientContext(trustedCAPEM: stranger.certificate.pem()),
                                           certificatePEM: device.certificatePEM, privateKeyPEM: device.privateKeyPEM,
                                           serverName: "127.0.0.1")
        let link = try TLSLink(port: broker.port, session: session)
        defer { link.close() }
        do {
            try link.handshake()
            Issue.record("handshake with an untrusted server succeeded")
        } catch let error as IdentityError {
            #expect("\(error)".contains("certificate verify failed"), "\(error)")
            // mosquitto sends the CA with its certificate, so the chain ends in an unknown self-signed root.
            #expect("\(error)".contains("self-signed certificate in certificate chain")
                    || "\(error)".contains("unable to get local issuer certificate"), "\(error)")
            #expect(session.status == .failed(error))
        }
        // A name the server certificate does not carry fails the same way.
        let misnamed = try TLSClientSession(context: TLSClientContext(trustedCAPEM: broker.ca.certificate.pem()),
                                            certificatePEM: device.certificatePEM, privateKeyPEM: device.privateKeyPEM,
                                            serverName: "10.9.8.7")
        let link2 = try TLSLink(port: broker.port, session: misnamed)
        defer { link2.close() }
        do {
            try link2.handshake()
            Issue.record("handshake with a misnamed server succeeded")
        } catch let error as IdentityError {
            #expect("\(error)".contains("certificate verify failed"), "\(error)")
            #expect("\(error)".contains("IP address mismatch"), "\(error)")
        }
    }

    @Test func clientCertificateFromUnknownCAIsRefusedByBroker() throws {
        let broker = try TLSBroker()
        defer { broker.stop() }
        let rogue = try CertificateAuthority.create(commonName: broker.ca.commonName) // same name, other key
        let device = try rogue.issueDeviceIdentity(deviceID: "dev-rogue")
        let session = try TLSClientSession(context: TLSClientContext(trustedCAPEM: broker.ca.certificate.pem()),
                                           certificatePEM: device.certificatePEM, privateKeyPEM: device.privateKeyPEM,
                                           serverName: "127.0.0.1")
        let link = try TLSLink(port: broker.port, session: session)
        defer { link.close() }
        var reply: [UInt8] = []
        var refusal = ""
        do {
            // TLS 1.3: the client's side of the handshake ends before the server has
            // checked the client certificate, so the refusal may arrive on the first read.
            try link.handshake()
            // Listen first: an alert that arrives after the broker has reset the
            // connection (our CONNECT hitting a closed socket) would be discarded.
            reply = try link.receive(atLeast: 1, timeout: 2_000)
            if session.status == .established {
                try session.write(mqttConnect(clientID: device.deviceID))
                reply += try link.receive(atLeast: 4)
            }
            refusal = "connection closed, status \(session.status)"
        } catch {
            refusal = "\(error)"
        }
        print("unknown-CA client refused with: \(refusal)")
        #expect(reply.isEmpty, "the broker answered a client from an unknown CA: \(reply)")
        #expect(refusal.contains("alert") || refusal.contains("eof") || refusal.contains("closed"), "\(refusal)")
    }

    @Test func compactRecordsCarryLargeMessagesBothWaysAndSurviveKeyUpdates() throws {
        let broker = try TLSBroker()
        defer { broker.stop() }
        let device = try broker.ca.issueDeviceIdentity(deviceID: "dev-big")
        let session = try TLSClientSession(context: TLSClientContext(trustedCAPEM: broker.ca.certificate.pem()),
                                           certificatePEM: device.certificatePEM, privateKeyPEM: device.privateKeyPEM,
                                           serverName: "127.0.0.1")
        let link = try TLSLink(port: broker.port, session: session)
        defer { link.close() }
        try session.write(mqttConnect(clientID: device.deviceID))
        try link.handshake()
        #expect(session.recordLayer.hasSuffix("(compact)"), "\(session.recordLayer)")
        #expect(session.protocolVersion == "TLSv1.3")
        #expect(try link.receive(atLeast: 4) == [0x20, 0x02, 0x00, 0x00], "\(broker.log)")
        try session.write(mqttSubscribe(topic: "t/big", packetID: 1))
        #expect(try link.receive(atLeast: 5) == [0x90, 0x03, 0x00, 0x01, 0x00])
        // 40,000 bytes: three records each way (at most 16 KB of plaintext per record).
        let payload = (0..<40_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let publish = mqttPublish(topic: "t/big", payload: payload)
        for round in 0..<3 {
            try session.write(publish)
            let echoed = try link.receive(atLeast: publish.count)
            #expect(echoed == publish, "round \(round): \(echoed.count) of \(publish.count) bytes came back intact")
            // Our KeyUpdate asks the broker for its own: both directions move to new keys.
            try session.updateKeys()
            try session.write([0xC0, 0x00])
            #expect(try link.receive(atLeast: 2) == [0xD0, 0x00], "PINGRESP after key update \(round)")
        }
        session.close()
        try link.flush()
    }

    @Test func tamperedRecordFailsTheSession() throws {
        let broker = try TLSBroker()
        defer { broker.stop() }
        let device = try broker.ca.issueDeviceIdentity(deviceID: "dev-tamper")
        let session = try TLSClientSession(context: TLSClientContext(trustedCAPEM: broker.ca.certificate.pem()),
                                           certificatePEM: device.certificatePEM, privateKeyPEM: device.privateKeyPEM,
                                           serverName: "127.0.0.1")
        let link = try TLSLink(port: broker.port, session: session)
        defer { link.close() }
        try session.write(mqttConnect(clientID: device.deviceID))
        try link.handshake()
        #expect(try link.receive(atLeast: 4) == [0x20, 0x02, 0x00, 0x00])
        try session.write([0xC0, 0x00])
        try link.flush()
        // The PINGRESP record, read off the socket by hand and changed in its last byte (the tag).
        var record = [UInt8](repeating: 0, count: 4096)
        var p = pollfd(fd: link.fd, events: Int16(POLLIN), revents: 0)
        #expect(poll(&p, 1, 5_000) == 1, "no PINGRESP within 5 s")
        let n = record.withUnsafeMutableBytes { recv(link.fd, $0.baseAddress, $0.count, 0) }
        #expect(n > 5)
        record = Array(record.prefix(max(n, 0)))
        record[record.count - 1] ^= 0x01
        session.feed(record)
        var plaintext: [UInt8] = []
        #expect(throws: IdentityError.self) { try session.read(into: &plaintext) }
        #expect(plaintext.isEmpty)
        guard case .failed(let error) = session.status else { Issue.record("status \(session.status)"); return }
        #expect("\(error)".contains("authentication tag"), "\(error)")
        #expect(throws: IdentityError.self) { try session.write([0xC0, 0x00]) }
    }

    @Test(arguments: [true, false])
    func twoHundredSessionsShareOneContext(compactRecords: Bool) throws {
        let broker = try TLSBroker()
        defer { broker.stop() }
        let count = 200
        let ids = (0..<count).map { String(format: "dev-%05d", $0) }
        let identities = try broker.ca.issueDeviceIdentities(ids)
        // Parsed once, like fleetsim does before (re)connecting.
        let parsed = try identities.map { ($0.deviceID, try Certificate(pem: $0.certificatePEM), try PrivateKey(pem: $0.privateKeyPEM)) }
        let context = try TLSClientContext(trustedCAPEM: broker.ca.certificate.pem(), compactRecords: compactRecords)

        var links: [TLSLink] = []
        links.reserveCapacity(count)
        let before = MemoryProbe()
        let sessions = try parsed.map { (_, certificate, key) in
            try TLSClientSession(context: context, certificate: certificate, privateKey: key, serverName: "127.0.0.1")
        }
        let created = MemoryProbe()
        let clock = ContinuousClock()
        let cpuStart = threadCPUSeconds()
        let start = clock.now
        for (session, (id, _, _)) in zip(sessions, parsed) {
            let link = try TLSLink(port: broker.port, session: session)
            do { try link.handshake() } catch { Issue.record("\(id): \(error)\n\(broker.log)"); throw error }
            links.append(link)
        }
        let elapsed = clock.now - start
        let cpu = threadCPUSeconds() - cpuStart
        let handshaken = MemoryProbe()
        for (link, (id, _, _)) in zip(links, parsed) {
            try link.session.write(mqttConnect(clientID: id))
            try link.flush()
            #expect(try link.receive(atLeast: 4) == [0x20, 0x02, 0x00, 0x00], "\(id)")
        }
        let idle = MemoryProbe()
        #expect(links.allSatisfy { $0.session.status == .established })

        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let rate = Double(count) / seconds
        print(String(format: "TLS handshakes: %d sessions in %.3f s = %.0f sessions/s (one thread, broker on the same 2 cores)", count, seconds, rate))
        print(String(format: "client CPU per handshake (this thread, user+sys): %.2f ms", cpu / Double(count) * 1000))
        print("per session created, before the handshake: \(created.perSession(since: before, count: count))")
        print("per session after handshake: \(handshaken.perSession(since: before, count: count))")
        print("per session idle after CONNACK (\(compactRecords ? "compact TLS 1.3 records, SSL freed" : "OpenSSL record layer, SSL_MODE_RELEASE_BUFFERS")): \(idle.perSession(since: before, count: count))")
        #expect(rate > 5)
        #expect(links.allSatisfy { $0.session.recordLayer.hasSuffix("(compact)") == compactRecords })
        // The heap figures are printed, not asserted: malloc's counters are process-wide and other
        // suites allocate in parallel. The memory goal is measured in bench/ (BENCHMARKS section 10).
        for link in links { link.close() }
    }
}

// MARK: - Helpers (local to this suite)

/// MQTT 3.1.1 CONNECT: clean session, keepalive 60 s, no username (the broker takes the certificate CN).
private func mqttConnect(clientID: String) -> [UInt8] {
    let id = Array(clientID.utf8)
    let variable: [UInt8] = [0x00, 0x04] + Array("MQTT".utf8) + [0x04, 0x02, 0x00, 0x3C]
    let payload: [UInt8] = [UInt8(id.count >> 8), UInt8(id.count & 0xFF)] + id
    let remaining = variable.count + payload.count
    precondition(remaining < 128)
    return [0x10, UInt8(remaining)] + variable + payload
}

private func mqttSubscribe(topic: String, packetID: UInt16) -> [UInt8] {
    let t = Array(topic.utf8)
    let body: [UInt8] = [UInt8(packetID >> 8), UInt8(packetID & 0xFF), UInt8(t.count >> 8), UInt8(t.count & 0xFF)] + t + [0x00]
    return [0x82] + remainingLength(body.count) + body
}

/// QoS 0 PUBLISH.
private func mqttPublish(topic: String, payload: [UInt8]) -> [UInt8] {
    let t = Array(topic.utf8)
    let body: [UInt8] = [UInt8(t.count >> 8), UInt8(t.count & 0xFF)] + t + payload
    return [0x30] + remainingLength(body.count) + body
}

private func remainingLength(_ n: Int) -> [UInt8] {
    var n = n, out: [UInt8] = []
    repeat {
        var byte = UInt8(n % 128)
        n /= 128
        if n > 0 { byte |= 0x80 }
        out.append(byte)
    } while n > 0
    return out
}

/// CPU time of the calling thread (user + system), in seconds.
private func threadCPUSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// Process-wide memory: resident pages (/proc/self/statm) and malloc's bytes in use
/// (from glibc's `malloc_info` XML: system bytes minus free chunks plus mmapped chunks;
/// `mallinfo2` returns a struct by value and is not in Swift's Glibc module).
private struct MemoryProbe {
    let rss: Int
    let heap: Int

    init() {
        let statm = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? "0 0"
        let pages = Int(statm.split(separator: " ")[1]) ?? 0
        rss = pages * Int(sysconf(Int32(_SC_PAGESIZE)))
        heap = Self.mallocInUse()
    }

    func perSession(since base: MemoryProbe, count: Int) -> String {
        "RSS delta \((rss - base.rss) / count) B, malloc in use delta \((heap - base.heap) / count) B"
    }


    private typealias MallocInfo = @convention(c) (Int32, UnsafeMutablePointer<FILE>?) -> Int32

    private static func mallocInUse() -> Int {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_info") else { return 0 }
        let mallocInfo = unsafeBitCast(symbol, to: MallocInfo.self)
        var buffer: UnsafeMutablePointer<CChar>? = nil
        var length = 0
        guard let stream = open_memstream(&buffer, &length) else { return 0 }
        _ = mallocInfo(0, stream)
        fclose(stream)
        guard let buffer else { return 0 }
        defer { free(buffer) }
        // The totals after the last </heap>.
        let xml = String(cString: buffer)
        let tail = xml.range(of: "</heap>", options: .backwards).map { xml[$0.upperBound...] } ?? xml[...]
        func value(_ tag: String) -> Int {
            guard let r = tail.range(of: tag) else { return 0 }
            let rest = tail[r.upperBound...].drop(while: { $0 != "\"" }).dropFirst()
            return Int(rest.prefix(while: \.isNumber)) ?? 0
        }
        // Each element reads <total type="x" count="n" size="s"/>: take the size.
        func total(_ type: String) -> Int {
            guard let r = tail.range(of: "<total type=\"\(type)\"") else { return 0 }
            let element = tail[r.upperBound...].prefix(while: { $0 != ">" })
            guard let s = element.range(of: "size=\"") else { return 0 }
            return Int(element[s.upperBound...].prefix(while: \.isNumber)) ?? 0
        }
        return value("<system type=\"current\" size=") - total("fast") - total("rest") + total("mmap")
    }
}

/// A mosquitto whose only listener is mutual TLS on 127.0.0.1:`port`, with a fresh CA.
private final class TLSBroker {
    let ca: CertificateAuthority
    let port: Int
    let directory: String
    let process: ChildProcess

    init() throws {
        var template = Array("/tmp/tls-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw IdentityError.file(operation: "mkdtemp", path: "/tmp/tls-XXXXXX", errno: errno)
        }
        directory = String(cString: made)
        ca = try CertificateAuthority.create(commonName: "TLS Session Test CA")
        let serverKey = try PrivateKey()
        let server = try ca.issue(commonName: "broker", publicKey: serverKey.publicKey(), validityDays: 30,
                                  serverNames: ["127.0.0.1", "localhost"], isServer: true)
        try ca.certificate.pem().write(toFile: directory + "/ca.pem", atomically: true, encoding: .utf8)
        try server.pem().write(toFile: directory + "/server.pem", atomically: true, encoding: .utf8)
        try serverKey.pem().write(toFile: directory + "/server.key", atomically: true, encoding: .utf8)
        port = Self.freePort()
        var conf = [
            "per_listener_settings false",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "allow_anonymous false",
            "listener \(port) 127.0.0.1",
            "cafile \(directory)/ca.pem",
            "certfile \(directory)/server.pem",
            "keyfile \(directory)/server.key",
            "require_certificate true",
            "use_identity_as_username true",
        ]
        if getuid() == 0 { conf.append("user root") }
        try (conf.joined(separator: "\n") + "\n").write(toFile: directory + "/mosquitto.conf", atomically: true, encoding: .utf8)
        // Ready when it says so (sd_notify READY=1), not when a probe loop first gets in.
        let notice = try ReadinessNotice()
        process = try ChildProcess.spawn("/usr/sbin/mosquitto", ["-c", directory + "/mosquitto.conf"], stdout: directory + "/mosquitto.log",
                                         environment: notice.environment)
        guard notice.wait(for: process, timeout: .seconds(10)) == .ready, Self.accepts(port: port) else {
            let log = self.log
            stop()
            throw IdentityError.invalidInput("mosquitto did not start on port \(port): \(log)")
        }
    }

    var log: String { (try? String(contentsOfFile: directory + "/mosquitto.log", encoding: .utf8)) ?? "" }

    func stop() {
        process.terminate()
        try? FileManager.default.removeItem(atPath: directory)
    }

    static func accepts(port: Int) -> Bool {
        guard let fd = try? TLSLink.connect(port: port) else { return false }
        Glibc.close(fd)
        return true
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { Glibc.close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// A blocking TCP socket carrying one session's records: the test's stand-in for the epoll loop.
private final class TLSLink {
    struct SocketError: Error, CustomStringConvertible {
        let description: String
    }

    let fd: Int32
    let session: TLSClientSession
    private var plaintext: [UInt8] = []
    private var outgoing: [UInt8] = []
    /// One receive buffer for all links (the tests are single-threaded), so that
    /// the per-session memory measured is the session's, not the harness's.
    nonisolated(unsafe) private static var input = [UInt8](repeating: 0, count: 16_384)

    init(port: Int, session: TLSClientSession) throws {
        fd = try Self.connect(port: port)
        self.session = session
    }

    deinit { close() }

    private var closed = false
    func close() {
        if !closed { Glibc.close(fd); closed = true }
    }

    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SocketError(description: "socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            Glibc.close(fd)
            throw SocketError(description: "connect 127.0.0.1:\(port): errno \(e)")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    /// Sends everything the session has for the socket.
    func flush() throws {
        session.takeOutgoing(into: &outgoing)
        var offset = 0
        while offset < outgoing.count {
            let n = outgoing[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw SocketError(description: errno == ECONNRESET ? "send: connection reset by peer" : "send: errno \(errno)")
            }
            offset += n
        }
        outgoing.removeAll(keepingCapacity: true)
    }

    /// Waits up to `timeout` ms for bytes and feeds them in; false at end of stream or timeout.
    private func pull(timeout: Int32 = 5_000) throws -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&p, 1, timeout)
        guard ready > 0 else { return false }
        let n = Self.input.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 {
            session.feedEndOfStream()
            return false
        }
        Self.input.withUnsafeBytes { session.feed(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
        return true
    }

    /// Runs the handshake to completion (throws the session's error on failure).
    func handshake() throws {
        while try !session.handshake() {
            try flush()
            guard try pull() else {
                _ = try? session.handshake() // let OpenSSL report the end of stream
                throw SocketError(description: "connection ended during the handshake, status \(session.status)")
            }
        }
        try flush()
    }

    /// Decrypted bytes until at least `count` have arrived, or the stream ends.
    func receive(atLeast count: Int, timeout: Int32 = 5_000) throws -> [UInt8] {
        try flush()
        while plaintext.count < count {
            _ = try session.read(into: &plaintext)
            try flush()
            if plaintext.count >= count || session.status == .closed { break }
            guard try pull(timeout: timeout) else {
                _ = try session.read(into: &plaintext)
                break
            }
        }
        let result = Array(plaintext.prefix(count))
        plaintext.removeFirst(result.count)
        return result
    }
}
