import Foundation
import EscrowCore

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
        if sink == 42 { print("") }
    }
}
