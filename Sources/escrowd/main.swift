import Foundation
import EscrowCore
import ControlPlane
import Storage

let help = """
escrowd: the EscrowFleet control plane.

It keeps escrow devices, transfer requests, custody chains and configurations in SQLite
(or PostgreSQL, --store), and serves devices and operators over the MQTT topics of topics.md. Without --broker it
starts and manages its own mosquitto (TLS for devices, passwords for operators, ACLs).

USAGE
  escrowd [--data DIR] [--broker URL] [options]
  escrowd --print-broker-config [--data DIR]
  escrowd backup --to NEWDIR [--data DIR]      consistent copy while escrowd runs
  escrowd restore --from BACKUPDIR [--data NEWDIR]

OPTIONS
  --data DIR               state directory: database, broker files, CAs (default ./escrow-data)
  --store URL              where the ledger lives: sqlite:PATH (default sqlite:DATA/escrow.db) or
                           postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=...] (any libpq URI;
                           several escrowd may share one PostgreSQL database, see docs/SCALING.md)
  --broker URL             use an external broker (mqtt://host:port) instead of a managed one;
                           escrowd logs in as --user/--password
  --user NAME              escrowd's broker login (default svc-escrowd)
  --password P             escrowd's broker password (default: DATA/escrowd.secret, generated)
  --bind HOST              address of the managed broker's listeners (default 127.0.0.1)
  --device-port N          managed broker: mutual-TLS listener for devices (default 8883)
  --operator-port N        managed broker: password listener for escrowd and operators (default 1883)
  --public-host HOST       host name devices use to reach the broker (default 127.0.0.1)
  --operator-tls           managed broker: TLS on the operator listener too, for operators on
                           other hosts (admin.conf then names the CA escrowctl must trust)
  --reconcile-interval D   re-publish unacknowledged configurations this often (default 30s)
  --presence-lease N       a device silent for N heartbeat intervals of its configuration (plus 6 s)
                           is offline, without an offline status (default 3; decimals allowed)
  --mosquitto PATH         the managed broker's binary (default: mosquitto from PATH, else /usr/sbin/mosquitto)
  --escrow-grace D         revoke the escrow certificate of a device still not on its owner-issued
                           identity this long after activation (default 30d; it then needs a new bundle)
  --event-retention D      forget stored events (events.since, escrowctl tail --since) older than D
                           (default 30d)
  --mqtt 5|3.1.1           protocol escrowd speaks (default 5)
  --config FILE            read options from FILE (key = value, same names without dashes)
  --log-level L            debug, info, warn or error (default info)
  --log-format F           text (default) or json: one object per line with time (UTC), level,
                           component, message and fields such as account and requestId
  --print-broker-config    print the mosquitto settings an external broker needs, then exit
  --broker-pid-file FILE   with --broker: SIGHUP the broker whose pid is in FILE after each rewrite
                           of its files in DATA/broker (a Mosquitto that mounts them, as in
                           docker-compose.yml); without it, copy them and reload by hand
  --init-broker-files      write DATA/broker and DATA/admin.conf, then exit (container start-up)
  --http HOST:PORT         serve /metrics (Prometheus), /healthz and /readyz over HTTP there
                           (for example 127.0.0.1:9464; default: none)
  --broker-log file|stderr where the broker logs: DATA/broker/mosquitto.log (default) or its stderr
                           (a container's log stream)
  -h, --help               show this text
  --version                print the version and exit

FILES (in DATA)
  escrow.db                the SQLite ledger (WAL mode)
  admin.conf               escrowctl settings for the platform administrator (op-admin)
  broker/                  generated mosquitto.conf, acl, passwd, certs, persistence, log

BACKUP AND RESTORE
  backup writes NEWDIR/escrow.db through SQLite's online backup API (escrowd may keep running),
  the platform CA, escrowd.secret, admin.conf and a MANIFEST; broker/ is rebuilt on start.
  With --store postgres://... back the database up with pg_dump (the files in DATA still matter:
  copy platform-ca.*, escrowd.secret and admin.conf with it).
  restore checks the database's integrity and every device's custody chain, then fills a data
  directory that holds no database yet. Exit 0 ok, 64 usage, 65 not a valid backup, 73 exists.

EXAMPLES
  escrowd                                   # managed broker on 127.0.0.1:8883 (devices) and :1883
  escrowd backup --data /var/lib/escrowfleet --to /backup/escrow-$(date +%F)
  escrowd restore --from /backup/escrow-2026-12-01 --data /var/lib/escrowfleet-new
  escrowd --data /var/lib/escrowfleet --bind 0.0.0.0 --public-host mqtt.example.com --operator-tls
  escrowd --store 'postgres://escrowd:SECRET@db.internal/escrowfleet?sslmode=verify-full'   # ledger on PostgreSQL
  escrowctl --config escrow-data/admin.conf account list

Stops cleanly on SIGINT and SIGTERM (and stops the managed broker).
"""

