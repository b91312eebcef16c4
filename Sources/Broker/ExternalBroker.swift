/// The configuration an operator must apply to an external (unmanaged)
/// Mosquitto 2.0 broker so it enforces what the managed one would.
public func describeForExternalBroker(_ plan: BrokerPlan) -> String {
    var lines = [
        "# EscrowFleet on an external Mosquitto 2.0 broker",
        "#",
        "# 1. Copy these files from the EscrowFleet data directory (they are regenerated",
        "#    on every change to operators, accounts, CAs and revocations; re-copy them and",
        "#    send the broker SIGHUP, which re-reads the password, ACL, CA and CRL files):",
        "#      ACL:            \(plan.aclFile)",
        "#      passwords:      \(plan.passwordFile)",
        "#      device CAs:     \(plan.deviceListener.tls.caFile)",
    ]
    if let crl = plan.deviceListener.tls.crlFile {
        lines.append("#      CRLs:           \(crl)   (one per CA in the bundle: certificates of a CA without a CRL are refused)")
    }
    lines += [
        "#      server cert:    \(plan.deviceListener.tls.certFile) and key \(plan.deviceListener.tls.keyFile)",
        "# 2. Apply the settings below (adjust paths to where you copied the files).",
        "#    The device listener MUST require client certificates and use the CN as username:",
        "#    device isolation depends on it (ACL patterns use %u).",
        "# 3. Install \(BrokerPlugin.fileName) (built by `swift build`) where the `plugin` line says:",
        "#    it refuses shared-subscription theft and foreign client ids at the broker.",
        "#    Do not enable other authentication plugins that grant devices more topics.",
        "",
    ]
    var body = plan
    body.logFile = nil
    body.runAsRoot = false
    lines += body.globalLines()
    lines += body.listenerLines()
    return lines.joined(separator: "\n") + "\n"
}
