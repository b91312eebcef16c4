import Foundation
import Testing
import EscrowCore
import TestSupport
import Broker

/// docker-compose.yml, the Dockerfile and the systemd unit, checked for what an operator relies on:
/// no root, no CA keys or ledger where the broker can read them, the operator port on loopback unless
/// asked, healthchecks that probe the real service, hosts and ports from the environment.
@Suite("Deployment files")
struct DeploymentTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// docker-compose.yml as JSON (Debian's python3-yaml: YAML anchors resolved), with `${VAR:-default}` left as written.
    static func compose() throws -> JSONValue {
        let json = try runCommand("/usr/bin/python3", ["-c", "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)", root + "/docker-compose.yml"],
                                  installHint: "apt-get install python3-yaml")
        return try JSONDecoder().decode(JSONValue.self, from: Data(json.utf8))
    }

    /// `${NAME:-default}` -> default, as Compose interpolates with an empty environment.
    static func interpolate(_ s: String) -> String {
        s.replacingOccurrences(of: #"\$\{[A-Z_]+:-([^}]*)\}"#, with: "$1", options: .regularExpression)
    }

    @Test("no service runs as root, and the broker mounts no volume that holds CA keys or the ledger")
    func privileges() throws {
        let services = try #require(try Self.compose()["services"]?.objectValue)
        #expect(Set(services.keys) == ["init", "mosquitto", "escrowd", "fleetsim"])
        for (name, service) in services {
            let user = service["user"]?.stringValue ?? "root"
            #expect(!["root", "0", "0:0"].contains(user) && !user.hasPrefix("0:"), "\(name) runs as \(user)")
            #expect(service["privileged"]?.boolValue != true, "\(name)")
        }
        // The volume escrowd keeps its data directory in (escrow.db, platform-ca.key, escrowd.secret).
        func mounts(_ service: String) -> [(volume: String, path: String)] {
            (services[service]?["volumes"]?.arrayValue ?? []).compactMap { $0.stringValue }.map {
                let parts = $0.split(separator: ":").map(String.init)
                return (parts[0], parts.count > 1 ? parts[1] : "")
            }
        }
        let dataVolume = try #require(mounts("escrowd").first { $0.path == "/var/lib/escrowfleet" }?.volume)
        for m in mounts("mosquitto") {
            #expect(m.volume != dataVolume, "the broker mounts \(m.volume), which holds the CA keys and the ledger")
            #expect(m.path.hasPrefix("/var/lib/escrowfleet/broker"), "the broker sees only its own files: \(m)")
        }
    }

    @Test("ports and the public host come from the environment; the operator port is published on loopback by default")
    func ports() throws {
        let services = try #require(try Self.compose()["services"]?.objectValue)
        let ports = (services["mosquitto"]?["ports"]?.arrayValue ?? []).compactMap(\.stringValue)
        #expect(ports.count == 2 && ports.allSatisfy { $0.contains("${ESCROW_") }, "\(ports)")
        let published = ports.map(Self.interpolate)
        #expect(published.contains("127.0.0.1:1883:1883"), "operators: loopback unless ESCROW_OPERATOR_BIND says otherwise: \(published)")
        #expect(published.contains("0.0.0.0:8883:8883"), "\(published)")
        for name in ["init", "escrowd"] {
            let args = (services[name]?["command"]?.arrayValue ?? []).compactMap(\.stringValue)
            let host = try #require(args.firstIndex(of: "--public-host").map { args[$0 + 1] }, "\(name) names --public-host")
            #expect(host.hasPrefix("${ESCROW_PUBLIC_HOST"), "\(name): \(host)")
            #expect(args.contains("--broker-log"), "\(name): the broker logs to the container's output")
        }
    }

    @Test("healthchecks probe the real service (an MQTT login for the broker, /readyz for escrowd), not a pid file")
    func healthchecks() throws {
        let services = try #require(try Self.compose()["services"]?.objectValue)
        func test(_ name: String) -> String { Self.strings(services[name]?["healthcheck"]?["test"]).joined(separator: " ") }
        #expect(test("mosquitto").contains("escrowctl") && !test("mosquitto").contains(".pid"), "\(test("mosquitto"))")
        #expect(test("escrowd").contains("http://127.0.0.1:9464/readyz"), "\(test("escrowd"))")
        let escrowd = Self.strings(services["escrowd"]?["entrypoint"]) + Self.strings(services["escrowd"]?["command"])
        #expect(Self.option("--http", in: escrowd) == "0.0.0.0:9464")
        #expect(try String(contentsOfFile: Self.root + "/.ci/Dockerfile", encoding: .utf8).contains(" curl "), "the image has curl for the healthcheck")
    }

    @Test("the mosquitto healthcheck command tells a live broker (exit 77, login refused) from a dead one (69)")
    func healthcheckProbe() async throws {
        let broker = try await MosquittoBroker(BrokerConfig(allowAnonymous: false, passwords: ["op-admin": "secret-password"]))
        let escrowctl = try Products.path("escrowctl")
        let probe = ["--broker", broker.url, "--user", "op-healthcheck", "--password", "probe", "--account", "platform", "--timeout", "3s", "account", "list"]
        #expect(try runCommandStatus(escrowctl, probe).status == 77)
        let dead = probe.map { $0 == broker.url ? "mqtt://127.0.0.1:\(try! freePort())" : $0 }
        #expect(try runCommandStatus(escrowctl, dead).status == 69)
    }

    @Test("the Dockerfile is multi-stage, runs as a named non-root user, exposes the two ports, and has a .dockerignore")
    func dockerfile() throws {
        let text = try String(contentsOfFile: Self.root + "/.ci/Dockerfile", encoding: .utf8)
        #expect(text.components(separatedBy: "\nFROM ").count - 1 + (text.hasPrefix("FROM ") ? 1 : 0) >= 2)
        #expect(text.contains("\nUSER escrow\n") && text.contains("EXPOSE 8883 1883 9464"))
        let ignore = try String(contentsOfFile: Self.root + "/.ci/Dockerfile.dockerignore", encoding: .utf8)
        #expect(ignore.contains(".build") && ignore.contains(".git"))
    }

    @Test("the files escrowd writes for a separate broker hold no CA key and no ledger")
    func brokerFilesHoldNoSecrets() throws {
        let data = try TempDirectory(prefix: "init-broker")
        let out = try runCommand(try Products.path("escrowd"), ["--data", data.path, "--broker", "mqtt://mosquitto:1883", "--public-host", "mqtt.example.com", "--broker-log", "stderr", "--init-broker-files"])
        #expect(out.contains("broker files written"), "\(out)")
        #expect(FileManager.default.fileExists(atPath: data.path + "/platform-ca.key"))
        let brokerDir = data.path + "/broker"
        let files = try #require(FileManager.default.subpaths(atPath: brokerDir))
        for f in files {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: brokerDir + "/" + f, isDirectory: &isDir), !isDir.boolValue else { continue }
            let text = (try? String(contentsOfFile: brokerDir + "/" + f, encoding: .utf8)) ?? ""
            if text.contains("PRIVATE KEY") { #expect(f.hasSuffix("server.key"), "\(f) holds a private key") }
            #expect(!f.hasSuffix(".db") || f.hasPrefix("persistence"), "\(f)")
        }
        let conf = try String(contentsOfFile: brokerDir + "/mosquitto.conf", encoding: .utf8)
        #expect(conf.contains("log_dest stderr") && !conf.contains("log_dest file"), "\(conf)")
    }

    static func strings(_ v: JSONValue?) -> [String] { (v?.arrayValue ?? []).compactMap(\.stringValue) }
    static func option(_ name: String, in command: [String]) -> String? {
        command.firstIndex(of: name).flatMap { command.indices.contains($0 + 1) ? command[$0 + 1] : nil }
    }

    @Test("the broker configuration escrowd generates for compose agrees with the file: listeners, ports, paths in the broker's volume, plugin, pid file, certificate names")
    func generatedConfigurationAgrees() throws {
        let services = try #require(try Self.compose()["services"]?.objectValue)
        let data = "/var/lib/escrowfleet"
        #expect(services["mosquitto"]?["image"] == services["init"]?["image"], "the broker runs the EscrowFleet image (Debian's Mosquitto and the plugin)")
        #expect(Self.strings(services["fleetsim"]?["profiles"]) == ["sim"], "fleetsim is optional")
        #expect(services["escrowd"]?["pid"]?.stringValue == "service:mosquitto", "escrowd can signal the broker")
        // Generate the broker files exactly as the `init` service does, into a temp data directory.
        let initCommand = (Self.strings(services["init"]?["entrypoint"]) + Self.strings(services["init"]?["command"])).map(Self.interpolate)
        #expect(initCommand.first == "escrowd" && initCommand.contains("--init-broker-files") && Self.option("--data", in: initCommand) == data)
        let tmp = try TempDirectory(prefix: "compose")
        var args = Array(initCommand.dropFirst())
        args[args.firstIndex(of: "--data")! + 1] = tmp.path + "/data"
        _ = try runCommand(try Products.path("escrowd"), args)
        let lines = try String(contentsOfFile: tmp.path + "/data/broker/mosquitto.conf", encoding: .utf8)
            .split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") }
        // Listeners: the container ports compose publishes, on all interfaces; devices on mutual TLS.
        let listeners = lines.filter { $0.hasPrefix("listener ") }.map { $0.split(separator: " ").map(String.init) }
        let devicePort = try #require(Self.option("--device-port", in: initCommand)), operatorPort = try #require(Self.option("--operator-port", in: initCommand))
        #expect(listeners.map { $0[1] } == [devicePort, operatorPort] && listeners.allSatisfy { $0.count == 3 && $0[2] == "0.0.0.0" })
        let published = Self.strings(services["mosquitto"]?["ports"]).map(Self.interpolate)
        #expect(published.map { $0.split(separator: ":").last.map(String.init) ?? "" } == [devicePort, operatorPort], "\(published)")
        #expect(lines.contains("require_certificate true") && lines.contains("use_identity_as_username true") && lines.contains("use_username_as_clientid true"))
        #expect(lines.contains("allow_anonymous false"))
        // The plugin line names the path the image installs it at (the broker container runs the same image).
        let dockerfile = try String(contentsOfFile: Self.root + "/.ci/Dockerfile", encoding: .utf8)
        #expect(dockerfile.contains("/usr/lib/escrowfleet/\(BrokerPlugin.fileName)") && BrokerPlugin.searchDirectories.contains("/usr/lib/escrowfleet"))
        // Every file the config names lies in DATA/broker, the only volume the broker mounts, and exists.
        for key in ["password_file", "acl_file", "persistence_location", "cafile", "certfile", "keyfile", "crlfile", "pid_file", "plugin_opt_acl_file", "plugin_opt_revoked_file"] {
            for line in lines where line.hasPrefix(key + " ") {
                let path = String(line.dropFirst(key.count + 1))
                #expect(path.hasPrefix(tmp.path + "/data/broker/"), "\(key) \(path) is outside the broker's volume")
                if key != "persistence_location" && key != "pid_file" { #expect(FileManager.default.fileExists(atPath: path), "\(key) \(path) was not written") }
            }
        }
        // The broker reads the generated file; escrowd signals the pid the broker writes.
        #expect(Self.strings(services["mosquitto"]?["entrypoint"]) == ["mosquitto", "-c", "\(data)/broker/mosquitto.conf"])
        let pidLine = try #require(lines.first { $0.hasPrefix("pid_file ") })
        let escrowd = (Self.strings(services["escrowd"]?["entrypoint"]) + Self.strings(services["escrowd"]?["command"])).map(Self.interpolate)
        #expect(Self.option("--broker-pid-file", in: escrowd) == pidLine.replacingOccurrences(of: "pid_file " + tmp.path + "/data", with: data))
        #expect(Self.option("--broker", in: escrowd) == "mqtt://mosquitto:\(operatorPort)")
        let sim = Self.strings(services["fleetsim"]?["command"])
        #expect(Self.option("--broker", in: sim) == "mqtts://mosquitto:\(devicePort)" && Self.option("--admin-config", in: sim) == "\(data)/admin.conf")
        #expect(FileManager.default.fileExists(atPath: tmp.path + "/data/admin.conf"))
        // The broker's certificate names the public host and the host the simulator dials inside the network.
        let sans = try runCommand("/usr/bin/openssl", ["x509", "-noout", "-ext", "subjectAltName", "-in", tmp.path + "/data/broker/certs/server.pem"])
        #expect(sans.contains("DNS:mosquitto") && sans.contains("DNS:localhost"), "server certificate SANs: \(sans)")
        // The leaf alone: clients trust the platform CA already; the broker does not send it along.
        let serverPEM = try String(contentsOfFile: tmp.path + "/data/broker/certs/server.pem", encoding: .utf8)
        #expect(serverPEM.components(separatedBy: "-----BEGIN CERTIFICATE-----").count == 2, "server.pem holds more than the leaf")
        for product in ["escrowd", "escrowctl", "escrow-agent", "fleetsim"] { #expect(dockerfile.contains("--product \(product)")) }
        #expect(services["init"]?["build"]?["dockerfile"]?.stringValue == ".ci/Dockerfile")
    }

    @Test("the systemd unit verifies and is hardened")
    func systemdUnit() throws {
        let unit = try String(contentsOfFile: Self.root + "/docs/deploy/escrowd.service", encoding: .utf8)
        for line in ["User=escrow", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "CapabilityBoundingSet=", "StateDirectory=escrowfleet"] {
            #expect(unit.contains("\n" + line + "\n"), "\(line)")
        }
        guard let analyze = locateExecutable("systemd-analyze") else { return }
        // Verify against the built binary (the unit names the installed path).
        let scratch = try TempDirectory(prefix: "unit")
        let copy = scratch.file("escrowd.service")
        try unit.replacingOccurrences(of: "/usr/local/bin/escrowd", with: try Products.path("escrowd"))
            .write(toFile: copy, atomically: true, encoding: .utf8)
        let r = try runCommandStatus(analyze, ["verify", copy])
        #expect(r.status == 0, "\(r.output)")
    }

    @Test("docker compose config validates the file (Compose v2, or Debian's docker-compose 1.29)")
    func composeConfig() throws {
        let file = Self.root + "/docker-compose.yml"
        if Self.composeAvailable, let docker = locateExecutable("docker") {
            _ = try runCommand(docker, ["compose", "-f", file, "config", "--quiet"])
        } else {
            let v1 = try #require(locateExecutable("docker-compose"), "neither 'docker compose' nor 'docker-compose' is installed: apt-get install docker-compose (.ci/install-deps does)")
            let r = try runCommandStatus(v1, ["-f", file, "config", "-q"])
            #expect(r.status == 0, "docker-compose config: \(r.output)")
        }
    }

    @Test("compose smoke test: the stack comes up healthy, runs the transfer story with 50 simulated devices, and goes away",
          .enabled(if: DeploymentTests.dockerDaemonAvailable, "no Docker daemon with the compose plugin here: skipped"), .timeLimit(.minutes(30)))
    func composeSmoke() throws {
        let docker = try #require(locateExecutable("docker"))
        let base = ["compose", "-p", "escrowfleet-smoke-\(getpid())", "-f", Self.root + "/docker-compose.yml"]
        defer { _ = try? runCommandStatus(docker, base + ["--profile", "sim", "down", "-v", "--remove-orphans"], timeout: .seconds(120)) }
        _ = try runCommand(docker, base + ["up", "-d", "--build", "--wait", "--wait-timeout", "180"], timeout: .seconds(1500))
        let story = try runCommand(docker, base + ["--profile", "sim", "run", "--rm", "fleetsim", "transfer", "--admin-config", "/var/lib/escrowfleet/admin.conf",
                                                   "--devices", "50", "--broker", "mqtts://mosquitto:8883"], timeout: .seconds(300))
        #expect(story.contains("passed"), "\(story)")
    }

    static var dockerDaemonAvailable: Bool {
        guard composeAvailable, let docker = locateExecutable("docker") else { return false }
        return (try? runCommandStatus(docker, ["info", "--format", "{{.ServerVersion}}"]).status) == 0
    }

    static var composeAvailable: Bool {
        guard let docker = locateExecutable("docker") else { return false }
        return (try? runCommandStatus(docker, ["compose", "version"]).status) == 0
    }
}
