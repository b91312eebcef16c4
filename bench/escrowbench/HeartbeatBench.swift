import Foundation
import ControlPlane
import EscrowCore
import MQTT

/// `escrowbench heartbeats`: a QoS 0 heartbeat flood against the in-process control plane.
struct HeartbeatBench {
    var devices = 20_000
    var duration: Duration = .seconds(20)
    /// Messages/s over all publisher connections; 0 = as fast as the broker takes them.
    var rate = 0
    var connections = 1
    var maxQueued = 1_000_000
    var verbose = false

    struct Sample { var t: Double; var processed: Int; var published: Int; var rss: Double; var brokerRSS: Double; var dropped: Int }

    func pct(_ a: Double, _ b: Double) -> String { b > 0 ? String(format: "%+.1f %%", (a / b - 1) * 100) : "-" }

    func run() async throws {
        let clock = ContinuousClock()
        let load0 = ProcStats.loadAverage()
        print("# heartbeat ingest: \(devices) devices, \(duration), rate \(rate == 0 ? "max" : String(rate)), \(connections) publisher connection(s), load avg \(load0)")
        let platform = try await Platform(maxQueuedMessages: maxQueued, verbose: verbose)
        let op = try await Operator(port: platform.broker.port, eventFilters: [])
        try await platform.waitReady(op)
        let sys = try await SysMonitor(port: platform.broker.port)
        let t0 = clock.now
        try await platform.createAccount(op, "oem", kind: "provisioner")
        // The tenant whose operators must not notice the flood (its devices are not the ones flooding).
        try await platform.createAccount(op, "other", kind: "customer")
        let ids = try await platform.provision(op, account: "oem", prefix: "hb-", count: devices)
        print("provisioned \(ids.count) devices in \(fmt(seconds(clock.now - t0), 2)) s")

        // One pre-encoded PUBLISH per device; a connection publishes for its slice of the ids.
        let payload = Array(#"{"schema":1,"seq":17,"mode":"escrow","uptime":1020,"configVersion":0}"#.utf8)
        let packets = ids.map { RawPublisher.publishPacket(topic: Topic.deviceHeartbeat(DeviceID($0)!).path, payload: payload) }
        let perConnection = (packets.count + connections - 1) / connections
        let publishers = (0..<connections).map { i in
            RawPublisher(port: platform.broker.port, clientID: "bench-pub-\(i)",
                         packets: Array(packets[(i * perConnection)..<min(packets.count, (i + 1) * perConnection)]),
                         rate: Double(rate) / Double(connections))
        }

        try await Task.sleep(for: .seconds(2))
        let rssCold = ProcStats.memory()
        // Idle as a running escrowd is idle: every device has heartbeated once (at 10,000/s) and
        // its last-seen time is persisted, so the ledger's page cache and the presence maps hold
        // the fleet. The cold figure (right after provisioning) is printed as well.
        let warm = RawPublisher(port: platform.broker.port, clientID: "bench-warm", packets: packets, rate: 10_000)
        let warmStart = await platform.service.counters.heartbeats
        warm.start()
        let warmDeadline = clock.now + .seconds(30)
        while await platform.service.counters.heartbeats - warmStart < devices, clock.now < warmDeadline {
            try await Task.sleep(for: .milliseconds(100)) // a bench, not a test: a bounded progress poll
        }
        warm.stop()
        try await Task.sleep(for: ControlPlane.Options(databasePath: "").lastSeenFlushInterval + .seconds(2)) // one last-seen flush (the default period)
        let rssBefore = ProcStats.memory()
        let brokerBefore = ProcStats.memory(pid: String(platform.broker.pid))
        let processedBefore = await platform.service.counters.heartbeats
        let droppedBefore = sys.dropped
        print("before flood: escrowbench RSS \(fmt(rssBefore)) MiB idle with the fleet known and persisted (\(fmt(rssCold)) MiB cold, right after provisioning), broker RSS \(fmt(brokerBefore)) MiB")

        let cpu0 = ProcStats.cpuByThread(), brokerCPU0 = ProcStats.cpuSeconds(pid: String(platform.broker.pid))
        let start = clock.now
        for p in publishers { p.start() }
        // Command latency while the flood runs, from another account: one `device.list` every
        // 100 ms (a pause between probes, not a synchronisation), each waited for up to 60 s.
        let latencyProbe = Task { () -> [Double] in
            var out: [Double] = []
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                if Task.isCancelled { break }
                let sent = ContinuousClock.now
                guard let (_, at) = try? await op.send("other", "device.list", ["limit": 1], timeout: .seconds(60)) else { continue }
                out.append(seconds(at - sent))
            }
            return out
        }
        let flushPeriod = seconds(ControlPlane.Options(databasePath: "").lastSeenFlushInterval)
        var samples: [Sample] = []
        var maxStaleness = 0.0, maxSinceFlush = 0.0, stalenessChecks = 0
        var lastPrinted = (t: 0.0, processed: 0, published: 0)
        print("   t(s)  processed/s  published/s  backlog   RSS(MiB)  brokerRSS  dropped")
        while clock.now - start < duration {
            try await Task.sleep(for: .seconds(1))
            let t = seconds(clock.now - start)
            let processed = await platform.service.counters.heartbeats - processedBefore
            let published = publishers.reduce(0) { $0 + $1.sent.load(ordering: .relaxed) }
            let s = Sample(t: t, processed: processed, published: published, rss: ProcStats.memory(),
                           brokerRSS: ProcStats.memory(pid: String(platform.broker.pid)), dropped: sys.dropped - droppedBefore)
            samples.append(s)
            let dt = t - lastPrinted.t
            print(pad(fmt(t), 7) + pad(fmtInt(Double(processed - lastPrinted.processed) / dt), 13) + pad(fmtInt(Double(published - lastPrinted.published) / dt), 13)
                  + pad(fmtInt(Double(published - processed - s.dropped)), 9) + pad(fmt(s.rss), 11) + pad(fmt(s.brokerRSS), 11) + pad(String(s.dropped), 9))
            lastPrinted = (t, processed, published)
            // Persistence of last-seen. now - max(last_seen) is the time since the last flush that
            // carried a heartbeat (goal: <= 5 s); now - min(last_seen) adds the round-robin period.
            // From one flush period into the flood on: before it, the newest persisted time is the
            // warm-up's, seconds older than any flood heartbeat (a measurement artefact, not a flush).
            if t >= flushPeriod + 1, Int(t) % 2 == 0,
               let r = try? await platform.ledgerQuery("SELECT max(last_seen) AS newest, min(last_seen) AS oldest FROM devices").first,
               let newest = r["newest"]?.doubleValue, let oldest = r["oldest"]?.doubleValue {
                let now = Date().timeIntervalSince1970
                maxSinceFlush = max(maxSinceFlush, now - newest); maxStaleness = max(maxStaleness, now - oldest); stalenessChecks += 1
            }
        }
        let cpu1 = ProcStats.cpuByThread(), brokerCPU1 = ProcStats.cpuSeconds(pid: String(platform.broker.pid))
        for p in publishers { p.stop() }
        latencyProbe.cancel()
        let latencies = await latencyProbe.value.sorted()
        let floodEnd = clock.now
        let floodSeconds = seconds(floodEnd - start)
        let published = publishers.reduce(0) { $0 + $1.sent.load(ordering: .relaxed) }
        let processedAtEnd = await platform.service.counters.heartbeats - processedBefore
        let escrowdCPU = ProcStats.cpuDelta(cpu0, cpu1).filter { !$0.0.hasPrefix("bench-pub") }.reduce(0) { $0 + $1.1 }
        let rssPeak = samples.map(\.rss).max() ?? 0, brokerPeak = samples.map(\.brokerRSS).max() ?? 0
        for p in publishers { if let e = p.error.withLock({ $0 }) { print("publisher error: \(e)") } }

        // Persisted last_seen right after the flood (the flush runs every 5 s).
        let persistedRecent = (try? await platform.ledgerQuery("SELECT count(*) AS n FROM devices WHERE last_seen >= \(Date().timeIntervalSince1970 - 6)").first?["n"]?.intValue).map(String.init) ?? "?"

        // Drain: how long until everything the broker delivered is processed.
        var drained = processedAtEnd, lastChange = clock.now
        while clock.now - lastChange < .seconds(3) && clock.now - floodEnd < .seconds(120) {
            try await Task.sleep(for: .milliseconds(200))
            let p = await platform.service.counters.heartbeats - processedBefore
            if p != drained { drained = p; lastChange = clock.now }
        }
        let drainSeconds = seconds(lastChange - floodEnd)
        let dropped = sys.dropped - droppedBefore

        // In situ costs on the actor: one round of heartbeats through `handle` (one actor hop each),
        // then the last-seen flush of those devices (one transaction of one UPDATE per device).
        await platform.service.flushLastSeen()
        let messages = ids.map { MQTTMessage(topic: Topic.deviceHeartbeat(DeviceID($0)!).path, payload: payload, qos: .atMostOnce, retain: false) }
        let handleStart = clock.now
        for m in messages { await platform.service.handle(m) }
        let handleMicros = seconds(clock.now - handleStart) * 1e6 / Double(messages.count)
        let flushStart = clock.now
        await platform.service.flushLastSeen()
        let flushMillis = seconds(clock.now - flushStart) * 1000
        let rssAfter = ProcStats.memory(), hwm = ProcStats.memory("VmHWM")

        // Steady state: skip the first 2 s.
        let steady = samples.filter { $0.t >= 2 }
        let steadyRate = steady.count >= 2 ? Double(steady.last!.processed - steady.first!.processed) / (steady.last!.t - steady.first!.t) : 0
        let publishRate = Double(published) / floodSeconds
        let endToEnd = Double(drained) / (floodSeconds + drainSeconds)
        print("""

        ## result
        published           \(fmtInt(Double(published))) in \(fmt(floodSeconds)) s = \(fmtInt(publishRate)) msg/s
        processed (flood)   \(fmtInt(Double(processedAtEnd))) = \(fmtInt(Double(processedAtEnd) / floodSeconds)) /s (steady state after 2 s: \(fmtInt(steadyRate)) /s)
        processed (total)   \(fmtInt(Double(drained))) after a \(fmt(drainSeconds)) s drain = \(fmtInt(endToEnd)) /s end to end
        broker dropped      \(dropped)
        lost/unaccounted    \(published - drained - dropped)
        RSS escrowbench     before \(fmt(rssBefore)) MiB (idle, warm; cold \(fmt(rssCold)) MiB), peak sample \(fmt(rssPeak)) MiB (\(pct(rssPeak, rssBefore))), after drain \(fmt(rssAfter)) MiB, high-water \(fmt(hwm)) MiB (\(pct(hwm, rssBefore)); \(pct(hwm, rssCold)) over cold)
        RSS broker          before \(fmt(brokerBefore)) MiB, peak sample \(fmt(brokerPeak)) MiB
        last_seen persisted \(persistedRecent)/\(devices) devices within 6 s at flood end; during the flood (\(stalenessChecks) checks, every 2 s): newest persisted last_seen at most \(fmt(maxSinceFlush)) s old (flush period), oldest at most \(fmt(maxStaleness)) s old
        command latency     device.list of another account during the flood: \(latencies.isEmpty ? "no reply" : "p50 \(fmt(latencies[latencies.count / 2] * 1000, 1)) ms, p99 \(fmt(latencies[min(latencies.count - 1, latencies.count * 99 / 100)] * 1000, 1)) ms, max \(fmt(latencies.last! * 1000, 1)) ms (\(latencies.count) probes, one every 100 ms)")
        in situ, idle      handle(heartbeat) \(fmt(handleMicros, 2)) us each (\(messages.count) awaited calls); flushLastSeen of \(messages.count) devices \(fmt(flushMillis, 0)) ms (the actor processes nothing meanwhile)
        CPU per heartbeat   \(fmt(escrowdCPU / Double(max(processedAtEnd, 1)) * 1e6, 2)) us in escrowbench minus the publisher thread (control plane actor, its MQTT loop thread, monitors): \(fmt(escrowdCPU)) s for \(fmtInt(Double(processedAtEnd))) heartbeats; broker \(fmt((brokerCPU1 - brokerCPU0) / Double(max(published, 1)) * 1e6, 2)) us per published message
        CPU during flood    broker \(fmt(brokerCPU1 - brokerCPU0)) s; escrowbench threads: \(ProcStats.cpuDelta(cpu0, cpu1).map { "\($0.0) \(fmt($0.1))" }.joined(separator: ", ")) (wall \(fmt(floodSeconds)) s)
        load avg            before \(load0), after \(ProcStats.loadAverage())
        """)
        await sys.close()
        await op.close()
        await platform.shutdown()
    }
}
