import Testing
import TestSupport
@testable import MQTTWire
@testable import FleetEngine

@Suite struct MQTTCodecTests {
    @Test func remainingLengthSpecExamples() throws {
        let cases: [(Int, [UInt8])] = [
            (0, [0x00]), (127, [0x7F]), (128, [0x80, 0x01]), (16_383, [0xFF, 0x7F]),
            (16_384, [0x80, 0x80, 0x01]), (2_097_151, [0xFF, 0xFF, 0x7F]),
            (2_097_152, [0x80, 0x80, 0x80, 0x01]), (268_435_455, [0xFF, 0xFF, 0xFF, 0x7F]),
        ]
        for (value, bytes) in cases {
            var out: [UInt8] = []
            WireBytes.appendVarInt(value, to: &out)
            #expect(out == bytes)
            #expect(WireBytes.varIntSize(value) == bytes.count)
            var c = ByteCursor(bytes[...])
            #expect(try c.varInt("x") == value)
        }
    }

    @Test func connect311ByteExact() throws {
        let p = MQTTPacket.connect(.init(version: .v311, clientID: "a", cleanStart: true, keepAlive: 60))
        let expected: [UInt8] = [0x10, 0x0D, 0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, 0x61]
        #expect(p.encoded() == expected)
        #expect(try MQTTPacket.decode(expected) == p)
    }

    @Test func connect5ByteExact() throws {
        let p = MQTTPacket.connect(.init(version: .v5, clientID: "a", cleanStart: true, keepAlive: 60))
        let expected: [UInt8] = [0x10, 0x0E, 0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x01, 0x61]
        #expect(p.encoded(version: .v5) == expected)
        #expect(try MQTTPacket.decode(expected, version: .v5) == p)
    }

    @Test func connectWithWillAndCredentials311() throws {
        let will = MQTTPacket.Will(topic: "t", payload: [0x78], qos: .atLeastOnce, retain: true)
        let p = MQTTPacket.connect(.init(clientID: "c", keepAlive: 10, will: will, username: "u", password: [0x70]))
        // flags: user 0x80 | pass 0x40 | will retain 0x20 | will qos1 0x08 | will 0x04 | clean 0x02 = 0xEE
        let expected: [UInt8] = [0x10, 0x19, 0, 4, 0x4D, 0x51, 0x54, 0x54, 4, 0xEE, 0, 10,
                                 0, 1, 0x63, 0, 1, 0x74, 0, 1, 0x78, 0, 1, 0x75, 0, 1, 0x70]
        #expect(p.encoded() == expected)
        #expect(try MQTTPacket.decode(expected) == p)
    }

    @Test func connect5WithPropertiesRoundTrip() throws {
        let will = MQTTPacket.Will(topic: "devices/x/status", payload: Array("off".utf8), properties: [.init(0x18, .u32(5))])
        let p = MQTTPacket.connect(.init(version: .v5, clientID: "x", keepAlive: 30, will: will, username: "u", password: [1, 2],
                                         properties: [.init(MQTTProperties.sessionExpiryInterval, .u32(60)),
                                                      .init(MQTTProperties.receiveMaximum, .u16(20)),
                                                      .init(MQTTProperties.userProperty, .pair("k", "v"))]))
        let bytes = p.encoded(version: .v5)
        #expect(try MQTTPacket.decode(bytes, version: .v5) == p)
        // Properties block right after keep alive: length 5+3+7 = 15, then session expiry.
        #expect(Array(bytes[12..<18]) == [15, 0x11, 0, 0, 0, 60])
    }

    @Test func publishQoS1ByteExact() throws {
        let p = MQTTPacket.publish(.init(topic: "a/b", payload: Array("hi".utf8), qos: .atLeastOnce, packetID: 10))
        let expected: [UInt8] = [0x32, 0x09, 0x00, 0x03, 0x61, 0x2F, 0x62, 0x00, 0x0A, 0x68, 0x69]
        #expect(p.encoded() == expected)
        #expect(try MQTTPacket.decode(expected) == p)
    }

    @Test func publishV5WithPropertiesAndRetain() throws {
        let p = MQTTPacket.publish(.init(topic: "a", payload: [9], qos: .atLeastOnce, retain: true, packetID: 1,
                                         properties: [.init(MQTTProperties.payloadFormatIndicator, .byte(1))]))
        let expected: [UInt8] = [0x33, 0x09, 0, 1, 0x61, 0, 1, 0x02, 0x01, 0x01, 0x09]
        #expect(p.encoded(version: .v5) == expected)
        #expect(try MQTTPacket.decode(expected, version: .v5) == p)
    }

