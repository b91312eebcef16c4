import Foundation

/// A fresh directory under the system temp directory, removed when the value goes away.
/// Local to StorageTests on purpose: these tests need nothing from TestSupport.
final class TemporaryDirectory: Sendable {
    let url: URL

    init(_ label: String = #function) throws {
        let name = "storage-tests-\(label.filter { $0.isLetter || $0.isNumber })-\(UUID().uuidString)"
        url = FileManager.default.temporaryDirectory.appendingPathComponent(name, isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    /// Path of a file inside the directory.
    func path(_ name: String = "test.sqlite") -> String { url.appendingPathComponent(name).path }
}
