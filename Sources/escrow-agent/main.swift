import Foundation
import EscrowCore
import EscrowAgent

let help = """
escrow-agent: the EscrowFleet device agent.

It connects a device to the platform over MQTT in escrow mode (a lightweight connection
that heartbeats and waits for an owner), applies the configuration the platform pushes,
and switches to normal mode when that configuration says so. See topics.md.

USAGE
  escrow-agent --config FILE            run with the settings in FILE
  escrow-agent --help                   show this text
  escrow-agent --version                print the version

SETTINGS (FILE holds `key = value` lines; relative paths are relative to FILE)
  broker            mqtts://HOST:PORT (mutual TLS) or mqtt://HOST:PORT (tests only)
  device_id         this device's id: [A-Za-z0-9._-]{1,64}; must equal the certificate's CN
  certificate       PEM device certificate from the device bundle   (required for mqtts)
  private_key       PEM private key from the device bundle          (required for mqtts)
  broker_ca         PEM CA that signed the broker's certificate      (required for mqtts)
  state_dir         where the agent keeps its state (default: ./state next to FILE); with mqtts
                    also next.key (the key of its CSR, sent while in escrow) and, after
                    activation, identity.crt/identity.key issued by the owner, used from then on
  mqtt_version      5 (default) or 3.1.1
  keepalive         MQTT keepalive in seconds (default 60)
  backoff_initial   first reconnect delay in seconds (default 1); doubles each attempt ...
  backoff_max       ... up to this many seconds (default 120), with full jitter
  connect_attempts  give up after this many failed first connections (default 0: never)

EXAMPLE FILE
  broker = mqtts://broker.example.com:8883
  device_id = sensor-000042
  certificate = sensor-000042.crt
  private_key = sensor-000042.key
  broker_ca = broker-ca.pem

EXIT CODES
  0   stopped by SIGINT or SIGTERM (the device is marked offline first)
  64  bad command line or settings file
  65  the state file is corrupt
  66  identity files missing, unreadable or not PEM
  69  broker unreachable after connect_attempts tries
  74  the state directory cannot be written
  77  the broker refused the login (certificate not accepted, revoked, or not authorized)
"""

func stderr(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }
func logLine(_ s: String) {
    let ts = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    FileHandle.standardOutput.write(Data("\(ts) escrow-agent \(s)\n".utf8))
}

let args: Arguments
if EscrowFleetVersion.requested(Array(CommandLine.arguments.dropFirst())) { print(EscrowFleetVersion.line("escrow-agent", commit: BuildStamp.commit)); exit(0) }
do { args = try Arguments(Array(CommandLine.arguments.dropFirst()), valued: ["config"], booleans: ["help"]) } catch {
    stderr("escrow-agent: \(error.message) (see escrow-agent --help)"); exit(UsageError.exitCode)
}
if args.flag("help") { print(help); exit(0) }
guard let configPath = args.value("config") else {
    stderr("escrow-agent: --config FILE is required (see escrow-agent --help)"); exit(UsageError.exitCode)
}
guard let text = try? String(contentsOfFile: configPath, encoding: .utf8) else {
    stderr("escrow-agent: cannot read settings file \(configPath)"); exit(66)
}

do {
    let settings = try AgentSettings.parse(text, relativeTo: (configPath as NSString).deletingLastPathComponent.isEmpty ? "." : (configPath as NSString).deletingLastPathComponent)
    let runtime = try AgentRuntime(settings: settings, log: logLine)
    signal(SIGINT, SIG_IGN); signal(SIGTERM, SIG_IGN); signal(SIGPIPE, SIG_IGN)
    let sources = [SIGINT, SIGTERM].map { sig -> any DispatchSourceSignal in
        let s = DispatchSource.makeSignalSource(signal: sig, queue: .main)
        s.setEventHandler {
            logLine("signal \(sig == SIGINT ? "SIGINT" : "SIGTERM"): going offline")
            Task { await runtime.stop(); exit(0) }
        }
        s.resume()
        return s
    }
    Task {
        do { try await runtime.run(); exit(0) } catch let e as AgentError {
            stderr("escrow-agent: \(e.description)"); exit(e.exitCode)
        } catch {
            stderr("escrow-agent: \(error)"); exit(1)
        }
    }
    withExtendedLifetime(sources) { dispatchMain() }
} catch {
    // Both throwing calls throw AgentError only (typed throws).
    stderr("escrow-agent: \(error.description)"); exit(error.exitCode)
}
