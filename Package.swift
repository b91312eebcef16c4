// swift-tools-version: 6.0
// EscrowFleet: zero-touch device management over MQTT.
// Modules are cut by what they may touch (see docs/ARCHITECTURE.md):
//   EscrowCore    pure domain + wire contract (no I/O, no C)
//   MQTT          the only importer of CMosquitto
//   Storage       the only importer of CSQLite and CLibPQ (one ledger interface, two databases)
//   Identity      the only importer of COpenSSL
import PackageDescription

let package = Package(
    name: "EscrowFleet",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "escrowd", targets: ["escrowd"]),
        .executable(name: "escrowctl", targets: ["escrowctl"]),
        .executable(name: "escrow-agent", targets: ["escrow-agent"]),
        .executable(name: "fleetsim", targets: ["fleetsim"]),
        .executable(name: "escrow-console", targets: ["escrow-console"]),
        // The Mosquitto plugin (libEscrowBrokerPlugin.so), loaded by the generated broker config.
        .library(name: "EscrowBrokerPlugin", type: .dynamic, targets: ["EscrowBrokerPlugin"]),
    ],
    targets: [
        // C libraries from Debian, each wrapped once.
        .systemLibrary(name: "CMosquitto", pkgConfig: "libmosquitto", providers: [.apt(["libmosquitto-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),

        // The broker plugin, in C against mosquitto-dev's plugin API (its symbols resolve in the broker).
        .target(name: "EscrowBrokerPlugin", exclude: ["README.md"],
                cSettings: [.unsafeFlags(["-Wall", "-Wextra"])],  // -Werror: Tests/BrokerPluginC/run.sh
                linkerSettings: [.linkedLibrary("crypto")]),

        // Pure domain and wire contract.
        .target(name: "EscrowCore"),

        // Thin edges.
        .target(name: "MQTTWire"),
        .target(name: "MQTT", dependencies: ["CMosquitto", "MQTTWire", "POSIX"]),
        .target(name: "Storage", dependencies: ["CSQLite", "CLibPQ", "POSIX"]),
        .target(name: "Identity", dependencies: ["COpenSSL", "POSIX"]),
        .target(name: "CSystem"),
        .target(name: "POSIX", dependencies: ["CSystem"]),
        .target(name: "HTTPServer"),
        .target(name: "Broker", dependencies: ["EscrowCore", "Identity", "POSIX"]),

        // Products' libraries.
        .target(name: "EscrowAgent", dependencies: ["EscrowCore", "MQTT", "MQTTWire", "Identity", "POSIX"]),
        .target(name: "ControlPlane", dependencies: ["EscrowCore", "MQTT", "Storage", "Identity", "Broker", "HTTPServer", "POSIX"]),
        .target(name: "OperatorCLI", dependencies: ["EscrowCore", "MQTT"]),
        .target(name: "Console", dependencies: ["EscrowCore", "HTTPServer", "OperatorCLI"]),
        .target(name: "FleetEngine", dependencies: ["EscrowCore", "MQTTWire", "Identity", "OperatorCLI", "POSIX", "CSystem"], path: "Simulator/FleetEngine", exclude: ["README.md"]),

        // Executables: parse arguments, wire parts, run.
        // Each is stamped with the git commit it was built from (`--version`), by a build-tool plugin
        // applied to these small targets only, so a new commit relinks four mains and recompiles nothing else.
        .executableTarget(name: "escrowd", dependencies: ["ControlPlane", "Storage"], plugins: ["BuildStampPlugin"]),
        .executableTarget(name: "escrowctl", dependencies: ["OperatorCLI"], plugins: ["BuildStampPlugin"]),
        .executableTarget(name: "escrow-agent", dependencies: ["EscrowAgent"], plugins: ["BuildStampPlugin"]),
        .executableTarget(name: "fleetsim", dependencies: ["FleetEngine", "EscrowCore"], path: "Simulator/fleetsim", plugins: ["BuildStampPlugin"]),
        .executableTarget(name: "escrow-console", dependencies: ["Console", "HTTPServer", "Identity", "EscrowCore"], plugins: ["BuildStampPlugin"]),
        .plugin(name: "BuildStampPlugin", capability: .buildTool(), path: "Sources/BuildStampPlugin"),
        .executableTarget(name: "escrowbench", dependencies: ["ControlPlane", "Storage", "Broker", "MQTT", "MQTTWire", "EscrowCore", "POSIX"], path: "bench/escrowbench"),

        // Tests.
        .target(name: "TestSupport", dependencies: ["EscrowCore", "MQTT", "POSIX", "Broker", "Storage"], path: "Tests/TestSupport"),
        .testTarget(name: "EscrowCoreTests", dependencies: ["EscrowCore", "EscrowAgent", "TestSupport"]),
        .testTarget(name: "MQTTTests", dependencies: ["MQTT", "MQTTWire", "POSIX", "TestSupport"]),
        .testTarget(name: "StorageTests", dependencies: ["Storage", "TestSupport"]),
        .testTarget(name: "IdentityTests", dependencies: ["Identity", "Broker", "TestSupport"]),
        .testTarget(name: "FleetEngineTests", dependencies: ["FleetEngine", "MQTTWire", "TestSupport"]),
        .testTarget(name: "ControlPlaneTests", dependencies: ["ControlPlane", "EscrowAgent", "MQTT", "Storage", "Identity", "OperatorCLI", "TestSupport"]),
        .testTarget(name: "EndToEndTests", dependencies: ["EscrowCore", "EscrowAgent", "MQTT", "Identity", "Broker", "OperatorCLI", "HTTPServer", "Console", "TestSupport", "Storage"]),
    ]
)

for target in package.targets where target.type != .system && target.type != .plugin {
    target.swiftSettings = (target.swiftSettings ?? []) + [
        .enableUpcomingFeature("ExistentialAny"),
    ]
}
