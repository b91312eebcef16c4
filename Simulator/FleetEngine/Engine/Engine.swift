import MQTTWire
import Glibc
import Identity

/// Drives many MQTT device connections from one thread with one epoll loop.
///
/// One non-blocking socket per device, per-device state in a compact `Slot` plus the device's
/// `Behavior` value, one timer heap for everything. Not thread-safe by design: create it, call
/// `start`, and drive it with `poll`/`run` from one thread; only `StopFlag` crosses threads.
public final class Engine<Behavior: DeviceBehavior> {
    struct InFlight { var packetID: UInt16; var sentAt: UInt64 }

    struct Slot {
        var fd: Int32 = -1
        var state: ConnectionState = .idle
        var generation: UInt32 = 0
        var attempt: UInt16 = 0
        var nextPacketID: UInt16 = 1
        var wantsWrite = false
        var pingOutstanding = false
        var connectStart: UInt64 = 0
        var lastSend: UInt64 = 0
        var lostAt: UInt64 = 0
        var reader: PacketReader
        var outbox: [UInt8] = []
        var inflight: [InFlight] = []
        /// The connection's TLS session (nil for plain MQTT, and between connections).
        var tls: TLSClientSession?
    }

    public let configuration: EngineConfiguration
    public let metrics = Metrics()
    public private(set) var behaviors: [Behavior]
    var slots: [Slot]
    /// Per device, when `configuration.tls` is set.
    private let identities: [DeviceTLSIdentity]

    private let epollFD: Int32
    private let broker: sockaddr_in
    private let sources: [in_addr]
    private var timers = TimerHeap()
    private var connectQueue: [Int32] = []
    private var queueHead = 0
    private var connectsInFlight = 0
    private var tokens: Double
    private var lastRefill: UInt64
    private let startTime: UInt64
    private var eventBuffer: UnsafeMutableRawBufferPointer
    private var readBuffer: UnsafeMutableRawBufferPointer
    private var scratch: [UInt8] = []
    private var plain: [UInt8] = []
    private var cipher: [UInt8] = []
    private let maxEvents: Int32 = 1024
    public private(set) var connectedCount = 0
    /// The last error per cause, for one-line diagnostics ("ECONNREFUSED on 127.0.0.1:1883").
    public private(set) var lastErrorDetail: [ErrorCause: String] = [:]

    /// `identities` (one per behaviour, same order) are required when `configuration.tls` is set.
    public init(configuration: EngineConfiguration, behaviors: [Behavior], identities: [DeviceTLSIdentity] = []) throws {
        if configuration.tls != nil && identities.count != behaviors.count {
            throw FleetError.usage("TLS needs one identity per device: \(identities.count) identities for \(behaviors.count) devices")
        }
        self.configuration = configuration
        self.behaviors = behaviors
        self.identities = identities
        let version = configuration.mqttVersion
        slots = Array(repeating: Slot(reader: PacketReader(version: version)), count: behaviors.count)
        guard let addr = System.parseIPv4(configuration.brokerHost) else {
            throw FleetError.usage("broker host '\(configuration.brokerHost)' is not an IPv4 address (use e.g. 127.0.0.1)")
        }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = configuration.brokerPort.bigEndian
        sa.sin_addr = addr
        broker = sa
        sources = try configuration.sourceAddresses.map { s throws in
            guard let a = System.parseIPv4(s) else { throw FleetError.usage("source address '\(s)' is not an IPv4 address") }
            return a
        }
        System.reserveDescriptors(behaviors.count + 256)
        epollFD = try System.epollCreate()
        eventBuffer = .allocate(byteCount: Int(maxEvents) * System.epollEventSize, alignment: 8)
        readBuffer = .allocate(byteCount: 64 * 1024, alignment: 8)
        startTime = configuration.clockOrigin ?? System.monotonicNanos()
        lastRefill = System.monotonicNanos()
        tokens = 1
    }

