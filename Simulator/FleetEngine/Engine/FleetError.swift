/// Errors the simulator reports to its user, each with one clear line.
public enum FleetError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Bad command line (exit 64).
    case usage(String)
    /// The run could not proceed (exit 1).
    case runtime(String)
    public var description: String {
        switch self { case .usage(let m), .runtime(let m): return m }
    }
}
