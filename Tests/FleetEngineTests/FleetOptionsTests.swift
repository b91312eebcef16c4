import Testing
@testable import MQTTWire
@testable import FleetEngine

@Suite struct FleetOptionsTests {
    @Test func parsesAFullCommandLine() throws {
        let o = try FleetOptions.parse(["storm", "--broker", "mqtt://127.0.0.1:1884", "--devices", "19000", "--prefix", "x-",
                                        "--rate", "2000/s", "--window", "32", "--source-count", "3", "--keepalive", "30",
                                        "--heartbeat", "10", "--heartbeat-jitter", "0.1", "--qos", "1", "--mqtt", "5",
                                        "--churn", "5", "--duration", "60", "--report", "r.json", "--html", "r.html", "--workers", "2"])
        #expect(o.scenario == .storm)
        #expect(o.brokerHost == "127.0.0.1" && o.brokerPort == 1884)
        #expect(o.devices == 19000 && o.prefix == "x-" && o.rate == 2000 && o.window == 32)
        #expect(o.sourceAddresses == ["127.0.0.1", "127.0.0.2", "127.0.0.3"])
        #expect(o.keepAlive == 30 && o.heartbeat == 10 && o.heartbeatJitter == 0.1)
        #expect(o.qos == .atLeastOnce && o.mqtt == .v5 && o.churn == 5 && o.duration == 60)
        #expect(o.reportPath == "r.json" && o.htmlPath == "r.html" && o.workers == 2)
    }

    @Test func defaultsAndHelp() throws {
        let o = try FleetOptions.parse([])
        #expect(o.scenario == .connect && o.brokerPort == 1883 && o.window == 64 && o.qos == .atMostOnce && o.mqtt == .v311)
        #expect(try FleetOptions.parse(["--help"]).help)
        #expect(FleetOptions.usage.contains("EXAMPLES"))
        #expect(try FleetOptions.parse(["soak", "--broker", "localhost"]).brokerPort == 1883)
        // Large loopback fleets get one source address per 5,000 devices unless told otherwise.
        #expect(try FleetOptions.parse(["--devices", "19000"]).sourceAddresses == ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"])
        #expect(try FleetOptions.parse(["--devices", "19000", "--source-count", "1"]).sourceAddresses == ["127.0.0.1"])
        #expect(try FleetOptions.parse(["--devices", "5000"]).sourceAddresses.isEmpty)
    }

    @Test(arguments: [
        (["--devices"], "--devices needs a value"),
        (["--devices", "0"], "--devices expects an integer"),
        (["--qos", "2"], "--qos expects 0 or 1"),
        (["--mqtt", "4.0"], "--mqtt expects 3.1.1 or 5"),
        (["--broker", "ws://h:1"], "unsupported scheme 'ws'; use mqtt:// or mqtts://"),
        (["--broker", "mqtt://example.com:1883"], "must be an IPv4 address"),
        (["--broker", "mqtt://127.0.0.1:99999"], "is not 1...65535"),
        (["--source-addresses", "127.0.0.1,nope"], "'nope' is not an IPv4 address"),
        (["--source-count", "2", "--source-addresses", "127.0.0.1"], "either --source-addresses or --source-count"),
        (["transfer"], "transfer needs --admin-config"),
        (["--bogus"], "unknown option '--bogus'"),
        (["--rate", "fast"], "--rate expects a number"),
        (["--devices", "2", "--workers", "3"], "exceeds --devices"),
        (["--prefix", "a/b"], "--prefix must be"),
        (["--sample-interval", "10ms"], "--sample-interval expects a duration from 50ms"),
        (["--sample-interval", "soon"], "--sample-interval expects"),
        (["--devices", "4", "--workers", "2", "--interval-json", "-"], "--interval-json runs in one process"),
        (["--publish-rate", "1", "--payload", "5"], "--payload expects an integer in 12...1048576"),
        (["--publish-rate", "2000"], "--publish-rate expects a number in 0...1000"),
        (["--payload", "100"], "--payload sets the size of load messages"),
        (["--publish-rate", "1", "--topic", "a/+/b"], "has a wildcard"),
        (["--publish-rate", "1", "--topic", "a/%q"], "only %i (device id), %n (index) and %% are known"),
        (["--topic", "x/%i"], "--topic is where --publish-rate messages go"),
        (["--subscribe", ""], "--subscribe '' is empty"),
        (["--fanout-publisher", "5"], "add --subscribe TOPIC"),
        (["--fanout-publisher", "5", "--subscribe", "devices/%i/x"], "has %i, %n or a wildcard"),
        (["--ramp", "wave:1"], "--ramp expects linear:DUR, step:N/DUR or spike:N"),
        (["transfer", "--admin-config", "a", "--ramp", "spike:3"], "transfer runs its own story"),
    ])
    func usageErrorsAreOneClearLine(args: [String], fragment: String) {
        do {
            _ = try FleetOptions.parse(args)
            Issue.record("expected a usage error for \(args)")
        } catch {
            guard case .usage(let m) = error else { Issue.record("not a usage error: \(error)"); return }
            #expect(m.contains(fragment), "\(m)")
            #expect(!m.contains("\n"))
        }
    }

