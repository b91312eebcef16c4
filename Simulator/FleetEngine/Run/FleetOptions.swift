import MQTTWire
import EscrowCore

/// Scenarios `fleetsim` can run.
public enum Scenario: String, Sendable, Codable, CaseIterable {
    /// The fleet connects and heartbeats until the duration ends.
    case connect
    /// After everyone is connected, all sockets drop at once; measures time until all are back.
    case storm
    /// Holds the fleet; samples RSS and descriptor count every 10 s.
    case soak
    /// The supply-chain story against a running escrowd: accounts, provisioning, escrow fleet,
    /// OEM -> reseller (hold) -> customer (activate / reject / left pending), verification.
    case transfer
}

/// `--tls-identities`: memory against handshake speed.
public enum TLSIdentityForm: String, Sendable, Equatable {
    /// DER certificate + raw key (~550 bytes), rebuilt at each connect (~175 us).
    case compact
    /// The parsed certificate kept (~4.6 KB more per device); only the key is rebuilt (~25 us).
    case parsed
}

/// `transfer`: how the devices reach the customer.
public enum TransferRoute: String, Sendable, Equatable {
    case reseller, none
}

/// Everything `fleetsim` accepts on its command line, parsed and validated.
public struct FleetOptions: Sendable, Equatable {
    public var scenario: Scenario = .connect
    public var brokerHost = "127.0.0.1"
    public var brokerPort: UInt16 = 1883
    /// `mqtts://`: mutual TLS with per-device identities (from `--bundles` or, for `transfer`, provisioning).
    public var brokerTLS = false
    /// False when `--broker` was not given (then `transfer` and `--bundles` use the bundles' broker URL).
    public var brokerGiven = false
    /// The broker's CA (PEM file); default: the bundles' `broker-ca.pem`.
    public var tlsCA: String?
    /// Directories written by `escrowctl device provision --out DIR`: `DIR/{id}/device.crt`, `device.key`, `broker-ca.pem`.
    public var bundles: String?
    /// TCP connect to CONNACK in flight at once with TLS (each includes a handshake).
    public var tlsHandshakes = 32
    /// How device identities are held between connects (`--tls-identities`).
    public var tlsIdentities: TLSIdentityForm = .compact
    /// `transfer`: escrowd's admin key=value file (broker, user, password, account).
    public var adminConfig: String?
    public var approveShare = 0.7
    public var rejectShare = 0.2
    /// Life after activation, shares of the fleet taken from the activated devices: resold to a
    /// second customer, returned to the sender (hold), retired. All 0: no lifecycle steps.
    public var resellShare = 0.0
    public var returnShare = 0.0
    public var retireShare = 0.0
    public var hasLifecycle: Bool { resellShare + returnShare + retireShare > 0 }
    public var route: TransferRoute = .reseller
    /// Suffix of the accounts, operators and device ids a `transfer` run creates (default: random).
    public var runID: String?
    public var devicesGiven = false
    public var durationGiven = false
    public var devices = 100
    public var prefix = "sim-"
    /// First device index (workers get slices).
    public var firstIndex = 0
    public var rate: Double = 0
    public var window = 64
    public var sourceAddresses: [String] = []
    public var keepAlive: UInt16 = 60
    public var heartbeat: Double = 30
    public var heartbeatJitter: Double = 0.2
    public var qos: QoS = .atMostOnce
    public var mqtt: MQTTVersion = .v311
    /// Percent of the fleet dropped per minute (0 = none).
    public var churn: Double = 0
    public var duration: Double = 30
    public var reportPath: String?
    public var htmlPath: String?
    /// `--csv DIR`: one CSV per series.
    public var csvDirectory: String?
    /// `--interval-json FILE|-`: one JSON line per sample while the run goes (`-`: stdout).
    public var intervalJSON: String?
    /// Seconds between samples of the time series (`--sample-interval`, 50 ms at least).
    public var sampleInterval: Double = 0.25
    /// `--publish-rate`: load messages per second per device beyond heartbeats (0: none).
    public var publishRate: Double = 0
    /// `--topic`: where load messages go; `%i` device id, `%n` index.
    public var topic = "devices/%i/telemetry"
    /// `--payload`: bytes per load message (nil: `defaultPayload`).
    public var payloadBytes: Int?
    public static let defaultPayload = 64
    /// `--subscribe`: every device's extra subscription (`%i`, `%n` allowed; wildcards too).
    public var subscription: String?
    /// `--fanout-publisher`: messages per second one extra connection publishes to `--subscribe`.
    public var fanoutRate: Double = 0
    /// `--ramp`: connect pacing profile (`--rate` is the constant one).
    public var ramp: RampProfile = .constant
    public var workers = 0
    public var backoffBase: Double = 1
    public var backoffMax: Double = 120
    /// Seconds to wait after everyone is connected before the storm.
    public var stormAfter: Double = 2
    public var quiet = false
    /// `--threshold` rules, checked against the report when the run ends (exit 99 if one fails).
    public var thresholds: [Threshold] = []
    /// Set by `--worker` on child processes: no summary on stdout (the parent prints the merged one).
    public var isWorker = false
    public var help = false

