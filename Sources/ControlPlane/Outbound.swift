import Foundation
import EscrowCore

/// A message the control plane will publish once the change behind it is committed.
public struct Outbound: Equatable, Sendable {
    public var topic: String
    public var payload: [UInt8]
    public var retain: Bool
    public init(topic: String, payload: [UInt8], retain: Bool = false) {
        self.topic = topic; self.payload = payload; self.retain = retain
    }

    public static func event(_ e: Event) -> Outbound {
        Outbound(topic: Topic.accountEvent(e.account, type: e.type).path, payload: WireCodec.encode(e))
    }
}

/// Everything a committed change asks the I/O layer to do.
struct Effects {
    var events: [Event] = []
    /// Devices whose desired configuration changed: publish it (retained).
    var configs: [DeviceID] = []
    /// Devices created by the command: heartbeats from them are now expected.
    var provisioned: [DeviceID] = []
    /// Accounts, operators or revocations changed: regenerate the broker's ACL, password and revoked files.
    var accessChanged = false
    /// Retained topics to clear (an empty retained payload) once committed: a retired device's.
    var clearRetained: [String] = []
    /// Devices retired by the command: presence no longer tracks them.
    var retired: [DeviceID] = []

    /// `count`, `deviceIds` (at most 1,000) and `truncated` for an event's details.
    static func deviceList(_ ids: [DeviceID]) -> [String: JSONValue] {
        var d: [String: JSONValue] = ["count": .number(Double(ids.count)), "deviceIds": .array(ids.prefix(1000).map { .string($0.rawValue) })]
        if ids.count > 1000 { d["truncated"] = true }
        return d
    }

    mutating func notify(_ type: EventType, _ accounts: [AccountID], at: Date, device: DeviceID? = nil,
                         transfer: String? = nil, details: [String: JSONValue] = [:]) {
        for a in Set(accounts).sorted() {
            events.append(Event(type: type, at: at, account: a, deviceId: device, transferId: transfer, details: details))
        }
    }
}
