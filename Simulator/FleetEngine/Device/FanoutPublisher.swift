import MQTTWire

/// `--fanout-publisher N`: one extra connection that publishes N load messages per second to
/// one topic every device subscribed to (`--subscribe`), so each message fans out to the fleet.
/// Each message carries its send time; the devices measure `fanout` latency from it.
public struct FanoutPublisher: DeviceBehavior, Sendable {
    public var clientID: String
    public var topic: String
    public var payloadBytes: Int
    public var qos: QoS
    public private(set) var pacer: Pacer
    public private(set) var published = 0
    static let timer: UInt8 = 1

    public init(clientID: String, topic: String, rate: Double, payloadBytes: Int, qos: QoS) {
        self.clientID = clientID; self.topic = topic; self.payloadBytes = payloadBytes; self.qos = qos
        pacer = Pacer(interval: 1 / rate, first: 0)
    }

    public func connectSpec(keepAlive: UInt16, version: MQTTVersion) -> MQTTPacket.Connect {
        .init(version: version, clientID: clientID, keepAlive: keepAlive)
    }

    public mutating func onConnected(now: Double) -> [DeviceAction] {
        pacer.next = now
        return [.schedule(timer: Self.timer, after: 0)]
    }

    public mutating func onMessage(_ message: IncomingMessage, now: Double) -> [DeviceAction] { [] }

    public mutating func onTimer(_ timer: UInt8, now: Double) -> [DeviceAction] {
        let (n, after) = pacer.fire(now: now)
        published += n
        let message = DeviceAction.publish(topic: topic, payload: LoadMessage.payload(sentAt: now, size: payloadBytes), qos: qos, retain: false)
        return Array(repeating: message, count: n) + [.schedule(timer: Self.timer, after: after)]
    }
}
