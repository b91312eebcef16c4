import Foundation
import Testing
import EscrowCore
import POSIX
import TestSupport

/// escrow-console over HTTPS with the broker's server certificate (signed by the platform CA).
@Suite("Web console over TLS", .timeLimit(.minutes(2)))
struct ConsoleTLSTests {
    @Test("HTTPS with a certificate from the platform CA: pages verify against the CA, the session cookie is Secure, plain HTTP gets nothing")
    func https() async throws {
        let platform = try await PlatformSession()
        _ = try await platform.account("acme", kind: .customer)
        let data = platform.escrowd.dataDirectory
        let port = try freePort()
        let logs = try TempDirectory(prefix: "console-tls")
        let console = try ChildProcess.spawn(try Products.path("escrow-console"),
                                             ["--listen", "127.0.0.1:\(port)", "--broker", platform.escrowd.operatorURL,
                                              "--tls-cert", data + "/broker/certs/server.pem", "--tls-key", data + "/broker/certs/server.key"],
                                             stdout: logs.file("console.log"))
        defer { console.signal(SIGTERM) }
        let curl = try #require(locateExecutable("curl"), "apt-get install curl (.ci/install-deps does)")
        let base = ["-s", "--max-time", "10", "--cacert", data + "/platform-ca.pem", "--resolve", "localhost:\(port):127.0.0.1"]
        try await waitUntil(timeout: .seconds(20), "the console serves HTTPS") {
            (try? runCommandStatus(curl, base + ["-o", "/dev/null", "-w", "%{http_code}", "https://localhost:\(port)/healthz"]).output) == "200"
        }
        let login = try runCommand(curl, base + ["-D", "-", "-o", "/dev/null", "--data", "username=op-acme&password=pw-acme-secret&account=acme", "https://localhost:\(port)/login"])
        #expect(login.contains("303") && login.lowercased().contains("set-cookie: escrow_session=") && login.contains("HttpOnly; SameSite=Strict") && login.contains("; Secure"), "\(login)")
        // An untrusting client is refused by its own verification; plain HTTP gets no page.
        #expect(try runCommandStatus(curl, ["-s", "--max-time", "5", "--resolve", "localhost:\(port):127.0.0.1", "https://localhost:\(port)/healthz"]).status == 60)
        #expect(try runCommandStatus(curl, ["-s", "--max-time", "5", "http://127.0.0.1:\(port)/healthz"]).output.isEmpty)
        // A key that is not the certificate's: a clear start-up error.
        let bad = try runCommandStatus(try Products.path("escrow-console"), ["--listen", "127.0.0.1:0", "--tls-cert", data + "/broker/certs/server.pem", "--tls-key", data + "/platform-ca.key"])
        #expect(bad.status == 66 && bad.output.contains("cannot serve HTTPS"), "\(bad)")
        await platform.close()
    }
}
