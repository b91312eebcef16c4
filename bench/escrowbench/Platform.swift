import Foundation
import ControlPlane
import EscrowCore
import MQTT
import Storage
import POSIX

/// The system under test: a local mosquitto and `ControlPlane` in this process, as `escrowd`
/// runs it (same Options defaults, shared subscriptions), with a temp SQLite database or the
/// PostgreSQL database `--store` names (which must be empty: the bench provisions its own fleet).
final class Platform: Sendable {
    let broker: LocalBroker
    let client: MQTTClient
    let service: ControlPlane
    let store: StoreLocation
    let serviceTask: Task<Void, any Error>

    /// `--store` for every bench that runs a control plane; nil: a fresh SQLite file.
    nonisolated(unsafe) static var storeOption: StoreLocation?

    init(maxQueuedMessages: Int, verbose: Bool) async throws {
        broker = try await LocalBroker(maxQueuedMessages: maxQueuedMessages)
        store = try Self.storeOption ?? .sqlite(path: makeTempDirectory("escrowbench-db") + "/escrow.db")
        print("# ledger: \(store)")
        client = try MQTTClient(MQTTOptions(clientID: "escrowd-bench", port: broker.port))
        let options = ControlPlane.Options(store: store)
        let log = verbose ? Log(component: "escrowd", minimum: .info) : .silent
        service = try ControlPlane(options: options, client: client, log: log)
        try await client.connect()
        let service = self.service
        serviceTask = Task { try await service.run() }
    }

    /// One query on the ledger through a connection of its own, on a thread that may block.
    func ledgerQuery(_ sql: String) async throws -> [Row] {
        let store = self.store
        return try await BlockingWork.run("bench-ledger-query") { try store.open().query(sql, []) }
    }

    /// Waits until the control plane answers commands.
    func waitReady(_ op: Operator) async throws {
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline {
            if (try? await op.send(.platform, "account.list", [:], timeout: .milliseconds(500))) != nil { return }
        }
        throw BenchError("the control plane did not answer account.list within 15 s")
    }

    func createAccount(_ op: Operator, _ id: String, kind: String) async throws {
        _ = try await op.run(.platform, "account.create", ["id": .string(id), "name": .string(id), "kind": .string(kind)], as: Account.self)
    }

    /// Provisions `count` devices `prefix000001...` into `account` in batches of 1,000, without identities.
    func provision(_ op: Operator, account: AccountID, prefix: String, count: Int) async throws -> [String] {
        var ids: [String] = []
        var start = 1
        while start <= count {
            let n = min(1_000, count - start + 1)
            let r = try await op.run(account, "device.provision", ["prefix": .string(prefix), "count": .number(Double(n)),
                                                                   "start": .number(Double(start)), "issueIdentity": false],
                                     as: Commands.DeviceProvisionResult.self)
            guard r.refused.isEmpty else { throw BenchError("provisioning refused \(r.refused.count) devices: \(r.refused.first!.reason)") }
            ids += r.provisioned.map(\.rawValue)
            start += n
        }
        return ids
    }

    func shutdown() async {
        serviceTask.cancel()
        await client.disconnect()
        await service.stop()
        broker.stop()
    }
}
