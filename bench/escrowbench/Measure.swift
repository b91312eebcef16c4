import Foundation
import MQTT
import POSIX
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Process and machine figures read from /proc.
enum ProcStats {
    /// VmRSS (or another `Vm*` line) of a process, in MiB.
    static func memory(_ field: String = "VmRSS", pid: String = "self") -> Double {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix(field + ":") {
            let kb = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Double($0) } ?? 0
            return kb / 1024
        }
        return 0
    }

    static func loadAverage() -> String {
        ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?").split(separator: " ").prefix(3).joined(separator: " ")
    }

    /// CPU seconds (user + system) of a process.
    static func cpuSeconds(pid: String) -> Double {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = s.lastIndex(of: ")") else { return 0 }
        let f = s[s.index(after: close)...].split(separator: " ")
        // fields after ")": state(0) ... utime(11) stime(12)
        guard f.count > 12, let u = Double(f[11]), let st = Double(f[12]) else { return 0 }
        return (u + st) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// CPU seconds per thread of this process, keyed "name/tid" (Swift's executor threads and
    /// Foundation threads all inherit one name on Linux, so the tid tells them apart).
    static func cpuByThread() -> [String: Double] {
        var out: [String: Double] = [:]
        guard let tids = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return out }
        for tid in tids {
            guard let s = try? String(contentsOfFile: "/proc/self/task/\(tid)/stat", encoding: .utf8),
                  let open = s.firstIndex(of: "("), let close = s.lastIndex(of: ")") else { continue }
            let name = String(s[s.index(after: open)..<close])
            let f = s[s.index(after: close)...].split(separator: " ")
            guard f.count > 12, let u = Double(f[11]), let st = Double(f[12]) else { continue }
            out["\(name)/\(tid)"] = (u + st) / Double(sysconf(Int32(_SC_CLK_TCK)))
        }
        return out
    }

    static func cpuDelta(_ a: [String: Double], _ b: [String: Double]) -> [(String, Double)] {
        b.map { ($0.key, $0.value - (a[$0.key] ?? 0)) }.filter { $0.1 > 0.05 }.sorted { $0.1 > $1.1 }
    }
}

/// Watches the broker's `$SYS` tree (published every second with `sys_interval 1`).
final class SysMonitor: Sendable {
    let client: MQTTClient
    private let values = Mutex<[String: String]>([:])

    init(port: Int) async throws {
        client = try MQTTClient(MQTTOptions(clientID: "bench-sys-\(UUID().uuidString.prefix(6))", port: port))
        try await client.connect()
        _ = try await client.subscribe([("$SYS/broker/publish/messages/dropped", .atMostOnce),
                                        ("$SYS/broker/messages/received", .atMostOnce),
                                        ("$SYS/broker/messages/sent", .atMostOnce)])
        let messages = client.messages
        Task { [self] in
            for await m in messages { values.withLock { $0[m.topic] = m.payloadString } }
        }
    }

    func value(_ topic: String) -> Int { Int(values.withLock { $0["$SYS/broker/" + topic] } ?? "") ?? 0 }
    var dropped: Int { value("publish/messages/dropped") }

    func close() async { await client.disconnect() }
}

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

func fmt(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }
func fmtInt(_ x: Double) -> String {
    let n = Int(x.rounded())
    let s = String(abs(n))
    var out = ""
    for (i, c) in s.reversed().enumerated() { if i > 0 && i % 3 == 0 { out.append(",") }; out.append(c) }
    return (n < 0 ? "-" : "") + String(out.reversed())
}

func pad(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }
