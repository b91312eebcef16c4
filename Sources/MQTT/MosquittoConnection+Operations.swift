import CMosquitto
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What callers do, from any thread: connect, publish, subscribe, unsubscribe, disconnect.
extension MosquittoConnection {
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

    func failConnect(_ error: MQTTError) {
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
    func sendOffline(_ item: OfflinePublish, state: inout State) {
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

    static func unusable(_ phase: Phase, _ operation: String) -> MQTTError? {
        switch phase {
        case .connecting, .connected, .reconnecting: return nil
        case .idle: return .disconnected(operation, "not connected; call connect() first")
        case .closing, .closed: return .disconnected(operation, "the client was disconnected")
        }
    }

    /// Sends SUBSCRIBE for `filters` at one QoS; returns the libmosquitto rc. Call with or without the lock
    /// (it takes none).
    func sendSubscribe(_ filters: [String], qos: QoS, mid: UnsafeMutablePointer<Int32>?) -> Int32 {
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
    func beginClosing() -> Bool {
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
    func close() {
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
        sink.finish()
    }

    /// Test hook: drops the TCP connection without DISCONNECT, as if the network failed (the will fires).
    func dropConnectionForTesting() {
        let fd = mosquitto_socket(handle)
        if fd >= 0 { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }
}