    @Test func smallPacketsByteExact() throws {
        let table: [(MQTTPacket, [UInt8], MQTTVersion)] = [
            (.pingreq, [0xC0, 0x00], .v311),
            (.pingresp, [0xD0, 0x00], .v311),
            (.disconnect(.init()), [0xE0, 0x00], .v311),
            (.disconnect(.init()), [0xE0, 0x00], .v5),
            (.disconnect(.init(reason: 0x04)), [0xE0, 0x01, 0x04], .v5),
            (.connack(.init(sessionPresent: false, code: 0)), [0x20, 0x02, 0x00, 0x00], .v311),
            (.connack(.init(sessionPresent: true, code: 0)), [0x20, 0x03, 0x01, 0x00, 0x00], .v5),
            (.puback(.init(packetID: 7)), [0x40, 0x02, 0x00, 0x07], .v311),
            (.puback(.init(packetID: 7, reason: 0x87)), [0x40, 0x03, 0x00, 0x07, 0x87], .v5),
            (.subscribe(.init(packetID: 1, filters: [("a/b", .atLeastOnce)])), [0x82, 0x08, 0, 1, 0, 3, 0x61, 0x2F, 0x62, 1], .v311),
            (.suback(.init(packetID: 1, codes: [1])), [0x90, 0x03, 0, 1, 1], .v311),
            (.unsubscribe(.init(packetID: 2, filters: ["a"])), [0xA2, 0x05, 0, 2, 0, 1, 0x61], .v311),
            (.unsuback(.init(packetID: 2)), [0xB0, 0x02, 0, 2], .v311),
        ]
        for (packet, bytes, version) in table {
            #expect(packet.encoded(version: version) == bytes, "\(packet)")
            #expect(try MQTTPacket.decode(bytes, version: version) == packet, "\(packet)")
        }
    }

    @Test func readerSplitsArbitraryChunks() throws {
        var stream: [UInt8] = []
        var packets: [MQTTPacket] = []
        for i in 0..<50 {
            let p = MQTTPacket.publish(.init(topic: "t/\(i)", payload: Array(repeating: UInt8(i), count: i * 7),
                                             qos: i % 2 == 0 ? .atMostOnce : .atLeastOnce, packetID: i % 2 == 0 ? nil : UInt16(i)))
            packets.append(p); p.encode(into: &stream)
            packets.append(.pingresp); MQTTPacket.pingresp.encode(into: &stream)
        }
        for chunk in [1, 2, 3, 7, 64, 1000] {
            var reader = PacketReader()
            var got: [MQTTPacket] = []
            var i = 0
            while i < stream.count {
                reader.append(stream[i..<min(i + chunk, stream.count)])
                while let p = try reader.next() { got.append(p) }
                i += chunk
            }
            #expect(got == packets)
            #expect(reader.bufferedByteCount == 0)
        }
    }

    @Test func truncationsNeverCrash() throws {
        let samples: [(MQTTPacket, MQTTVersion)] = [
            (.connect(.init(version: .v5, clientID: "dev", will: .init(topic: "w", payload: [1, 2, 3]), username: "u", password: [1],
                            properties: [.init(0x11, .u32(9))])), .v5),
            (.publish(.init(topic: "abc", payload: [1, 2, 3], qos: .atLeastOnce, packetID: 3, properties: [.init(0x08, .string("r"))])), .v5),
            (.subscribe(.init(packetID: 3, filters: [("a/b", .atLeastOnce)])), .v311),
        ]
        for (packet, version) in samples {
            let bytes = packet.encoded(version: version)
            for cut in 0..<bytes.count {
                // A strict prefix: the reader waits for more bytes.
                var reader = PacketReader(version: version)
                reader.append(bytes[..<cut])
                #expect(try reader.next() == nil)
                // The same prefix re-framed as if complete: a typed error (publish payloads may legally shrink).
                if cut >= 2, case .publish = packet {} else if cut >= 2 {
                    let body = bytes[2..<cut]
                    var framed: [UInt8] = [bytes[0]]
                    WireBytes.appendVarInt(body.count, to: &framed)
                    framed += body
                    #expect(throws: CodecError.self) { _ = try MQTTPacket.decode(framed, version: version) }
                }
            }
        }
    }

