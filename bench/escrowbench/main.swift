import Foundation
import EscrowCore
import Storage

// escrowbench: performance benchmarks for the control plane (see bench/README.md).

let usage = """
Every bench that runs a control plane takes --store sqlite:PATH|postgres://... (default: a fresh SQLite file).
usage: escrowbench heartbeats [--devices 20000] [--duration 20s] [--rate N] [--connections 1] [--max-queued 1000000] [--verbose]
       escrowbench bulk-transfer [--devices 10000] [--max-queued 1000000] [--verbose]
       escrowbench codec [--iterations 200000]
       escrowbench fairness [--duration 20s] [--flood-rate 1000] [--verbose]
"""

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("escrowbench: \(message)\n\(usage)\n".utf8))
    exit(64)
}

enum Main {
  static func run() async -> Int32 {
    var args = Array(CommandLine.arguments.dropFirst())
    guard let command = args.first else { fail("missing subcommand") }
    args.removeFirst()
    var options: [String: String] = [:]
    var flags: Set<String> = []
    var i = 0
    while i < args.count {
        let a = args[i]
        guard a.hasPrefix("--") else { fail("unexpected argument '\(a)'") }
        if a == "--verbose" { flags.insert(a); i += 1; continue }
        guard i + 1 < args.count else { fail("\(a) needs a value") }
        options[a] = args[i + 1]
        i += 2
    }
    func int(_ name: String, _ def: Int) -> Int {
        guard let v = options.removeValue(forKey: name) else { return def }
        guard let n = Int(v.replacingOccurrences(of: "_", with: "")), n >= 0 else { fail("\(name) must be a non-negative integer") }
        return n
    }

    if let s = options.removeValue(forKey: "--store") {
        switch StoreLocation.parse(s) {
        case .success(let location): Platform.storeOption = location
        case .failure(let reason): fail("--store: \(reason)")
        }
    }
    do {
        switch command {
        case "heartbeats":
            var b = HeartbeatBench()
            b.devices = int("--devices", b.devices)
            if let d = options.removeValue(forKey: "--duration") { guard let p = Arguments.parseDuration(d) else { fail("--duration: e.g. 20s") }; b.duration = p }
            b.rate = int("--rate", 0)
            b.connections = max(1, int("--connections", 1))
            b.maxQueued = int("--max-queued", b.maxQueued)
            b.verbose = flags.contains("--verbose")
            guard options.isEmpty else { fail("unknown option \(options.keys.sorted()[0])") }
            try await b.run()
        case "bulk-transfer":
            var b = BulkTransferBench()
            b.devices = int("--devices", b.devices)
            b.maxQueued = int("--max-queued", b.maxQueued)
            b.verbose = flags.contains("--verbose")
            guard options.isEmpty else { fail("unknown option \(options.keys.sorted()[0])") }
            try await b.run()
        case "fairness":
            var b = FairnessBench()
            if let d = options.removeValue(forKey: "--duration") { guard let p = Arguments.parseDuration(d) else { fail("--duration: e.g. 20s") }; b.duration = p }
            b.floodRate = max(1, int("--flood-rate", b.floodRate))
            b.verbose = flags.contains("--verbose")
            guard options.isEmpty else { fail("unknown option \(options.keys.sorted()[0])") }
            try await b.run()
        case "codec":
            var b = CodecBench()
            b.iterations = int("--iterations", b.iterations)
            guard options.isEmpty else { fail("unknown option \(options.keys.sorted()[0])") }
            b.run()
            await b.streamHandoff()
        default:
            fail("unknown subcommand '\(command)'")
        }
        return 0
    } catch {
        FileHandle.standardError.write(Data("escrowbench: \(error)\n".utf8))
        return 1
    }

  }
}

exit(await Main.run())
