/// The release every EscrowFleet executable reports with `--version`.
public enum EscrowFleetVersion {
    public static let version = "0.4.0"

    /// `escrowctl 0.4.0 (EscrowFleet; wire schema 1)`: what `--version` prints.
    public static func line(_ program: String) -> String {
        "\(program) \(version) (EscrowFleet; wire schema \(WireCodec.schemaVersion))"
    }

    /// True when the command line asks for the version (anywhere, so `escrowctl device --version` works too).
    public static func requested(_ argv: [String]) -> Bool { argv.contains("--version") }
}
