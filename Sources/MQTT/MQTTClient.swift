/// One MQTT connection over libmosquitto with automatic, jittered reconnect.
///
/// Incoming messages and connection events arrive on `messages` and `events` (unbounded buffers; keep
/// consuming them). Subscriptions are remembered and restored after every reconnect. A client is
/// single-use: after `disconnect()` (or a lost connection with `reconnect == nil`) create a new one.
public final class MQTTClient: Sendable {
    public let options: MQTTOptions
    /// Every incoming message, in arrival order. Finishes on `disconnect()`.
    public let messages: AsyncStream<MQTTMessage>
    /// Connection lifecycle events. Finishes on `disconnect()`.
    public let events: AsyncStream<MQTTConnectionEvent>
    let connection: MosquittoConnection

    /// Validates and applies the options (TLS files, will, credentials); does not connect yet.
    public init(_ options: MQTTOptions) throws {
        self.options = options
        let (messages, messageSink) = AsyncStream.makeStream(of: MQTTMessage.self, bufferingPolicy: .unbounded)
        let (events, eventSink) = AsyncStream.makeStream(of: MQTTConnectionEvent.self, bufferingPolicy: .unbounded)
        self.messages = messages
        self.events = events
        connection = try MosquittoConnection(options: options, messageSink: messageSink, eventSink: eventSink)
    }

    deinit {
        connection.shutdownWithoutWaiting()
    }

    /// Hands each incoming message to `consume` on the network thread, in arrival order, before it
    /// would be queued on `messages`; a message `consume` returns true for is not queued. For a hot
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
