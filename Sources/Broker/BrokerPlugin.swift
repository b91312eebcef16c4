import Foundation

/// Where the EscrowFleet broker plugin (the `EscrowBrokerPlugin` product, a C shared library
/// built by this package from `Sources/EscrowBrokerPlugin`) is found at run time.
public enum BrokerPlugin {
    public static let fileName = "libEscrowBrokerPlugin.so"
    /// Overrides the search (a path to the `.so`).
    public static let environmentVariable = "ESCROW_BROKER_PLUGIN"

    /// The directories searched, in order, after `ESCROW_BROKER_PLUGIN`: the running executable's
    /// own directory (SwiftPM puts products side by side), then the install locations.
    public static var searchDirectories: [String] {
        var dirs: [String] = []
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            dirs.append((exe as NSString).deletingLastPathComponent)
        }
        return dirs + ["/usr/local/lib/escrowfleet", "/usr/lib/escrowfleet"]
    }

    /// The plugin's path, or nil when it is nowhere to be found.
    public static func locate(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let explicit = environment[environmentVariable], !explicit.isEmpty { return explicit }
        return searchDirectories.map { $0 + "/" + fileName }.first { FileManager.default.isReadableFile(atPath: $0) }
    }

    /// What to tell a user when `locate` finds nothing.
    public static var missingMessage: String {
        "the broker plugin \(fileName) was not found in \(searchDirectories.joined(separator: ", ")); " +
        "build it with `swift build` (product EscrowBrokerPlugin), install it in one of those directories, " +
        "or set \(environmentVariable)=/path/to/\(fileName)"
    }
}
