import CMosquitto
import POSIX
import Foundation
import Synchronization

/// `mosquitto_lib_init` exactly once per process, on first use.
enum MosquittoLibrary {
    static let initialised: Int32 = mosquitto_lib_init()
}

/// Owns one `mosquitto*` (destroyed in deinit), runs its network loop on a dedicated thread, and turns
/// libmosquitto callbacks into continuation resumptions and stream elements.
///
/// `@unchecked Sendable` is safe because:
/// - all Swift state is in `state` (a `Mutex`); the continuations are only yielded to / resumed;
/// - option setters and `mosquitto_connect_async` run only while no loop thread exists;
/// - with `mosquitto_threaded_set(true)` libmosquitto locks internally for publish/subscribe/unsubscribe/
///   disconnect from any thread and leaves all socket I/O to the loop thread;
/// - the network loop (`poll` on the socket and a wake-up eventfd, then `mosquitto_loop_read`/
///   `_write`/`_misc`; not `mosquitto_loop`, whose `select()` refuses any socket numbered 1024 or
///   more, which a busy process reaches), `mosquitto_reconnect_async` and every callback run only on
///   the loop thread, which
///   retains this object until it exits, so `obj` (an unretained pointer to self) is valid in callbacks
///   and the handle is destroyed only after the loop thread is gone.
final class MosquittoConnection: @unchecked Sendable {
    enum Phase: Equatable {
        /// Not connected and no loop thread; `connect()` allowed.
        case idle
        /// First connect in progress.
        case connecting
        case connected
        /// Connection lost, automatic reconnect in progress.
        case reconnecting
        /// `disconnect()` in progress.
        case closing
        /// Terminal: streams finished.
        case closed
    }

    struct State {
        var phase: Phase = .idle
        var connectWaiter: CheckedContinuation<Result<Bool, MQTTError>, Never>?
        var publishWaiters: [Int32: (topic: String, done: PublishCompletion)] = [:]
        /// Awaited publishes made while the connection was down; sent (in order) right after the next CONNACK.
        var offline: [OfflinePublish] = []
        var subscribeWaiters: [Int32: CheckedContinuation<Result<[Int], MQTTError>, Never>] = [:]
        var unsubscribeWaiters: [Int32: CheckedContinuation<Result<Void, MQTTError>, Never>] = [:]
        /// Remembered subscriptions, in first-subscribed order; re-sent after every reconnect.
        var subscriptions: [(filter: String, qos: QoS)] = []
        var loopRunning = false
        var stopRequested = false
        var closingDeadline: ContinuousClock.Instant?
        var loopExitWaiters: [CheckedContinuation<Void, Never>] = []
        var reconnectAttempt = 0
        /// When the pending automatic reconnect was started; bounded by `options.connectTimeout`.
        var reconnectStartedAt: ContinuousClock.Instant?
        /// Why the connection last failed (connect failures are reported from this).
        var lastFailure: MQTTError?
        /// Consecutive loops that found the connecting socket hung up (see `connectAttemptRefused`).
        var hangUpStreak = 0
        var random = SystemRandomNumberGenerator()
    }

    typealias PublishCompletion = @Sendable (Result<Void, MQTTError>) -> Void

    struct OfflinePublish {
        var topic: String
        var payload: [UInt8]
        var qos: QoS
        var retain: Bool
        var properties: MQTTProperties
        var done: PublishCompletion
    }

    let handle: OpaquePointer
    let options: MQTTOptions
    let state = Mutex(State())
    /// The one ordered stream: messages and connection events as the loop thread saw them.
    let sink: AsyncStream<MQTTDelivery>.Continuation
    let clock = ContinuousClock()
    /// Bumped after every publish, subscribe, unsubscribe and disconnect queued from another thread
    /// (and on stop), so the loop's `poll` returns and writes at once instead of at its timeout.
    let wakeSignal: WakeSignal

