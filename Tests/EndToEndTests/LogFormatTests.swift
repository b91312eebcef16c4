import Foundation
import Testing
import EscrowCore
import TestSupport

@Suite("escrowd's log: JSON lines and no secrets", .timeLimit(.minutes(2)))
struct LogFormatTests {
    @Test("--log-format json writes one object per line with UTC time, level, component, message and fields; no password, key or secret ever appears")
    func jsonLinesWithoutSecrets() async throws {
        let platform = try await PlatformSession(arguments: ["--log-format", "json", "--log-level", "debug"])
        let oem = try await platform.account("oem", kind: .provisioner)  // operator password pw-oem-secret
        _ = try await oem.send("oem", "device.provision", ["prefix": "lg-", "count": 2]).result(Commands.DeviceProvisionResult.self)
        let refused = try await oem.send("oem", "transfer.request", ["to": "nobody", "deviceIds": TestSupport.ids(["lg-000001"])], requestID: "req-log-1")
        #expect(refused.error != nil)
        let bad = try await platform.admin.send(.platform, "operator.create", ["username": "op-x", "password": "hunter2-hunter2", "account": "missing"])
        #expect(bad.error != nil)
        try await waitUntil("the failed command is logged") { platform.escrowd.logTail(50_000).contains("req-log-1") }
        let log = platform.escrowd.logTail(1_000_000)
        var objects = 0
        for line in log.split(separator: "\n") where !line.isEmpty {
            let object = try JSONDecoder().decode(JSONValue.self, from: Data(line.utf8))
            for key in ["time", "level", "component", "message"] { #expect(object[key]?.stringValue != nil, "\(key) in \(line)") }
            #expect(object["time"]?.stringValue?.hasSuffix("Z") == true, "UTC: \(line)")
            #expect(["debug", "info", "warn", "error"].contains(object["level"]?.stringValue ?? ""))
            objects += 1
        }
        #expect(objects > 5)
        let failure = try #require(log.split(separator: "\n").first { $0.contains("req-log-1") })
        let object = try JSONDecoder().decode(JSONValue.self, from: Data(failure.utf8))
        #expect(object["account"] == "oem" && object["requestId"] == "req-log-1" && object["command"] == "transfer.request", "\(failure)")
        // Secrets: operator passwords, the administrator's and escrowd's own, private keys.
        let admin = try platform.escrowd.adminCredentials().password
        let secret = try String(contentsOfFile: platform.escrowd.dataDirectory + "/escrowd.secret", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        for s in ["pw-oem-secret", "hunter2-hunter2", admin, secret, "PRIVATE KEY"] { #expect(!log.contains(s), "the log holds a secret: \(s.prefix(4))...") }
        await oem.close()
        await platform.close()
    }
}
