@testable import MQTT
import Foundation
import TestSupport

/// A unique client id per call, so parallel tests never steal each other's sessions.
func uniqueID(_ prefix: String) -> String {
    "\(prefix)-\(UInt32.random(in: 0...UInt32.max))"
}

/// Options for a client of `broker`, fast reconnect so tests stay short.
func options(_ broker: MosquittoBroker, _ prefix: String, version: MQTTVersion = .v5) -> MQTTOptions {
    var options = MQTTOptions(clientID: uniqueID(prefix), host: broker.host, port: broker.port)
    options.version = version
    options.reconnect = Backoff(initial: .milliseconds(50), maximum: .milliseconds(400))
    return options
}

/// A connected client of `broker`.
func connectedClient(_ broker: MosquittoBroker, _ prefix: String, version: MQTTVersion = .v5,
                     configure: (inout MQTTOptions) -> Void = { _ in }) async throws -> MQTTClient {
    var options = options(broker, prefix, version: version)
    configure(&options)
    let client = try MQTTClient(options)
    try await client.connect(timeout: .seconds(5))
    return client
}

/// Runs `operation` expecting an MQTTError, returns it (or fails describing what happened instead).
func expectMQTTError(_ what: String, _ operation: () async throws -> Void) async throws -> MQTTError {
    do {
        try await operation()
    } catch let error as MQTTError {
        return error
    }
    throw TestSupportError("expected an MQTTError from \(what), but it succeeded")
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