    deinit {
        for i in slots.indices where slots[i].fd >= 0 { close(slots[i].fd) }
        close(epollFD)
        eventBuffer.deallocate()
        readBuffer.deallocate()
    }

    // MARK: Public control

    public var deviceCount: Int { slots.count }
    /// Seconds since the engine was created (the clock behaviours see).
    public var now: Double { seconds(System.monotonicNanos()) }
    public func state(of device: Int) -> ConnectionState { slots[device].state }
    public var pendingConnects: Int { connectQueue.count - queueHead + connectsInFlight }

    /// Queues every idle device for connection (paced by rate and window).
    public func startAll() { for i in slots.indices { start(i) } }

    public func start(_ device: Int) {
        guard slots[device].state == .idle || slots[device].state == .stopped else { return }
        enqueue(device)
    }

    /// Closes a device's socket without DISCONNECT (the broker publishes its will), then
    /// reconnects with backoff unless `reconnect` is false.
    public func drop(_ device: Int, reconnect: Bool = true) {
        guard slots[device].fd >= 0 else { return }
        let now = System.monotonicNanos()
        closeConnection(device, now: now, graceful: false)
        if reconnect && configuration.reconnect { scheduleReconnect(device, now: now) } else { slots[device].state = .stopped }
    }

    /// Drops every open connection at once (a "storm").
    public func dropAll(reconnect: Bool = true) {
        for i in slots.indices where slots[i].fd >= 0 { drop(i, reconnect: reconnect) }
    }

    /// Sends DISCONNECT on every connection, flushes what it can, and closes everything.
    public func stopAll() {
        let now = System.monotonicNanos()
        for i in slots.indices {
            if slots[i].fd >= 0 { closeConnection(i, now: now, graceful: slots[i].state == .connected) }
            slots[i].state = .stopped
            slots[i].generation &+= 1
        }
        connectQueue.removeAll(); queueHead = 0
    }

    /// Performs actions on behalf of a device as if its behaviour had returned them.
    public func perform(_ actions: [DeviceAction], for device: Int) {
        execute(actions, device: device, now: System.monotonicNanos())
    }

    public func behavior(at device: Int) -> Behavior { behaviors[device] }

    /// Runs one loop iteration: due timers, paced connects, then up to `maxWait` seconds in epoll.
    public func poll(maxWait: Double = 0.05) {
        var now = System.monotonicNanos()
        fireTimers(now)
        pumpConnects(now)
        var waitNs = UInt64(max(0, maxWait) * 1e9)
        if let d = timers.nextDeadline { waitNs = d > now ? min(waitNs, d - now) : 0 }
        if queueHead < connectQueue.count && connectsInFlight < connectWindow { waitNs = min(waitNs, 2_000_000) }
        let n = System.epollWait(epollFD, eventBuffer, maxEvents: maxEvents, timeoutMs: Int32((waitNs + 999_999) / 1_000_000))
        for i in 0..<n {
            // Event time: the clock is read for each event, not once per batch, so the latencies of
            // devices served in one epoll batch differ by the time each was really handled.
            now = System.monotonicNanos()
            let (events, data) = System.event(at: i, in: eventBuffer)
            handle(events: events, device: Int(data & 0xFFFF_FFFF), generation: UInt32(data >> 32), now: now)
        }
    }

    /// Polls until `done()` is true or `timeout` seconds pass; returns whether `done()` became true.
    @discardableResult
    public func run(timeout: Double, until done: () -> Bool) -> Bool {
        let deadline = now + timeout
        while now < deadline {
            if done() { return true }
            poll(maxWait: 0.02)
        }
        return done()
    }

    // MARK: Connecting

    /// The device whose event is being handled: its packets wait in `corkBuffer` until `uncork`.
    private var corked = -1
    private var corkBuffer: [UInt8] = []
    private var corkSpare: [UInt8] = []

    private func seconds(_ t: UInt64) -> Double { Double(t &- startTime) / 1e9 }

