import Foundation
import Testing
import EscrowCore
import HTTPServer
import TestSupport
import Synchronization

/// escrowd --http: /metrics, /healthz, /readyz over real sockets, and the server's refusals.
@Suite("escrowd's HTTP endpoint", .timeLimit(.minutes(2)))
struct HTTPEndpointTests {
    @Test("/healthz, /readyz and /metrics answer; /metrics is valid Prometheus text with the escrowd families")
    func endpoints() async throws {
        let port = try freePort()
        let platform = try await PlatformSession(arguments: ["--http", "127.0.0.1:\(port)"])
        #expect(platform.escrowd.logTail().contains("http: /metrics, /healthz and /readyz on http://127.0.0.1:\(port)"))
        let health = try HTTPExchange.get(port: port, "/healthz")
        #expect(health.status == 200 && health.body == "ok\n")
        let ready = try HTTPExchange.get(port: port, "/readyz")
        #expect(ready.status == 200 && ready.body == "ready\n", "\(ready)")
        _ = try await platform.account("oem", kind: .provisioner)
        let metrics = try HTTPExchange.get(port: port, "/metrics")
        #expect(metrics.status == 200 && metrics.headers["content-type"] == PrometheusText.contentType)
        let samples = try PrometheusText.validate(metrics.body)
        #expect(samples.contains { $0.name == "escrowd_commands_total" && $0.labels["command"] == "account.create" && $0.value >= 1 })
        for family in ["escrowd_devices_presence", "escrowd_heartbeats_received_total", "escrowd_command_duration_seconds_bucket",
                       "escrowd_ledger_commit_duration_seconds_count", "escrowd_outbox_depth", "escrowd_broker_connected"] {
            #expect(samples.contains { $0.name == family }, "\(family)")
        }
        #expect(try HTTPExchange.get(port: port, "/nope").status == 404)
        #expect(try HTTPExchange.send(port: port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").status == 405)
        let head = try HTTPExchange.send(port: port, "HEAD /healthz HTTP/1.1\r\n\r\n")
        #expect(head.status == 200 && head.body.isEmpty)
        await platform.close()
    }

    @Test("malformed, oversized and silent requests are refused with their status, and the server keeps serving")
    func refusals() throws {
        let server = try HTTPServer(port: 0) { r in HTTPResponse(status: 200, text: "\(r.method) \(r.path) \(r.query["q"] ?? "-") \(r.body.count)\n") }
        server.start()
        defer { server.stop() }
        let port = server.port
        #expect(try HTTPExchange.send(port: port, "GARBAGE\r\n\r\n").status == 400)
        #expect(try HTTPExchange.send(port: port, "GET nopath HTTP/1.1\r\n\r\n").status == 400)
        #expect(try HTTPExchange.send(port: port, "GET / HTTP/1.1\r\nno colon here\r\n\r\n").status == 400)
        #expect(try HTTPExchange.send(port: port, "GET / HTTP/1.1\r\nX: " + String(repeating: "a", count: 20_000) + "\r\n\r\n").status == 431)
        #expect(try HTTPExchange.send(port: port, "POST / HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n").status == 413)
        #expect(try HTTPExchange.send(port: port, "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").status == 400)
        // Invalid UTF-8 in the head.
        #expect(try HTTPExchange.send(port: port, "GET /\u{FFFD} HTTP/1.1\r\n\r\n").status == 200) // valid UTF-8 (the replacement character) is fine
        let ok = try HTTPExchange.send(port: port, "POST /a%20b?q=x%2Fy HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        #expect(ok.status == 200 && ok.body == "POST /a b x/y 3\n", "\(ok)")
        // Many at once: each gets its answer.
        let results = Mutex<[Int]>([])
        DispatchQueue.concurrentPerform(iterations: 32) { _ in
            let s = (try? HTTPExchange.get(port: port, "/x").status) ?? -1
            results.withLock { $0.append(s) }
        }
        #expect(results.withLock { $0 } == Array(repeating: 200, count: 32))
    }

    @Test("a port already in use is a clear start-up error")
    func portInUse() throws {
        let server = try HTTPServer(port: 0) { _ in HTTPResponse(status: 200, text: "") }
        #expect(throws: HTTPServerError.self) { try HTTPServer(port: server.port) { _ in HTTPResponse(status: 200, text: "") } }
        do { _ = try HTTPServer(host: "localhost", port: 0) { _ in HTTPResponse(status: 200, text: "") } } catch {
            #expect("\(error)".contains("IPv4 address"))
        }
        server.stop()
    }
}