func fail(_ message: String, _ code: Int32) -> Never {
    FileHandle.standardError.write(Data("escrowd: \(message)\n".utf8))
    exit(code)
}

// Everything escrowd writes (database, CA keys, secrets, broker files) is private to its user.
umask(0o077)

let valued: Set<String> = ["data", "store", "broker", "user", "password", "bind", "device-port", "operator-port", "public-host",
                           "reconcile-interval", "presence-lease", "escrow-grace", "event-retention", "mosquitto", "mqtt", "config", "log-level", "broker-pid-file", "broker-log", "http", "log-format"]
var argv = Array(CommandLine.arguments.dropFirst())
if EscrowFleetVersion.requested(argv) { print(EscrowFleetVersion.line("escrowd", commit: BuildStamp.commit)); exit(0) }
if let verb = argv.first, verb == "backup" || verb == "restore" {
    backupOrRestore(verb, Array(argv.dropFirst()))
}

/// `escrowd backup` / `escrowd restore`: run to completion on the main thread, then exit.
func backupOrRestore(_ verb: String, _ rest: [String]) -> Never {
    let args: Arguments
    do {
        args = try Arguments(rest, valued: ["data", "to", "from", "store"], booleans: ["help"])
        if args.flag("help") { print(help); exit(0) }
        if !args.positionals.isEmpty { throw UsageError("unexpected argument '\(args.positionals[0])'") }
        if let s = args.value("store"), case .success(.postgres) = StoreLocation.parse(s) {
            throw UsageError("\(verb) copies the SQLite ledger of a data directory; a PostgreSQL ledger is backed up and restored with PostgreSQL's tools (pg_dump, or base backups with WAL archiving; docs/SCALING.md)")
        }
    } catch {
        fail("\(error) (see escrowd --help)", UsageError.exitCode)
    }
    let data = args.value("data") ?? "./escrow-data"
    do {
        if verb == "backup" {
            guard let to = args.value("to") else { fail("backup needs --to NEWDIR (see escrowd --help)", UsageError.exitCode) }
            let s = try Backup.backup(dataDirectory: data, to: to)
            print("backed up \(data) to \(to): \(s.accounts) accounts, \(s.devices) devices, \(s.chainsVerified) custody chains verified, schema \(s.schemaVersion) (\(s.files.joined(separator: ", ")))")
        } else {
            guard let from = args.value("from") else { fail("restore needs --from BACKUPDIR (see escrowd --help)", UsageError.exitCode) }
            let s = try Backup.restore(from: from, into: data)
            print("restored \(from) into \(data): \(s.accounts) accounts, \(s.devices) devices, \(s.chainsVerified) custody chains verified; start escrowd --data \(data)")
        }
        exit(0)
    } catch let failure as Backup.Failure {
        fail("\(verb) failed: \(failure)", failure.exitCode)
    } catch {
        fail("\(verb) failed: \(error)", 65)
    }
}
let args: Arguments
do {
    var parsed = try Arguments(argv, valued: valued, booleans: ["help", "print-broker-config", "init-broker-files", "operator-tls"])
    if let file = parsed.value("config") {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { fail("cannot read --config \(file)", 66) }
        let kv = try KeyValueFile.parse(text)
        // File settings come first so that flags override them.
        argv = kv.flatMap { ["--\($0.key)", $0.value] } + argv
        parsed = try Arguments(argv, valued: valued, booleans: ["help", "print-broker-config", "init-broker-files", "operator-tls"])
    }
    args = parsed
    if !args.positionals.isEmpty { throw UsageError("unexpected argument '\(args.positionals[0])'") }
} catch {
    fail("\(error) (see escrowd --help)", UsageError.exitCode)
}
if args.flag("help") { print(help); exit(0) }