    /// The engine time (seconds, as in `now`) of a `System.monotonicNanos()` reading taken on any thread.
    public func time(ofMonotonic nanos: UInt64) -> Double { (Double(nanos) - Double(startTime)) / 1e9 }

    /// Connects in flight at once: with TLS also bounded by `maxHandshakes`.
    private var connectWindow: Int {
        guard let tls = configuration.tls else { return configuration.connectWindow }
        return max(1, min(configuration.connectWindow, tls.maxHandshakes))
    }

    private func enqueue(_ device: Int) {
        slots[device].state = .queued
        if queueHead > 4096 && queueHead * 2 > connectQueue.count {
            connectQueue.removeFirst(queueHead); queueHead = 0
        }
        connectQueue.append(Int32(device))
    }

    private func pumpConnects(_ now: UInt64) {
        let rate = configuration.connectRate
        if rate > 0 {
            let burst = max(1, rate / 20)
            tokens = min(burst, tokens + Double(now &- lastRefill) / 1e9 * rate)
        }
        lastRefill = now
        while queueHead < connectQueue.count && connectsInFlight < connectWindow {
            if rate > 0 { guard tokens >= 1 else { break }; tokens -= 1 }
            let d = Int(connectQueue[queueHead]); queueHead += 1
            guard slots[d].state == .queued else { continue }
            beginConnect(d, now: now)
        }
        if queueHead == connectQueue.count { connectQueue.removeAll(keepingCapacity: true); queueHead = 0 }
    }

    private func beginConnect(_ d: Int, now: UInt64) {
        metrics.connectAttempts += 1
        slots[d].generation &+= 1
        // The latency starts at this device's own connect(), not at the top of the loop
        // iteration that starts a whole window of connects.
        slots[d].connectStart = System.monotonicNanos()
        let source = sources.isEmpty ? nil : sources[d % sources.count]
        let fd: Int32
        do { fd = try System.tcpSocket(source: source) } catch {
            fail(d, cause: Self.cause(errno: error.errno), detail: error.description, now: now); return
        }
        slots[d].fd = fd
        slots[d].reader = PacketReader(version: configuration.mqttVersion)
        let connected: Bool
        do { connected = try System.startConnect(fd, to: broker) } catch {
            fail(d, cause: Self.cause(errno: error.errno), detail: error.description, now: now); return
        }
        connectsInFlight += 1
        slots[d].state = .connecting
        let key = UInt64(slots[d].generation) << 32 | UInt64(d)
        do {
            try System.epollCtl(epollFD, System.EPOLL_CTL_ADD, fd, events: System.EPOLLOUT | System.EPOLLIN | System.EPOLLRDHUP, data: key)
        } catch { fail(d, cause: .other, detail: error.description, now: now); return }
        slots[d].wantsWrite = true
        addTimer(d, .connectTimeout, after: configuration.connectTimeout, now: now)
        if connected { tcpConnected(d, now: now) }
    }

    private func tcpConnected(_ d: Int, now: UInt64) {
        slots[d].state = .awaitingConnAck
        if let tls = configuration.tls {
            // Handshake first; CONNECT is queued in the session and encrypted once it is established.
            do {
                let session = try TLSClientSession(context: tls.context, certificate: identities[d].certificate(),
                                                   privateKey: identities[d].privateKey(), serverName: tls.serverName)
                slots[d].tls = session
                try session.handshake()
            } catch {
                fail(d, cause: .auth, detail: "TLS: \(error.description)", now: now); return
            }
        }
        let spec = behaviors[d].connectSpec(keepAlive: configuration.keepAlive, version: configuration.mqttVersion)
        send(.connect(spec), device: d, now: now)
        updateInterest(d)
    }

