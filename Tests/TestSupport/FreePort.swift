import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A TCP port on 127.0.0.1 that was free a moment ago (see `freePorts`).
public func freePort() throws -> Int { try freePorts(1)[0] }

/// Ports handed out by this process, never handed out twice.
private let handedOut = Mutex<Set<Int>>([])

/// The kernel's range for outgoing connections' local ports (`ip_local_port_range`).
private let ephemeralRange: ClosedRange<Int> = {
    let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? "32768 60999"
    let v = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { Int($0) }
    return v.count == 2 && v[0] <= v[1] ? v[0]...v[1] : 32768...60999
}()

/// `count` distinct free ports for listeners, chosen **below the ephemeral range**: a port from
/// `bind(0)` comes from that range, where any of the thousands of client connections the parallel
/// suite makes may take it as its local port before the broker binds it ("Address already in
/// use"). Each port is checked free with a bind, and none is handed out twice in this process.
public func freePorts(_ count: Int) throws -> [Int] {
    let low = 10_000, high = max(low + 1_000, ephemeralRange.lowerBound) - 1
    var ports: [Int] = []
    var tries = 0
    while ports.count < count {
        tries += 1
        guard tries < 10_000 else { throw TestSupportError("no free TCP port in \(low)...\(high) after 10,000 tries") }
        let candidate = Int.random(in: low...high)
        guard handedOut.withLock({ $0.insert(candidate).inserted }) else { continue }
        if bindable(candidate) { ports.append(candidate) }
    }
    return ports
}

/// True when 127.0.0.1:`port` can be bound right now.
private func bindable(_ port: Int) -> Bool { withLoopbackSocket(port: port) { fd, addr, len in bind(fd, addr, len) == 0 } }

/// True when something accepts a TCP connection on 127.0.0.1:`port` right now.
public func canConnect(port: Int) -> Bool { withLoopbackSocket(port: port) { fd, addr, len in connect(fd, addr, len) == 0 } }

/// Calls `body` with a fresh TCP socket (closed afterwards) and the address 127.0.0.1:`port`.
private func withLoopbackSocket(port: Int, _ body: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Bool) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = UInt16(port).bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}