    public init() {}

    /// Devices per source address when the broker is on loopback and no sources were given.
    public static let autoSourceThreshold = 5000

    public static let usage = """
    fleetsim: drive thousands of virtual escrow devices against an MQTT broker. Every device runs
    AgentMachine, the same state machine as escrow-agent (its flash writes are instant).

    USAGE: fleetsim <connect|storm|soak> [options]
           fleetsim transfer --admin-config DATA/admin.conf [transfer options] [options]
           fleetsim merge A.json B.json ... [--report OUT.json] [--html OUT.html] [--csv DIR]
                          [--threshold RULE ...]

    SCENARIOS
      connect   the fleet connects (paced) and heartbeats until --duration ends
      storm     once all are connected, every socket drops at once; devices come back with
                exponential backoff + full jitter; reports the time until all are back
      soak      hold the fleet for --duration; samples RSS and open fds every 10 s
      transfer  the supply-chain story against a running escrowd, printed step by step with the
                platform's events (summarised per second):
                  a. accounts oem-RUN (provisioner), reseller-RUN, acme-RUN (customer, standalone)
                     and one operator login each (random passwords)
                  b. provision --devices in the OEM with identities (batches of 1,000)
                  c. connect the fleet in escrow mode over mutual TLS; wait for >= 99.9 %
                  d. OEM -> reseller, approved with hold (skipped with --via none)
                  e. -> customer: the first --approve share activated, the next --reject share
                     rejected, the rest left pending (cancelled by the sender at the end)
                  f. wait until every approved device applied its configuration (+ config.status)
                  g. verify device side and platform side (device.list, transfer counts)
                  with --lifecycle (or --resell/--return/--retire), on the activated devices:
                  h. resell: customer -> shop-RUN (a second standalone customer), activate
                  i. return: customer -> the sender (reseller or OEM), hold (back to escrow)
                  j. retire: the customer retires its share (device.retire)
                  k. verify each account's devices and a sample of custody chains
                exit 0 only if verification passed; otherwise one line saying why, exit 1

    OPTIONS
      --broker URL              mqtt://HOST:PORT or mqtts://HOST:PORT (mutual TLS; IPv4 only;
                                default mqtt://127.0.0.1:1883, or the bundles' broker)
      --devices N               number of devices (default 100; transfer 1000; with --bundles all)
      --prefix P                device id prefix; ids are P000000, P000001, ... (default sim-)
      --rate N                  new connects per second, 0 = unlimited (default 0)
      --ramp PROFILE            when devices start connecting (then paced by --rate/--window):
                                linear:DUR   evenly, the last one at DUR (e.g. linear:10s)
                                step:N/DUR   N more every DUR, the first N at once (step:1000/5s)
                                spike:N      all but N at the start; once they are connected,
                                             the last N at once (a "spike" phase)
      --window N                connects in flight (TCP connect to CONNACK) at once (default 64;
                                mosquitto's listen backlog is 100)
      --source-addresses A,B    bind devices round-robin to these local IPv4 addresses
      --source-count K          shorthand for 127.0.0.1 ... 127.0.0.K (each gives ~28k ports);
                                with a loopback broker and neither option, one source per
                                5,000 devices is used (connect() slows as a port range fills)
      --keepalive S             MQTT keepalive seconds (default 60)
      --heartbeat S             heartbeat interval until the first configuration (default 30;
                                then the configuration's interval)
      --heartbeat-jitter F      +/- fraction of jitter per heartbeat (default 0.2)
      --qos 0|1                 heartbeat QoS (default 0)
      --mqtt 3.1.1|5            protocol version (default 3.1.1)
      --churn P                 drop P percent of connected devices per minute (default 0),
                                from when the whole fleet has connected (the churn phase)
      --publish-rate R          load messages per second per device beyond heartbeats (default
                                0; fractions such as 0.1 are fine), QoS of --qos, on --topic
      --topic PATTERN           topic of load messages, %i = device id, %n = device index, %% = %
                                (default devices/%i/telemetry)
      --payload BYTES           size of each load / fan-out message (12...1048576, default 64;
                                the first 12 bytes carry the send time)
      --subscribe PATTERN       every device also subscribes to PATTERN (%i, %n, + and # allowed);
                                load messages received there are measured as fanout latency
      --fanout-publisher N      one extra connection publishes N messages/s to --subscribe
                                (a plain topic name), so each fans out to every device; the
                                report's fanout latency is publish -> receive (plain mqtt:// only)
      --duration T              run length (30, 300s, 5m); the run ends by itself (default 30 s;
                                transfer: the bound on the whole story, default 300 s)
      --backoff-base S          first reconnect backoff ceiling (default 1)
      --backoff-max S           backoff ceiling cap (default 120)
      --storm-after S           storm: seconds to hold after all connected (default 2)
      --report FILE.json        write the full report as JSON (run metadata, phases, series,
                                exact histograms)
      --html FILE.html          write a self-contained HTML report (inline SVG, no script, no
                                external assets): verdict and thresholds, run metadata, phase
                                table, charts over time with phase markers, latency CDFs, and
                                what each metric measures
      --csv DIR                 write samples.csv, resources.csv, phases.csv and one
                                latency-NAME.csv per measured latency (bucket upper bound ms,
                                count, cumulative fraction) into DIR (created if missing)
      --interval-json FILE|-    one JSON line per sample as the run goes (t, timestamp, phase,
                                connected, rates, errors, interval p50/p99); - is stdout (the
                                summary then goes to stderr). Not with --workers
      --sample-interval T       time between samples of the series (default 250ms, at least
                                50ms; 1s, 0.5 and 100ms are accepted)
      --workers K               run K child processes, each with a slice of the devices and its
                                own source address (127.0.0.<i+1> unless given), and merge reports
      --quiet                   no progress lines
      --threshold RULE          fail the run (exit 99, reports still written) unless RULE holds;
                                repeatable. RULE is METRIC OP VALUE, OP one of < <= > >= == !=:
                                'connect.p99<2s', 'push_ack.p90<=500ms', 'errors==0', 'connected>=19000'.
                                Latencies: connect, puback, recovery, fanout, approval_applied,
                                approve_sent_applied, push_ack, resell_applied, return_applied,
                                retire_event, retire_cutoff, each .p50 .p90 .p99 .p999 .max .mean
                                (us, ms or s; default ms). Counts: connected, peak_connected,
                                errors, drops, rejected_connacks
      -h, --help                this text
      --version                 print the version and exit

    MUTUAL TLS
      --bundles DIR             device identities written by `escrowctl device provision --out DIR`
                                (DIR/{id}/device.crt, device.key, broker-ca.pem, agent.conf);
                                the broker defaults to agent.conf's, the device count to all
      --tls-ca FILE             the CA that signed the broker's certificate (default: the
                                bundles' broker-ca.pem; transfer: the provisioning reply's)
      --tls-handshakes N        TLS connects in flight at once (default 32)
      --tls-identities compact|parsed
                                compact (default): each identity is held as DER + raw key
                                (~550 B) and rebuilt at connect (~175 us); with TLS 1.3 a
                                connected device then costs ~4 KB. parsed: the certificate kept
                                parsed, ~4.6 KB more per device, ~13% more handshakes/s when
                                fleetsim's CPU is the limit (see docs/BENCHMARKS.md section 10)
      A TLS failure counts as an `auth` error; the report names OpenSSL's reason.

    TRANSFER OPTIONS
      --admin-config FILE       escrowd's admin key=value file (broker, user, password, account)
      --approve F               share the customer activates (default 0.7)
      --reject F                share the customer rejects (default 0.2); the rest stays pending
      --via reseller|none       OEM -> reseller (hold) -> customer, or OEM -> customer (default reseller)
      --lifecycle               steps h-k with --resell 0.3 --return 0.1 --retire 0.05
      --resell F                share of the fleet the customer resells (default 0; from the
                                activated devices, as are the next two; together <= --approve)
      --return F                share the customer returns to the sender (default 0)
      --retire F                share the customer retires (default 0)
                                Simulated devices keep their escrow identity: a resale's
                                renewIdentity (CSR for a new key) is not exercised by fleetsim
      --run-id ID               suffix of the accounts, operators and device ids (default random,
                                so the story can run again at once on the same escrowd)
      --broker mqtts://...      the device listener (default: the bundles' brokerURL)

    MERGE
      fleetsim merge A.json B.json ...   merge reports of several hosts (or runs) of the same
                                scenario: counts summed, histograms merged exactly, series and
                                phases aligned by wall-clock start; prints the merged summary,
                                writes --report/--html/--csv, applies --threshold (exit 99 if
                                one fails). A missing file, a file that is not a fleetsim
                                report, or different scenarios: one line, exit 64

    EXAMPLES
      fleetsim connect --devices 5000 --duration 20 --html connect.html
      fleetsim storm --devices 2000 --rate 2000 --window 64 --report storm.json
      fleetsim soak --devices 19000 --source-count 2 --duration 600 --html soak.html
      fleetsim connect --devices 19000 --workers 2 --qos 1 --mqtt 5 --report big.json
      fleetsim connect --devices 5000 --csv out/ --interval-json - | jq .connected
      fleetsim merge hostA.json hostB.json --html all.html --threshold 'connect.p99<2s'
      fleetsim connect --devices 5000 --ramp step:1000/5s --publish-rate 2 --payload 512 \\
               --topic 'plant/%n/telemetry' --qos 1 --html ramp.html
      fleetsim soak --devices 2000 --subscribe fleet/broadcast --fanout-publisher 10 \\
               --churn 5 --duration 10m --threshold 'fanout.p99<250ms'
      escrowctl device provision --prefix sn- --count 5000 --out ./bundles
      fleetsim connect --bundles ./bundles --duration 60 --html tls.html
      fleetsim storm --bundles ./bundles --broker mqtts://127.0.0.1:8883 --tls-ca ca.pem
      fleetsim transfer --admin-config escrow-data/admin.conf --devices 1000 --approve 0.7 \\
               --reject 0.2 --via reseller --report transfer.json --html transfer.html
      fleetsim transfer --admin-config escrow-data/admin.conf --devices 1000 --approve 1 \\
               --reject 0 --lifecycle --threshold 'resell_applied.p99<2s'

    Exit codes: 0 ok, 1 run failed (broker unreachable, all refused, ports exhausted, transfer
    verification failed), 64 usage, 99 ran but a --threshold failed, 130 stopped by Ctrl-C
    (the partial report is written first).
    """

