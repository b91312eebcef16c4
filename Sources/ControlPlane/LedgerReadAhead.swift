import Foundation
import EscrowCore
import Storage

/// Device rows read ahead for a bulk decision (a transfer approved for thousands of devices): the
/// fields the activation and hold paths read per device, for a few hundred devices per query
/// instead of several queries per device. On SQLite a read is a function call; on PostgreSQL it is a
/// round trip that also waits for every pipelined write before it, so without this the bulk
/// approval is bound by round trips and the two processes never work at once.
///
/// Kept current by the ledger's own writes while it is in force (`Ledger.readingAhead`): the methods
/// that change these fields update the row (write-through) or forget it (then the next read goes to
/// the database). Only ever alive inside one command's transaction.
struct DeviceReadAhead {
    struct Row {
        var state: String
        var owner: String
        var provisioner: String
        var certIssuer: String?
        var desiredVersion: Int
        var appliedVersion: Int
        var configState: String
        var certSerial: String?
        var nextCertificate: String?
        var nextSerial: String?
        var nextIssuer: String?
        var rotationVersion: Int?
        var csr: String?
        /// nil: the device has no custody entry yet.
        var lastCustody: CustodyEntry?
        /// The mode of each configuration version read ahead (those not yet applied); a version
        /// not here is read from the database.
        var modes: [Int: DeviceMode?] = [:]
    }
    var rows: [DeviceID: Row] = [:]
}

extension Ledger {
    /// Devices per query when many are read at once (`readingAhead`, `desiredConfigs`).
    static let readAheadChunk = 256

    /// `IN (?, ?, ...)` with `readAheadChunk` places: the statement always takes that many ids (a
    /// short last chunk repeats its last id), so one prepared statement serves every chunk.
    static let chunkPlaces = "(" + Array(repeating: "?", count: readAheadChunk).joined(separator: ", ") + ")"

    /// Calls `body` with the parameters of each chunk of `ids` for a statement using `chunkPlaces`.
    func forEachChunk(of ids: [DeviceID], _ body: ([SQLValue]) throws -> Void) throws {
        var start = 0
        while start < ids.count {
            let chunk = ids[start..<min(ids.count, start + Self.readAheadChunk)]
            try body(chunk.map { SQLValue.text($0.rawValue) } + Array(repeating: SQLValue.text(chunk.last!.rawValue), count: Self.readAheadChunk - chunk.count))
            start += Self.readAheadChunk
        }
    }

    /// Runs `body` with the rows of `ids` read ahead (see `DeviceReadAhead`); nested calls share the outer one.
    func readingAhead<T>(_ ids: [DeviceID], configurations: Bool = false, _ body: () throws -> T) throws -> T {
        guard readsAhead, readAhead == nil, ids.count > 1 else { return try body() }
        var ahead = DeviceReadAhead()
        let devicesSQL = """
            SELECT id, state, owner, provisioner, cert_issuer, cert_serial, desired_version, applied_version, config_state,
                next_certificate, next_serial, next_issuer, rotation_version, csr
            FROM devices WHERE id IN \(Self.chunkPlaces)
            """
        let configsSQL = """
            SELECT c.device_id, c.version, c.payload FROM configs c JOIN devices d ON d.id = c.device_id
            WHERE c.device_id IN \(Self.chunkPlaces) AND c.version > d.applied_version
            """
        let custodySQL = """
            SELECT c.* FROM custody c WHERE c.device_id IN \(Self.chunkPlaces)
            AND c.seq = (SELECT max(seq) FROM custody m WHERE m.device_id = c.device_id)
            """
        try forEachChunk(of: ids) { params in
            for r in try db.query(devicesSQL, params) {
                guard let d = DeviceID(try r.string("id")) else { continue }
                ahead.rows[d] = .init(state: try r.string("state"), owner: try r.string("owner"), provisioner: try r.string("provisioner"),
                                      certIssuer: try r.optionalString("cert_issuer"), desiredVersion: Int(try r.int("desired_version")),
                                      appliedVersion: Int(try r.int("applied_version")), configState: try r.string("config_state"),
                                      certSerial: try r.optionalString("cert_serial"),
                                      nextCertificate: try r.optionalString("next_certificate"), nextSerial: try r.optionalString("next_serial"),
                                      nextIssuer: try r.optionalString("next_issuer"), rotationVersion: try r.optionalInt("rotation_version"),
                                      csr: try r.optionalString("csr"), lastCustody: nil)
            }
            for r in try db.query(custodySQL, params) {
                let e = try Self.custodyEntry(r)
                ahead.rows[e.deviceId]?.lastCustody = e
            }
            if configurations {
                for r in try db.query(configsSQL, params) {
                    guard let d = DeviceID(try r.string("device_id")) else { continue }
                    let mode = (try? WireCodec.decode(DeviceConfig.self, from: try r.blob("payload"), limit: .max))?.mode
                    ahead.rows[d]?.modes[Int(try r.int("version"))] = .some(mode)
                }
            }
        }
        readAhead = ahead
        defer { readAhead = nil }
        return try body()
    }

    /// The read-ahead row of `id`, if one is in force.
    func aheadRow(_ id: DeviceID) -> DeviceReadAhead.Row? { readAhead?.rows[id] }

    /// Changes the read-ahead row of `id` (nothing when none is in force).
    func updateAhead(_ id: DeviceID, _ change: (inout DeviceReadAhead.Row) -> Void) {
        guard readAhead != nil, var row = readAhead!.rows[id] else { return }
        change(&row)
        readAhead!.rows[id] = row
    }

    /// The next read of `id` goes to the database.
    func forgetAhead(_ id: DeviceID) {
        if readAhead != nil { readAhead!.rows[id] = nil }
    }
}
