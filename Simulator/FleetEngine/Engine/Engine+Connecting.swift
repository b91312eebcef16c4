import MQTTWire
import Glibc
import Identity

/// Connecting: the paced queue, the TCP connect, the TLS handshake.
extension Engine {
    // MARK: Connecting


    func seconds(_ t: UInt64) -> Double { Double(t &- startTime) / 1e9 }

    /// The engine time (seconds, as in `now`) of a `System.monotonicNanos()` reading taken on any thread.
    public func time(ofMonotonic nanos: UInt64) -> Double { (Double(nanos) - Double(startTime)) / 1e9 }

    /// Connects in flight at once: with TLS also bounded by `maxHandshakes`.
    var connectWindow: Int {
        guard let tls = configuration.tls else { return configuration.connectWindow }
        return max(1, min(configuration.connectWindow, tls.maxHandshakes))
    }

    func enqueue(_ device: Int) {
        slots[device].state = .queued
        if queueHead > 4096 && queueHead * 2 > connectQueue.count {
            connectQueue.removeFirst(queueHead); queueHead = 0
        }
        connectQueue.append(Int32(device))
    }

    func pumpConnects(_ now: UInt64) {
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

    func beginConnect(_ d: Int, now: UInt64) {
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

    func tcpConnected(_ d: Int, now: UInt64) {
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
}
