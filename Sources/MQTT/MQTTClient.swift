import Synchronization

/// One MQTT connection over libmosquitto with automatic, jittered reconnect.
///
/// Incoming messages and connection events arrive on one ordered stream, `deliveries` (unbounded
/// buffer; keep consuming it); `messages` is the same stream without the events. Subscriptions are remembered and restored after every reconnect. A client is
/// single-use: after `disconnect()` (or a lost connection with `reconnect == nil`) create a new one.
public final class MQTTClient: Sendable {
    public let options: MQTTOptions
    /// Every incoming message and connection event, in the order the network thread saw them: a
    /// reader that acts on both (escrowd re-sends its outbox on `connected`, the agent's state
    /// machine) never sees a message of a connection before that connection's `connected`, or a
    /// message after the `disconnected` that ended its connection. Finishes on `disconnect()`.
    /// One reader: two tasks iterating it would each get part of it.
    public let deliveries: AsyncStream<MQTTDelivery>
    let connection: MosquittoConnection
    private let messagesView = Mutex<AsyncStream<MQTTMessage>?>(nil)

    /// Validates and applies the options (TLS files, will, credentials); does not connect yet.
    public init(_ options: MQTTOptions) throws {
        self.options = options
        let (deliveries, sink) = AsyncStream.makeStream(of: MQTTDelivery.self, bufferingPolicy: .unbounded)
        self.deliveries = deliveries
        connection = try MosquittoConnection(options: options, sink: sink)
    }

    /// `deliveries` without the connection events, for readers that only want messages (an
    /// operator's request/reply session, a test's observer). The same stream each time it is asked
    /// for; it becomes `deliveries`' one reader, so use one or the other.
    public var messages: AsyncStream<MQTTMessage> {
        messagesView.withLock { view in
            if let view { return view }
            let (stream, sink) = AsyncStream.makeStream(of: MQTTMessage.self, bufferingPolicy: .unbounded)
            let source = deliveries
            let forward = Task {
                for await d in source { if case .message(let m) = d { sink.yield(m) } }
                sink.finish()
            }
            sink.onTermination = { _ in forward.cancel() }
            view = stream
            return stream
        }
    }

    deinit {
        connection.shutdownWithoutWaiting()
    }

    /// Hands each incoming message to `consume` on the network thread, in arrival order, before it
    /// would be queued on `deliveries`; a message `consume` returns true for is not queued. For a hot
    /// path that must not buffer (escrowd's heartbeats, coalesced per device): `consume` must be
    /// quick and must not block, since the connection reads nothing else meanwhile, and while it runs
    /// behind, the broker, not this process, holds the backlog (TCP flow control). nil removes it.
    public func consumeInline(_ consume: (@Sendable (MQTTMessage) -> Bool)?) {
        let consumer = consume.map { MosquittoConnection.InlineConsumer($0) }
        connection.inlineConsumer.withLock { $0 = consumer }
    }

    /// Connects and returns after a successful CONNACK. Throws `.unreachable`, `.refused` (CONNACK reason in
    /// `code`), `.tls` or `.timeout`; after a failure `connect` may be called again.
    public func connect(timeout: Duration = .seconds(10)) async throws {
        _ = try await connection.connect(timeout: timeout)
    }

    /// QoS 1: returns after PUBACK (a PUBACK reason >= 0x80 on MQTT 5 throws, 135 as `.notAuthorized`);
    /// survives reconnects (libmosquitto resends in-flight messages; a publish made while the connection is
    /// down is held and sent after the next CONNACK), fails with `.disconnected` on `disconnect()`.
    /// QoS 0: returns once libmosquitto has queued it (while down: once sent after reconnect).
    /// Returns the message id (0 for a publish that was held while offline).
    @discardableResult
    public func publish(_ topic: String, _ payload: [UInt8], qos: QoS = .atLeastOnce, retain: Bool = false,
                        properties: MQTTProperties = .init()) async throws -> Int32 {
        try await connection.publish(topic, payload, qos: qos, retain: retain, properties: properties, awaitAck: true)
    }

    /// QoS 1 without awaiting: `done` is called once, at PUBACK (or with the failure), on libmosquitto's
    /// loop thread or the caller's; publishes made in one order are sent in that order. While the
    /// connection is down the message is held and sent after the next CONNACK, like `publish`.
    public func publish(_ topic: String, _ payload: [UInt8], retain: Bool = false, properties: MQTTProperties = .init(),
                        whenAcknowledged done: @escaping @Sendable (Result<Void, MQTTError>) -> Void) {
        connection.publishReporting(topic, payload, qos: .atLeastOnce, retain: retain, properties: properties, done: done)
    }

    /// Queues a message and returns its id without waiting for PUBACK (bulk sends; thousands may be queued).
    /// Throws `.disconnected` while the connection is down (nothing is held for later).
    @discardableResult
    public func publishNoWait(_ topic: String, _ payload: [UInt8], qos: QoS = .atLeastOnce, retain: Bool = false,
                              properties: MQTTProperties = .init()) throws -> Int32 {
        try connection.publishNoWait(topic, payload, qos: qos, retain: retain, properties: properties)
    }

    /// Subscribes and returns the SUBACK codes in `filters` order (granted QoS, or >= 0x80 on failure).
    /// Filters are remembered and re-subscribed after every reconnect until `unsubscribe`.
    @discardableResult
    public func subscribe(_ filters: [(String, QoS)]) async throws -> [Int] {
        try await connection.subscribe(filters)
    }

    /// `subscribe([(filter, qos)])`.
    @discardableResult
    public func subscribe(_ filter: String, qos: QoS = .atLeastOnce) async throws -> Int {
        try await connection.subscribe([(filter, qos)])[0]
    }

    /// Unsubscribes (and forgets) the filters; returns after UNSUBACK.
    public func unsubscribe(_ filters: [String]) async throws {
        try await connection.unsubscribe(filters)
    }

    /// Clean DISCONNECT (the will is not published), stops the network thread, fails pending waits with
    /// `.disconnected` and finishes both streams. Idempotent.
    public func disconnect() async {
        await connection.disconnect()
    }

    /// True between a CONNACK and the next connection loss or `disconnect()`.
    public var isConnected: Bool { connection.isConnected }
}
