import Foundation
import TestSupport
import EscrowCore
import Synchronization
import Testing
@testable import Broker
import Identity
#if canImport(Glibc)
import Glibc
#endif

/// Runs a command to completion (bounded); its exit status and output, whatever the status.
func run(_ executable: String, _ args: [String], timeout: Double = 15) throws -> (status: Int32, output: String) {
    try runCommandStatus(executable, args, timeout: .milliseconds(Int(timeout * 1000)))
}

func openssl(_ args: String...) throws -> (status: Int32, output: String) {
    try run("/usr/bin/openssl", args)
}

/// A real mosquitto with generated config, CAs, server certificate and device identities.
final class BrokerFixture: @unchecked Sendable {
    let dir: TempDirectory
    let layout: BrokerLayout
    let plan: BrokerPlan
    let provisioner: CertificateAuthority
    let owner: CertificateAuthority
    let broker: ManagedBroker
    var devices: [String: DeviceIdentity] = [:]
    let controlPlaneUser = "svc-escrowd"
    let controlPlanePassword = "cp-secret"
    let operators: [(username: String, password: String, accounts: [String])]

    init(devices deviceIDs: [String] = ["devA", "devB"], ownerDevices: [String] = [],
         operators: [(username: String, password: String, accounts: [String])] = []) throws {
        dir = try TempDirectory(prefix: "brk")
        layout = BrokerLayout(dataDirectory: dir.path)
        let ports = try freePorts(2)
        plan = BrokerPlan(layout: layout, deviceHost: "127.0.0.1", devicePort: ports[0], operatorPort: ports[1])
        provisioner = try CertificateAuthority.create(commonName: "EscrowFleet Provisioner CA")
        owner = try CertificateAuthority.create(commonName: "Owner acme CA")
        for id in deviceIDs { devices[id] = try provisioner.issueDeviceIdentity(deviceID: id) }
        for id in ownerDevices { devices[id] = try owner.issueDeviceIdentity(deviceID: id) }
        self.operators = operators
        try layout.installServerIdentity(ca: provisioner, serverNames: ["localhost", "127.0.0.1"])
        try layout.installTrust(authorities: [provisioner, owner])
        let acl = try ACLFile.render(ACLInput(controlPlaneUser: controlPlaneUser,
                                              operators: operators.map { ($0.username, $0.accounts) }))
        let pw = try PasswordFile.render([(controlPlaneUser, MosquittoPassword.hash(password: controlPlanePassword))]
                                         + operators.map { ($0.username, MosquittoPassword.hash(password: $0.password)) })
        try layout.install(plan: plan, acl: acl, passwords: pw)
        // Client-side trust for the server certificate.
        _ = try dir.write("server-ca.pem", provisioner.certificate.pem())
        for (id, identity) in devices {
            _ = try dir.write("\(id).pem", identity.certificatePEM)
            _ = try dir.write("\(id).key", identity.privateKeyPEM)
        }
        broker = ManagedBroker(layout: layout, plan: plan)
    }

    func start() async throws { try await broker.start() }

    func shutdown() async {
        await broker.stop()
        dir.remove()
    }

    /// Synchronous cleanup for `defer`.
    func close() {
        broker.stopSynchronously()
        dir.remove()
    }

    // MARK: clients

    func deviceTLS(_ id: String) -> [String] {
        ["-h", "127.0.0.1", "-p", "\(plan.deviceListener.port)", "--cafile", dir.file("server-ca.pem"),
         "--cert", dir.file("\(id).pem"), "--key", dir.file("\(id).key"), "-i", id]
    }

    /// A login's arguments, with a client id of its own (`USER:SUFFIX`, as the broker plugin requires).
    func userArgs(_ user: String, _ password: String) -> [String] {
        ["-h", "127.0.0.1", "-p", "\(plan.operatorListener.port)", "-u", user, "-P", password,
         "-i", BrokerNames.clientID(user, suffix: "cli-\(UUID().uuidString.prefix(8))")]
    }

    var controlPlane: [String] { userArgs(controlPlaneUser, controlPlanePassword) }

    /// Publishes once; returns the exit status and output.
    func pub(_ auth: [String], _ topic: String, _ message: String, qos: Int = 1) throws -> (status: Int32, output: String) {
        try run("/usr/bin/mosquitto_pub", auth + ["-V", "5", "-q", "\(qos)", "-t", topic, "-m", message], timeout: 10)
    }

    /// Starts a subscriber for `topics` that exits after `count` messages, and waits for its SUBACK.
    func sub(_ auth: [String], _ topics: [String], count: Int = 1, timeout: Int = 5) throws -> SpawnedProcess {
        // stdbuf: mosquitto_sub's stdout is a pipe here, fully buffered without it.
        let s = try SpawnedProcess("/usr/bin/stdbuf", ["-oL", "/usr/bin/mosquitto_sub"] + auth + ["-V", "5", "-d", "-q", "1", "-C", "\(count)", "-W", "\(timeout)",
                                                               "-F", "MSG %t %p"] + topics.flatMap { ["-t", $0] })
        // "Subscribed (mid: N): QOS..." is printed right after the SUBACK line, with the granted QoS.
        s.wait(until: { $0.contains("Subscribed (mid:") && $0.hasSuffix("\n") }, timeout: .seconds(10))
        return s
    }

    /// The `MSG topic payload` lines a subscriber printed.
    static func messages(_ s: SpawnedProcess) -> [String] {
        s.text.split(separator: "\n").filter { $0.hasPrefix("MSG ") }.map { String($0.dropFirst(4)) }
    }
}
