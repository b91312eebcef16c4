import Foundation
import Testing
import EscrowCore
import EscrowAgent
import ControlPlane
import MQTT
import TestSupport
import Storage

/// A real Mosquitto, a real SQLite file, and the control plane running in-process.
final class PlatformFixture: @unchecked Sendable {
    let broker: MosquittoBroker
    let dir: TempDirectory
    let escrowd: MQTTClient
    let service: ControlPlane
    let operators: OperatorProbe
    private var serviceTask: Task<Void, any Error>?
    private var agents: [AgentRuntime] = []
    private var agentTasks: [Task<Void, Never>] = []

    /// The ledger's database: an SQLite file here, or a schema on the harness's PostgreSQL.
    let store: StoreLocation

    init(sweep: Duration = .milliseconds(100), databaseDirectory: String? = nil, store given: StoreLocation? = nil) async throws {
        broker = try await MosquittoBroker(BrokerConfig(maxQueuedMessages: 100_000))
        dir = try TempDirectory(prefix: "cp")
        escrowd = try MQTTClient(MQTTOptions(clientID: "escrowd-test", port: broker.port))
        // A test that puts the SQLite file somewhere on purpose (a small disk) keeps SQLite.
        if let given { store = given } else if let databaseDirectory { store = .sqlite(path: databaseDirectory + "/escrow.db") } else { store = try await TestStore.make(sqliteFile: dir.path + "/escrow.db") }
        var options = ControlPlane.Options(store: store)
        options.expirySweepInterval = sweep
        options.reconcileInterval = .seconds(2)
        service = try ControlPlane(options: options, client: escrowd, log: .silent)
        try await escrowd.connect()
        let service = self.service
        serviceTask = Task { try await service.run() }
        operators = try await OperatorProbe(port: broker.port)
        // The service is ready once it answers a command (slow to come when the parallel suite
        // starts dozens of brokers and databases at once on two cores).
        try await waitUntil(timeout: .seconds(30), "escrowd answers") {
            (try? await self.operators.send(.platform, "account.list", [:], timeout: .milliseconds(500))) != nil
        }
    }

    /// Starts an `escrow-agent` runtime (library) for a device, over plain MQTT.
    @discardableResult
    func startAgent(_ id: String) throws -> AgentRuntime {
        var s = AgentSettings(broker: broker.url, deviceID: DeviceID(id)!, stateDirectory: try dir.subdirectory("agent-\(id)"))
        s.backoffInitial = 1; s.backoffMaximum = 2
        let runtime = try AgentRuntime(settings: s, log: { _ in })
        agents.append(runtime)
        agentTasks.append(Task { try? await runtime.run() })
        return runtime
    }

    func shutdown() async {
        for a in agents { await a.stop() }
        for t in agentTasks { t.cancel() }
        await operators.close()
        await escrowd.disconnect()
        serviceTask?.cancel()
        broker.stop()
    }
}

