import Foundation
import Testing
import TestSupport
import Broker

/// There is no Docker engine here, so this checks that docker-compose.yml and the broker
/// configuration escrowd generates for it agree: services, ports, mounted paths, listeners.
@Suite("docker-compose.yml agrees with the generated broker configuration")
struct ComposeTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// The services of the compose file: name -> key -> raw value (flow values stay as text).
    static func services() throws -> [String: [String: String]] {
        let text = try String(contentsOfFile: root + "/docker-compose.yml", encoding: .utf8)
        var out: [String: [String: String]] = [:]
        var inServices = false, current: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) where !line.hasPrefix("#") {
            if line == "services:" { inServices = true; continue }
            if !line.hasPrefix(" ") && !line.isEmpty { inServices = false }
            guard inServices else { continue }
            if line.hasPrefix("  "), !line.hasPrefix("   "), line.hasSuffix(":") {
                current = String(line.dropFirst(2).dropLast()); out[current!] = [:]; continue
            }
            if let c = current, line.hasPrefix("    "), !line.hasPrefix("     "), let colon = line.firstIndex(of: ":") {
                let key = line[line.index(line.startIndex, offsetBy: 4)..<colon]
                out[c]![String(key)] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return out
    }

    static func array(_ raw: String?) throws -> [String] {
        let data = Data((raw ?? "").utf8)
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String], "not a flow list: \(raw ?? "nil")")
    }

    static func option(_ name: String, in command: [String]) -> String? {
        command.firstIndex(of: name).flatMap { command.indices.contains($0 + 1) ? command[$0 + 1] : nil }
    }

    @Test("services, ports, mounted paths and listener settings match what escrowd generates")
    func agree() throws {
        let s = try Self.services()
        #expect(Set(s.keys) == ["init", "mosquitto", "escrowd", "fleetsim"])
        #expect(s["mosquitto"]?["image"] == s["init"]?["image"], "the broker runs the EscrowFleet image (Debian's Mosquitto and the plugin)")
        #expect(s["fleetsim"]?["profiles"]?.contains("sim") == true, "fleetsim is optional")
        #expect(s["escrowd"]?["pid"] == "\"service:mosquitto\"", "escrowd can signal the broker")

        // One volume, mounted at the same path everywhere: the paths inside the config resolve.
        let mounts = try s.values.map { try Self.array($0["volumes"]) }
        let data = "/var/lib/escrowfleet"
        for m in mounts { #expect(m == ["escrow-data:\(data)"]) }

        // Generate the broker files exactly as the `init` service does, into a temp data directory.
        let initCommand = try Self.array(s["init"]?["command"])
        #expect(initCommand.first == "escrowd" && initCommand.contains("--init-broker-files"))
        #expect(Self.option("--data", in: initCommand) == data)
        let tmp = try TempDirectory(prefix: "compose")
        var args = Array(initCommand.dropFirst())
        args[args.firstIndex(of: "--data")! + 1] = tmp.path + "/data"
        _ = try runCommand(try Products.path("escrowd"), args)
        let conf = try String(contentsOfFile: tmp.path + "/data/broker/mosquitto.conf", encoding: .utf8)
        let lines = conf.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") }

        // Listeners: the ports the compose file publishes, on all interfaces, devices on mTLS.
        let listeners = lines.filter { $0.hasPrefix("listener ") }.map { $0.split(separator: " ").map(String.init) }
        let devicePort = try #require(Self.option("--device-port", in: initCommand)), operatorPort = try #require(Self.option("--operator-port", in: initCommand))
        #expect(listeners.map { $0[1] } == [devicePort, operatorPort])
        #expect(listeners.allSatisfy { $0.count == 3 && $0[2] == "0.0.0.0" })
        #expect(try Self.array(s["mosquitto"]?["ports"]) == ["\(devicePort):\(devicePort)", "\(operatorPort):\(operatorPort)"])
        #expect(lines.contains("require_certificate true") && lines.contains("use_identity_as_username true"))
        #expect(lines.contains("use_username_as_clientid true"))
        // The plugin line names the path the image installs it at (the broker container runs the same image).
        let dockerfile = try String(contentsOfFile: Self.root + "/.ci/Dockerfile", encoding: .utf8)
        #expect(dockerfile.contains("/usr/lib/escrowfleet/\(BrokerPlugin.fileName)"))
        #expect(BrokerPlugin.searchDirectories.contains("/usr/lib/escrowfleet"))
        #expect(lines.contains("allow_anonymous false"))

        // Every file the config names lies in the data directory (so in the shared volume) and exists.
        let pathKeys = ["password_file", "acl_file", "persistence_location", "log_dest file", "cafile", "certfile", "keyfile", "crlfile", "pid_file"]
        for key in pathKeys {
            for line in lines where line.hasPrefix(key + " ") {
                let path = String(line.dropFirst(key.count + 1))
                #expect(path.hasPrefix(tmp.path + "/data/"), "\(key) \(path) is outside the data directory")
                if ["password_file", "acl_file", "cafile", "certfile", "keyfile", "crlfile"].contains(key) {
                    #expect(FileManager.default.fileExists(atPath: path), "\(key) \(path) was not written")
                }
            }
        }
        // The broker reads the generated file; escrowd signals the pid the broker writes.
        let brokerCommand = try Self.array(s["mosquitto"]?["command"])
        #expect(brokerCommand == ["mosquitto", "-c", "\(data)/broker/mosquitto.conf"])
        let pidLine = try #require(lines.first { $0.hasPrefix("pid_file ") })
        let escrowd = try Self.array(s["escrowd"]?["command"])
        #expect(Self.option("--broker-pid-file", in: escrowd) == pidLine.replacingOccurrences(of: "pid_file " + tmp.path + "/data", with: data))
        // escrowd and the simulator use the same listeners the broker opens.
        #expect(Self.option("--broker", in: escrowd) == "mqtt://mosquitto:\(operatorPort)")
        #expect(Self.option("--broker", in: initCommand) == "mqtt://mosquitto:\(operatorPort)")
        let sim = try Self.array(s["fleetsim"]?["command"])
        #expect(Self.option("--broker", in: sim) == "mqtts://mosquitto:\(devicePort)")
        #expect(Self.option("--admin-config", in: sim) == "\(data)/admin.conf")
        #expect(FileManager.default.fileExists(atPath: tmp.path + "/data/admin.conf"))
        // The broker's certificate names the host the simulator dials.
        let pem = try String(contentsOfFile: tmp.path + "/data/broker/certs/server.pem", encoding: .utf8)
        let text = try runCommand("/usr/bin/openssl", ["x509", "-noout", "-ext", "subjectAltName", "-in", tmp.path + "/data/broker/certs/server.pem"])
        #expect(!pem.isEmpty && text.contains("DNS:mosquitto"), "server certificate SANs: \(text)")
        // The image builds the four executables the services run.
        for product in ["escrowd", "escrowctl", "escrow-agent", "fleetsim"] { #expect(dockerfile.contains("--product \(product)")) }
        #expect(s["init"]?["build"]?.contains(".ci/Dockerfile") == true)
    }
}
