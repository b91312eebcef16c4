/// The heartbeat fast path: one pass over the bytes of the flat object a heartbeat is, with no
/// allocation. It accepts only what `WireCodec.decode(Heartbeat.self, ...)` would accept with the
/// same result (members `schema`, `seq`, `mode`, `uptime`, `configVersion`, integers without a
/// fraction or exponent, strings without escapes, `schema` equal to the platform's) and declines
/// (nil) everything else, for which the caller runs `WireCodec.decode` to get the exact error.
/// At 20,000 devices this is escrowd's hot path: ~0.3 us against ~5 us for `JSONDecoder`.
extension Heartbeat {
    public static func scan(_ bytes: [UInt8], limit: Int = WireCodec.maxDevicePayloadBytes) -> Heartbeat? {
        guard bytes.count <= limit else { return nil }
        return bytes.withUnsafeBufferPointer { scan($0) }
    }

    static func scan(_ b: UnsafeBufferPointer<UInt8>) -> Heartbeat? {
        var schema: Int?, seq: Int?, uptime: Int?, configVersion: Int?, mode: DeviceMode?
        var i = 0
        let n = b.count
        func skipSpace() { while i < n, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 } }
        /// The bytes of a string without escapes (start, end), the cursor after its closing quote.
        func string() -> Range<Int>? {
            guard i < n, b[i] == 0x22 else { return nil }
            i += 1
            let start = i
            while i < n, b[i] != 0x22 {
                if b[i] == 0x5C || b[i] < 0x20 || b[i] >= 0x80 { return nil } // escapes, controls, non-ASCII: the full decoder
                i += 1
            }
            guard i < n else { return nil }
            defer { i += 1 }
            return start..<i
        }
        func integer() -> Int? {
            var negative = false, value = 0, digits = 0
            if i < n, b[i] == 0x2D { negative = true; i += 1 }
            let first = i
            while i < n, b[i] >= 0x30, b[i] <= 0x39 {
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(Int(b[i] - 0x30))
                if o1 || o2 { return nil }
                value = a; i += 1; digits += 1
            }
            // JSON forbids leading zeros; a fraction or exponent goes to the full decoder.
            guard digits > 0, !(digits > 1 && b[first] == 0x30), i >= n || (b[i] != 0x2E && b[i] != 0x65 && b[i] != 0x45) else { return nil }
            return negative ? -value : value
        }
        func equals(_ r: Range<Int>, _ literal: StaticString) -> Bool {
            guard r.count == literal.utf8CodeUnitCount else { return false }
            let l = literal.utf8Start
            for k in 0..<r.count where b[r.lowerBound + k] != l[k] { return false }
            return true
        }
        skipSpace()
        guard i < n, b[i] == 0x7B else { return nil }
        i += 1
        while true {
            skipSpace()
            guard let key = string() else { return nil }
            skipSpace()
            guard i < n, b[i] == 0x3A else { return nil }
            i += 1
            skipSpace()
            // A repeated member goes to the full decoder too.
            if equals(key, "schema") { guard schema == nil, let v = integer() else { return nil }; schema = v }
            else if equals(key, "seq") { guard seq == nil, let v = integer() else { return nil }; seq = v }
            else if equals(key, "uptime") { guard uptime == nil, let v = integer() else { return nil }; uptime = v }
            else if equals(key, "configVersion") { guard configVersion == nil, let v = integer() else { return nil }; configVersion = v }
            else if equals(key, "mode") {
                guard mode == nil, let r = string() else { return nil }
                if equals(r, "escrow") { mode = .escrow } else if equals(r, "normal") { mode = .normal } else { return nil }
            } else { return nil } // another member: the full decoder decides
            skipSpace()
            guard i < n else { return nil }
            if b[i] == 0x2C { i += 1; continue }
            if b[i] == 0x7D { i += 1; break }
            return nil
        }
        skipSpace()
        guard i == n, schema == WireCodec.schemaVersion, let seq, let mode, let uptime, let configVersion else { return nil }
        return Heartbeat(seq: seq, mode: mode, uptime: uptime, configVersion: configVersion)
    }
}
