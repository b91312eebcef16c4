import Foundation
import Testing
import TestSupport
@testable import EscrowCore

/// The fast path may only ever say what the full decoder says: checked on generated heartbeats
/// (every member order, spacing and value range) and on thousands of byte mutations of them.
@Suite("Heartbeat fast path")
struct HeartbeatScannerTests {
    static func render(_ h: Heartbeat, order: [Int], space: String) -> String {
        let members = [
            "\"schema\":\(space)\(h.schema)", "\"seq\":\(space)\(h.seq)", "\"mode\":\(space)\"\(h.mode.rawValue)\"",
            "\"uptime\":\(space)\(h.uptime)", "\"configVersion\":\(space)\(h.configVersion)",
        ]
        return "{\(space)" + order.map { members[$0] }.joined(separator: ",\(space)") + "\(space)}"
    }

    @Test("accepts every well-formed heartbeat with the full decoder's value")
    func agreesOnValid() throws {
        var rng = SplitMix64(state: 20261207)
        for _ in 0..<2_000 {
            let h = Heartbeat(seq: Int.random(in: 0...Int(Int32.max), using: &rng), mode: Bool.random(using: &rng) ? .escrow : .normal,
                              uptime: Int.random(in: -5...1_000_000_000, using: &rng), configVersion: Int.random(in: 0...10_000, using: &rng))
            let text = Self.render(h, order: Array(0..<5).shuffled(using: &rng), space: ["", " ", "\n", " \t "].randomElement(using: &rng)!)
            let bytes = Array(text.utf8)
            #expect(Heartbeat.scan(bytes) == h, "\(text)")
            #expect(try WireCodec.decode(Heartbeat.self, from: bytes, limit: WireCodec.maxDevicePayloadBytes) == h)
        }
        #expect(Heartbeat.scan(WireCodec.encode(Heartbeat(seq: 7, mode: .normal, uptime: 60, configVersion: 2))) == Heartbeat(seq: 7, mode: .normal, uptime: 60, configVersion: 2))
    }

    @Test("declines what it does not fully understand, so the full decoder gives the exact error", arguments: [
        #"{"schema":2,"seq":1,"mode":"escrow","uptime":1,"configVersion":0}"#,       // another schema
        #"{"schema":1,"seq":1,"mode":"escrow","uptime":1}"#,                          // a member missing
        #"{"schema":1,"seq":1.5,"mode":"escrow","uptime":1,"configVersion":0}"#,     // a fraction
        #"{"schema":1,"seq":1e3,"mode":"escrow","uptime":1,"configVersion":0}"#,     // an exponent
        #"{"schema":1,"seq":01,"mode":"escrow","uptime":1,"configVersion":0}"#,      // a leading zero
        #"{"schema":1,"seq":1,"mode":"esc\u0072ow","uptime":1,"configVersion":0}"#,  // an escape
        #"{"schema":1,"seq":1,"mode":"sleepy","uptime":1,"configVersion":0}"#,       // an unknown mode
        #"{"schema":1,"seq":1,"seq":2,"mode":"escrow","uptime":1,"configVersion":0}"#, // a repeated member
        #"{"schema":1,"seq":1,"mode":"escrow","uptime":1,"configVersion":0,"x":1}"#, // another member
        #"{"schema":1,"seq":99999999999999999999,"mode":"escrow","uptime":1,"configVersion":0}"#, // overflow
        #"{"schema":1,"seq":1,"mode":"escrow","uptime":1,"configVersion":0} x"#,     // trailing bytes
        #"[1,2]"#, #""#, #"{}"#,
    ])
    func declines(text: String) {
        #expect(Heartbeat.scan(Array(text.utf8)) == nil, "\(text)")
    }

    @Test("on byte mutations it never accepts what the full decoder refuses, nor disagrees on a value")
    func neverDisagrees() {
        var rng = SplitMix64(state: 7)
        let base = Array(Self.render(Heartbeat(seq: 42, mode: .escrow, uptime: 3600, configVersion: 3), order: [0, 1, 2, 3, 4], space: "").utf8)
        var accepted = 0
        for _ in 0..<20_000 {
            var b = base
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let at = Int.random(in: 0..<b.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: b[at] = UInt8.random(in: 0...255, using: &rng)
                case 1: b.remove(at: at)
                default: b.insert(UInt8.random(in: 0...255, using: &rng), at: at)
                }
                if b.isEmpty { b = [0x7B] }
            }
            guard let fast = Heartbeat.scan(b) else { continue }
            accepted += 1
            let full = try? WireCodec.decode(Heartbeat.self, from: b, limit: WireCodec.maxDevicePayloadBytes)
            #expect(full == fast, "\(String(decoding: b, as: UTF8.self))")
        }
        #expect(accepted > 0, "some mutations (digits, spacing) stay valid heartbeats")
    }

    @Test("an oversized payload is declined")
    func oversized() {
        let big = Array(("{\"schema\":1,\"seq\":1,\"mode\":\"escrow\",\"uptime\":1,\"configVersion\":0" + String(repeating: " ", count: WireCodec.maxDevicePayloadBytes) + "}").utf8)
        #expect(Heartbeat.scan(big) == nil)
    }
}
