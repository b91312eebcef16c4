import CMosquitto
import POSIX
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The loop thread: the network loop, reconnects with backoff, and the decisions after a lost connection.
extension MosquittoConnection {
    // MARK: Loop thread

    func startLoopThread() {
        state.withLock { $0.loopRunning = true }
        let thread = Thread { [self] in runLoop() }
        thread.name = "mqtt-loop-\(options.clientID)"
        thread.start()
    }

    func shouldStop() -> Bool {
        state.withLock { state in
            state.stopRequested || state.closingDeadline.map { clock.now >= $0 } ?? false
        }
    }

    func runLoop() {
        while !shouldStop() {
            var rc = loopOnce(timeoutMs: 100)
            var saved = errno
            if rc == MOSQ_ERR_SUCCESS.rawValue {
                guard connectAttemptRefused() else {
                    abandonStalledReconnect()
                    continue
                }
                rc = MOSQ_ERR_ERRNO.rawValue
                saved = ECONNREFUSED
            }
            guard let delay = connectionDown(rc: rc, errno: saved) else { break }
            guard waitOut(delay) else { break }
            state.withLock { $0.reconnectStartedAt = clock.now; $0.hangUpStreak = 0 }
            let reconnect = mosquitto_reconnect_async(handle)
            if reconnect != MOSQ_ERR_SUCCESS.rawValue {
                let saved = errno
                state.withLock { state in
                    state.lastFailure = .library("reconnect to \(options.host):\(options.port)", reconnect,
                                                 errno: saved, connecting: true, tls: options.tls != nil)
                }
            }
        }
        let waiters = state.withLock { state in
            state.loopRunning = false
            defer { state.loopExitWaiters = [] }
            return state.loopExitWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// A TLS connect whose TCP connection was refused: libmosquitto 2.0.11 reads the refusal as
    /// `SSL_ERROR_SYSCALL`, keeps `want_connect` and reports success from every `mosquitto_loop`
    /// (spinning a core) until the keepalive expires. The socket then polls `POLLHUP` with no TCP
    /// connection behind it, which a connect still in progress never does.
    ///
    /// A broker that refuses the TLS handshake (an untrusted certificate) also leaves a hung-up socket
    /// for a moment, with its alert still to be read; libmosquitto reads it at the next loop and reports
    /// the TLS failure itself. So the hang-up counts only once seen on three loops in a row.
    /// Connected (the usual case, once per loop): one lock, no system call.
    func connectAttemptRefused() -> Bool {
        guard state.withLock({ $0.phase == .connecting || $0.phase == .reconnecting }) else { return false }
        let fd = mosquitto_socket(handle)
        var probe = pollfd(fd: fd, events: 0, revents: 0)
        let hungUp = fd >= 0 && poll(&probe, 1, 0) == 1 && probe.revents & Int16(POLLHUP | POLLERR) != 0
        return state.withLock { state in
            state.hangUpStreak = hungUp ? state.hangUpStreak + 1 : 0
            guard state.hangUpStreak >= 3 else { return false }
            state.hangUpStreak = 0
            state.lastFailure = .library("connection to \(options.host):\(options.port)", MOSQ_ERR_ERRNO.rawValue, errno: ECONNREFUSED,
                                         connecting: true, tls: options.tls != nil)
            return true
        }
    }

    /// A reconnect whose TCP connection opened but whose CONNACK never came (a broker caught mid
    /// start-up, a half-open path) would otherwise wait a whole keepalive: drop it and back off again.
    func abandonStalledReconnect() {
        let stalled = state.withLock { state -> Bool in
            guard state.phase == .reconnecting, let started = state.reconnectStartedAt else { return false }
            guard clock.now - started > options.connectTimeout else { return false }
            state.reconnectStartedAt = nil
            state.lastFailure = MQTTError(kind: .timeout, operation: "reconnect to \(options.host):\(options.port)", code: 0, message: "no CONNACK within \(options.connectTimeout)")
            return true
        }
        if stalled {
            let fd = mosquitto_socket(handle)
            if fd >= 0 { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    /// Decides what follows a dead connection: a reconnect delay, or nil to end the loop thread.
    func connectionDown(rc: Int32, errno saved: Int32) -> Duration? {
        enum Outcome { case stop, stopAndClose(MQTTError), retry(Int, Duration, [CheckedContinuation<Result<[Int], MQTTError>, Never>], [CheckedContinuation<Result<Void, MQTTError>, Never>]) }
        let outcome = state.withLock { state -> Outcome in
            let failure = state.lastFailure ?? .library("connection to \(options.host):\(options.port)", rc, errno: saved,
                                                        connecting: state.phase != .connected, tls: options.tls != nil)
            switch state.phase {
            case .idle, .closing, .closed:
                return .stop
            case .connecting:
                let waiter = state.connectWaiter
                state.connectWaiter = nil
                waiter?.resume(returning: .failure(failure))
                return .stop
            case .connected, .reconnecting:
                if state.stopRequested { return .stop }
                guard let backoff = options.reconnect else { return .stopAndClose(failure) }
                state.phase = .reconnecting
                state.lastFailure = nil
                state.reconnectAttempt += 1
                let delay = backoff.delay(attempt: state.reconnectAttempt - 1, random: &state.random)
                // SUBSCRIBE/UNSUBSCRIBE are not resent by libmosquitto; remembered filters are re-sent on reconnect.
                let subs = Array(state.subscribeWaiters.values)
                let unsubs = Array(state.unsubscribeWaiters.values)
                state.subscribeWaiters = [:]
                state.unsubscribeWaiters = [:]
                return .retry(state.reconnectAttempt, delay, subs, unsubs)
            }
        }
        switch outcome {
        case .stop:
            return nil
        case .stopAndClose(let failure):
            sink.yield(.event(.disconnected(reason: "automatic reconnect is off: \(failure.message)")))
            close()
            return nil
        case .retry(let attempt, let delay, let subs, let unsubs):
            let error = MQTTError.disconnected("wait for SUBACK/UNSUBACK",
                                               "connection lost before the broker replied; remembered subscriptions are restored on reconnect")
            for waiter in subs { waiter.resume(returning: .failure(error)) }
            for waiter in unsubs { waiter.resume(returning: .failure(error)) }
            sink.yield(.event(.reconnecting(attempt: attempt, delay: delay)))
            return delay
        }
    }

    /// One turn of the network loop, as `mosquitto_loop` does it but with `poll`: wait up to
    /// `timeoutMs` for the socket (readable, or writable when libmosquitto has output) or a wake-up,
    /// then read, write and run the keepalive. Returns a libmosquitto code.
    func loopOnce(timeoutMs: Int32) -> Int32 {
        let sock = mosquitto_socket(handle)
        guard sock >= 0 else { return MOSQ_ERR_NO_CONN.rawValue }
        let wantWrite = mosquitto_want_write(handle)
        var fds = [pollfd(fd: sock, events: Int16(POLLIN) | (wantWrite ? Int16(POLLOUT) : 0), revents: 0),
                   pollfd(fd: wakeSignal.fd, events: Int16(POLLIN), revents: 0)]
        let n = poll(&fds, 2, timeoutMs)
        if n < 0 { return errno == EINTR ? MOSQ_ERR_SUCCESS.rawValue : MOSQ_ERR_ERRNO.rawValue }
        let woken = fds[1].revents & Int16(POLLIN) != 0
        if woken { wakeSignal.drain() }
        let events = fds[0].revents
        let writable = events & Int16(POLLOUT) != 0
        // Readable, hung up, or writable while a TLS handshake may be in progress: mosquitto_loop_read
        // is also what advances the handshake (it runs the TLS connect step while one is pending).
        if events & Int16(POLLIN | POLLHUP | POLLERR) != 0 || writable {
            // mosquitto_loop_read reads one QoS 0 packet per call: read on while the socket has
            // more (until it reports EAGAIN), so a flood costs no poll and no loop_misc per message.
            for _ in 0..<256 {
                errno = 0
                let rc = mosquitto_loop_read(handle, 1)
                if rc != MOSQ_ERR_SUCCESS.rawValue || mosquitto_socket(handle) < 0 { return rc }
                if errno == EAGAIN || errno == EWOULDBLOCK || !(events & Int16(POLLIN) != 0) { break }
            }
        }
        if (writable || woken) && mosquitto_want_write(handle) {
            let rc = mosquitto_loop_write(handle, 1)
            if rc != MOSQ_ERR_SUCCESS.rawValue || mosquitto_socket(handle) < 0 { return rc }
            // Output still queued on a writable socket means libmosquitto will not write yet (TCP or
            // TLS connect pending): do not spin on POLLOUT, look again shortly.
            if writable && mosquitto_want_write(handle) { wakeSignal.wait(milliseconds: 2, drain: false) }
        }
        return mosquitto_loop_misc(handle)
    }

    /// Waits out a reconnect delay on the wake-up descriptor, so disconnect() and deinit end it at
    /// once; false if asked to stop.
    func waitOut(_ delay: Duration) -> Bool {
        let deadline = clock.now.advanced(by: delay)
        while clock.now < deadline {
            if shouldStop() { return false }
            let remaining = Backoff.nanoseconds(clock.now.duration(to: deadline))
            wakeSignal.wait(milliseconds: Int32(clamping: max(1, min(remaining / 1_000_000, 1_000))))
        }
        return !shouldStop()
    }

    func loopExited() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let running = state.withLock { state -> Bool in
                if state.loopRunning { state.loopExitWaiters.append(continuation) }
                return state.loopRunning
            }
            if !running { continuation.resume() }
        }
    }
}
