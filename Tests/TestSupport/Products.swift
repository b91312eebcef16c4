import Foundation

/// Where `swift build` put the package's executables (next to the test bundle).
public enum Products {
    public static var directory: String {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments.first ?? "").deletingLastPathComponent().path,
            Bundle.main.bundleURL.path,
            Bundle.main.bundleURL.deletingLastPathComponent().path,
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent(".build/debug").path,
        ]
        for c in candidates where FileManager.default.isExecutableFile(atPath: c + "/escrowd") { return c }
        return candidates.last!
    }

    /// The path of a built executable; throws a clear error if it is missing.
    public static func path(_ name: String) throws -> String {
        let p = directory + "/" + name
        guard FileManager.default.isExecutableFile(atPath: p) else {
            throw TestSupportError("\(p) is missing: run `swift build` (or `swift build --build-tests`) before the tests")
        }
        return p
    }
}
