import Foundation
import Synchronization
import EscrowCore
import MQTTWire
import POSIX
#if canImport(Glibc)
import Glibc
#endif

/// escrowd's heartbeat subscription on a plain-TCP MQTT connection of its own, read with
/// MQTTWire's `PacketReader` from 64 KiB reads on one dedicated thread.
///
/// libmosquitto reads each packet with three `read()` calls and no buffer, which at the broker's
/// maximum rate was a quarter of escrowd's CPU per heartbeat (docs/BENCHMARKS.md, "Back-pressure").
/// Here a read takes whatever the socket holds, often hundreds of heartbeats. Only QoS 0 PUBLISH,
/// SUBACK, PINGRESP and CONNACK are expected; anything else ends the session and it reconnects
/// with full-jitter backoff. Commands, acks and statuses stay on the main client, so a heartbeat
/// backlog can never delay them. With TLS to the broker, escrowd uses the main client instead
/// (`MQTTClient.consumeInline`).
final class HeartbeatConnection: Sendable {
    struct Settings: Sendable {
        var host: String
        var port: Int
        var clientID: String
        var username: String?
        var password: String?
        /// `$share/escrowd/devices/+/heartbeat` (or the plain filter without shared subscriptions).
        var filter: String
        var keepAlive: Int = 60
        var backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(10))
    }

    private let settings: Settings
    private let onHeartbeat: @Sendable (DeviceID, [UInt8], String) -> Void
    private let log: Log
    private let stopping = Atomic<Bool>(false)
    private let subscribed = Atomic<Bool>(false)
    private let socket = Mutex<Int32>(-1)
    /// Wakes a reconnect delay when `stop()` is called.
    private let wakeSignal: WakeSignal

    init(settings: Settings, log: Log, onHeartbeat: @escaping @Sendable (DeviceID, [UInt8], String) -> Void) throws {
        wakeSignal = try WakeSignal()
        self.settings = settings
        self.log = log
        self.onHeartbeat = onHeartbeat
    }

    /// True while the subscription is granted and the connection up.
    var isSubscribed: Bool { subscribed.load(ordering: .relaxed) }

    private let subscribedWaiters = Mutex<(done: Bool, waiters: [CheckedContinuation<Bool, Never>])>((false, []))

    /// Returns once the broker first granted the subscription (true), or after `timeout` (false):
    /// escrowd says it serves only when heartbeats are being received.
    func firstSubscription(timeout: Duration) async -> Bool {
        await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            let already = subscribedWaiters.withLock { s -> Bool in
                if s.done { return true }
                s.waiters.append(c)
                return false
            }
            if already { c.resume(returning: true); return }
            DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(Backoff.nanoseconds(timeout)))) { [weak self] in
                let waiting = self?.subscribedWaiters.withLock { s -> [CheckedContinuation<Bool, Never>] in
                    defer { s.waiters = [] }
                    return s.waiters
                } ?? []
                for w in waiting { w.resume(returning: false) }
            }
        }
    }

    private func markSubscribed() {
        subscribed.store(true, ordering: .relaxed)
        let waiting = subscribedWaiters.withLock { s -> [CheckedContinuation<Bool, Never>] in
            s.done = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiting { w.resume(returning: true) }
    }

    func start() { BlockingWork.detach("escrowd-heartbeats") { self.run() } }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        socket.withLock { fd in if fd >= 0 { _ = shutdown(fd, Int32(SHUT_RDWR)) } }
        wakeSignal.wake()
    }

    private struct SessionError: Error, CustomStringConvertible { let description: String }

    private func run() {
        var attempt = 0
        while !stopping.load(ordering: .relaxed) {
            do {
                try session { attempt = 0 }
            } catch {
                if stopping.load(ordering: .relaxed) { break }
                log(attempt == 0 ? .warn : .info, "heartbeat connection to \(settings.host):\(settings.port): \(error); reconnecting")
            }
            subscribed.store(false, ordering: .relaxed)
            if stopping.load(ordering: .relaxed) { break }
            let delay = settings.backoff.delay(attempt: attempt)
            attempt += 1
            wakeSignal.wait(milliseconds: Int32(clamping: Backoff.nanoseconds(delay) / 1_000_000))
        }
    }

    /// One connection: CONNECT, SUBSCRIBE, then read until it fails. `onSubscribed` runs once the
    /// broker granted the subscription.
    private func session(onSubscribed: () -> Void) throws {
        let fd = try dial()
        socket.withLock { $0 = fd }
        defer {
            socket.withLock { $0 = -1 }
            close(fd)
        }
        let connect = MQTTPacket.Connect(version: .v311, clientID: settings.clientID, cleanStart: true,
                                         keepAlive: UInt16(clamping: settings.keepAlive),
                                         username: settings.username, password: settings.password.map { Array($0.utf8) })
        try send(fd, MQTTPacket.connect(connect).encoded())
        var reader = PacketReader(version: .v311, maxPacketSize: 1 << 20)
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        let keepAliveMs = Int32(clamping: settings.keepAlive * 1000)
        var lastSent = ContinuousClock.now, lastHeard = ContinuousClock.now
        while !stopping.load(ordering: .relaxed) {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, max(1, keepAliveMs / 2))
            if ready < 0 { if errno == EINTR { continue }; throw SessionError(description: "poll: \(String(cString: strerror(errno)))") }
            let now = ContinuousClock.now
            if ready == 0 || now - lastSent >= .seconds(settings.keepAlive / 2) {
                if now - lastHeard > .seconds(settings.keepAlive + settings.keepAlive / 2) {
                    throw SessionError(description: "no packet from the broker for \(settings.keepAlive * 3 / 2) s")
                }
                try send(fd, MQTTPacket.pingreq.encoded())
                lastSent = now
            }
            guard ready > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { throw SessionError(description: "the broker closed the connection") }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw SessionError(description: "read: \(String(cString: strerror(errno)))")
            }
            lastHeard = now
            buffer.withUnsafeBytes { reader.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            defer {
                // Interrupt coalescing: after a short read, let 1 ms of heartbeats gather before the
                // next read (a bounded pacing pause on this thread only, woken by stop()). Waking for
                // every few packets cost a fifth of the CPU in context switches; the last-seen flush
                // runs every 5 s, so 1 ms of delay is invisible.
                if n < buffer.count / 2 { wakeSignal.wait(milliseconds: 1, drain: false) }
            }
            while let packet = try reader.next() {
                switch packet {
                case .publish(let m):
                    if let device = Topic.heartbeatDevice(m.topic) { onHeartbeat(device, m.payload, m.topic) }
                case .connack(let c):
                    guard c.code == 0 else { throw SessionError(description: "CONNACK refused the login (code \(c.code))") }
                    try send(fd, MQTTPacket.subscribe(.init(packetID: 1, filters: [(settings.filter, .atMostOnce)])).encoded())
                    lastSent = ContinuousClock.now
                case .suback(let s):
                    guard s.codes.allSatisfy({ $0 < 0x80 }) else { throw SessionError(description: "SUBACK refused \(settings.filter) (code \(s.codes))") }
                    markSubscribed()
                    onSubscribed()
                case .pingresp:
                    break
                default:
                    throw SessionError(description: "unexpected packet \(packet)")
                }
            }
        }
    }

    private func dial() throws -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(settings.host, String(settings.port), &hints, &list)
        guard rc == 0, let first = list else { throw SessionError(description: "cannot resolve \(settings.host): \(String(cString: gai_strerror(rc)))") }
        defer { freeaddrinfo(list) }
        var last = "no address"
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let a = cursor {
            cursor = a.pointee.ai_next
            let fd = Glibc.socket(a.pointee.ai_family, a.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), a.pointee.ai_protocol)
            guard fd >= 0 else { last = String(cString: strerror(errno)); continue }
            if connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 {
                var one: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                return fd
            }
            last = String(cString: strerror(errno))
            close(fd)
        }
        throw SessionError(description: "cannot connect: \(last)")
    }

    private func send(_ fd: Int32, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let w = Glibc.send(fd, raw.baseAddress! + off, raw.count - off, Int32(MSG_NOSIGNAL))
                if w < 0 { if errno == EINTR { continue }; throw SessionError(description: "write: \(String(cString: strerror(errno)))") }
                off += w
            }
        }
    }
}
