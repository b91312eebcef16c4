import Foundation
import ControlPlane
import EscrowCore
import MQTT
import Synchronization

/// `escrowbench bulk-transfer`: one `transfer.approve` (activate) of N devices, then N config acks.
struct BulkTransferBench {
    var devices = 10_000
    var maxQueued = 1_000_000
    var verbose = false

    /// What the fake devices saw on `devices/+/config`.
    final class ConfigSink: Sendable {
        struct State { var versions: [String: Int] = [:]; var first: ContinuousClock.Instant?; var last: ContinuousClock.Instant?; var messages = 0 }
        let state = Mutex(State())
        func take(_ m: MQTTMessage) {
            let parts = m.topic.split(separator: "/")
            guard parts.count == 3, parts[2] == "config" else { return }
            let version = (try? WireCodec.decode(DeviceConfig.self, from: m.payload, limit: .max))?.version ?? 0
            let now = ContinuousClock.now
            state.withLock { s in
                s.messages += 1
                if s.versions.updateValue(version, forKey: String(parts[1])) == nil { s.first = s.first ?? now; s.last = now }
            }
        }
    }

    func run() async throws {
        let clock = ContinuousClock()
        let load0 = ProcStats.loadAverage()
        print("# bulk transfer: \(devices) devices, load avg \(load0)")
        let platform = try await Platform(maxQueuedMessages: maxQueued, verbose: verbose)
        let op = try await Operator(port: platform.broker.port, eventFilters: ["accounts/acme/events/config.applied"])
        try await platform.waitReady(op)
        try await platform.createAccount(op, "oem", kind: "provisioner")
        try await platform.createAccount(op, "acme", kind: "customer")
        let tp = clock.now
        let ids = try await platform.provision(op, account: "oem", prefix: "bt-", count: devices)
        print("provisioned \(ids.count) devices in \(fmt(seconds(clock.now - tp), 2)) s")
        let tr = clock.now
        let request = try await op.run("oem", "transfer.request", ["to": "acme", "deviceIds": idList(ids)], as: Commands.TransferResult.self, timeout: .seconds(300))
        guard request.decided.count == devices else { throw BenchError("transfer.request placed \(request.decided.count) of \(devices) devices") }
        print("transfer.request of \(devices) devices answered in \(fmt(seconds(clock.now - tr), 2)) s")

        // The fleet: one client standing in for every device.
        var fleetOptions = MQTTOptions(clientID: "bench-fleet", port: platform.broker.port)
        fleetOptions.keepAlive = 300
        let fleet = try MQTTClient(fleetOptions)
        try await fleet.connect()
        let sink = ConfigSink()
        let fleetMessages = fleet.messages
        let pump = Task { for await m in fleetMessages { sink.take(m) } }
        _ = try await fleet.subscribe("devices/+/config", qos: .atLeastOnce)
        try await Task.sleep(for: .milliseconds(500))

        let cpu0 = ProcStats.cpuByThread(), brokerCPU0 = ProcStats.cpuSeconds(pid: String(platform.broker.pid))
        let rssBefore = ProcStats.memory()
        let t0 = clock.now
        let (reply, t1) = try await op.send("acme", "transfer.approve", ["transferId": .string(request.transfer.id), "action": "activate"], timeout: .seconds(600))
        let approved = try reply.typed(Commands.TransferResult.self, "transfer.approve")
        guard approved.decided.count == devices else { throw BenchError("approve decided \(approved.decided.count) of \(devices)") }
        print("reply after \(fmt(seconds(t1 - t0), 3)) s")

        var deadline = clock.now + .seconds(600)
        while sink.state.withLock({ $0.versions.count }) < devices {
            guard clock.now < deadline else { throw BenchError("only \(sink.state.withLock { $0.versions.count }) configurations arrived") }
            try await Task.sleep(for: .milliseconds(2))
        }
        let (versions, firstConfig, t2) = sink.state.withLock { ($0.versions, $0.first!, $0.last!) }
        print("all \(devices) configurations after \(fmt(seconds(t2 - t1), 3)) s more (first one \(fmt(seconds(firstConfig - t1), 3)) s after the reply)")

        let ackStart = clock.now
        for (id, v) in versions {
            let ack = Array(#"{"schema":1,"version":\#(v),"result":"applied"}"#.utf8)
            _ = try fleet.publishNoWait(Topic.deviceConfigAck(DeviceID(id)!).path, ack, qos: .atLeastOnce)
        }
        let ackQueued = clock.now
        deadline = clock.now + .seconds(600)
        while await op.events(.configApplied) < devices {
            guard clock.now < deadline else { throw BenchError("only \(await op.events(.configApplied)) config.applied events") }
            try await Task.sleep(for: .milliseconds(2))
        }
        let t3 = await op.lastEvent(.configApplied)!
        let cpu1 = ProcStats.cpuByThread(), brokerCPU1 = ProcStats.cpuSeconds(pid: String(platform.broker.pid))
        let status = try await op.run("acme", "config.status", [:], as: Commands.ConfigStatusResult.self, timeout: .seconds(120))
        let applied = status.devices.filter { $0.state == .applied }.count
        let counters = await platform.service.counters
        let t1t0 = seconds(t1 - t0), t2t1 = seconds(t2 - t1), t3t2 = seconds(t3 - t2)
        print("""

        ## result
        t1-t0 approve -> reply           \(fmt(t1t0, 3)) s
        t2-t1 reply -> last config       \(fmt(t2t1, 3)) s   (goal <= 2 s: \(t2t1 <= 2 ? "PASS" : "FAIL"))
        t3-t2 last config -> all applied \(fmt(t3t2, 3)) s   (goal <= 2 s: \(t3t2 <= 2 ? "PASS" : "FAIL")); acks queued in \(fmt(seconds(ackQueued - ackStart), 3)) s
        config.status                    \(applied)/\(devices) applied; configs published \(counters.configsPublished), acks processed \(counters.acks), config messages seen \(sink.state.withLock { $0.messages })
        RSS escrowbench                  before approve \(fmt(rssBefore)) MiB, high-water \(fmt(ProcStats.memory("VmHWM"))) MiB
        CPU t0..t3                       broker \(fmt(brokerCPU1 - brokerCPU0)) s; escrowbench threads: \(ProcStats.cpuDelta(cpu0, cpu1).map { "\($0.0) \(fmt($0.1))" }.joined(separator: ", ")) (wall \(fmt(seconds(t3 - t0))) s)
        load avg                         before \(load0), after \(ProcStats.loadAverage())
        """)
        pump.cancel()
        await fleet.disconnect()
        await op.close()
        await platform.shutdown()
    }
}