    static func cause(errno e: Int32) -> ErrorCause {
        switch e {
        case EADDRNOTAVAIL, EADDRINUSE: return .portExhausted
        case ECONNREFUSED, ENETUNREACH, EHOSTUNREACH: return .unreachable
        case ETIMEDOUT: return .timeout
        case ECONNRESET, EPIPE, ECONNABORTED: return .reset
        case EMFILE, ENFILE: return .fdExhausted
        default: return .other
        }
    }

    // MARK: Events

    private func handle(events: UInt32, device d: Int, generation: UInt32, now: UInt64) {
        guard d < slots.count, slots[d].generation == generation, slots[d].fd >= 0 else { return }
        corked = d
        defer { uncork(generation: generation, now: now) }
        if slots[d].state == .connecting {
            if events & (System.EPOLLOUT | System.EPOLLERR | System.EPOLLHUP) != 0 {
                let err = System.socketError(slots[d].fd)
                if err != 0 { fail(d, cause: Self.cause(errno: err), detail: SystemError(operation: "connect", errno: err).description, now: now); return }
                if events & System.EPOLLOUT != 0 { tcpConnected(d, now: now) }
            }
            if slots[d].state == .connecting { return }
        }
        if events & System.EPOLLIN != 0 || events & (System.EPOLLHUP | System.EPOLLERR | System.EPOLLRDHUP) != 0 {
            readAvailable(d, now: now)
            guard slots[d].generation == generation, slots[d].fd >= 0 else { return }
        }
        if events & System.EPOLLOUT != 0 { flush(d, now: now) }
    }

    private func readAvailable(_ d: Int, now: UInt64) {
        let fd = slots[d].fd
        let gen = slots[d].generation
        while true {
            let n = read(fd, readBuffer.baseAddress, readBuffer.count)
            if n > 0 {
                metrics.bytesIn += n
                let bytes = UnsafeRawBufferPointer(rebasing: readBuffer[0..<n])
                if let session = slots[d].tls {
                    plain.removeAll(keepingCapacity: true)
                    do {
                        session.feed(bytes)
                        try session.read(into: &plain)
                    } catch {
                        fail(d, cause: .auth, detail: "TLS: \(error.description)", now: now); return
                    }
                    sendCiphertext(d, now: now) // handshake flights, or the queued CONNECT once established
                    guard slots[d].generation == gen, slots[d].fd >= 0 else { return }
                    if session.status == .closed { fail(d, cause: .reset, detail: "TLS: the broker closed the session", now: now); return }
                    plain.withUnsafeBytes { slots[d].reader.append($0) }
                } else {
                    slots[d].reader.append(bytes)
                }
                do {
                    while let packet = try slots[d].reader.next() {
                        receive(packet, device: d, now: now)
                        guard slots[d].generation == gen, slots[d].fd >= 0 else { return }
                    }
                } catch {
                    fail(d, cause: .protocolError, detail: "\(error)", now: now); return
                }
                if n < readBuffer.count { return }
            } else if n == 0 {
                if let session = slots[d].tls, slots[d].state == .awaitingConnAck {
                    // Closed during the handshake or before CONNACK: usually a refused certificate.
                    session.feedEndOfStream()
                    var reason = "connection closed during the TLS handshake"
                    do { try session.read(into: &plain) } catch { reason = error.description }
                    fail(d, cause: .auth, detail: "TLS: \(reason)", now: now); return
                }
                fail(d, cause: .reset, detail: "connection closed by broker", now: now); return
            } else {
                let e = errno
                if e == EINTR { continue }
                if e == EAGAIN || e == EWOULDBLOCK { return }
                fail(d, cause: Self.cause(errno: e), detail: SystemError(operation: "read", errno: e).description, now: now); return
            }
        }
    }