    @Test func reportOutputsAndSampleInterval() throws {
        #expect(try FleetOptions.parse([]).sampleInterval == 0.25)
        let o = try FleetOptions.parse(["connect", "--sample-interval", "100ms", "--csv", "out", "--interval-json", "-"])
        #expect(o.sampleInterval == 0.1 && o.csvDirectory == "out" && o.intervalJSON == "-")
        #expect(try FleetOptions.parse(["--sample-interval", "1s"]).sampleInterval == 1)
        #expect(try FleetOptions.parse(["--sample-interval", "0.5"]).sampleInterval == 0.5)
        var w = FleetOptions(); w.workers = 2; w.sampleInterval = 0.1
        #expect(try FleetOptions.parse(w.workerArguments(first: 0, count: 1, source: [], report: "r.json")).sampleInterval == 0.1)
        for word in ["--csv DIR", "--interval-json FILE|-", "--sample-interval T", "fleetsim merge A.json B.json"] {
            #expect(FleetOptions.usage.contains(word), "usage mentions \(word)")
        }
    }

    @Test func scenarioOptions() throws {
        let o = try FleetOptions.parse(["soak", "--publish-rate", "2/s", "--topic", "plant/%n/t", "--payload", "512", "--subscribe", "fleet/all",
                                        "--fanout-publisher", "10", "--ramp", "step:100/2s", "--churn", "5"])
        #expect(o.publishRate == 2 && o.topic == "plant/%n/t" && o.payloadBytes == 512 && o.subscription == "fleet/all")
        #expect(o.fanoutRate == 10 && o.ramp == .step(devices: 100, every: 2) && o.usesLoadMessages)
        #expect(try FleetOptions.parse(["--publish-rate", "0.1"]).topic == "devices/%i/telemetry")
        var w = o; w.workers = 2
        let back = try FleetOptions.parse(w.workerArguments(first: 0, count: 50, source: [], report: "r.json"))
        #expect(back.publishRate == 2 && back.topic == "plant/%n/t" && back.payloadBytes == 512 && back.subscription == "fleet/all")
        #expect(back.fanoutRate == 5 && back.ramp == .step(devices: 50, every: 2), "each worker publishes and ramps its share")
        for word in ["--payload BYTES", "--publish-rate R", "--topic PATTERN", "--subscribe PATTERN", "--fanout-publisher N", "--ramp PROFILE", "spike:N"] {
            #expect(FleetOptions.usage.contains(word), "usage mentions \(word)")
        }
    }

    @Test func tlsIdentityForms() throws {
        #expect(try FleetOptions.parse([]).tlsIdentities == .compact)
        #expect(try FleetOptions.parse(["--tls-identities", "parsed"]).tlsIdentities == .parsed)
        var err = ""
        #expect(FleetMain.run(["--tls-identities", "cached"], stdout: { _ in }, stderr: { err += $0 }) == 64)
        #expect(err.contains("--tls-identities expects compact or parsed, got 'cached'"), "\(err)")
    }

    @Test func usageErrorExitsWith64() {
        var err = ""
        #expect(FleetMain.run(["--qos", "7"], stdout: { _ in }, stderr: { err += $0 }) == 64)
        #expect(err.hasPrefix("fleetsim: --qos"))
    }

    @Test func workerSlicesAndSources() {
        let s = WorkerPool.slices(devices: 10, workers: 3, first: 5)
        #expect(s.map(\.first) == [5, 9, 12] && s.map(\.count) == [4, 3, 3])
        #expect(WorkerPool.sources([], workers: 2) == [["127.0.0.1"], ["127.0.0.2"]])
        #expect(WorkerPool.sources(["a", "b", "c", "d"], workers: 2) == [["a", "c"], ["b", "d"]])
        var o = FleetOptions(); o.workers = 2; o.window = 64; o.rate = 1000
        let a = o.workerArguments(first: 3, count: 4, source: ["127.0.0.2"], report: "/tmp/x.json")
        let back = try? FleetOptions.parse(a)
        #expect(back?.firstIndex == 3 && back?.devices == 4 && back?.window == 32 && back?.rate == 500)
        #expect(back?.sourceAddresses == ["127.0.0.2"] && back?.reportPath == "/tmp/x.json" && back?.quiet == true)
    }
}
