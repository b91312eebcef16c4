/// Failures raised by the test harness itself; each message says what was awaited or what to install.
public struct TestSupportError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
