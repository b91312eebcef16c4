/// A refused domain action. Maps one-to-one onto the wire's `ErrorCode`.
public struct DomainError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String
    public init(_ code: ErrorCode, _ message: String) { self.code = code; self.message = message }
    public var description: String { "\(code.rawValue): \(message)" }
    public var wire: WireError { WireError(code, message) }

    public static func notFound(_ what: String) -> Self { .init(.notFound, "\(what) does not exist") }
    public static func forbidden(_ why: String) -> Self { .init(.forbidden, why) }
    public static func conflict(_ why: String) -> Self { .init(.conflict, why) }
    public static func invalid(_ why: String) -> Self { .init(.invalidArgument, why) }
}
