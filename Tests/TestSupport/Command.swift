import Foundation

/// Runs a short-lived command to completion and returns its combined output; throws with that output on failure.
@discardableResult
public func runCommand(_ executable: String, _ arguments: [String], installHint: String? = nil) throws -> String {
    guard FileManager.default.isExecutableFile(atPath: executable) else {
        throw TestSupportError("\(executable) not found" + (installHint.map { "; install it with `\($0)`" } ?? ""))
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: output, as: UTF8.self)
    guard process.terminationStatus == 0 else {
        throw TestSupportError("\(executable) \(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(text)")
    }
    return text
}

/// Finds an executable in the usual system directories.
func locateExecutable(_ name: String) -> String? {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin", "/bin"] {
        let path = dir + "/" + name
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}
