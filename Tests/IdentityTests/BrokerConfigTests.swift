import Foundation
import Testing
@testable import Broker

@Suite("Broker configuration text", .timeLimit(.minutes(1)))
struct BrokerConfigTests {
    let layout = BrokerLayout(dataDirectory: "/var/lib/escrow")

    @Test func layoutPaths() {
        #expect(layout.configFile == "/var/lib/escrow/broker/mosquitto.conf")
        #expect(layout.aclFile == "/var/lib/escrow/broker/acl")
        #expect(layout.passwordFile == "/var/lib/escrow/broker/passwd")
        #expect(layout.caBundle == "/var/lib/escrow/broker/certs/ca.pem")
        #expect(layout.serverCertificate == "/var/lib/escrow/broker/certs/server.pem")
        #expect(layout.serverKey == "/var/lib/escrow/broker/certs/server.key")
        #expect(layout.persistenceDirectory == "/var/lib/escrow/broker/persistence/")
        #expect(layout.logFile == "/var/lib/escrow/broker/mosquitto.log")
    }

    @Test func configHasEveryRequiredSetting() {
        var plan = BrokerPlan(layout: layout, devicePort: 8883, operatorPort: 1883)
        plan.runAsRoot = true
        let lines = Set(plan.mosquittoConf().split(separator: "\n").map(String.init))
        for required in [
            "per_listener_settings false", "allow_anonymous false",
            "password_file /var/lib/escrow/broker/passwd", "acl_file /var/lib/escrow/broker/acl",
            "persistence true", "persistence_location /var/lib/escrow/broker/persistence/",
            "autosave_interval 60", "autosave_on_changes false",
            "max_queued_messages 100000", "max_inflight_messages 1000", "max_connections -1",
            "log_dest file /var/lib/escrow/broker/mosquitto.log", "user root",
            "listener 8883 0.0.0.0", "listener 1883 127.0.0.1",
            "cafile /var/lib/escrow/broker/certs/ca.pem", "crlfile /var/lib/escrow/broker/certs/crl.pem",
            "certfile /var/lib/escrow/broker/certs/server.pem", "keyfile /var/lib/escrow/broker/certs/server.key",
            "require_certificate true", "use_identity_as_username true", "use_username_as_clientid true",
            "plugin_opt_acl_file /var/lib/escrow/broker/acl", "plugin_opt_service_prefix svc-",
        ] {
            #expect(lines.contains(required), "missing: \(required)")
        }
        plan.runAsRoot = false
        #expect(!plan.mosquittoConf().contains("user root"))
    }

    @Test func aclGrantsDevicesTheirOwnTopicsAndOperatorsTheirAccounts() throws {
        let text = try ACLFile.render(ACLInput(controlPlaneUser: "escrowd",
                                               operators: [("oem-op", ["oem", "cust1"]), ("cust-op", ["cust1"])]))
        let lines = text.split(separator: "\n").map(String.init)
        for p in ["pattern write devices/%u/status", "pattern write devices/%u/heartbeat",
                  "pattern write devices/%u/config/ack", "pattern write devices/%u/csr",
                  "pattern read devices/%u/config", "pattern read devices/%u/error"] {
            #expect(lines.contains(p))
        }
        let cp = lines.firstIndex(of: "user escrowd")!
        #expect(lines[cp + 1] == "topic readwrite devices/#" && lines[cp + 2] == "topic readwrite accounts/#")
        let oem = lines.firstIndex(of: "user oem-op")!
        #expect(Array(lines[oem + 1 ... oem + 6]) == [
            "topic write accounts/oem/cmd/#", "topic read accounts/oem/reply/#", "topic read accounts/oem/events/#",
            "topic write accounts/cust1/cmd/#", "topic read accounts/cust1/reply/#", "topic read accounts/cust1/events/#"])
    }

    @Test("a login listed twice is refused before any file is written")
    func duplicateLoginsAreRefused() throws {
        #expect(throws: BrokerError.self) {
            try ACLFile.render(ACLInput(controlPlaneUser: "svc-escrowd", operators: [("svc-escrowd", ["oem"])]))
        }
        #expect(throws: BrokerError.self) {
            try ACLFile.render(ACLInput(controlPlaneUser: "svc-escrowd", operators: [("op-a", ["oem"]), ("op-a", ["acme"])]))
        }
        #expect(throws: BrokerError.self) { try PasswordFile.render([("svc-escrowd", "$7$1$x$y"), ("svc-escrowd", "$7$1$x$z")]) }
        #expect(throws: Never.self) { try ACLFile.render(ACLInput(controlPlaneUser: "svc-escrowd", operators: [("op-a", ["oem"])])) }
    }

    @Test("the plugin is located through ESCROW_BROKER_PLUGIN, or next to the executable")
    func pluginLocation() {
        #expect(BrokerPlugin.locate(environment: ["ESCROW_BROKER_PLUGIN": "/opt/x.so"]) == "/opt/x.so")
        // SwiftPM builds the plugin product next to the test bundle.
        let found = BrokerPlugin.locate(environment: [:])
        #expect(found?.hasSuffix("/" + BrokerPlugin.fileName) == true, "\(BrokerPlugin.missingMessage)")
        #expect(BrokerPlugin.missingMessage.contains("ESCROW_BROKER_PLUGIN"))
    }

    @Test func namesThatCouldBreakTheFilesAreRefused() {
        #expect(throws: BrokerError.self) { try ACLFile.render(ACLInput(controlPlaneUser: "a b")) }
        #expect(throws: BrokerError.self) { try ACLFile.render(ACLInput(controlPlaneUser: "cp", operators: [("op", ["acct/#"])])) }
        #expect(throws: BrokerError.self) { try ACLFile.render(ACLInput(controlPlaneUser: "cp", operators: [("op\ntopic readwrite #", ["a"])])) }
        #expect(throws: BrokerError.self) { try PasswordFile.render([("a:b", "$7$1$x$y")]) }
        #expect(throws: BrokerError.self) { try PasswordFile.render([("alice", "plain")]) }
    }

    @Test func passwordFileLines() throws {
        #expect(try PasswordFile.render([("a", "$7$101$s$h"), ("b", "$7$101$t$i")]) == "a:$7$101$s$h\nb:$7$101$t$i\n")
    }

    @Test func externalBrokerDescriptionCarriesTheSecuritySettings() {
        let text = describeForExternalBroker(BrokerPlan(layout: layout))
        for s in ["require_certificate true", "use_identity_as_username true", "allow_anonymous false",
                  "acl_file /var/lib/escrow/broker/acl", "crlfile /var/lib/escrow/broker/certs/crl.pem", "SIGHUP"] {
            #expect(text.contains(s), "missing: \(s)")
        }
        #expect(!text.contains("user root"))
        #expect(!text.contains("log_dest"))
    }
}
