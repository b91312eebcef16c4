import Foundation
import EscrowCore
import MQTT

/// `escrowbench codec`: the per-heartbeat CPU cost of the control plane's parsing steps, alone,
/// to attribute the ingest cost (compare with the cached-decoder / single-pass alternatives).
struct CodecBench {
    var iterations = 200_000

    func run() {
        let payload = Array(#"{"schema":1,"seq":17,"mode":"escrow","uptime":1020,"configVersion":0}"#.utf8)
        let topic = "devices/hb-012345/heartbeat"
        print("# codec micro-benchmark: \(iterations) iterations, load avg \(ProcStats.loadAverage())")
        var sink = 0
        func measure(_ name: String, _ body: () -> Int) {
            for _ in 0..<1_000 { sink &+= body() } // warm-up
            let start = ContinuousClock.now
            for _ in 0..<iterations { sink &+= body() }
            let ns = seconds(ContinuousClock.now - start) * 1e9 / Double(iterations)
            print(pad(fmt(ns / 1000, 2), 8) + " us/op  " + name)
        }
        measure("WireCodec.decode(Heartbeat) (today: 2 JSONDecoder allocations, 2 parses)") {
            ((try? WireCodec.decode(Heartbeat.self, from: payload, limit: WireCodec.maxDevicePayloadBytes))?.seq) ?? 0
        }
        let cached = JSONDecoder()
        measure("JSONDecoder (one cached instance), one parse of Heartbeat") {
            ((try? cached.decode(Heartbeat.self, from: Data(payload)))?.seq) ?? 0
        }
        measure("JSONDecoder() allocation alone (WireCodec.decoder is a computed var)") {
            let d = WireCodec.decoder
            return d.userInfo.count
        }
        measure("Topic(path:) for a heartbeat topic") {
            if case .deviceHeartbeat(let d)? = Topic(path: topic) { return d.rawValue.utf8.count }
            return 0
        }
        measure("MQTT topic String from C string (as didReceive does)") {
            topic.withCString { String(cString: $0).utf8.count }
        }
        measure("prototype: single-pass byte scanner for Heartbeat (FlatJSON below), with schema check") {
            FlatJSON.heartbeat(payload)?.seq ?? 0
        }
        measure("prototype: device topic split on UTF-8 without [String] (deviceTopic below)") {
            deviceTopic(topic)?.id.utf8.count ?? 0
        }
        // Hostile commands (issue 14): refused before any parse, whatever their shape.
        let megabyte = [UInt8](repeating: UInt8(ascii: "a"), count: 1 << 20)
        let deep = Array(("{\"schema\":1,\"requestId\":\"r\",\"args\":" + String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000) + "}").utf8)
        let deep500 = Array(("{\"schema\":1,\"requestId\":\"r\",\"args\":{\"name\":\"p\",\"settings\":" + String(repeating: "{\"a\":", count: 500) + "1" + String(repeating: "}", count: 500) + "}}").utf8)
        func refusal(_ name: String, _ payload: [UInt8], runs: Int = 1_000) {
            let start = ContinuousClock.now
            var code = ""
            for _ in 0..<runs {
                do { _ = try WireCodec.decode(CommandEnvelope.self, from: payload) } catch { code = error.code.rawValue }
            }
            let us = seconds(ContinuousClock.now - start) * 1e6 / Double(runs)
            print(pad(fmt(us, 2), 8) + " us/op  refuse \(name) (\(payload.count) bytes) -> \(code)")
        }
        refusal("a 1 MiB command", megabyte)
        refusal("a 10,000-deep nested command", deep)
        refusal("a 500-deep profile.put", deep500)
        let parseStart = ContinuousClock.now
        _ = try? JSONDecoder().decode(JSONValue.self, from: Data(deep500))
        print(pad(fmt(seconds(ContinuousClock.now - parseStart) * 1e6, 2), 8) + " us     reference: Foundation's JSONDecoder parsing the 500-deep payload without the precheck (once)")
        if sink == 42 { print("") }
    }

