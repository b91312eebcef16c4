import Foundation
import Testing
import POSIX
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The README's first command, with a small fleet, on the binaries this test run built.
@Suite("The one-command demo", .serialized, .timeLimit(.minutes(3)))
struct DemoTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    func runDemo(devices: Int, out: TempDirectory) throws -> (status: Int32, output: String) {
        let log = out.file("demo.log")
        let env = ProcessInfo.processInfo.environment.merging(["ESCROW_DEMO_BIN": Products.directory, "ESCROW_DEMO_OUT": out.path]) { $1 }
        let child = try ChildProcess.spawn("/bin/bash", [Self.root + "/.ci/demo", "--devices", String(devices)], stdout: log, environment: env)
        #expect(child.waitForExit(timeout: .seconds(150)), "the demo ends by itself")
        return (child.exitStatus ?? -1, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    @Test("runs the whole story, summarises it, writes the HTML report, and runs again at once")
    func demo() throws {
        let out = try TempDirectory(prefix: "demo")
        for run in 1...2 {
            let (status, output) = try runDemo(devices: 60, out: out)
            #expect(status == 0, "run \(run):\n\(output.suffix(3000))")
            #expect(output.contains("verification              passed"), "run \(run)")
            #expect(output.contains("activated               42"), "70% of 60 activated")
            #expect(output.contains("rejected                12"), "20% of 60 rejected")
            #expect(output.contains("applied device/platform   42 / 42"))
            #expect(output.contains("approve sent→applied"))
            #expect(output.contains("event "), "events are shown as they happen")
            #expect(output.contains("escrowd_devices{state=\"active\"} 42"), "escrowd's /metrics at the end: \(output.suffix(1500))")
        }
        let reports = try FileManager.default.contentsOfDirectory(atPath: out.path).filter { $0.hasSuffix(".html") }
        #expect(reports.count == 2)
        let html = try String(contentsOfFile: out.path + "/" + reports[0], encoding: .utf8)
        // One self-contained page: charts inline, no external scripts, styles or images.
        #expect(html.contains("<svg"))
        #expect(!html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("<link"), "no external assets")
        // Nothing is left behind.
        let leftovers = (try? runCommand("/usr/bin/pgrep", ["-f", "escrowfleet-demo"])) ?? ""
        #expect(leftovers.isEmpty, "left running: \(leftovers)")
    }

    @Test("Ctrl-C in the middle leaves no process, no lock and no data directory behind")
    func interrupted() throws {
        let out = try TempDirectory(prefix: "demo-int")
        let env = ProcessInfo.processInfo.environment.merging(["ESCROW_DEMO_BIN": Products.directory, "ESCROW_DEMO_OUT": out.path]) { $1 }
        let demo = try SpawnedProcess("/bin/bash", [Self.root + "/.ci/demo", "--devices", "3000"], environment: env)
        let child = demo.child
        demo.wait(until: { $0.contains("connected ") || $0.contains("provision") }, timeout: .seconds(60))
        let text = demo.text
        #expect(text.contains("provision") || text.contains("connected "), "the story was under way: \(text.suffix(500))")
        child.signal(SIGINT)
        #expect(child.waitForExit(timeout: .seconds(30)), "the demo stops on Ctrl-C")
        #expect(child.exitStatus != 0)
        let left = (try? runCommand("/usr/bin/pgrep", ["-af", "escrowfleet-demo"])) ?? ""
        #expect(left.isEmpty, "left running after Ctrl-C: \(left)")
        let dirs = (try? FileManager.default.contentsOfDirectory(atPath: "/tmp"))?.filter { $0.hasPrefix("escrowfleet-demo.") } ?? []
        #expect(dirs.isEmpty, "left behind: \(dirs)")
    }
}
