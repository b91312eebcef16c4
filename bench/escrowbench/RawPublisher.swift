import Foundation
import Synchronization
import MQTTWire
#if canImport(Glibc)
import Glibc
#endif

/// A minimal MQTT 3.1.1 QoS 0 publisher on a raw blocking socket: one CONNECT, then pre-encoded
/// PUBLISH packets written in 64 KiB batches. No keep-alive, no reads after CONNACK. It is only
/// as fast as the broker reads (TCP flow control), so its rate is what the broker accepts.
final class RawPublisher: Sendable {
    let sent = Atomic<Int>(0)
    private let stopRequested = Atomic<Bool>(false)
    private let finished = Atomic<Bool>(false)
    let error = Mutex<String?>(nil)

    private let port: Int
    private let clientID: String
    private let packets: [[UInt8]]
    private let rate: Double

    /// `packets`: complete PUBLISH packets, sent round-robin. `rate` messages/s, 0 = as fast as possible.
    init(port: Int, clientID: String, packets: [[UInt8]], rate: Double) {
        self.port = port; self.clientID = clientID; self.packets = packets; self.rate = rate
    }

    func start() {
        let t = Thread { [self] in run() }
        t.name = "bench-pub"
        t.start()
    }

    func stop() {
        stopRequested.store(true, ordering: .relaxed)
        while !finished.load(ordering: .acquiring) { usleep(1_000) }
    }

    private func run() {
        defer { finished.store(true, ordering: .releasing) }
        nameThisThread("bench-pub")
        let fd = connectTCP(port: port)
        guard fd >= 0 else { error.withLock { $0 = "connect failed" }; return }
        defer { close(fd) }
        let connect = MQTTPacket.connect(.init(version: .v311, clientID: clientID, cleanStart: true, keepAlive: 0)).encoded()
        guard writeAll(fd, connect) else { error.withLock { $0 = "CONNECT write failed" }; return }
        var ack = [UInt8](repeating: 0, count: 4)
        guard read(fd, &ack, 4) == 4, ack[0] == 0x20, ack[3] == 0 else { error.withLock { $0 = "no CONNACK" }; return }

        var buffer = [UInt8]()
        buffer.reserveCapacity(70_000)
        let start = ContinuousClock.now
        var count = 0, index = 0
        while !stopRequested.load(ordering: .relaxed) {
            var allowed = 10_000
            if rate > 0 {
                let elapsed = ContinuousClock.now - start
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                allowed = min(Int(rate * seconds) - count, 2_000)
                if allowed <= 0 { usleep(200); continue }
            }
            buffer.removeAll(keepingCapacity: true)
            var n = 0
            while n < allowed && buffer.count < 64 * 1024 {
                buffer.append(contentsOf: packets[index])
                index += 1; if index == packets.count { index = 0 }
                n += 1
            }
            guard writeAll(fd, buffer) else { error.withLock { $0 = "write failed: \(String(cString: strerror(errno)))" }; return }
            count += n
            sent.store(count, ordering: .relaxed)
        }
        _ = writeAll(fd, MQTTPacket.disconnect(.init()).encoded())
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let w = write(fd, raw.baseAddress! + off, raw.count - off)
                if w < 0 { if errno == EINTR { continue }; return false }
                off += w
            }
            return true
        }
    }

    /// One QoS 0 PUBLISH packet (MQTT 3.1.1).
    static func publishPacket(topic: String, payload: [UInt8]) -> [UInt8] {
        MQTTPacket.publish(.init(topic: topic, payload: payload, qos: .atMostOnce)).encoded()
    }
}

/// Names the calling thread (Linux `comm`), so per-thread CPU figures can tell it apart.
func nameThisThread(_ name: String) {
    let fd = open("/proc/thread-self/comm", O_WRONLY)
    guard fd >= 0 else { return }
    _ = Array(name.utf8.prefix(15)).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}
