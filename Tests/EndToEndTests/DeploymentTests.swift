import Foundation
import Testing
import EscrowCore
import TestSupport

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

    @Test("healthchecks probe the real service over MQTT, not a pid file")
    func healthchecks() throws {
        let services = try #require(try Self.compose()["services"]?.objectValue)
        for name in ["mosquitto", "escrowd"] {
            let test = (services[name]?["healthcheck"]?["test"]?.arrayValue ?? []).compactMap(\.stringValue).joined(separator: " ")
            #expect(test.contains("escrowctl") && !test.contains(".pid"), "\(name): \(test)")
        }
    }

    @Test("the mosquitto healthcheck command tells a live broker (exit 77, login refused) from a dead one (69)")
    func healthcheckProbe() throws {
        let broker = try MosquittoBroker(BrokerConfig(allowAnonymous: false, passwords: ["op-admin": "secret-password"]))
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
        #expect(text.contains("\nUSER escrow\n") && text.contains("EXPOSE 8883 1883"))
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

    @Test("docker compose config validates the file", .enabled(if: DeploymentTests.composeAvailable, "docker compose is not installed here: skipped (the structural checks above still ran)"))
    func composeConfig() throws {
        _ = try runCommand(try #require(locateExecutable("docker")), ["compose", "-f", Self.root + "/docker-compose.yml", "config", "--quiet"])
    }

    static var composeAvailable: Bool {
        guard let docker = locateExecutable("docker") else { return false }
        return (try? runCommandStatus(docker, ["compose", "version"]).status) == 0
    }
}
