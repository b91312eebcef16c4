import CMosquitto
import CSystem
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
    let messageSink: AsyncStream<MQTTMessage>.Continuation
    let eventSink: AsyncStream<MQTTConnectionEvent>.Continuation
    private let clock = ContinuousClock()
    /// Bumped after every publish, subscribe, unsubscribe and disconnect queued from another thread
    /// (and on stop), so the loop's `poll` returns and writes at once instead of at its timeout.
    private let wakeFD: Int32 = escrow_eventfd()

    init(options: MQTTOptions, messageSink: AsyncStream<MQTTMessage>.Continuation,
         eventSink: AsyncStream<MQTTConnectionEvent>.Continuation) throws {
        _ = MosquittoLibrary.initialised
        guard let handle = mosquitto_new(options.clientID, options.cleanSession, nil) else {
            let saved = errno
            throw MQTTError(kind: saved == EINVAL ? .invalidArgument : .library, operation: "mosquitto_new",
                            code: MOSQ_ERR_ERRNO.rawValue,
                            message: saved == EINVAL ? "invalid client id (an empty id requires cleanSession)"
                                                     : String(cString: strerror(saved)))
        }
        self.handle = handle
        self.options = options
        self.messageSink = messageSink
        self.eventSink = eventSink
        mosquitto_user_data_set(handle, Unmanaged.passUnretained(self).toOpaque())
        try configure()
        installCallbacks()
    }

    deinit {
        mosquitto_destroy(handle)
        if wakeFD >= 0 { Glibc.close(wakeFD) }
    }

    /// Makes the loop thread's `poll` return now (it then writes what was queued).
    func wake() {
        guard wakeFD >= 0 else { return }
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    // MARK: Setup

    private func check(_ operation: String, _ rc: Int32) throws {
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            throw MQTTError.library(operation, rc, errno: errno, tls: options.tls != nil)
        }
    }

    private func configure() throws {
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

    private static func connection(_ obj: UnsafeMutableRawPointer?) -> MosquittoConnection {
        Unmanaged<MosquittoConnection>.fromOpaque(obj!).takeUnretainedValue()
    }

    private func installCallbacks() {
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

    private func didConnect(rc: Int32, flags: Int32) {
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
        eventSink.yield(.connected(sessionPresent: sessionPresent))
        waiter?.resume(returning: .success(sessionPresent))
    }

    private func didDisconnect(rc: Int32, errno saved: Int32) {
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
            eventSink.yield(.disconnected(reason: reason))
        }
    }

    private func didPublish(mid: Int32, reason: Int32) {
        guard let waiter = state.withLock({ $0.publishWaiters.removeValue(forKey: mid) }) else { return }
        if reason >= 0x80 {
            waiter.done(.failure(.puback(reason, topic: waiter.topic)))
        } else {
            waiter.done(.success(()))
        }
    }

    private func didReceive(_ message: mosquitto_message, _ props: OpaquePointer?) {
        let topic = String(cString: message.topic)
        let payload: [UInt8] = message.payload.map {
            Array(UnsafeRawBufferPointer(start: $0, count: Int(message.payloadlen)))
        } ?? []
        let m = MQTTMessage(topic: topic, payload: payload,
                            qos: QoS(rawValue: UInt8(clamping: message.qos)) ?? .atLeastOnce,
                            retain: message.retain, properties: Self.readProperties(props))
        if let consumer = inlineConsumer.withLock({ $0 }), consumer.consume(m) { return }
        messageSink.yield(m)
    }

    /// Sees each message on the loop thread before it is queued on `messages`; a message it
    /// returns true for is not queued. See `MQTTClient.consumeInline(_:)`. (A class holds the
    /// closure: kept directly in the Mutex, the closure's reabstraction thunks called each other
    /// without end in this toolchain, a stack overflow on the first message.)
    final class InlineConsumer: Sendable {
        let consume: @Sendable (MQTTMessage) -> Bool
        init(_ consume: @escaping @Sendable (MQTTMessage) -> Bool) { self.consume = consume }
    }
    let inlineConsumer = Mutex<InlineConsumer?>(nil)

    private func didSubscribe(mid: Int32, granted: [Int]) {
        state.withLock { $0.subscribeWaiters.removeValue(forKey: mid) }?.resume(returning: .success(granted))
    }

    private func didUnsubscribe(mid: Int32) {
        state.withLock { $0.unsubscribeWaiters.removeValue(forKey: mid) }?.resume(returning: .success(()))
    }

    // MARK: Properties

    static func readProperties(_ props: OpaquePointer?) -> MQTTProperties {
        guard let props else { return MQTTProperties() }
        var responseTopic: String?, correlationData: [UInt8]?, userProperties: [(String, String)] = []
        var text: UnsafeMutablePointer<CChar>?
        if mosquitto_property_read_string(props, Int32(MQTT_PROP_RESPONSE_TOPIC.rawValue), &text, false) != nil,
           let text {
            responseTopic = String(cString: text)
            free(text)
        }
        var data: UnsafeMutableRawPointer?
        var length: UInt16 = 0
        if mosquitto_property_read_binary(props, Int32(MQTT_PROP_CORRELATION_DATA.rawValue), &data, &length, false) != nil {
            correlationData = data.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(length))) } ?? []
            free(data)
        }
        var cursor: OpaquePointer? = props
        var skipFirst = false
        while let current = cursor {
            var name: UnsafeMutablePointer<CChar>?
            var value: UnsafeMutablePointer<CChar>?
            cursor = mosquitto_property_read_string_pair(current, Int32(MQTT_PROP_USER_PROPERTY.rawValue),
                                                         &name, &value, skipFirst)
            if cursor != nil, let name, let value {
                userProperties.append((String(cString: name), String(cString: value)))
            }
            free(name)
            free(value)
            skipFirst = true
        }
        return MQTTProperties(responseTopic: responseTopic, correlationData: correlationData, userProperties: userProperties)
    }

    /// Builds a libmosquitto property list (caller frees with `mosquitto_property_free_all`).
    static func makeProperties(_ properties: MQTTProperties) throws -> OpaquePointer? {
        var list: OpaquePointer?
        func check(_ rc: Int32, _ what: String) throws {
            guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                mosquitto_property_free_all(&list)
                throw MQTTError.library("add MQTT 5 property \(what)", rc)
            }
        }
        if let topic = properties.responseTopic {
            try check(mosquitto_property_add_string(&list, Int32(MQTT_PROP_RESPONSE_TOPIC.rawValue), topic), "response topic")
        }
        if let data = properties.correlationData {
            guard data.count <= 65535 else { throw MQTTError.invalid("publish", "correlation data exceeds 65535 bytes") }
            let rc = data.withUnsafeBytes {
                mosquitto_property_add_binary(&list, Int32(MQTT_PROP_CORRELATION_DATA.rawValue), $0.baseAddress, UInt16($0.count))
            }
            try check(rc, "correlation data")
        }
        for (name, value) in properties.userProperties {
            try check(mosquitto_property_add_string_pair(&list, Int32(MQTT_PROP_USER_PROPERTY.rawValue), name, value),
                      "user property \(name)")
        }
        return list
    }

    // MARK: Operations (any thread)

    /// Starts the first connection; resumes after CONNACK (sessionPresent) or with the failure.
    func connect(timeout: Duration) async throws -> Bool {
        try state.withLock { state in
            switch state.phase {
            case .idle:
                state.phase = .connecting
                state.stopRequested = false
                state.lastFailure = nil
                state.reconnectAttempt = 0
            case .connecting, .connected, .reconnecting:
                throw MQTTError.invalid("connect", "already connected or connecting")
            case .closing, .closed:
                throw MQTTError.disconnected("connect", "this client was disconnected; create a new MQTTClient")
            }
        }
        let timeoutTask = Task { [weak self] in
            try await Task.sleep(for: timeout)
            self?.failConnect(MQTTError(kind: .timeout, operation: "connect to \(self?.options.host ?? ""):\(self?.options.port ?? 0)",
                                        code: MOSQ_ERR_TIMEOUT.rawValue,
                                        message: "no CONNACK within \(timeout); is the broker up and the port right?"))
        }
        defer { timeoutTask.cancel() }
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<Bool, MQTTError>, Never>) in
                state.withLock { $0.connectWaiter = continuation }
                let rc = mosquitto_connect_async(handle, options.host, Int32(options.port), Int32(options.keepAlive))
                if rc != MOSQ_ERR_SUCCESS.rawValue {
                    failConnect(.library("connect to \(options.host):\(options.port)", rc, errno: errno, connecting: true,
                                         tls: options.tls != nil))
                    return
                }
                startLoopThread()
            }
        } onCancel: {
            failConnect(MQTTError(kind: .timeout, operation: "connect", code: MOSQ_ERR_TIMEOUT.rawValue,
                                  message: "connect was cancelled"))
        }
        switch result {
        case .success(let sessionPresent):
            return sessionPresent
        case .failure(let error):
            state.withLock { $0.stopRequested = true }
            wake()
            await loopExited()
            state.withLock { state in
                if state.phase == .connecting || state.phase == .connected { state.phase = .idle }
            }
            throw error
        }
    }

    private func failConnect(_ error: MQTTError) {
        let waiter = state.withLock { state in
            defer { state.connectWaiter = nil }
            return state.connectWaiter
        }
        waiter?.resume(returning: .failure(error))
    }

    /// Queues a PUBLISH; with `await` the result arrives with PUBACK (QoS 1).
    func publish(_ topic: String, _ payload: [UInt8], qos: QoS, retain: Bool, properties: MQTTProperties,
                 awaitAck: Bool) async throws -> Int32 {
        // The await returns only after the closure has returned, so `mid` is set by then.
        let mid = Mutex<Int32>(0)
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<Void, MQTTError>, Never>) in
            let id = publishReporting(topic, payload, qos: qos, retain: retain, properties: properties, awaitAck: awaitAck) {
                continuation.resume(returning: $0)
            }
            mid.withLock { $0 = id }
        }
        try result.get()
        return mid.withLock { $0 }
    }

    /// Publishes and reports the outcome through `done` (QoS 1 with `awaitAck`: at PUBACK; otherwise once
    /// queued), exactly once, on whichever thread learns it. While the connection is down the message is
    /// held and sent after the next CONNACK. Returns the message id (0 when held or refused).
    @discardableResult
    func publishReporting(_ topic: String, _ payload: [UInt8], qos: QoS, retain: Bool, properties: MQTTProperties,
                          awaitAck: Bool = true, done: @escaping PublishCompletion) -> Int32 {
        let operation = "publish to \(topic)"
        var props: OpaquePointer?
        do { props = options.version == .v5 ? try Self.makeProperties(properties) : nil } catch {
            done(.failure(error as? MQTTError ?? .invalid(operation, "\(error)")))
            return 0
        }
        defer { if props != nil { mosquitto_property_free_all(&props) } }
        var mid: Int32 = 0
        // The lock is held across mosquitto_publish_v5 so PUBACK cannot overtake the waiter's registration.
        state.withLock { state in
            if let error = Self.unusable(state.phase, operation) {
                done(.failure(error))
                return
            }
            let rc = payload.withUnsafeBytes { bytes in
                mosquitto_publish_v5(handle, &mid, topic, Int32(bytes.count), bytes.baseAddress,
                                     Int32(qos.rawValue), retain, props)
            }
            if rc == MOSQ_ERR_NO_CONN.rawValue && (state.phase == .reconnecting || state.phase == .connecting) {
                mid = 0
                state.offline.append(OfflinePublish(topic: topic, payload: payload, qos: qos, retain: retain,
                                                    properties: properties, done: done))
            } else if rc != MOSQ_ERR_SUCCESS.rawValue {
                done(.failure(.library(operation, rc, errno: errno)))
            } else if awaitAck && qos == .atLeastOnce {
                state.publishWaiters[mid] = (topic, done)
            } else {
                done(.success(()))
            }
        }
        wake()
        return mid
    }

    /// Sends a publish queued while offline (loop thread, inside the CONNACK callback, state locked).
    private func sendOffline(_ item: OfflinePublish, state: inout State) {
        let operation = "publish to \(item.topic)"
        var props: OpaquePointer?
        do {
            props = options.version == .v5 ? try Self.makeProperties(item.properties) : nil
        } catch {
            item.done(.failure(error as? MQTTError ?? .invalid(operation, "\(error)")))
            return
        }
        defer { if props != nil { mosquitto_property_free_all(&props) } }
        var mid: Int32 = 0
        let rc = item.payload.withUnsafeBytes { bytes in
            mosquitto_publish_v5(handle, &mid, item.topic, Int32(bytes.count), bytes.baseAddress,
                                 Int32(item.qos.rawValue), item.retain, props)
        }
        if rc != MOSQ_ERR_SUCCESS.rawValue {
            item.done(.failure(.library(operation, rc, errno: errno)))
        } else if item.qos == .atLeastOnce {
            state.publishWaiters[mid] = (item.topic, item.done)
        } else {
            item.done(.success(()))
        }
    }

    /// Awaited publishes not yet acknowledged (in flight or queued while offline).
    var pendingPublishCount: Int { state.withLock { $0.publishWaiters.count + $0.offline.count } }

    /// Fire-and-forget publish: returns the message id once libmosquitto has queued it.
    func publishNoWait(_ topic: String, _ payload: [UInt8], qos: QoS, retain: Bool,
                       properties: MQTTProperties) throws -> Int32 {
        let operation = "publish to \(topic)"
        if let error = state.withLock({ Self.unusable($0.phase, operation) }) { throw error }
        var props = options.version == .v5 ? try Self.makeProperties(properties) : nil
        defer { if props != nil { mosquitto_property_free_all(&props) } }
        var mid: Int32 = 0
        let rc = payload.withUnsafeBytes { bytes in
            mosquitto_publish_v5(handle, &mid, topic, Int32(bytes.count), bytes.baseAddress,
                                 Int32(qos.rawValue), retain, props)
        }
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw MQTTError.library(operation, rc, errno: errno) }
        wake()
        return mid
    }

    private static func unusable(_ phase: Phase, _ operation: String) -> MQTTError? {
        switch phase {
        case .connecting, .connected, .reconnecting: return nil
        case .idle: return .disconnected(operation, "not connected; call connect() first")
        case .closing, .closed: return .disconnected(operation, "the client was disconnected")
        }
    }

    /// Sends SUBSCRIBE for `filters` at one QoS; returns the libmosquitto rc. Call with or without the lock
    /// (it takes none).
    private func sendSubscribe(_ filters: [String], qos: QoS, mid: UnsafeMutablePointer<Int32>?) -> Int32 {
        defer { wake() }
        return withCStrings(filters) { pointers in
            mosquitto_subscribe_multiple(handle, mid, Int32(filters.count), pointers, Int32(qos.rawValue), 0, nil)
        }
    }

    func subscribe(_ filters: [(String, QoS)]) async throws -> [Int] {
        guard !filters.isEmpty else { return [] }
        var granted = [Int](repeating: 0x80, count: filters.count)
        for qos in [QoS.atMostOnce, .atLeastOnce] {
            let indices = filters.indices.filter { filters[$0].1 == qos }
            guard !indices.isEmpty else { continue }
            let group = indices.map { filters[$0].0 }
            let operation = "subscribe to \(group.joined(separator: ", "))"
            let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<[Int], MQTTError>, Never>) in
                state.withLock { state in
                    if let error = Self.unusable(state.phase, operation) {
                        continuation.resume(returning: .failure(error))
                        return
                    }
                    var mid: Int32 = 0
                    let rc = sendSubscribe(group, qos: qos, mid: &mid)
                    guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                        continuation.resume(returning: .failure(.library(operation, rc, errno: errno)))
                        return
                    }
                    for filter in group {
                        if let i = state.subscriptions.firstIndex(where: { $0.filter == filter }) {
                            state.subscriptions[i].qos = qos
                        } else {
                            state.subscriptions.append((filter, qos))
                        }
                    }
                    state.subscribeWaiters[mid] = continuation
                }
            }
            let codes = try result.get()
            for (offset, index) in indices.enumerated() where offset < codes.count { granted[index] = codes[offset] }
        }
        return granted
    }

    func unsubscribe(_ filters: [String]) async throws {
        guard !filters.isEmpty else { return }
        let operation = "unsubscribe from \(filters.joined(separator: ", "))"
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<Void, MQTTError>, Never>) in
            state.withLock { state in
                state.subscriptions.removeAll { filters.contains($0.filter) }
                if let error = Self.unusable(state.phase, operation) {
                    continuation.resume(returning: .failure(error))
                    return
                }
                var mid: Int32 = 0
                let rc = withCStrings(filters) { pointers in
                    mosquitto_unsubscribe_multiple(handle, &mid, Int32(filters.count), pointers, nil)
                }
                guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                    continuation.resume(returning: .failure(.library(operation, rc, errno: errno)))
                    return
                }
                state.unsubscribeWaiters[mid] = continuation
            }
            wake()
        }
        try result.get()
    }

    var isConnected: Bool { state.withLock { $0.phase == .connected } }

    /// Sends DISCONNECT (no will), waits (bounded) for the loop thread, fails every waiter, finishes streams.
    func disconnect() async {
        guard beginClosing() else { return }
        await loopExited()
        close()
    }

    /// From the client's deinit: cannot wait; the loop thread finishes the DISCONNECT and exits on its own.
    func shutdownWithoutWaiting() {
        guard beginClosing() else { return }
        close()
    }

    /// Marks the connection closing (the loop thread gets 2 s to finish) and sends DISCONNECT;
    /// false if it is already closed.
    private func beginClosing() -> Bool {
        let proceed = state.withLock { state -> Bool in
            if state.phase == .closed { return false }
            state.phase = .closing
            state.closingDeadline = clock.now.advanced(by: .seconds(2))
            return true
        }
        guard proceed else { return false }
        if mosquitto_disconnect_v5(handle, 0, nil) != MOSQ_ERR_SUCCESS.rawValue {
            state.withLock { $0.stopRequested = true }
        }
        wake()
        return true
    }

    /// Terminal: fails all waiters with `.disconnected`, finishes both streams.
    private func close() {
        let state = self.state.withLock { state in
            let copy = (connectWaiter: state.connectWaiter, publishWaiters: state.publishWaiters, offline: state.offline,
                        subscribeWaiters: state.subscribeWaiters, unsubscribeWaiters: state.unsubscribeWaiters)
            state.phase = .closed
            state.connectWaiter = nil
            state.publishWaiters = [:]
            state.offline = []
            state.subscribeWaiters = [:]
            state.unsubscribeWaiters = [:]
            return copy
        }
        let error = MQTTError.disconnected("wait for broker reply", "the client was disconnected before the broker replied")
        state.connectWaiter?.resume(returning: .failure(error))
        for waiter in state.publishWaiters.values { waiter.done(.failure(error)) }
        for item in state.offline { item.done(.failure(error)) }
        for waiter in state.subscribeWaiters.values { waiter.resume(returning: .failure(error)) }
        for waiter in state.unsubscribeWaiters.values { waiter.resume(returning: .failure(error)) }
        messageSink.finish()
        eventSink.finish()
    }

    /// Test hook: drops the TCP connection without DISCONNECT, as if the network failed (the will fires).
    func dropConnectionForTesting() {
        let fd = mosquitto_socket(handle)
        if fd >= 0 { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }

    // MARK: Loop thread

    private func startLoopThread() {
        state.withLock { $0.loopRunning = true }
        let thread = Thread { [self] in runLoop() }
        thread.name = "mqtt-loop-\(options.clientID)"
        thread.start()
    }

    private func shouldStop() -> Bool {
        state.withLock { state in
            state.stopRequested || state.closingDeadline.map { clock.now >= $0 } ?? false
        }
    }

    private func runLoop() {
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
            guard sleep(for: delay) else { break }
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
    private func connectAttemptRefused() -> Bool {
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
    private func abandonStalledReconnect() {
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
    private func connectionDown(rc: Int32, errno saved: Int32) -> Duration? {
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
            eventSink.yield(.disconnected(reason: "automatic reconnect is off: \(failure.message)"))
            close()
            return nil
        case .retry(let attempt, let delay, let subs, let unsubs):
            let error = MQTTError.disconnected("wait for SUBACK/UNSUBACK",
                                               "connection lost before the broker replied; remembered subscriptions are restored on reconnect")
            for waiter in subs { waiter.resume(returning: .failure(error)) }
            for waiter in unsubs { waiter.resume(returning: .failure(error)) }
            eventSink.yield(.reconnecting(attempt: attempt, delay: delay))
            return delay
        }
    }

    /// One turn of the network loop, as `mosquitto_loop` does it but with `poll`: wait up to
    /// `timeoutMs` for the socket (readable, or writable when libmosquitto has output) or a wake-up,
    /// then read, write and run the keepalive. Returns a libmosquitto code.
    private func loopOnce(timeoutMs: Int32) -> Int32 {
        let sock = mosquitto_socket(handle)
        guard sock >= 0 else { return MOSQ_ERR_NO_CONN.rawValue }
        let wantWrite = mosquitto_want_write(handle)
        var fds = [pollfd(fd: sock, events: Int16(POLLIN) | (wantWrite ? Int16(POLLOUT) : 0), revents: 0),
                   pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
        let n = poll(&fds, wakeFD >= 0 ? 2 : 1, timeoutMs)
        if n < 0 { return errno == EINTR ? MOSQ_ERR_SUCCESS.rawValue : MOSQ_ERR_ERRNO.rawValue }
        let woken = wakeFD >= 0 && fds[1].revents & Int16(POLLIN) != 0
        if woken { var count: UInt64 = 0; _ = Glibc.read(wakeFD, &count, 8) }
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
            if writable && mosquitto_want_write(handle) {
                var idle = pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)
                _ = poll(&idle, wakeFD >= 0 ? 1 : 0, 2)
            }
        }
        return mosquitto_loop_misc(handle)
    }

    /// Waits out a reconnect delay on the wake-up descriptor, so disconnect() and deinit end it at
    /// once; false if asked to stop.
    private func sleep(for delay: Duration) -> Bool {
        let deadline = clock.now.advanced(by: delay)
        while clock.now < deadline {
            if shouldStop() { return false }
            let remaining = Backoff.nanoseconds(clock.now.duration(to: deadline))
            let ms = Int32(clamping: max(1, min(remaining / 1_000_000, 1_000)))
            if wakeFD >= 0 {
                var fd = pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)
                if poll(&fd, 1, ms) > 0 { var count: UInt64 = 0; _ = Glibc.read(wakeFD, &count, 8) }
            } else {
                usleep(useconds_t(ms) * 1000)
            }
        }
        return !shouldStop()
    }

    private func loopExited() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let running = state.withLock { state -> Bool in
                if state.loopRunning { state.loopExitWaiters.append(continuation) }
                return state.loopRunning
            }
            if !running { continuation.resume() }
        }
    }
}

/// Calls `body` with a C array of C strings valid for the duration of the call.
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    let pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    defer { pointers.forEach { free($0) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
