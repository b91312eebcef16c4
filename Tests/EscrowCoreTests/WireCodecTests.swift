import Foundation
import Testing
import EscrowCore

@Suite("WireCodec")
struct WireCodecTests {
    @Test("a valid payload decodes")
    func decodes() throws {
        let hb = try WireCodec.decode(Heartbeat.self, from: Fx.bytes(#"{"schema":1,"seq":3,"mode":"escrow","uptime":42,"configVersion":0}"#))
        #expect(hb == Heartbeat(seq: 3, mode: .escrow, uptime: 42, configVersion: 0))
    }

    @Test("malformed JSON is malformed", arguments: ["", "{", "not json", "{\"schema\":1,}", "\u{FEFF}", "{'schema':1}"])
    func malformedJSON(_ text: String) {
        #expect(Fx.wireError(Heartbeat.self, text)?.code == .malformed)
    }

    @Test("a JSON value that is not an object is malformed", arguments: ["[]", "1", "\"schema\"", "null", "true"])
    func notAnObject(_ text: String) {
        let e = Fx.wireError(Heartbeat.self, text)
        #expect(e?.code == .malformed)
    }

    @Test("a missing or non-integer schema is malformed and says what to send", arguments: [
        #"{"seq":1,"mode":"escrow","uptime":1,"configVersion":0}"#,
        #"{"schema":"1","seq":1,"mode":"escrow","uptime":1,"configVersion":0}"#,
        #"{"schema":null,"seq":1,"mode":"escrow","uptime":1,"configVersion":0}"#,
    ])
    func missingSchema(_ text: String) throws {
        let e = try #require(Fx.wireError(Heartbeat.self, text))
        #expect(e.code == .malformed)
        #expect(e.message.contains("\"schema\": 1"))
    }

    @Test("another schema version is unsupported_schema", arguments: [0, 2, -1, 99])
    func otherSchema(_ v: Int) throws {
        let e = try #require(Fx.wireError(Heartbeat.self, #"{"schema":\#(v),"seq":1,"mode":"escrow","uptime":1,"configVersion":0}"#))
        #expect(e.code == .unsupportedSchema)
        #expect(e.message.contains("schema \(v)"))
    }

    @Test("the schema is checked before the fields")
    func schemaBeforeFields() {
        #expect(Fx.wireError(Heartbeat.self, #"{"schema":2}"#)?.code == .unsupportedSchema)
    }

    @Test("a missing field is named")
    func missingField() throws {
        let e = try #require(Fx.wireError(Heartbeat.self, #"{"schema":1,"seq":1,"mode":"escrow","uptime":1}"#))
        #expect(e.code == .malformed)
        #expect(e.message.contains("configVersion"))
        #expect(e.message.contains("missing"))
    }

    @Test("a field of the wrong type is named", arguments: [
        (#"{"schema":1,"seq":"one","mode":"escrow","uptime":1,"configVersion":0}"#, "seq"),
        (#"{"schema":1,"seq":1,"mode":"escrow","uptime":1.5,"configVersion":0}"#, "uptime"),
        (#"{"schema":1,"seq":99999999999999999999,"mode":"escrow","uptime":1,"configVersion":0}"#, "seq"),
        (#"{"schema":1,"seq":1,"mode":"sleeping","uptime":1,"configVersion":0}"#, "mode"),
        (#"{"schema":1,"seq":1,"mode":"escrow","uptime":1,"configVersion":null}"#, "configVersion"),
    ])
    func wrongType(_ text: String, _ field: String) throws {
        let e = try #require(Fx.wireError(Heartbeat.self, text))
        #expect(e.code == .malformed)
        #expect(e.message.hasPrefix(field), "\(e.message)")
    }

    @Test("nested fields are named with their path")
    func nestedPath() throws {
        let text = #"{"schema":1,"requestId":"r1","ok":false,"error":{"code":"nope","message":"m"}}"#
        let e = try #require(Fx.wireError(CommandReply.self, text))
        #expect(e.message.hasPrefix("error.code"), "\(e.message)")
    }

    @Test("an invalid identifier is named with the grammar")
    func invalidIdentifier() throws {
        let text = #"{"schema":1,"version":1,"mode":"normal","heartbeatInterval":60,"owner":"a/b","settings":{}}"#
        let e = try #require(Fx.wireError(DeviceConfig.self, text))
        #expect(e.code == .malformed)
        #expect(e.message.hasPrefix("owner"))
        #expect(e.message.contains("[A-Za-z0-9._-]{1,64}"))
    }

    @Test("size limits: at the limit decodes, one byte more is too_large")
    func sizeLimit() throws {
        let base = #"{"schema":1,"csr":""}"#
        let limit = 1000
        let fill = String(repeating: "A", count: limit - base.utf8.count)
        let atLimit = #"{"schema":1,"csr":"\#(fill)"}"#
        #expect(atLimit.utf8.count == limit)
        #expect(try WireCodec.decode(CertificateRequest.self, from: Fx.bytes(atLimit), limit: limit).csr == fill)
        let over = #"{"schema":1,"csr":"\#(fill)A"}"#
        let e = try #require(Fx.wireError(CertificateRequest.self, over, limit: limit))
        #expect(e.code == .tooLarge)
        #expect(e.message.contains("\(limit + 1) bytes"))
    }

    @Test("too_large is decided before parsing, at the default 256 KiB limit")
    func tooLargeBeforeParsing() {
        #expect(WireCodec.maxPayloadBytes == 256 * 1024)
        #expect(WireCodec.maxDevicePayloadBytes == 16 * 1024)
        let junk = [UInt8](repeating: UInt8(ascii: "x"), count: WireCodec.maxPayloadBytes + 1)
        #expect(Fx.wireError(Heartbeat.self, junk)?.code == .tooLarge)
    }

    @Test("encoding: sorted keys, unescaped slashes, ISO-8601 dates with Z, no nil fields")
    func encoding() {
        let ev = Event(type: .deviceOnline, at: Fx.t0, account: "acme", deviceId: "d1", details: ["topic": .string("devices/d1/status")])
        let text = String(decoding: WireCodec.encode(ev), as: UTF8.self)
        #expect(text == #"{"account":"acme","at":"2025-06-15T08:00:00Z","details":{"topic":"devices/d1/status"},"deviceId":"d1","schema":1,"type":"device.online"}"#)
    }

    @Test("dates with offsets or fractions are accepted; encoding is whole seconds UTC")
    func dates() throws {
        let a = try WireCodec.decode(Event.self, from: Fx.bytes(#"{"schema":1,"type":"device.online","at":"2025-06-15T10:00:00+02:00","account":"a","details":{}}"#))
        #expect(a.at == Fx.t0)
        let b = try WireCodec.decode(Event.self, from: Fx.bytes(#"{"schema":1,"type":"device.online","at":"2025-06-15T08:00:00.250Z","account":"a","details":{}}"#))
        #expect(b.at.timeIntervalSince(Fx.t0) > 0.2)
        #expect(try Fx.json(WireCodec.encode(b))["at"] == .string("2025-06-15T08:00:00Z"))
        #expect(Fx.wireError(Event.self, #"{"schema":1,"type":"device.online","at":"yesterday","account":"a","details":{}}"#)?.code == .malformed)
    }

    @Test("unknown fields are ignored (forward compatible within schema 1)")
    func unknownFields() throws {
        let s = try WireCodec.decode(DeviceStatus.self, from: Fx.bytes(#"{"schema":1,"state":"online","battery":88}"#))
        #expect(s == DeviceStatus(state: .online))
    }

    @Test("wire errors encode as code and message")
    func wireErrorShape() throws {
        let e = WireError(.unsupportedSchema, "schema 2 is not supported")
        #expect(try Fx.json(WireCodec.encode(e)) == Fx.json(#"{"code":"unsupported_schema","message":"schema 2 is not supported"}"#))
        #expect(e.description == "unsupported_schema: schema 2 is not supported")
        #expect(DomainError.notFound("device x").wire == WireError(.notFound, "device x does not exist"))
    }

    @Test("error codes are stable strings")
    func errorCodes() {
        #expect(ErrorCode.allCases.map(\.rawValue) == [
            "malformed", "unsupported_schema", "too_large", "unknown_command", "invalid_argument",
            "not_found", "forbidden", "conflict", "storage_unavailable", "internal",
        ])
    }
}

@Suite("JSONValue")
struct JSONValueTests {
    @Test("round trip keeps every kind of value")
    func roundTrip() throws {
        let text = #"{"a":null,"b":true,"c":3,"d":-2.5,"e":"s","f":[1,"x",false],"g":{"h":{}},"i":12345678901234}"#
        let v = try Fx.json(text)
        let again = try Fx.json(WireCodec.encode(v))
        #expect(again == v)
        #expect(String(decoding: WireCodec.encode(v["c"]!), as: UTF8.self) == "3")
        #expect(String(decoding: WireCodec.encode(v["i"]!), as: UTF8.self) == "12345678901234")
    }

    @Test("booleans and numbers stay distinct")
    func boolsAreNotNumbers() throws {
        #expect(try Fx.json("[true,1,0,false]") == .array([.bool(true), .number(1), .number(0), .bool(false)]))
    }

    @Test("accessors")
    func accessors() throws {
        let v = try Fx.json(#"{"n":2,"f":2.5,"s":"x","b":false,"a":[],"o":{}}"#)
        #expect(v["n"]?.intValue == 2)
        #expect(v["f"]?.intValue == nil)
        #expect(v["f"]?.numberValue == 2.5)
        #expect(v["s"]?.stringValue == "x")
        #expect(v["b"]?.boolValue == false)
        #expect(v["a"]?.arrayValue == [])
        #expect(v["o"]?.objectValue == [:])
        #expect(v["missing"] == nil)
        #expect(JSONValue.string("x")["k"] == nil)
    }

    @Test("typed values convert through JSON")
    func typed() throws {
        let args = Commands.TransferRef(transferId: "t-1")
        let v = try JSONValue(encoding: args)
        #expect(v == .object(["transferId": .string("t-1")]))
        #expect(try v.decode(Commands.TransferRef.self) == args)
    }

    @Test("nesting is bounded at 32 levels before any parse; brackets inside strings do not count")
    func nestingDepth() throws {
        func nested(_ depth: Int) -> [UInt8] {
            Array(("{\"schema\":1,\"state\":\"online\",\"x\":" + String(repeating: "[", count: depth - 1) + String(repeating: "]", count: depth - 1) + "}").utf8)
        }
        #expect(throws: Never.self) { try WireCodec.decode(DeviceStatus.self, from: nested(32)) }
        for depth in [33, 500, 10_000] {
            #expect(throws: WireError(.malformed, "payload nests arrays or objects deeper than 32 levels")) {
                try WireCodec.decode(DeviceStatus.self, from: nested(depth))
            }
        }
        let quoted = Array(("{\"schema\":1,\"state\":\"online\",\"agentVersion\":\"" + String(repeating: "[{", count: 40) + "\\\"]\"}").utf8)
        #expect(try WireCodec.decode(DeviceStatus.self, from: quoted).agentVersion?.hasPrefix("[{") == true)
    }

    @Test("invalid UTF-8 anywhere is malformed, before any parse", arguments: [
        [0xC3, 0x28], [0xFF], [0xED, 0xA0, 0x80], [0xF0, 0x28, 0x8C, 0x28], [0xC0, 0xAF],
    ] as [[UInt8]])
    func invalidUTF8(_ bad: [UInt8]) {
        let payload = Array(#"{"schema":1,"state":"online","agentVersion":""#.utf8) + bad + Array(#""}"#.utf8)
        #expect(throws: WireError(.malformed, "payload is not valid UTF-8")) {
            try WireCodec.decode(DeviceStatus.self, from: payload)
        }
    }
}
