import Foundation
import Testing
import TestSupport
import EscrowCore

@Suite("Topic grammar")
struct TopicTests {
    static let d: DeviceID = "sim-000001"
    static let a: AccountID = "acme"

    /// One instance of every `Topic` case with its expected path.
    static let every: [(Topic, String)] = [
        (.deviceStatus(d), "devices/sim-000001/status"),
        (.deviceHeartbeat(d), "devices/sim-000001/heartbeat"),
        (.deviceConfig(d), "devices/sim-000001/config"),
        (.deviceConfigAck(d), "devices/sim-000001/config/ack"),
        (.deviceCSR(d), "devices/sim-000001/csr"),
        (.deviceError(d), "devices/sim-000001/error"),
        (.accountCommand(a, command: "transfer.request"), "accounts/acme/cmd/transfer.request"),
        (.accountReply(a, requestID: "req-42"), "accounts/acme/reply/req-42"),
        (.accountEvent(a, type: .deviceOnline), "accounts/acme/events/device.online"),
    ]

    @Test("every case builds its documented path and parses back", arguments: 0..<every.count)
    func roundTrip(_ i: Int) {
        let (topic, path) = Self.every[i]
        #expect(topic.path == path)
        #expect(Topic(path: path) == topic)
    }

    @Test("every event type round-trips through its topic", arguments: EventType.allCases)
    func eventTopics(_ t: EventType) {
        let topic = Topic.accountEvent(Self.a, type: t)
        #expect(topic.path == "accounts/acme/events/\(t.rawValue)")
        #expect(Topic(path: topic.path) == topic)
    }

    @Test("every command name round-trips through its topic", arguments: CommandName.allCases)
    func commandTopics(_ c: CommandName) {
        let topic = Topic.accountCommand(Self.a, command: c.rawValue)
        #expect(Topic(path: topic.path) == topic)
    }

    @Test("foreign, malformed and wildcard topics are not part of the contract", arguments: [
        "", "devices", "devices/d1", "devices/d1/", "devices//status", "devices/d1/status/", "/devices/d1/status",
        "devices/d1/unknown", "devices/d1/config/nack", "devices/d1/config/ack/x", "devices/a/b/status",
        "devices/+/status", "devices/#", "devices/d1/#", "devices/../status", "devices/./config",
        "devices/\(String(repeating: "x", count: 65))/status", "devices/dév/status",
        "accounts/acme", "accounts/acme/cmd", "accounts/acme/cmd/", "accounts/acme/cmd/a/b", "accounts//cmd/x",
        "accounts/+/cmd/x", "accounts/acme/events/unknown.type", "accounts/acme/events/+", "accounts/acme/other/x",
        "accounts/acme/reply/+", "accounts/acme/reply/#", "accounts/acme/cmd/+", "accounts/acme/reply/a b",
        "$SYS/broker/uptime", "other/d1/status", "Devices/d1/status",
    ])
    func rejected(_ path: String) {
        #expect(Topic(path: path) == nil)
    }

    @Test("subscription filters")
    func filters() {
        #expect(TopicFilter.allStatus == "devices/+/status")
        #expect(TopicFilter.allHeartbeats == "devices/+/heartbeat")
        #expect(TopicFilter.allConfigAcks == "devices/+/config/ack")
        #expect(TopicFilter.allCSRs == "devices/+/csr")
        #expect(TopicFilter.allCommands == "accounts/+/cmd/+")
        #expect(TopicFilter.shared(TopicFilter.allStatus) == "$share/escrowd/devices/+/status")
        #expect(TopicFilter.events("acme") == "accounts/acme/events/+")
        #expect(TopicFilter.events("acme", type: .transferExpired) == "accounts/acme/events/transfer.expired")
        #expect(TopicFilter.replies("acme") == "accounts/acme/reply/+")
    }

    @Test("heartbeatDevice gives the same device as Topic(path:) for every path, valid or not")
    func heartbeatFastPathAgrees() {
        var paths = ["devices/sim-000001/heartbeat", "devices//heartbeat", "devices/a/b/heartbeat", "devices/+/heartbeat",
                     "devices/#/heartbeat", "devices/sim-1/heartbeat/", "devices/sim-1/heartbeatx", "Devices/sim-1/heartbeat",
                     "devices/sim-1/status", "accounts/acme/cmd/x", "devices/héllo/heartbeat", "devices/\(String(repeating: "a", count: 65))/heartbeat",
                     "devices/a/heartbeat", "devices/heartbeat", "/devices/a/heartbeat", "devices/a b/heartbeat"]
        var rng = SplitMix64(state: 99)
        let alphabet = Array("devices/heartbat-_.+#é /0123456789AZ")
        for _ in 0..<5_000 {
            var p = Array("devices/sim-000001/heartbeat")
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let at = Int.random(in: 0..<p.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: p[at] = alphabet.randomElement(using: &rng)!
                case 1: p.remove(at: at)
                default: p.insert(alphabet.randomElement(using: &rng)!, at: at)
                }
            }
            paths.append(String(p))
        }
        for path in paths {
            let full: DeviceID? = if case .deviceHeartbeat(let d)? = Topic(path: path) { d } else { nil }
            #expect(Topic.heartbeatDevice(path) == full, "\(path)")
        }
    }
}
