import Foundation
import Testing
import EscrowCore
import MQTT
import TestSupport

/// A reply means "in force" (topics.md): escrowd answers a command that changed the broker's
/// access files once the broker plugin has confirmed the reload, so nothing needs retrying.
@Suite("Broker reload confirmation", .timeLimit(.minutes(3)))
struct BrokerReloadConfirmationTests {
    /// One CONNECT, no retry: the CONNACK's verdict.
    static func logsIn(_ platform: PlatformSession, _ user: String, _ password: String) async -> Bool {
        var o = MQTTOptions(clientID: BrokerNames.clientID(user, suffix: "once-\(UUID().uuidString.prefix(6))"), port: platform.escrowd.operatorPort)
        o.username = user; o.password = password
        o.reconnect = nil
        guard let client = try? MQTTClient(o) else { return false }
        do { try await client.connect(timeout: .seconds(5)) } catch { return false }
        await client.disconnect()
        return true
    }

    @Test("after each reply: a created login works at its first CONNECT, an old password and a deleted login are refused at theirs; back-to-back changes too")
    func repliesComeOnceTheChangeIsInForce() async throws {
        let platform = try await PlatformSession()
        _ = try await platform.admin.send(.platform, "account.create", ["id": "acme", "name": "Acme", "kind": "customer"]).result(Account.self)
        // Five logins back to back: several share one reload (the broker's reload spacing).
        for i in 1...5 {
            _ = try await platform.admin.send(.platform, "operator.create", ["username": .string("op-r\(i)"), "password": .string("pw-r\(i)-secret"), "account": "acme"])
                .result(Commands.OperatorResult.self)
            #expect(await Self.logsIn(platform, "op-r\(i)", "pw-r\(i)-secret"), "op-r\(i) refused right after operator.create's reply")
        }
        _ = try await platform.admin.send(.platform, "operator.passwd", ["username": "op-r1", "password": "pw-r1-rotated"]).result(Commands.OperatorListResult.Entry.self)
        #expect(!(await Self.logsIn(platform, "op-r1", "pw-r1-secret")), "the old password still works right after operator.passwd's reply")
        #expect(await Self.logsIn(platform, "op-r1", "pw-r1-rotated"), "the new password is refused right after operator.passwd's reply")
        _ = try await platform.admin.send(.platform, "operator.delete", ["username": "op-r2"]).result(Commands.OperatorListResult.Entry.self)
        #expect(!(await Self.logsIn(platform, "op-r2", "pw-r2-secret")), "a deleted login still works right after operator.delete's reply")
        // Every reply waited for a confirmation, none for the 5 s fallback.
        let log = platform.escrowd.logTail(200_000)
        #expect(!log.contains("did not confirm reload"), "\(log.suffix(2000))")
        let broker = (try? String(contentsOfFile: platform.escrowd.dataDirectory + "/broker/mosquitto.log", encoding: .utf8)) ?? ""
        #expect(broker.contains("reload confirmed on \"escrow/broker/reloaded\""), "\(broker.suffix(2000))")
        await platform.close()
    }

    @Test("no client but escrowd may subscribe to the confirmations or publish one")
    func confirmationsAreTheBrokersOnly() async throws {
        let platform = try await PlatformSession()
        let acme = try await platform.account("acme", kind: .customer)
        let granted = try await acme.client.subscribe([(BrokerNames.reloadTopic, .atLeastOnce)])
        #expect(granted.allSatisfy { $0 >= 0x80 }, "op-acme was granted \(BrokerNames.reloadTopic): \(granted)")
        // A forged confirmation with a huge token is refused by the broker (PUBACK 135 on MQTT 5).
        await #expect(throws: MQTTError.self) { try await acme.client.publish(BrokerNames.reloadTopic, Array("99999999999999999999".utf8), qos: .atLeastOnce) }
        // escrowd still waits for real confirmations: a new login is in force at the reply.
        _ = try await platform.admin.send(.platform, "operator.create", ["username": "op-late", "password": "pw-late-secret", "account": "acme"]).result(Commands.OperatorResult.self)
        #expect(await Self.logsIn(platform, "op-late", "pw-late-secret"))
        await platform.close()
    }
}