    /// Parses arguments (without the program name). Throws `FleetError.usage` with one clear line.
    public static func parse(_ args: [String]) throws(FleetError) -> FleetOptions {
        var o = FleetOptions()
        var i = 0
        var sawScenario = false
        var sourceCount: Int?
        func value(_ name: String) throws(FleetError) -> String {
            i += 1
            guard i < args.count else { throw .usage("\(name) needs a value (see --help)") }
            return args[i]
        }
        func number(_ name: String, _ s: String, min: Double = 0, max: Double = .infinity) throws(FleetError) -> Double {
            guard let v = Double(s), v.isFinite, v >= min, v <= max else {
                throw .usage("\(name) expects a number in \(min.formatted)...\(max == .infinity ? "" : max.formatted), got '\(s)'")
            }
            return v
        }
        func integer(_ name: String, _ s: String, min: Int = 0, max: Int = Int.max) throws(FleetError) -> Int {
            guard let v = Int(s), v >= min, v <= max else {
                throw .usage("\(name) expects an integer in \(min)...\(max == Int.max ? "" : String(max)), got '\(s)'")
            }
            return v
        }
        while i < args.count {
            let a = args[i]
            switch a {
            case "-h", "--help", "help": o.help = true
            case "--broker":
                let v = try value(a)
                (o.brokerHost, o.brokerPort, o.brokerTLS) = try parseBroker(v)
                o.brokerGiven = true
            case "--devices": o.devices = try integer(a, try value(a), min: 1, max: 1_000_000); o.devicesGiven = true
            case "--tls-ca": o.tlsCA = try value(a)
            case "--bundles": o.bundles = try value(a)
            case "--tls-handshakes": o.tlsHandshakes = try integer(a, try value(a), min: 1, max: 10_000)
            case "--tls-identities":
                let v = try value(a)
                guard let form = TLSIdentityForm(rawValue: v) else { throw .usage("--tls-identities expects compact or parsed, got '\(v)'") }
                o.tlsIdentities = form
            case "--admin-config": o.adminConfig = try value(a)
            case "--approve": o.approveShare = try number(a, try value(a), min: 0, max: 1)
            case "--reject": o.rejectShare = try number(a, try value(a), min: 0, max: 1)
            case "--resell": o.resellShare = try number(a, try value(a), min: 0, max: 1)
            case "--return": o.returnShare = try number(a, try value(a), min: 0, max: 1)
            case "--retire": o.retireShare = try number(a, try value(a), min: 0, max: 1)
            case "--lifecycle": (o.resellShare, o.returnShare, o.retireShare) = (0.3, 0.1, 0.05)
            case "--via":
                let v = try value(a)
                guard let r = TransferRoute(rawValue: v) else { throw .usage("--via expects reseller or none, got '\(v)'") }
                o.route = r
            case "--run-id":
                let v = try value(a)
                guard !v.isEmpty, v.utf8.count <= 20, v.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else {
                    throw .usage("--run-id must be 1...20 letters or digits, got '\(v)'")
                }
                o.runID = v.lowercased()
            case "--prefix":
                o.prefix = try value(a)
                guard o.prefix.utf8.count <= 50, o.prefix.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }) else {
                    throw .usage("--prefix must be [A-Za-z0-9._-], at most 50 characters")
                }
            case "--first-index": o.firstIndex = try integer(a, try value(a))
            case "--rate":
                var v = try value(a)
                if v.hasSuffix("/s") { v.removeLast(2) }
                o.rate = try number(a, v)
            case "--window": o.window = try integer(a, try value(a), min: 1, max: 100_000)
            case "--source-addresses":
                o.sourceAddresses = try value(a).split(separator: ",").map { String($0.filter { $0 != " " }) }
                for s in o.sourceAddresses where System.parseIPv4(s) == nil {
                    throw .usage("--source-addresses: '\(s)' is not an IPv4 address")
                }
            case "--source-count": sourceCount = try integer(a, try value(a), min: 1, max: 254)
            case "--keepalive": o.keepAlive = UInt16(try integer(a, try value(a), min: 0, max: 65_535))
            case "--heartbeat": o.heartbeat = try number(a, try value(a), min: 0.05)
            case "--heartbeat-jitter": o.heartbeatJitter = try number(a, try value(a), min: 0, max: 0.9)
            case "--qos":
                switch try value(a) {
                case "0": o.qos = .atMostOnce
                case "1": o.qos = .atLeastOnce
                case let v: throw .usage("--qos expects 0 or 1, got '\(v)'")
                }
            case "--mqtt":
                let v = try value(a)
                guard let m = MQTTVersion(label: v) else { throw .usage("--mqtt expects 3.1.1 or 5, got '\(v)'") }
                o.mqtt = m
            case "--churn": o.churn = try number(a, try value(a), min: 0, max: 100)
            case "--duration":
                let v = try value(a)
                guard let d = Arguments.parseSeconds(v), d >= 0.1 else { throw .usage("--duration expects seconds like 30, 300s, 5m or 1h, got '\(v)'") }
                o.duration = d; o.durationGiven = true
            case "--publish-rate":
                var v = try value(a)
                if v.hasSuffix("/s") { v.removeLast(2) }
                o.publishRate = try number(a, v, min: 0, max: 1000)
            case "--topic":
                o.topic = try value(a)
                if let p = DeviceLoad.problem(in: o.topic, allowWildcards: false) { throw .usage("--topic '\(o.topic.prefix(60))' \(p)") }
            case "--payload": o.payloadBytes = try integer(a, try value(a), min: LoadMessage.headerSize, max: 1_048_576)
            case "--subscribe":
                let v = try value(a)
                if let p = DeviceLoad.problem(in: v, allowWildcards: true) { throw .usage("--subscribe '\(v.prefix(60))' \(p)") }
                o.subscription = v
            case "--fanout-publisher":
                var v = try value(a)
                if v.hasSuffix("/s") { v.removeLast(2) }
                o.fanoutRate = try number(a, v, min: 0.001, max: 100_000)
            case "--ramp": o.ramp = try RampProfile.parse(try value(a))
            case "--report": o.reportPath = try value(a)
            case "--html": o.htmlPath = try value(a)
            case "--csv": o.csvDirectory = try value(a)
            case "--interval-json": o.intervalJSON = try value(a)
            case "--sample-interval":
                let v = try value(a)
                guard let d = Arguments.parseSeconds(v), d >= 0.05, d <= 60 else {
                    throw .usage("--sample-interval expects a duration from 50ms to 60s like 250ms or 1s, got '\(v)'")
                }
                o.sampleInterval = d
            case "--workers": o.workers = try integer(a, try value(a), min: 0, max: 64)
            case "--backoff-base": o.backoffBase = try number(a, try value(a), min: 0.001)
            case "--backoff-max": o.backoffMax = try number(a, try value(a), min: 0.001)
            case "--storm-after": o.stormAfter = try number(a, try value(a))
            case "--quiet": o.quiet = true
            case "--threshold": o.thresholds.append(try Threshold.parse(try value(a)))
            case "--worker": o.isWorker = true
            default:
                if !a.hasPrefix("-"), !sawScenario, let s = Scenario(rawValue: a) {
                    o.scenario = s; sawScenario = true
                } else if !a.hasPrefix("-") && !sawScenario {
                    throw .usage("unknown scenario '\(a)'" + Suggestions.phrase(a, in: Scenario.allCases.map(\.rawValue)) + " (scenarios: \(Scenario.allCases.map(\.rawValue).joined(separator: ", ")))")
                } else {
                    throw .usage("unknown option '\(a)' (see --help)")
                }
            }
            i += 1
        }
        if let k = sourceCount {
            guard o.sourceAddresses.isEmpty else { throw .usage("use either --source-addresses or --source-count, not both") }
            o.sourceAddresses = (1...k).map { "127.0.0.\($0)" }
        }
        if o.sourceAddresses.isEmpty, o.workers <= 1, o.brokerHost.hasPrefix("127."), o.devices > Self.autoSourceThreshold {
            // On loopback, connect() spends most of its time searching the ephemeral port range
            // once ~15k ports of one (source, destination) pair are taken (measured: 19,000
            // devices took 7.8 s with one source, 1.9 s with four). Spread over more sources.
            let k = (o.devices + Self.autoSourceThreshold - 1) / Self.autoSourceThreshold
            o.sourceAddresses = (1...min(k, 254)).map { "127.0.0.\($0)" }
        }
        if o.backoffMax < o.backoffBase { throw .usage("--backoff-max must be >= --backoff-base") }
        if o.scenario == .transfer {
            guard o.adminConfig != nil else { throw .usage("transfer needs --admin-config FILE (escrowd writes DATA/admin.conf)") }
            guard o.approveShare + o.rejectShare <= 1 + 1e-9 else { throw .usage("--approve + --reject must not exceed 1") }
            guard o.resellShare + o.returnShare + o.retireShare <= o.approveShare + 1e-9 else {
                throw .usage("--resell + --return + --retire (\(o.resellShare + o.returnShare + o.retireShare)) must not exceed --approve (\(o.approveShare)): they act on activated devices")
            }
            guard o.workers <= 1 else { throw .usage("transfer runs in one process: drop --workers") }
            guard o.bundles == nil else { throw .usage("transfer provisions its own devices: drop --bundles") }
            if !o.devicesGiven { o.devices = 1000 }
            if !o.durationGiven { o.duration = 300 }
            if o.devices > 20_000 { throw .usage("transfer supports at most 20,000 devices (one transfer request)") }
        } else if o.brokerTLS && o.bundles == nil {
            throw .usage("mqtts:// needs device identities: --bundles DIR (from escrowctl device provision --out DIR)")
        }
        if o.workers > o.devices { throw .usage("--workers (\(o.workers)) exceeds --devices (\(o.devices))") }
        try o.validateLoad()
        if o.workers > 1 && o.intervalJSON != nil {
            throw .usage("--interval-json runs in one process: drop --workers (or run one fleetsim per host and fleetsim merge)")
        }
        return o
    }

    /// The scenario options (`--publish-rate`, `--payload`, `--topic`, `--subscribe`,
    /// `--fanout-publisher`, `--ramp`) fit together.
    func validateLoad() throws(FleetError) {
        let loadGiven = publishRate > 0 || subscription != nil || fanoutRate > 0 || ramp != .constant || payloadBytes != nil || topic != Self().topic
        if scenario == .transfer && loadGiven {
            throw .usage("transfer runs its own story: drop --publish-rate, --payload, --topic, --subscribe, --fanout-publisher and --ramp")
        }
        if payloadBytes != nil && publishRate == 0 && fanoutRate == 0 {
            throw .usage("--payload sets the size of load messages: add --publish-rate R or --fanout-publisher N")
        }
        if topic != Self().topic && publishRate == 0 { throw .usage("--topic is where --publish-rate messages go: add --publish-rate R") }
        if fanoutRate > 0 {
            guard let s = subscription else { throw .usage("--fanout-publisher publishes to the --subscribe topic: add --subscribe TOPIC (e.g. fleet/broadcast)") }
            guard !s.contains("%"), !s.contains("+"), !s.contains("#") else {
                throw .usage("--fanout-publisher needs one topic every device subscribes to: --subscribe '\(s.prefix(60))' has %i, %n or a wildcard")
            }
            guard !brokerTLS else { throw .usage("--fanout-publisher needs a plain mqtt:// broker (the publisher has no device identity)") }
        }
    }

    /// `mqtt://HOST:PORT` or `mqtts://HOST:PORT` (TLS; BrokerURL's grammar) -> (IPv4 host, port, tls):
    /// the engine dials IPv4 addresses itself, without name resolution.
    static func parseBroker(_ s: String) throws(FleetError) -> (String, UInt16, Bool) {
        let url: BrokerURL
        do { url = try BrokerURL.parse(s.contains("://") ? s : "mqtt://" + s) } catch { throw .usage("--broker '\(s.prefix(80))': \(error.message)") }
        let host = url.host == "localhost" ? "127.0.0.1" : url.host
        guard System.parseIPv4(host) != nil else { throw .usage("--broker host '\(host)' must be an IPv4 address") }
        return (host, UInt16(url.port), url.tls)
    }

    /// Devices or a publisher send load messages, whose send time a receiver measures.
    public var usesLoadMessages: Bool { publishRate > 0 || subscription != nil || fanoutRate > 0 }

    public var brokerURL: String { "\(brokerTLS ? "mqtts" : "mqtt")://\(brokerHost):\(brokerPort)" }

    /// The argument list that reproduces these options for a worker child process.
    func workerArguments(first: Int, count: Int, source: [String], report: String) -> [String] {
        var a = [scenario.rawValue, "--broker", brokerURL, "--devices", String(count),
                 "--first-index", String(first), "--prefix", prefix, "--rate", String(rate / Double(max(1, workers))),
                 "--window", String(max(1, window / max(1, workers))), "--keepalive", String(keepAlive),
                 "--heartbeat", String(heartbeat), "--heartbeat-jitter", String(heartbeatJitter),
                 "--qos", String(qos.rawValue), "--mqtt", mqtt.label, "--churn", String(churn), "--duration", String(duration),
                 "--backoff-base", String(backoffBase), "--backoff-max", String(backoffMax), "--storm-after", String(stormAfter),
                 "--sample-interval", String(sampleInterval), "--report", report, "--quiet", "--worker"]
        if !source.isEmpty { a += ["--source-addresses", source.joined(separator: ",")] }
        if let b = bundles { a += ["--bundles", b, "--tls-handshakes", String(max(1, tlsHandshakes / max(1, workers))), "--tls-identities", tlsIdentities.rawValue] }
        if let ca = tlsCA { a += ["--tls-ca", ca] }
        if publishRate > 0 { a += ["--publish-rate", String(publishRate), "--topic", topic] }
        if let p = payloadBytes { a += ["--payload", String(p)] }
        if let s = subscription { a += ["--subscribe", s] }
        if fanoutRate > 0 { a += ["--fanout-publisher", String(fanoutRate / Double(max(1, workers)))] }
        if ramp != .constant { a += ["--ramp", ramp.share(workers: workers).label] }
        return a
    }
}

extension Double {
    fileprivate var formatted: String { self == rounded() ? String(Int(self)) : String(self) }
}