    /// Cost per element of the control plane's inbound path shape: a thread yields `MQTTMessage`s
    /// into an unbounded `AsyncStream`, an actor consumes them with `for await`.
    func streamHandoff() async {
        let n = iterations * 5
        let (stream, sink) = AsyncStream.makeStream(of: MQTTMessage.self, bufferingPolicy: .unbounded)
        let payload = Array(#"{"schema":1,"seq":17,"mode":"escrow","uptime":1020,"configVersion":0}"#.utf8)
        let consumer = StreamConsumer()
        let start = ContinuousClock.now
        let t = Thread {
            for i in 0..<n { sink.yield(MQTTMessage(topic: "devices/hb-\(i % 20_000)/heartbeat", payload: payload, qos: .atMostOnce, retain: false)) }
            sink.finish()
        }
        t.start()
        let count = await consumer.consume(stream)
        let ns = seconds(ContinuousClock.now - start) * 1e9 / Double(count)
        print(pad(fmt(ns / 1000, 2), 8) + " us/msg  thread -> AsyncStream(.unbounded) -> actor `for await` (wall time per message, \(count) messages, both sides)")
    }
}

actor StreamConsumer {
    func consume(_ s: AsyncStream<MQTTMessage>) async -> Int {
        var n = 0
        for await m in s { n &+= m.payload.count > 0 ? 1 : 0 }
        return n
    }
}

/// Prototype of a heartbeat fast path: one pass over a flat JSON object of integer and string
/// members (what a heartbeat is). Anything unexpected returns nil, and the caller falls back to
/// `WireCodec.decode` for the precise error.
enum FlatJSON {
    static func heartbeat(_ b: [UInt8]) -> (seq: Int, mode: DeviceMode, uptime: Int, configVersion: Int)? {
        var schema: Int?, seq: Int?, uptime: Int?, cv: Int?, mode: DeviceMode?
        var i = 0
        func ws() { while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 } }
        func string() -> ArraySlice<UInt8>? {
            guard i < b.count, b[i] == 0x22 else { return nil }
            let s = i + 1; i += 1
            while i < b.count, b[i] != 0x22 { if b[i] == 0x5C { return nil }; i += 1 }
            guard i < b.count else { return nil }
            defer { i += 1 }
            return b[s..<i]
        }
        func integer() -> Int? {
            var neg = false, v = 0, digits = 0
            if i < b.count, b[i] == 0x2D { neg = true; i += 1 }
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
                let (m, o1) = v.multipliedReportingOverflow(by: 10); let (a, o2) = m.addingReportingOverflow(Int(b[i] - 0x30))
                if o1 || o2 { return nil }
                v = a; i += 1; digits += 1
            }
            guard digits > 0, i >= b.count || (b[i] != 0x2E && b[i] != 0x65 && b[i] != 0x45) else { return nil }
            return neg ? -v : v
        }
        ws(); guard i < b.count, b[i] == 0x7B else { return nil }; i += 1; ws()
        if i < b.count, b[i] == 0x7D { return nil }
        while true {
            ws(); guard let key = string() else { return nil }
            ws(); guard i < b.count, b[i] == 0x3A else { return nil }; i += 1; ws()
            switch String(decoding: key, as: UTF8.self) {
            case "schema": guard let v = integer() else { return nil }; schema = v
            case "seq": guard let v = integer() else { return nil }; seq = v
            case "uptime": guard let v = integer() else { return nil }; uptime = v
            case "configVersion": guard let v = integer() else { return nil }; cv = v
            case "mode": guard let s = string(), let m = DeviceMode(rawValue: String(decoding: s, as: UTF8.self)) else { return nil }; mode = m
            default: return nil // unknown members: let the full decoder handle them
            }
            ws(); guard i < b.count else { return nil }
            if b[i] == 0x2C { i += 1; continue }
            if b[i] == 0x7D { i += 1; break }
            return nil
        }
        ws()
        guard i == b.count, schema == WireCodec.schemaVersion, let seq, let mode, let uptime, let cv else { return nil }
        return (seq, mode, uptime, cv)
    }
}

/// Prototype of a device-topic fast path: `devices/{id}/{rest}` without building `[String]`.
func deviceTopic(_ path: String) -> (id: Substring, rest: Substring)? {
    guard path.hasPrefix("devices/") else { return nil }
    let afterPrefix = path.index(path.startIndex, offsetBy: 8)
    guard let slash = path[afterPrefix...].firstIndex(of: "/") else { return nil }
    return (path[afterPrefix..<slash], path[path.index(after: slash)...])
}
