import MQTTWire
import Glibc
import Identity

/// Writing: packets encoded into per-device buffers, corked and flushed, through TLS when on.
extension Engine {
    // MARK: Writing

    func send(_ packet: MQTTPacket, device d: Int, now: UInt64) {
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
    func uncork(generation: UInt32, now: UInt64) {
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
    func sendCiphertext(_ d: Int, now: UInt64) {
        guard corked != d, let session = slots[d].tls, session.hasOutgoing, slots[d].fd >= 0 else { return }
        cipher.removeAll(keepingCapacity: true)
        session.takeOutgoing(into: &cipher)
        writeToSocket(d, cipher, now: now)
    }

    /// Writes bytes now, or queues them behind earlier ones (sent on EPOLLOUT).
    func writeToSocket(_ d: Int, _ bytes: [UInt8], now: UInt64) {
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

    func flush(_ d: Int, now: UInt64) {
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

    func updateInterest(_ d: Int) {
        let want = !slots[d].outbox.isEmpty
        guard want != slots[d].wantsWrite, slots[d].fd >= 0 else { return }
        slots[d].wantsWrite = want
        let key = UInt64(slots[d].generation) << 32 | UInt64(d)
        try? System.epollCtl(epollFD, System.EPOLL_CTL_MOD, slots[d].fd,
                             events: System.EPOLLIN | System.EPOLLRDHUP | (want ? System.EPOLLOUT : 0), data: key)
    }
}
