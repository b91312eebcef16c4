/// Primitive MQTT encodings: big-endian integers, length-prefixed strings and binary,
/// and the variable byte integer used for remaining length and v5 property lengths.
public enum WireBytes {
    public static let maxVarInt = 268_435_455

    public static func appendVarInt(_ value: Int, to out: inout [UInt8]) {
        precondition(value >= 0 && value <= maxVarInt, "variable byte integer out of range")
        var v = value
        repeat {
            var b = UInt8(v & 0x7F)
            v >>= 7
            if v > 0 { b |= 0x80 }
            out.append(b)
        } while v > 0
    }

    public static func varIntSize(_ value: Int) -> Int {
        value < 128 ? 1 : value < 16_384 ? 2 : value < 2_097_152 ? 3 : 4
    }

    public static func appendU16(_ v: UInt16, to out: inout [UInt8]) {
        out.append(UInt8(v >> 8)); out.append(UInt8(v & 0xFF))
    }
    public static func appendU32(_ v: UInt32, to out: inout [UInt8]) {
        out.append(UInt8(v >> 24)); out.append(UInt8((v >> 16) & 0xFF))
        out.append(UInt8((v >> 8) & 0xFF)); out.append(UInt8(v & 0xFF))
    }
    public static func appendString(_ s: String, to out: inout [UInt8]) {
        appendBinary(Array(s.utf8), to: &out)
    }
    public static func appendBinary(_ b: [UInt8], to out: inout [UInt8]) {
        precondition(b.count <= 65_535, "MQTT string/binary longer than 65535 bytes")
        appendU16(UInt16(b.count), to: &out); out.append(contentsOf: b)
    }
}

/// Reads MQTT primitives from a slice, throwing `CodecError.truncated` instead of trapping.
struct ByteCursor {
    let bytes: ArraySlice<UInt8>
    var index: Int

    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes; index = bytes.startIndex }

    var remaining: Int { bytes.endIndex - index }
    var isAtEnd: Bool { index >= bytes.endIndex }

    mutating func u8(_ field: String) throws(CodecError) -> UInt8 {
        guard remaining >= 1 else { throw .truncated(field) }
        defer { index += 1 }
        return bytes[index]
    }
    mutating func u16(_ field: String) throws(CodecError) -> UInt16 {
        guard remaining >= 2 else { throw .truncated(field) }
        defer { index += 2 }
        return UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1])
    }
    mutating func u32(_ field: String) throws(CodecError) -> UInt32 {
        guard remaining >= 4 else { throw .truncated(field) }
        var v: UInt32 = 0
        for i in 0..<4 { v = v << 8 | UInt32(bytes[index + i]) }
        index += 4
        return v
    }
    mutating func varInt(_ field: String) throws(CodecError) -> Int {
        var value = 0, shift = 0
        for _ in 0..<4 {
            let b = try u8(field)
            value |= Int(b & 0x7F) << shift
            if b & 0x80 == 0 { return value }
            shift += 7
        }
        throw .malformedVarInt
    }
    mutating func take(_ n: Int, _ field: String) throws(CodecError) -> ArraySlice<UInt8> {
        guard n >= 0, remaining >= n else { throw .truncated(field) }
        defer { index += n }
        return bytes[index..<(index + n)]
    }
    mutating func binary(_ field: String) throws(CodecError) -> [UInt8] {
        let n = Int(try u16(field))
        return Array(try take(n, field))
    }
    mutating func string(_ field: String) throws(CodecError) -> String {
        let raw = try binary(field)
        guard let s = String(validating: raw, as: UTF8.self) else { throw .invalidUTF8 }
        return s
    }
    mutating func rest() -> [UInt8] {
        defer { index = bytes.endIndex }
        return Array(bytes[index...])
    }
}
