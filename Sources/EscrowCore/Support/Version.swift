/// The release every EscrowFleet executable reports with `--version`.
public enum EscrowFleetVersion {
    public static let version = "0.4.0"

    /// `escrowctl 0.4.0 (commit 1e5b265a9c01; EscrowFleet; wire schema 1)`: what `--version` prints.
    /// Each executable passes the commit its build was stamped with (`BuildStampPlugin`).
    public static func line(_ program: String, commit: String) -> String {
        "\(program) \(version) (commit \(commit); EscrowFleet; wire schema \(WireCodec.schemaVersion))"
    }

    /// True when the command line asks for the version (anywhere, so `escrowctl device --version` works too).
    public static func requested(_ argv: [String]) -> Bool { argv.contains("--version") }
}
