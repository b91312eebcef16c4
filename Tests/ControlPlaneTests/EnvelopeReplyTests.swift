import Foundation
import Testing
import EscrowCore
import ControlPlane
import MQTT
import TestSupport

/// Issue 14: an envelope that cannot be executed is answered on its reply topic whenever its
/// request id can be read, with the code topics.md documents, and changes nothing.
@Suite("Unexecutable envelopes are answered with the documented code", .timeLimit(.minutes(2)))
struct EnvelopeReplyTests {
    static let cases: [(name: String, command: String, payload: String, code: ErrorCode)] = [
        ("no schema", "device.list", #"{"requestId":"r-noschema","args":{}}"#, .malformed),
        ("no args", "device.list", #"{"schema":1,"requestId":"r-noargs"}"#, .malformed),
        ("args a string", "device.list", #"{"schema":1,"requestId":"r-args-string","args":"x"}"#, .malformed),
        ("args an array", "device.list", #"{"schema":1,"requestId":"r-args-array","args":[]}"#, .malformed),
        ("schema 2", "device.list", #"{"schema":2,"requestId":"r-schema2","args":{}}"#, .unsupportedSchema),
        ("unknown command", "frobnicate", #"{"schema":1,"requestId":"r-unknown","args":{}}"#, .unknownCommand),
        ("a required field missing", "transfer.show", #"{"schema":1,"requestId":"r-missing","args":{}}"#, .malformed),
        ("a field of the wrong type", "device.list", #"{"schema":1,"requestId":"r-wrongtype","args":{"limit":"ten"}}"#, .malformed),
    ]

    @Test("each case gets its reply, with the request id and the code")
    func answered() async throws {
        let p = try await PlatformFixture()
        _ = try await p.operators.send(.platform, "account.create", ["id": "oem", "name": "OEM", "kind": "provisioner"]).result(Account.self)
        let before = try TestStore.snapshot(p.store)
        for c in Self.cases {
            try await p.operators.sendRaw("oem", c.command, payload: Array(c.payload.utf8))
            let id = try #require(CommandEnvelope.readableRequestID(from: Array(c.payload.utf8)), "\(c.name): request id readable")
            let reply = try await p.operators.reply(id, timeout: .seconds(10))
            #expect(!reply.ok && reply.error?.code == c.code, "\(c.name): \(String(describing: reply.error))")
        }
        // Invalid UTF-8 in a value: refused, and the request id is still read.
        let bad = Array(#"{"schema":1,"requestId":"r-utf8","args":{"prefix":""#.utf8) + [0xC3, 0x28] + Array(#""}}"#.utf8)
        try await p.operators.sendRaw("oem", "device.list", payload: bad)
        let reply = try await p.operators.reply("r-utf8", timeout: .seconds(10))
        #expect(reply.error?.code == .malformed && reply.error?.message.contains("UTF-8") == true, "\(String(describing: reply.error))")
        // Too deep to parse: refused with a command.failed event only (the request id is never read).
        let deep = Array((#"{"schema":1,"requestId":"r-deep","args":"# + String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000) + "}").utf8)
        #expect(CommandEnvelope.readableRequestID(from: deep) == nil)
        try await p.operators.sendRaw("oem", "device.list", payload: deep)
        try await waitUntil("the deep payload is reported") {
            await p.operators.events(of: .commandFailed).contains { $0.details["message"]?.stringValue?.contains("deeper than 32") == true }
        }
        #expect(try TestStore.snapshot(p.store) == before, "an unexecutable command changed state")
        await p.shutdown()
    }
}
