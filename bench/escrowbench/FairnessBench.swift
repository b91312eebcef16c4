import Foundation
import ControlPlane
import EscrowCore
import MQTT

/// `escrowbench fairness` (issue 14): one account floods malformed commands (every shape the
/// conformance suite refuses: unknown fields, wrong types, 10,000-deep nesting, 1 MiB, invalid
/// UTF-8) at `floodRate` per second while another account's operator sends `device.list`
/// one at a time; reports that operator's round-trip percentiles and the control plane's CPU.
struct FairnessBench {
    var duration: Duration = .seconds(20)
    var floodRate = 1_000
    var verbose = false

    func run() async throws {
        let platform = try await Platform(maxQueuedMessages: 1_000_000, verbose: verbose)
        let op = try await Operator(port: platform.broker.port, eventFilters: [])
        try await platform.waitReady(op)
        try await platform.createAccount(op, "flooder", kind: "customer")
        try await platform.createAccount(op, "victim", kind: "provisioner")
        _ = try await platform.provision(op, account: "victim", prefix: "v-", count: 100)
        print("# fairness: account 'flooder' sends \(floodRate) malformed commands/s for \(duration); account 'victim' sends device.list one at a time; load avg \(ProcStats.loadAverage())")

        let payloads: [[UInt8]] = [
            Array(#"{"schema":1,"requestId":"f-1","args":{"all":true,"profil":"x"}}"#.utf8),
            Array(#"{"schema":1,"requestId":"f-2","args":{"all":"yes"}}"#.utf8),
            Array(#"{"schema":1,"requestId":"f-3","args":"x"}"#.utf8),
            Array((#"{"schema":1,"requestId":"f-4","args":"# + String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000) + "}").utf8),
            [UInt8](repeating: UInt8(ascii: "a"), count: 1 << 20),
            Array(#"{"schema":1,"requestId":"f-6","args":{"prefix":""#.utf8) + [0xC3, 0x28] + Array(#""}}"#.utf8),
            Array(#"{"schema":1,"requestId":"f-7","args":{"name":"p","settings":"#.utf8) + Array(String(repeating: #"{"a":"#, count: 500).utf8) + [UInt8(ascii: "1")] + Array(String(repeating: "}", count: 500).utf8) + Array("}}".utf8),
        ]
        let flooder = try MQTTClient(MQTTOptions(clientID: "bench-flooder", port: platform.broker.port))
        try await flooder.connect()
        let cpuBefore = ProcStats.cpuSeconds(pid: "self")
        let commandsBefore = await platform.service.counters.commands
        let clock = ContinuousClock()
        let end = clock.now + duration
        let flood = Task.detached {
            var sent = 0
            let start = clock.now
            while clock.now < end {
                let due = Int(Double(floodRate) * seconds(clock.now - start))
                while sent < due {
                    _ = try? flooder.publishNoWait("accounts/flooder/cmd/config.push", payloads[sent % payloads.count], qos: .atMostOnce)
                    sent += 1
                }
                try? await Task.sleep(for: .milliseconds(2))
            }
            return sent
        }
        var latencies: [Double] = []
        while clock.now < end {
            let sent = clock.now
            let (reply, at) = try await op.send("victim", "device.list", ["limit": 10], timeout: .seconds(10))
            guard reply.ok else { throw BenchError("device.list failed: \(String(describing: reply.error))") }
            latencies.append(seconds(at - sent))
        }
        let sent = await flood.value
        let processed = await platform.service.counters.commands - commandsBefore
        let cpu = ProcStats.cpuSeconds(pid: "self") - cpuBefore
        latencies.sort()
        func p(_ q: Double) -> String { fmt(latencies[min(latencies.count - 1, Int(Double(latencies.count) * q))] * 1000, 2) }
        print("""
            flood               \(sent) malformed commands sent (\(fmt(Double(sent) / seconds(duration), 0))/s), \(processed) commands processed in all
            victim device.list  n=\(latencies.count)  p50 \(p(0.5)) ms  p90 \(p(0.9)) ms  p99 \(p(0.99)) ms  max \(fmt(latencies.last! * 1000, 2)) ms
            process CPU         \(fmt(cpu, 2)) s in \(fmt(seconds(duration), 0)) s (control plane, broker client, flooder and prober share this process)
            verdict             p99 \(p(0.99)) ms against the 50 ms goal: \(latencies[min(latencies.count - 1, Int(Double(latencies.count) * 0.99))] < 0.050 ? "PASS" : "FAIL")
            """)
        await flooder.disconnect()
        await op.close()
        await platform.shutdown()
    }
}