    private func receive(_ packet: MQTTPacket, device d: Int, now: UInt64) {
        switch packet {
        case .connack(let ack):
            guard slots[d].state == .awaitingConnAck else { fail(d, cause: .protocolError, detail: "unexpected CONNACK", now: now); return }
            guard ack.code == 0 else {
                fail(d, cause: ack.isAuthFailure ? .auth : .refused, detail: "CONNACK code \(ack.code)", now: now); return
            }
            connectsInFlight -= 1
            slots[d].state = .connected
            slots[d].attempt = 0
            connectedCount += 1
            metrics.connacks += 1
            metrics.record(.connect, micros: (now &- slots[d].connectStart) / 1000)
            if slots[d].lostAt != 0 { metrics.record(.recovery, micros: (now &- slots[d].lostAt) / 1000); slots[d].lostAt = 0 }
            if configuration.keepAlive > 0 { addTimer(d, .keepAlive, after: Double(configuration.keepAlive), now: now) }
            execute(behaviors[d].onConnected(now: seconds(now)), device: d, now: now)
        case .publish(let p):
            metrics.received += 1
            if p.qos == .atLeastOnce, let id = p.packetID { send(.puback(.init(packetID: id)), device: d, now: now) }
            let msg = IncomingMessage(topic: p.topic, payload: p.payload, qos: p.qos, retain: p.retain)
            execute(behaviors[d].onMessage(msg, now: seconds(now)), device: d, now: now)
        case .puback(let a):
            if let i = slots[d].inflight.firstIndex(where: { $0.packetID == a.packetID }) {
                metrics.pubacks += 1
                metrics.record(.puback, micros: (now &- slots[d].inflight[i].sentAt) / 1000)
                slots[d].inflight.remove(at: i)
                if slots[d].inflight.isEmpty { slots[d].inflight = [] }
            }
        case .pingresp:
            slots[d].pingOutstanding = false
        case .suback, .unsuback:
            break
        case .disconnect(let x):
            fail(d, cause: .reset, detail: "broker sent DISCONNECT reason \(x.reason)", now: now)
        case .connect, .subscribe, .unsubscribe, .pingreq:
            fail(d, cause: .protocolError, detail: "broker sent a client-only packet", now: now)
        }
    }

    // MARK: Actions and timers

    private func execute(_ actions: [DeviceAction], device d: Int, now: UInt64) {
        for action in actions {
            switch action {
            case .publish(let topic, let payload, let qos, let retain):
                guard slots[d].state == .connected else { metrics.droppedWhileOffline += 1; continue }
                var id: UInt16?
                if qos != .atMostOnce {
                    id = nextPacketID(d)
                    slots[d].inflight.append(InFlight(packetID: id!, sentAt: now))
                    metrics.publishedQoS1 += 1
                }
                metrics.published += 1
                send(.publish(.init(topic: topic, payload: payload, qos: qos, retain: retain, packetID: id)), device: d, now: now)
            case .subscribe(let filter, let qos):
                guard slots[d].state == .connected else { continue }
                send(.subscribe(.init(packetID: nextPacketID(d), filters: [(filter, qos)])), device: d, now: now)
            case .schedule(let token, let after):
                guard slots[d].state == .connected else { continue }
                addTimer(d, .behavior, token: token, after: after, now: now)
            case .disconnect:
                guard slots[d].fd >= 0 else { continue }
                closeConnection(d, now: now, graceful: true)
                if configuration.reconnect { scheduleReconnect(d, now: now) } else { slots[d].state = .stopped }
            case .measure(let kind, let seconds):
                metrics.record(kind, micros: UInt64(max(0, seconds) * 1e6))
            case .note(let n):
                switch n {
                case .configApplied: metrics.configsApplied += 1
                case .configIgnored: metrics.configsIgnored += 1
                case .configRejected: metrics.configsRejected += 1
                case .heartbeat: metrics.heartbeats += 1
                }
            }
        }
    }

    private func nextPacketID(_ d: Int) -> UInt16 {
        let id = slots[d].nextPacketID
        slots[d].nextPacketID = id == .max ? 1 : id + 1
        return id
    }

    private func addTimer(_ d: Int, _ kind: TimerKind, token: UInt8 = 0, after: Double, now: UInt64) {
        timers.push(.init(deadline: now + UInt64(max(0, after) * 1e9), slot: Int32(d), generation: slots[d].generation, kind: kind, token: token))
    }

