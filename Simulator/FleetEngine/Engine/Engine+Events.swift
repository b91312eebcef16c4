import MQTTWire
import Glibc
import Identity

/// Readiness events: reading, decoding packets and handing them to the behaviour.
extension Engine {
    // MARK: Events

    func handle(events: UInt32, device d: Int, generation: UInt32, now: UInt64) {
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

    func readAvailable(_ d: Int, now: UInt64) {
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

    func receive(_ packet: MQTTPacket, device d: Int, now: UInt64) {
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
}