    init(options: MQTTOptions, sink: AsyncStream<MQTTDelivery>.Continuation) throws {
        _ = MosquittoLibrary.initialised
        guard let handle = mosquitto_new(options.clientID, options.cleanSession, nil) else {
            let saved = errno
            throw MQTTError(kind: saved == EINVAL ? .invalidArgument : .library, operation: "mosquitto_new",
                            code: MOSQ_ERR_ERRNO.rawValue,
                            message: saved == EINVAL ? "invalid client id (an empty id requires cleanSession)"
                                                     : String(cString: strerror(saved)))
        }
        do { wakeSignal = try WakeSignal() } catch {
            mosquitto_destroy(handle)
            throw MQTTError(kind: .library, operation: "eventfd", code: MOSQ_ERR_ERRNO.rawValue, message: "\(error)")
        }
        self.handle = handle
        self.options = options
        self.sink = sink
        mosquitto_user_data_set(handle, Unmanaged.passUnretained(self).toOpaque())
        try configure()
        installCallbacks()
    }

    deinit {
        mosquitto_destroy(handle)
    }

    /// Makes the loop thread's `poll` return now (it then writes what was queued).
    func wake() { wakeSignal.wake() }

    // MARK: Setup

    func check(_ operation: String, _ rc: Int32) throws {
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            throw MQTTError.library(operation, rc, errno: errno, tls: options.tls != nil)
        }
    }

    func configure() throws {
        try check("mosquitto_threaded_set", mosquitto_threaded_set(handle, true))
        let protocolVersion = options.version == .v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311
        try check("set protocol version", mosquitto_int_option(handle, MOSQ_OPT_PROTOCOL_VERSION, protocolVersion))
        let inflight = Int32(min(max(options.maxInflight, 1), 65535))
        try check("set maxInflight", mosquitto_int_option(handle, MOSQ_OPT_SEND_MAXIMUM, inflight))
        // Small request/reply packets: Nagle plus the peer's delayed ACK would hold each for ~40 ms.
        try check("set TCP_NODELAY", mosquitto_int_option(handle, MOSQ_OPT_TCP_NODELAY, 1))
        if options.username != nil || options.password != nil {
            try check("mosquitto_username_pw_set", mosquitto_username_pw_set(handle, options.username, options.password))
        }
        if let will = options.will {
            let rc = will.payload.withUnsafeBytes { bytes in
                mosquitto_will_set(handle, will.topic, Int32(bytes.count), bytes.baseAddress,
                                   Int32(will.qos.rawValue), will.retain)
            }
            try check("mosquitto_will_set(\(will.topic))", rc)
        }
        if let tls = options.tls {
            let rc = mosquitto_tls_set(handle, tls.caFile, nil, tls.certFile, tls.keyFile, nil)
            guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                let base = MQTTError.library("mosquitto_tls_set", rc, errno: errno)
                throw MQTTError(kind: base.kind, operation: base.operation, code: rc,
                                message: base.message + " (caFile \(tls.caFile), certFile \(tls.certFile ?? "-"), keyFile \(tls.keyFile ?? "-"): files must exist and be readable; cert and key come together)")
            }
            try check("mosquitto_tls_insecure_set", mosquitto_tls_insecure_set(handle, false))
        }
    }

    static func connection(_ obj: UnsafeMutableRawPointer?) -> MosquittoConnection {
        Unmanaged<MosquittoConnection>.fromOpaque(obj!).takeUnretainedValue()
    }

    func installCallbacks() {
        mosquitto_connect_v5_callback_set(handle) { _, obj, rc, flags, _ in
            MosquittoConnection.connection(obj).didConnect(rc: rc, flags: flags)
        }
        mosquitto_disconnect_v5_callback_set(handle) { _, obj, rc, _ in
            let saved = errno
            MosquittoConnection.connection(obj).didDisconnect(rc: rc, errno: saved)
        }
        mosquitto_publish_v5_callback_set(handle) { _, obj, mid, reason, _ in
            MosquittoConnection.connection(obj).didPublish(mid: mid, reason: reason)
        }
        mosquitto_message_v5_callback_set(handle) { _, obj, message, props in
            guard let message else { return }
            MosquittoConnection.connection(obj).didReceive(message.pointee, props)
        }
        mosquitto_subscribe_v5_callback_set(handle) { _, obj, mid, count, granted, _ in
            let codes = granted.map { Array(UnsafeBufferPointer(start: $0, count: Int(count))).map(Int.init) } ?? []
            MosquittoConnection.connection(obj).didSubscribe(mid: mid, granted: codes)
        }
        mosquitto_unsubscribe_v5_callback_set(handle) { _, obj, mid, _ in
            MosquittoConnection.connection(obj).didUnsubscribe(mid: mid)
        }
    }

    // MARK: Callbacks (loop thread)

    func didConnect(rc: Int32, flags: Int32) {
        if rc != 0 {
            let error = MQTTError.connack(rc, version: options.version)
            let waiter = state.withLock { state in
                state.lastFailure = error
                defer { state.connectWaiter = nil }
                return state.connectWaiter
            }
            waiter?.resume(returning: .failure(error))
            return
        }
        let sessionPresent = flags & 1 != 0
        let waiter = state.withLock { state in
            state.phase = state.phase == .closing ? .closing : .connected
            state.reconnectAttempt = 0
            state.reconnectStartedAt = nil
            state.lastFailure = nil
            // Re-subscribe before anyone learns we are connected, so the SUBSCRIBE is queued first.
            for qos in [QoS.atMostOnce, .atLeastOnce] {
                let filters = state.subscriptions.filter { $0.qos == qos }.map(\.filter)
                if !filters.isEmpty { _ = sendSubscribe(filters, qos: qos, mid: nil) }
            }
            let offline = state.offline
            state.offline = []
            for item in offline { sendOffline(item, state: &state) }
            defer { state.connectWaiter = nil }
            return state.connectWaiter
        }
        sink.yield(.event(.connected(sessionPresent: sessionPresent)))
        waiter?.resume(returning: .success(sessionPresent))
    }

    func didDisconnect(rc: Int32, errno saved: Int32) {
        let wasConnected = state.withLock { state in
            let wasConnected = state.phase == .connected
            if rc != 0 {
                let tlsDuringConnect = options.tls != nil && state.phase != .connected
                state.lastFailure = state.lastFailure ?? MQTTError.library(
                    "connection to \(options.host):\(options.port)", rc, errno: saved,
                    connecting: state.phase != .connected, tls: tlsDuringConnect)
            }
            return wasConnected
        }
        if wasConnected {
            let reason = rc == 0 ? "disconnected" : MQTTError.library("connection", rc, errno: saved).message
            sink.yield(.event(.disconnected(reason: reason)))
        }
    }

    func didPublish(mid: Int32, reason: Int32) {
        guard let waiter = state.withLock({ $0.publishWaiters.removeValue(forKey: mid) }) else { return }
        if reason >= 0x80 {
            waiter.done(.failure(.puback(reason, topic: waiter.topic)))
        } else {
            waiter.done(.success(()))
        }
    }

    func didReceive(_ message: mosquitto_message, _ props: OpaquePointer?) {
        let topic = String(cString: message.topic)
        let payload: [UInt8] = message.payload.map {
            Array(UnsafeRawBufferPointer(start: $0, count: Int(message.payloadlen)))
        } ?? []
        let m = MQTTMessage(topic: topic, payload: payload,
                            qos: QoS(rawValue: UInt8(clamping: message.qos)) ?? .atLeastOnce,
                            retain: message.retain, properties: Self.readProperties(props))
        if let consumer = inlineConsumer.withLock({ $0 }), consumer.consume(m) { return }
        sink.yield(.message(m))
    }

    /// Sees each message on the loop thread before it is queued on `deliveries`; a message it
    /// returns true for is not queued. See `MQTTClient.consumeInline(_:)`. (A class holds the
    /// closure: kept directly in the Mutex, the closure's reabstraction thunks called each other
    /// without end in this toolchain, a stack overflow on the first message.)
    final class InlineConsumer: Sendable {
        let consume: @Sendable (MQTTMessage) -> Bool
        init(_ consume: @escaping @Sendable (MQTTMessage) -> Bool) { self.consume = consume }
    }
    let inlineConsumer = Mutex<InlineConsumer?>(nil)

    func didSubscribe(mid: Int32, granted: [Int]) {
        state.withLock { $0.subscribeWaiters.removeValue(forKey: mid) }?.resume(returning: .success(granted))
    }

    func didUnsubscribe(mid: Int32) {
        state.withLock { $0.unsubscribeWaiters.removeValue(forKey: mid) }?.resume(returning: .success(()))
    }
}

/// Calls `body` with a C array of C strings valid for the duration of the call.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    let pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    defer { pointers.forEach { free($0) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
