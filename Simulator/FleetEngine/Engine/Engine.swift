import MQTTWire
import Glibc
import Identity

/// Drives many MQTT device connections from one thread with one epoll loop.
///
/// One non-blocking socket per device, per-device state in a compact `Slot` plus the device's
/// `Behavior` value, one timer heap for everything. Not thread-safe by design: create it, call
/// `start`, and drive it with `poll`/`run` from one thread; only `StopFlag` crosses threads.
public final class Engine<Behavior: DeviceBehavior> {
    struct InFlight { var packetID: UInt16; var sentAt: UInt64 }

    struct Slot {
        var fd: Int32 = -1
        var state: ConnectionState = .idle
        var generation: UInt32 = 0
        var attempt: UInt16 = 0
        var nextPacketID: UInt16 = 1
        var wantsWrite = false
        var pingOutstanding = false
        var connectStart: UInt64 = 0
        var lastSend: UInt64 = 0
        var lostAt: UInt64 = 0
        var reader: PacketReader
        var outbox: [UInt8] = []
        var inflight: [InFlight] = []
        /// The connection's TLS session (nil for plain MQTT, and between connections).
        var tls: TLSClientSession?
    }

    public let configuration: EngineConfiguration
    public let metrics = Metrics()
    public internal(set) var behaviors: [Behavior]
    var slots: [Slot]
    /// Per device, when `configuration.tls` is set.
    let identities: [DeviceTLSIdentity]

    let epollFD: Int32
    let broker: sockaddr_in
    let sources: [in_addr]
    var timers = TimerHeap()
    var connectQueue: [Int32] = []
    /// Devices that do not reconnect after their next connection loss (`switchOffAtNextLoss`).
    var offAtNextLoss: Set<Int32> = []
    var queueHead = 0
    var connectsInFlight = 0
    var tokens: Double
    var lastRefill: UInt64
    let startTime: UInt64
    var eventBuffer: UnsafeMutableRawBufferPointer
    var readBuffer: UnsafeMutableRawBufferPointer
    var scratch: [UInt8] = []
    var plain: [UInt8] = []
    var cipher: [UInt8] = []
    let maxEvents: Int32 = 1024
    public internal(set) var connectedCount = 0
    /// The last error per cause, for one-line diagnostics ("ECONNREFUSED on 127.0.0.1:1883").
    public internal(set) var lastErrorDetail: [ErrorCause: String] = [:]

    /// `identities` (one per behaviour, same order) are required when `configuration.tls` is set.
    /// The device whose event is being handled: its packets wait in `corkBuffer` until `uncork`.
    var corked = -1
    var corkBuffer: [UInt8] = []
    var corkSpare: [UInt8] = []

    public init(configuration: EngineConfiguration, behaviors: [Behavior], identities: [DeviceTLSIdentity] = []) throws {
        if configuration.tls != nil && identities.count != behaviors.count {
            throw FleetError.usage("TLS needs one identity per device: \(identities.count) identities for \(behaviors.count) devices")
        }
        self.configuration = configuration
        self.behaviors = behaviors
        self.identities = identities
        let version = configuration.mqttVersion
        slots = Array(repeating: Slot(reader: PacketReader(version: version)), count: behaviors.count)
        guard let addr = System.parseIPv4(configuration.brokerHost) else {
            throw FleetError.usage("broker host '\(configuration.brokerHost)' is not an IPv4 address (use e.g. 127.0.0.1)")
        }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = configuration.brokerPort.bigEndian
        sa.sin_addr = addr
        broker = sa
        sources = try configuration.sourceAddresses.map { s throws in
            guard let a = System.parseIPv4(s) else { throw FleetError.usage("source address '\(s)' is not an IPv4 address") }
            return a
        }
        System.reserveDescriptors(behaviors.count + 256)
        epollFD = try System.epollCreate()
        eventBuffer = .allocate(byteCount: Int(maxEvents) * System.epollEventSize, alignment: 8)
        readBuffer = .allocate(byteCount: 64 * 1024, alignment: 8)
        startTime = configuration.clockOrigin ?? System.monotonicNanos()
        lastRefill = System.monotonicNanos()
        tokens = 1
    }

