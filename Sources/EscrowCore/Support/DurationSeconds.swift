extension Duration {
    /// Whole and fractional seconds as a Double (for rates, latencies and messages).
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
