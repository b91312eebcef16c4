import Foundation
import Testing
import EscrowCore

@Suite("Identifiers")
struct IdentifierTests {
    @Test("valid identifiers", arguments: [
        "a", "Z", "0", "sim-000001", "device_1.eu-west", "a.b", "...", "-", "_", ".hidden", "a..b",
        String(repeating: "x", count: 64),
    ])
    func valid(_ s: String) {
        #expect(Identifier.isValid(s))
        #expect(DeviceID(s)?.rawValue == s)
        #expect(AccountID(s)?.rawValue == s)
    }

    @Test("invalid identifiers", arguments: [
        "", ".", "..", String(repeating: "x", count: 65), "a/b", "/", "a+b", "+", "#", "a#", "a b", " a",
        "a\n", "a\u{0}", "é", "дев", "😀", "a:b", "a*b", "$SYS", "a\\b", "a\"b", "a\u{200B}b",
    ])
    func invalid(_ s: String) {
        #expect(!Identifier.isValid(s))
        #expect(DeviceID(s) == nil)
        #expect(AccountID(s) == nil)
    }

    @Test("the limit is 64 bytes, not 64 characters")
    func limitIsBytes() {
        #expect(Identifier.isValid(String(repeating: "a", count: 64)))
        #expect(!Identifier.isValid(String(repeating: "a", count: 65)))
    }

    @Test("identifiers encode as plain JSON strings and decode with validation")
    func codable() throws {
        let data = try WireCodec.encoder.encode(["d": DeviceID("sim-1")])
        #expect(String(decoding: data, as: UTF8.self) == #"{"d":"sim-1"}"#)
        #expect(try WireCodec.decoder.decode([String: DeviceID].self, from: data)["d"] == "sim-1")
        #expect(throws: DecodingError.self) { try WireCodec.decoder.decode([String: AccountID].self, from: Data(#"{"a":"x/y"}"#.utf8)) }
        #expect(throws: DecodingError.self) { try WireCodec.decoder.decode([String: DeviceID].self, from: Data(#"{"a":""}"#.utf8)) }
    }

    @Test("identifiers order by raw value")
    func ordering() {
        let ids: [DeviceID] = ["b", "a", "c"]
        #expect(ids.sorted() == ["a", "b", "c"])
        #expect(AccountID.platform.rawValue == "platform")
        #expect(DeviceID("x").description == "x")
    }
}

@Suite("Did you mean")
struct SuggestionTests {
    @Test("typos, swaps and prefixes find the known word; far-off words find nothing")
    func closest() {
        #expect(Suggestions.closest(to: "devcie", in: ["device", "transfer", "account"]) == ["device"])
        #expect(Suggestions.closest(to: "lsit", in: ["list", "show", "provision"]) == ["list"])
        #expect(Suggestions.closest(to: "confg", in: ["config", "help"]) == ["config"])
        #expect(Suggestions.closest(to: "zzz", in: ["device", "transfer"]).isEmpty)
        #expect(Suggestions.phrase("conect", in: ["connect", "storm"]) == "; did you mean connect?")
    }
}
