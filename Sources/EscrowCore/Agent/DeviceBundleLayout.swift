/// The one layout of a device bundle (what a factory puts on a device): `ROOT/{deviceId}/` with
/// the certificate, its private key (mode 0600), the CA that signed the broker's certificate and
/// escrow-agent's settings file, whose paths are relative to it. escrowctl writes it, escrow-agent
/// and fleetsim read it.
public enum DeviceBundleLayout {
    public static let certificate = "device.crt"
    public static let privateKey = "device.key"
    public static let brokerCA = "broker-ca.pem"
    public static let agentConf = "agent.conf"
    /// The agent's durable state, under the bundle directory.
    public static let stateDirectory = "state"
    public static let files = [certificate, privateKey, brokerCA, agentConf]

    /// `ROOT/{deviceId}`.
    public static func directory(root: String, device: DeviceID) -> String { root + "/" + device.rawValue }

    /// escrow-agent's settings for the bundle.
    public static func agentConf(device: DeviceID, brokerURL: String, writtenBy: String = "escrowctl device provision") -> String {
        """
        # escrow-agent settings for device \(device) (written by \(writtenBy))
        broker = \(brokerURL)
        device_id = \(device)
        certificate = \(certificate)
        private_key = \(privateKey)
        broker_ca = \(brokerCA)
        state_dir = \(stateDirectory)

        """
    }
}
