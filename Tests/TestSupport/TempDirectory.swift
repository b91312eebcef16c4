import Foundation

/// A unique directory under /tmp, removed with everything in it when the last reference goes away.
public final class TempDirectory: Sendable {
    public let path: String

    public init(prefix: String = "escrowfleet") throws {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard let made else {
            throw TestSupportError("mkdtemp under /tmp failed: \(String(cString: strerror(errno)))")
        }
        path = String(cString: made)
    }

    /// `path/name`.
    public func file(_ name: String) -> String { path + "/" + name }

    /// Creates (if needed) and returns the subdirectory `path/name`.
    public func subdirectory(_ name: String) throws -> String {
        let sub = file(name)
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
        return sub
    }

    /// Writes `text` to `path/name`; returns that path.
    @discardableResult
    public func write(_ name: String, _ text: String) throws -> String {
        let f = file(name)
        try text.write(toFile: f, atomically: true, encoding: .utf8)
        return f
    }

    /// Removes it now (it is removed on deinit anyway).
    public func remove() { try? FileManager.default.removeItem(atPath: path) }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }
}
