/// Incremental framing: accepts byte chunks of any size and yields complete packets.
///
/// Holds only the bytes of an incomplete packet between calls (nothing when idle), so an
/// idle connection costs no buffer memory.
public struct PacketReader: Sendable {
    public var version: MQTTVersion
    /// Packets announcing a larger remaining length are refused with `CodecError.tooLarge`.
    public var maxPacketSize: Int
    private var buffer: [UInt8] = []
    private var start = 0

    public init(version: MQTTVersion = .v311, maxPacketSize: Int = 1 << 20) {
        self.version = version; self.maxPacketSize = maxPacketSize
    }

    public var bufferedByteCount: Int { buffer.count - start }

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        buffer.append(contentsOf: bytes)
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        buffer.append(contentsOf: bytes)
    }

    /// The next complete packet, or nil when more bytes are needed.
    public mutating func next() throws(CodecError) -> MQTTPacket? {
        let available = buffer.count - start
        guard available >= 2 else { compact(); return nil }
        var length = 0, shift = 0, i = start + 1, done = false
        while i < buffer.count && i - start <= 4 {
            let b = buffer[i]
            length |= Int(b & 0x7F) << shift
            i += 1
            if b & 0x80 == 0 { done = true; break }
            shift += 7
        }
        if !done {
            if i - start > 4 { throw .malformedVarInt }
            compact(); return nil
        }
        guard length <= maxPacketSize else { throw .tooLarge(length) }
        guard buffer.count - i >= length else { compact(); return nil }
        let header = buffer[start]
        let packet = try MQTTPacket.decode(header: header, body: buffer[i..<(i + length)], version: version)
        start = i + length
        if start == buffer.count { buffer = []; start = 0 }
        return packet
    }

    private mutating func compact() {
        if start > 0 { buffer.removeFirst(start); start = 0 }
    }
}