    /// A random well-formed packet of every kind (seeded), for the round-trip fuzz below.
    static func randomPacket(_ rng: inout SplitMix64, version: MQTTVersion) -> MQTTPacket {
        func text(_ max: Int) -> String { String((0..<Int.random(in: 1...max, using: &rng)).map { _ in "abcxyz/-_09é".randomElement(using: &rng)! }) }
        func bytes(_ max: Int) -> [UInt8] { (0..<Int.random(in: 0...max, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) } }
        let id = UInt16.random(in: 1...UInt16.max, using: &rng)
        let props: MQTTProperties = version == .v5 && Bool.random(using: &rng)
            ? MQTTProperties(responseTopic: text(10), correlationData: bytes(8), userProperties: [(text(5), text(5))]) : []
        switch Int.random(in: 0..<9, using: &rng) {
        case 0: return .connect(.init(version: version, clientID: text(20), cleanStart: Bool.random(using: &rng), keepAlive: UInt16.random(in: 0...600, using: &rng),
                                      username: Bool.random(using: &rng) ? text(8) : nil, password: nil))
        case 1: return .connack(.init(sessionPresent: Bool.random(using: &rng), code: 0))
        case 2:
            let qos: QoS = Bool.random(using: &rng) ? .atMostOnce : .atLeastOnce
            return .publish(.init(topic: text(30), payload: bytes(64), qos: qos, retain: Bool.random(using: &rng), packetID: qos == .atMostOnce ? nil : id, properties: props))
        case 3: return .puback(.init(packetID: id))
        case 4: return .subscribe(.init(packetID: id, filters: [(text(20), .atLeastOnce), (text(10), .atMostOnce)]))
        case 5: return .suback(.init(packetID: id, codes: [0, 1]))
        case 6: return .unsubscribe(.init(packetID: id, filters: [text(15)]))
        case 7: return .pingreq
        default: return .pingresp
        }
    }

    /// Seeded (the seed is printed on failure): every well-formed packet round-trips exactly;
    /// every mutation of one either throws a `CodecError` or decodes to a packet that round-trips
    /// itself; both outcomes occur.
    @Test func fuzzRoundTripsAndRejections() throws {
        let seed: UInt64 = 0x5EED_2026_1207
        var rng = SplitMix64(state: seed)
        var rejected = 0, reDecoded = 0
        for round in 0..<3_000 {
            let version: MQTTVersion = Bool.random(using: &rng) ? .v5 : .v311
            let packet = Self.randomPacket(&rng, version: version)
            let wire = packet.encoded(version: version)
            #expect(try MQTTPacket.decode(wire, version: version) == packet, "seed \(seed) round \(round): \(packet)")
            var mutated = wire
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let at = Int.random(in: 0..<mutated.count, using: &rng)
                mutated[at] = UInt8.random(in: 0...255, using: &rng)
            }
            var reader = PacketReader(version: version)
            reader.append(mutated)
            do {
                guard let decoded = try reader.next() else { continue } // a length that asks for more bytes
                let again = try MQTTPacket.decode(decoded.encoded(version: version), version: version)
                #expect(again == decoded, "seed \(seed) round \(round): a decoded mutation re-encodes to itself")
                reDecoded += 1
            } catch is CodecError {
                rejected += 1
            }
        }
        #expect(rejected > 100 && reDecoded > 100, "rejected \(rejected), re-decoded \(reDecoded)")
    }

    @Test func malformedInputsThrowTypedErrors() {
        #expect(throws: CodecError.malformedVarInt) { var r = PacketReader(); r.append([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]); _ = try r.next() }
        #expect(throws: CodecError.invalidPacketType(0x00)) { _ = try MQTTPacket.decode([0x00, 0x00]) }
        #expect(throws: CodecError.invalidPacketType(0x80)) { _ = try MQTTPacket.decode([0x80, 0x03, 0, 1, 0]) }
        #expect(throws: CodecError.invalid("PUBLISH QoS 3")) { _ = try MQTTPacket.decode([0x36, 0x03, 0, 1, 0x61]) }
        #expect(throws: CodecError.invalidUTF8) { _ = try MQTTPacket.decode([0x30, 0x03, 0, 1, 0xFF]) }
        #expect(throws: CodecError.tooLarge(200)) { var r = PacketReader(maxPacketSize: 100); r.append([0x30, 0xC8, 0x01]); _ = try r.next() }
        #expect(throws: CodecError.unknownProperty(0x7F)) { _ = try MQTTPacket.decode([0x20, 0x05, 0, 0, 2, 0x7F, 0], version: .v5) }
        #expect(throws: CodecError.self) { _ = try MQTTPacket.decode([0xC0, 0x01, 0x00]) }
    }
}