    private func fireTimers(_ now: UInt64) {
        while let t = timers.popDue(now) {
            let d = Int(t.slot)
            guard slots[d].generation == t.generation else { continue }
            switch t.kind {
            case .connectTimeout:
                if slots[d].state == .connecting || slots[d].state == .awaitingConnAck {
                    fail(d, cause: .timeout, detail: "no CONNACK within \(configuration.connectTimeout) s", now: now)
                }
            case .keepAlive:
                guard slots[d].state == .connected else { continue }
                if slots[d].pingOutstanding {
                    fail(d, cause: .timeout, detail: "no PINGRESP within keepalive", now: now); continue
                }
                let ka = UInt64(configuration.keepAlive) * 1_000_000_000
                if now &- slots[d].lastSend >= ka * 3 / 4 {
                    slots[d].pingOutstanding = true
                    send(.pingreq, device: d, now: now)
                }
                addTimer(d, .keepAlive, after: Double(configuration.keepAlive) * 0.75, now: now)
            case .reconnect:
                if slots[d].state == .backoff { enqueue(d) }
            case .behavior:
                guard slots[d].state == .connected else { continue }
                execute(behaviors[d].onTimer(t.token, now: seconds(now)), device: d, now: now)
            }
        }
    }

    // MARK: Writing

    private func send(_ packet: MQTTPacket, device d: Int, now: UInt64) {
        guard slots[d].fd >= 0 else { return }
        if corked == d && slots[d].tls == nil {
            packet.encode(into: &corkBuffer, version: configuration.mqttVersion)
            slots[d].lastSend = now
            return
        }
        scratch.removeAll(keepingCapacity: true)
        packet.encode(into: &scratch, version: configuration.mqttVersion)
        slots[d].lastSend = now
        if let session = slots[d].tls {
            do { try session.write(scratch) } catch {
                fail(d, cause: .auth, detail: "TLS: \(error.description)", now: now); return
            }
            sendCiphertext(d, now: now)
            return
        }
        writeToSocket(d, scratch, now: now)
    }

    /// Sends what the packets of one event of device `corked` produced, in one write: a
    /// CONNACK's SUBSCRIBE + status PUBLISH + heartbeat are one segment on the wire, not three.
    private func uncork(generation: UInt32, now: UInt64) {
        let d = corked
        corked = -1
        guard slots[d].generation == generation, slots[d].fd >= 0 else { corkBuffer.removeAll(keepingCapacity: true); return }
        if slots[d].tls != nil { sendCiphertext(d, now: now); return }
        guard !corkBuffer.isEmpty else { return }
        swap(&corkBuffer, &corkSpare)
        writeToSocket(d, corkSpare, now: now)
        corkSpare.removeAll(keepingCapacity: true)
    }

    /// Moves the TLS session's outgoing records to the socket (at the end of the event when corked).
    private func sendCiphertext(_ d: Int, now: UInt64) {
        guard corked != d, let session = slots[d].tls, session.hasOutgoing, slots[d].fd >= 0 else { return }
        cipher.removeAll(keepingCapacity: true)
        session.takeOutgoing(into: &cipher)
        writeToSocket(d, cipher, now: now)
    }

    /// Writes bytes now, or queues them behind earlier ones (sent on EPOLLOUT).
    private func writeToSocket(_ d: Int, _ bytes: [UInt8], now: UInt64) {
        metrics.bytesOut += bytes.count
        if !slots[d].outbox.isEmpty || slots[d].state == .connecting {
            slots[d].outbox.append(contentsOf: bytes); return
        }
        let written = bytes.withUnsafeBytes { write(slots[d].fd, $0.baseAddress, $0.count) }
        if written == bytes.count { return }
        if written < 0 {
            let e = errno
            guard e == EAGAIN || e == EWOULDBLOCK || e == EINTR else {
                fail(d, cause: Self.cause(errno: e), detail: SystemError(operation: "write", errno: e).description, now: now); return
            }
            slots[d].outbox.append(contentsOf: bytes)
        } else {
            slots[d].outbox.append(contentsOf: bytes[written...])
        }
        updateInterest(d)
    }