var settings = Daemon.Settings(dataDirectory: args.value("data") ?? "./escrow-data")
do {
    settings.externalBroker = args.value("broker")
    if let s = args.value("store") {
        switch StoreLocation.parse(s) {
        case .success(let location): settings.store = location
        case .failure(let reason): throw UsageError("--store: \(reason)")
        }
    }
    if let u = args.value("user") { settings.username = u }
    settings.password = args.value("password")
    if let b = args.value("bind") { settings.bindHost = b }
    if let p = try args.int("device-port", in: 1...65535) { settings.devicePort = p }
    if let p = try args.int("operator-port", in: 1...65535) { settings.operatorPort = p }
    if let h = args.value("public-host") { settings.publicHost = h }
    if let s = try args.seconds("reconcile-interval") { settings.reconcileInterval = .seconds(max(1, s)) }
    if let n = try args.double("presence-lease") {
        guard n > 0, n <= 1_000 else { throw UsageError("--presence-lease must be a number of heartbeat intervals above 0 (got \(n))") }
        settings.presenceLeaseIntervals = n
    }
    if let s = try args.seconds("escrow-grace") { settings.escrowGrace = .seconds(max(1, s)) }
    if let s = try args.seconds("event-retention") { settings.eventRetention = .seconds(max(1, s)) }
    settings.mosquitto = args.value("mosquitto")
    settings.brokerPIDFile = args.value("broker-pid-file")
    settings.httpAddress = args.value("http")
    settings.lockDataDirectory = !args.flag("print-broker-config")
    if let l = args.value("broker-log") {
        guard l == "file" || l == "stderr" else { throw UsageError("--broker-log is file or stderr") }
        settings.brokerLogToStderr = l == "stderr"
    }
    settings.operatorTLS = args.flag("operator-tls")
    if let v = args.value("mqtt") {
        guard v == "5" || v == "3.1.1" else { throw UsageError("--mqtt is 5 or 3.1.1") }
        settings.mqttVersion = v == "5" ? .v5 : .v311
    }
} catch {
    fail("\(error) (see escrowd --help)", UsageError.exitCode)
}
guard let level = Log.Level(rawValue: args.value("log-level") ?? "info") else { fail("--log-level is debug, info, warn or error (see escrowd --help)", UsageError.exitCode) }
guard let format = Log.Format(rawValue: args.value("log-format") ?? "text") else { fail("--log-format is text or json (see escrowd --help)", UsageError.exitCode) }
let log = Log(component: "escrowd", minimum: level, format: format)

let daemon: Daemon
do { daemon = try Daemon(settings: settings, log: log) } catch { fail("cannot start: \(error)", 1) }
if args.flag("print-broker-config") { print(daemon.externalBrokerConfiguration()); exit(0) }
if args.flag("init-broker-files") {
    Task {
        do {
            try await daemon.prepareBrokerFiles()
            print("broker files written to \(daemon.layout.directory); escrowctl settings in \(daemon.adminCredentialsPath)")
            exit(0)
        } catch {
            fail("cannot write the broker files: \(error)", 1)
        }
    }
    dispatchMain()
}

signal(SIGINT, SIG_IGN); signal(SIGTERM, SIG_IGN); signal(SIGPIPE, SIG_IGN)
let sources = [SIGINT, SIGTERM].map { sig -> any DispatchSourceSignal in
    let s = DispatchSource.makeSignalSource(signal: sig, queue: .main)
    s.setEventHandler {
        log(.info, "\(sig == SIGINT ? "SIGINT" : "SIGTERM") received: stopping")
        Task { await daemon.shutdown(); exit(0) }
    }
    s.resume()
    return s
}
Task {
    do {
        try await daemon.run()
        await daemon.shutdown()
        exit(0)
    } catch {
        log(.error, "\(error)")
        await daemon.shutdown()
        exit(1)
    }
}
withExtendedLifetime(sources) { dispatchMain() }
