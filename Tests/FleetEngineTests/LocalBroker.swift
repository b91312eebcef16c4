import Foundation
import TestSupport

/// A private mosquitto for one engine test: the shared harness (`MosquittoBroker`, free port,
/// clean signal mask, stopped at the end) with unlimited connections.
final class LocalBroker {
    let broker: MosquittoBroker
    var port: UInt16 { UInt16(broker.port) }
    var url: String { broker.url }

    init() async throws {
        broker = try await MosquittoBroker(BrokerConfig(extraLines: ["max_connections -1"]))
    }

    func stop() { broker.stop(graceful: false) }

    /// A port nothing listens on (for "broker unreachable" cases).
    static func freePort() throws -> UInt16 { UInt16(try TestSupport.freePort()) }
}
