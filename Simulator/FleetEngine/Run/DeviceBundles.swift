import EscrowCore
import Foundation
import Identity

/// Device identities on disk, as `escrowctl device provision --out DIR` writes them:
/// `DIR/{deviceId}/device.crt`, `device.key`, `broker-ca.pem` and `agent.conf` (`broker = URL`).
public struct DeviceBundles {
    public let directory: String
    /// Device ids (directory names holding a `device.crt`), sorted.
    public let deviceIDs: [DeviceID]

    public init(directory: String) throws(FleetError) {
        self.directory = directory
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory) } catch {
            throw .usage("--bundles \(directory) cannot be read: \(error.localizedDescription)")
        }
        deviceIDs = names.sorted().compactMap { name in
            FileManager.default.fileExists(atPath: "\(directory)/\(name)/\(DeviceBundleLayout.certificate)") ? DeviceID(name) : nil
        }
        guard !deviceIDs.isEmpty else {
            throw .usage("--bundles \(directory) holds no device bundle (expected DIR/{id}/\(DeviceBundleLayout.files.joined(separator: ", ")))")
        }
    }

    /// The broker URL of the first bundle's `agent.conf` (devices are provisioned for one broker).
    public func brokerURL() -> String? {
        guard let text = try? String(contentsOfFile: "\(directory)/\(deviceIDs[0])/\(DeviceBundleLayout.agentConf)", encoding: .utf8),
              let kv = try? KeyValueFile.parse(text) else { return nil }
        return kv["broker"]
    }

    /// The CA that signed the broker's certificate, from the first bundle.
    public func brokerCAPEM() throws(FleetError) -> String {
        try Self.read("\(directory)/\(deviceIDs[0])/\(DeviceBundleLayout.brokerCA)")
    }

    /// Parsed identities of `ids`, in order.
    public func identities(_ ids: ArraySlice<DeviceID>, keepParsed: Bool = false) throws(FleetError) -> [DeviceTLSIdentity] {
        var out: [DeviceTLSIdentity] = []
        out.reserveCapacity(ids.count)
        for id in ids {
            let dir = "\(directory)/\(id)"
            do {
                out.append(try DeviceTLSIdentity(certificatePEM: try Self.read(dir + "/" + DeviceBundleLayout.certificate), privateKeyPEM: try Self.read(dir + "/" + DeviceBundleLayout.privateKey), keepParsed: keepParsed))
            } catch let e as FleetError { throw e } catch {
                throw .usage("bundle \(dir): \(error)")
            }
        }
        return out
    }

    static func read(_ path: String) throws(FleetError) -> String {
        guard let s = try? String(contentsOfFile: path, encoding: .utf8) else { throw .usage("cannot read \(path)") }
        return s
    }
}

extension FleetOptions {
    /// Fills what `--bundles` implies: the broker (from the bundles, unless `--broker` was given)
    /// and the device count (all bundles, unless `--devices` was given).
    public mutating func resolveBundles() throws(FleetError) {
        guard let dir = bundles, !isWorker else { return }
        let b = try DeviceBundles(directory: dir)
        if !brokerGiven {
            guard let url = b.brokerURL() else { throw .usage("--bundles: \(dir)/\(b.deviceIDs[0])/agent.conf names no broker; give --broker mqtts://HOST:PORT") }
            (brokerHost, brokerPort, brokerTLS) = try Self.parseBroker(url)
        }
        guard brokerTLS else { throw .usage("--bundles holds TLS identities: use an mqtts:// broker") }
        if !devicesGiven { devices = b.deviceIDs.count - firstIndex }
        guard firstIndex + devices <= b.deviceIDs.count else {
            throw .usage("--devices \(devices) (from index \(firstIndex)) exceeds the \(b.deviceIDs.count) bundles in \(dir)")
        }
    }
}

/// Makes the shared TLS settings from a CA file or PEM.
enum TLSSetup {
    static func settings(caPEM: String, host: String, maxHandshakes: Int) throws(FleetError) -> TLSSettings {
        do {
            return TLSSettings(context: try TLSClientContext(trustedCAPEM: caPEM), serverName: host, maxHandshakes: maxHandshakes)
        } catch {
            throw .usage("broker CA: \(error.description)")
        }
    }
}
