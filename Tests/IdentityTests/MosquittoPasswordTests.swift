import TestSupport
import Foundation
import Testing
import Identity

@Suite("Mosquitto password hashes", .timeLimit(.minutes(1)))
struct MosquittoPasswordTests {
    /// Produced by `mosquitto_passwd -b` 2.0.11 for password "secret".
    let known = "$7$101$L+UWfeUfQ9Xy8Lys$fJB2UjaI8LUDV/eF0j8ekl8kXofl7uK6F2FkilCRWDuPBW+MFqZdN60Tl5rDsKzSms5QxqhSn2EVTpw0TB1dyQ=="

    @Test func matchesAKnownMosquittoPasswdVector() throws {
        let salt = [UInt8](Data(base64Encoded: "L+UWfeUfQ9Xy8Lys")!)
        #expect(MosquittoPassword.hash(password: "secret", salt: salt) == known)
        #expect(MosquittoPassword.verify(password: "secret", hash: known))
        #expect(!MosquittoPassword.verify(password: "Secret", hash: known))
    }

    @Test func formatIsSeven101SaltHash() {
        let h = MosquittoPassword.hash(password: "pw")
        let parts = h.split(separator: "$", omittingEmptySubsequences: false)
        #expect(parts.count == 5)
        #expect(parts[1] == "7" && parts[2] == "101")
        #expect(Data(base64Encoded: String(parts[3]))?.count == 12)
        #expect(Data(base64Encoded: String(parts[4]))?.count == 64)
        #expect(h != MosquittoPassword.hash(password: "pw")) // random salt
    }

    @Test func verifiesAFreshMosquittoPasswdFile() throws {
        let dir = try TempDirectory(); defer { dir.remove() }
        let file = dir.file("pw")
        let r = try run("/usr/bin/mosquitto_passwd", ["-c", "-b", file, "bob", "hunter2 with spaces"])
        #expect(r.status == 0, "\(r.output)")
        let line = try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let hash = String(line.dropFirst("bob:".count))
        #expect(MosquittoPassword.verify(password: "hunter2 with spaces", hash: hash))
    }
}