    deinit {
        for i in slots.indices where slots[i].fd >= 0 { close(slots[i].fd) }
        close(epollFD)
        eventBuffer.deallocate()
        readBuffer.deallocate()
    }

    // MARK: Public control

    public var deviceCount: Int { slots.count }
    /// Seconds since the engine was created (the clock behaviours see).
    public var now: Double { seconds(System.monotonicNanos()) }
    public func state(of device: Int) -> ConnectionState { slots[device].state }
    public var pendingConnects: Int { connectQueue.count - queueHead + connectsInFlight }

    /// Queues every idle device for connection (paced by rate and window).
    public func startAll() { for i in slots.indices { start(i) } }

    public func start(_ device: Int) {
        guard slots[device].state == .idle || slots[device].state == .stopped else { return }
        enqueue(device)
    }

    /// Closes a device's socket without DISCONNECT (the broker publishes its will), then
    /// reconnects with backoff unless `reconnect` is false.
    public func drop(_ device: Int, reconnect: Bool = true) {
        guard slots[device].fd >= 0 else { return }
        let now = System.monotonicNanos()
        closeConnection(device, now: now, graceful: false)
        if reconnect && configuration.reconnect { scheduleReconnect(device, now: now) } else { slots[device].state = .stopped }
    }

    /// A device about to be retired: the next time its connection is lost (the broker cutting it
    /// off) it stays off instead of reconnecting.
    public func switchOffAtNextLoss(_ device: Int) { offAtNextLoss.insert(Int32(device)) }

    /// Drops every open connection at once (a "storm").
    public func dropAll(reconnect: Bool = true) {
        for i in slots.indices where slots[i].fd >= 0 { drop(i, reconnect: reconnect) }
    }

    /// Sends DISCONNECT on every connection, flushes what it can, and closes everything.
    public func stopAll() {
        let now = System.monotonicNanos()
        for i in slots.indices {
            if slots[i].fd >= 0 { closeConnection(i, now: now, graceful: slots[i].state == .connected) }
            slots[i].state = .stopped
            slots[i].generation &+= 1
        }
        connectQueue.removeAll(); queueHead = 0
    }

    /// Performs actions on behalf of a device as if its behaviour had returned them.
    public func perform(_ actions: [DeviceAction], for device: Int) {
        execute(actions, device: device, now: System.monotonicNanos())
    }

    public func behavior(at device: Int) -> Behavior { behaviors[device] }

    /// Runs one loop iteration: due timers, paced connects, then up to `maxWait` seconds in epoll.
    public func poll(maxWait: Double = 0.05) {
        var now = System.monotonicNanos()
        fireTimers(now)
        pumpConnects(now)
        var waitNs = UInt64(max(0, maxWait) * 1e9)
        if let d = timers.nextDeadline { waitNs = d > now ? min(waitNs, d - now) : 0 }
        if queueHead < connectQueue.count && connectsInFlight < connectWindow { waitNs = min(waitNs, 2_000_000) }
        let n = System.epollWait(epollFD, eventBuffer, maxEvents: maxEvents, timeoutMs: Int32((waitNs + 999_999) / 1_000_000))
        for i in 0..<n {
            // Event time: the clock is read for each event, not once per batch, so the latencies of
            // devices served in one epoll batch differ by the time each was really handled.
            now = System.monotonicNanos()
            let (events, data) = System.event(at: i, in: eventBuffer)
            handle(events: events, device: Int(data & 0xFFFF_FFFF), generation: UInt32(data >> 32), now: now)
        }
    }

    /// Polls until `done()` is true or `timeout` seconds pass; returns whether `done()` became true.
    @discardableResult
    public func run(timeout: Double, until done: () -> Bool) -> Bool {
        let deadline = now + timeout
        while now < deadline {
            if done() { return true }
            poll(maxWait: 0.02)
        }
        return done()
    }
}