    private func flush(_ d: Int, now: UInt64) {
        guard !slots[d].outbox.isEmpty else { updateInterest(d); return }
        let written = slots[d].outbox.withUnsafeBytes { write(slots[d].fd, $0.baseAddress, $0.count) }
        if written < 0 {
            let e = errno
            if e == EAGAIN || e == EWOULDBLOCK || e == EINTR { return }
            fail(d, cause: Self.cause(errno: e), detail: SystemError(operation: "write", errno: e).description, now: now); return
        }
        if written == slots[d].outbox.count { slots[d].outbox = [] } else { slots[d].outbox.removeFirst(written) }
        updateInterest(d)
    }

    private func updateInterest(_ d: Int) {
        let want = !slots[d].outbox.isEmpty
        guard want != slots[d].wantsWrite, slots[d].fd >= 0 else { return }
        slots[d].wantsWrite = want
        let key = UInt64(slots[d].generation) << 32 | UInt64(d)
        try? System.epollCtl(epollFD, System.EPOLL_CTL_MOD, slots[d].fd,
                             events: System.EPOLLIN | System.EPOLLRDHUP | (want ? System.EPOLLOUT : 0), data: key)
    }

    // MARK: Closing

    private func fail(_ d: Int, cause: ErrorCause, detail: String, now: UInt64) {
        metrics.count(cause)
        lastErrorDetail[cause] = detail
        closeConnection(d, now: now, graceful: false)
        if configuration.reconnect { scheduleReconnect(d, now: now) } else { slots[d].state = .stopped }
    }

    private func closeConnection(_ d: Int, now: UInt64, graceful: Bool) {
        let state = slots[d].state
        if state == .connecting || state == .awaitingConnAck { connectsInFlight -= 1 }
        if state == .connected {
            connectedCount -= 1
            metrics.disconnects += 1
            slots[d].lostAt = now
            if graceful {
                scratch.removeAll(keepingCapacity: true)
                MQTTPacket.disconnect(.init()).encode(into: &scratch, version: configuration.mqttVersion)
                if let session = slots[d].tls {
                    try? session.write(scratch)
                    session.close() // close_notify after the DISCONNECT
                    scratch.removeAll(keepingCapacity: true)
                    session.takeOutgoing(into: &scratch)
                }
                _ = scratch.withUnsafeBytes { write(slots[d].fd, $0.baseAddress, $0.count) }
            }
            behaviors[d].onDisconnected(now: seconds(now))
        }
        if slots[d].fd >= 0 { close(slots[d].fd); slots[d].fd = -1 }
        slots[d].generation &+= 1
        slots[d].tls = nil
        slots[d].outbox = []
        slots[d].inflight = []
        slots[d].pingOutstanding = false
        slots[d].wantsWrite = false
        slots[d].reader = PacketReader(version: configuration.mqttVersion)
        slots[d].state = .idle
    }

    private func scheduleReconnect(_ d: Int, now: UInt64) {
        slots[d].attempt = min(slots[d].attempt + 1, 30)
        if slots[d].lostAt == 0 { slots[d].lostAt = now }
        slots[d].state = .backoff
        let delay = Backoff.delay(attempt: Int(slots[d].attempt), base: configuration.backoffBase, max: configuration.backoffMax)
        addTimer(d, .reconnect, after: delay, now: now)
    }
}

/// Errors the simulator reports to its user, each with one clear line.
public enum FleetError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Bad command line (exit 64).
    case usage(String)
    /// The run could not proceed (exit 1).
    case runtime(String)
    public var description: String {
        switch self { case .usage(let m), .runtime(let m): return m }
    }
}
