import Glibc
import CSystem

/// A failed system call: the operation and errno. Every raw call in FleetEngine goes through
/// `System`, which retries EINTR and turns -1 into this error.
public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    public var operation: String
    public var errno: Int32
    public var description: String { "\(operation): \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// Thin wrappers over the Glibc calls the engine needs (sockets, epoll through CSystem, rlimit).
enum System {
    @inline(__always)
    static func check(_ op: String, _ body: () -> Int32) throws(SystemError) -> Int32 {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Glibc.errno
            if e == EINTR { continue }
            throw SystemError(operation: op, errno: e)
        }
    }

    static let EPOLLIN: UInt32 = 0x001
    static let EPOLLOUT: UInt32 = 0x004
    static let EPOLLERR: UInt32 = 0x008
    static let EPOLLHUP: UInt32 = 0x010
    static let EPOLLRDHUP: UInt32 = 0x2000
    static let EPOLL_CTL_ADD: Int32 = 1
    static let EPOLL_CTL_DEL: Int32 = 2
    static let EPOLL_CTL_MOD: Int32 = 3
    /// `sizeof(struct epoll_event)` from the real header (12 on x86_64, where it is packed; 16 elsewhere).
    static let epollEventSize = Int(escrow_epoll_event_size())

    static func epollCreate() throws(SystemError) -> Int32 {
        try check("epoll_create1") { escrow_epoll_create() }
    }

    static func epollCtl(_ ep: Int32, _ op: Int32, _ fd: Int32, events: UInt32, data: UInt64) throws(SystemError) {
        _ = try check("epoll_ctl") { escrow_epoll_ctl(ep, op, fd, events, data) }
    }

    /// Waits for events into `buffer` (capacity `maxEvents * epollEventSize`); returns the count.
    static func epollWait(_ ep: Int32, _ buffer: UnsafeMutableRawBufferPointer, maxEvents: Int32, timeoutMs: Int32) -> Int {
        let r = escrow_epoll_wait(ep, buffer.baseAddress, maxEvents, timeoutMs)
        return r < 0 ? 0 : Int(r)
    }

    static func event(at i: Int, in buffer: UnsafeMutableRawBufferPointer) -> (events: UInt32, data: UInt64) {
        (escrow_epoll_event_events(buffer.baseAddress, Int32(i)), escrow_epoll_event_data(buffer.baseAddress, Int32(i)))
    }

    /// A non-blocking TCP socket with TCP_NODELAY, optionally bound to a source address
    /// (port chosen at connect time via IP_BIND_ADDRESS_NO_PORT, so each (source, destination)
    /// pair gets the full ephemeral range).
    static func tcpSocket(source: in_addr?) throws(SystemError) -> Int32 {
        let fd = try check("socket") { socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        if let source {
            setsockopt(fd, Int32(IPPROTO_IP), 24 /* IP_BIND_ADDRESS_NO_PORT */, &one, socklen_t(MemoryLayout<Int32>.size))
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_addr = source
            sa.sin_port = 0
            let r = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if r < 0 { let e = Glibc.errno; close(fd); throw SystemError(operation: "bind", errno: e) }
        }
        return fd
    }

    /// Starts a non-blocking connect; returns true when already connected, false when in progress.
    static func startConnect(_ fd: Int32, to address: sockaddr_in) throws(SystemError) -> Bool {
        var sa = address
        while true {
            let r = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if r == 0 { return true }
            let e = Glibc.errno
            if e == EINTR { continue }
            if e == EINPROGRESS { return false }
            throw SystemError(operation: "connect", errno: e)
        }
    }

    static func socketError(_ fd: Int32) -> Int32 {
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
        return err
    }

    /// Raises the soft open-file limit to the hard limit; returns the new soft limit.
    @discardableResult
    static func raiseFileLimit() -> Int {
        var rl = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 else { return 0 }
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
        }
        return Int(rl.rlim_cur)
    }

    /// Grows this process's descriptor table to hold `count` descriptors now, before any
    /// latency is measured. The kernel doubles the table as descriptors are opened, and in a
    /// multi-threaded process each doubling waits for an RCU grace period (`expand_fdtable`
    /// calls `synchronize_rcu`): one `socket()` at 64, 128, ..., 8,192 open files took 9-23 ms,
    /// which delayed a whole window of connects and set the run's p99. A single-threaded
    /// client (the libmosquitto reference) does not pay it. The table never shrinks.
    static func reserveDescriptors(_ count: Int) {
        let target = Int32(min(count, raiseFileLimit()) - 1)
        guard target > 3 else { return }
        let probe = open("/dev/null", O_RDONLY | O_CLOEXEC)
        guard probe >= 0 else { return }
        // F_DUPFD takes the lowest *free* descriptor >= target: it never replaces one in use
        // (dup2 onto a fixed number would close another thread's socket or file in this process).
        let high = fcntl(probe, F_DUPFD_CLOEXEC, target)
        if high >= 0 { close(high) }
        close(probe)
    }

    static func parseIPv4(_ s: String) -> in_addr? {
        var a = in_addr()
        return inet_pton(AF_INET, s, &a) == 1 ? a : nil
    }

    static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
