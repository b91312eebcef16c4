import Foundation
import Testing
import EscrowCore
import TestSupport

/// operator.list, operator.passwd and operator.delete against the real broker.
@Suite("Operator logins: list, rotate, delete", .timeLimit(.minutes(2)))
struct OperatorLifecycleTests {
    /// Whether the broker accepts this login now (a probe that connects is closed at once).
    static func accepted(_ platform: PlatformSession, _ user: String, _ password: String) async -> Bool {
        guard let probe = try? await OperatorProbe(port: platform.escrowd.operatorPort, username: user, password: password, accounts: ["oem"]) else { return false }
        await probe.close()
        return true
    }

    @Test("passwd: the old password is refused within 1 s and the new one works; delete: refused within 1 s; op-admin cannot be deleted")
    func rotateAndDelete() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        await oem.close()
        let listed = try await platform.admin.send(.platform, "operator.list", ["account": "oem"]).result(Commands.OperatorListResult.self)
        #expect(listed.operators == [.init(username: "op-oem", account: "oem")])
        let all = try await platform.admin.send(.platform, "operator.list", [:]).result(Commands.OperatorListResult.self)
        #expect(Set(all.operators.map(\.username)) == ["op-admin", "op-oem"])

        let rotated = try await platform.admin.send(.platform, "operator.passwd", ["username": "op-oem", "password": "pw-oem-rotated"]).result(Commands.OperatorListResult.Entry.self)
        #expect(rotated.account == "oem")
        try await waitUntil(timeout: .seconds(1), "the broker refuses op-oem's old password") { !(await Self.accepted(platform, "op-oem", "pw-oem-secret")) }
        try await waitUntil(timeout: .seconds(5), "the new password works") { await Self.accepted(platform, "op-oem", "pw-oem-rotated") }

        _ = try await platform.admin.send(.platform, "operator.delete", ["username": "op-oem"]).result(Commands.OperatorListResult.Entry.self)
        try await waitUntil(timeout: .seconds(1), "the broker refuses the deleted login") { !(await Self.accepted(platform, "op-oem", "pw-oem-rotated")) }

        let admin = try await platform.admin.send(.platform, "operator.delete", ["username": "op-admin"])
        #expect(admin.error?.code == .forbidden, "\(String(describing: admin.error))")
        let missing = try await platform.admin.send(.platform, "operator.passwd", ["username": "op-nobody", "password": "whatever-123"])
        #expect(missing.error?.code == .notFound)
        let short = try await platform.admin.send(.platform, "operator.passwd", ["username": "op-admin", "password": "short"])
        #expect(short.error?.code == .invalidArgument)
        #expect(try await platform.admin.send(.platform, "operator.list", [:]).result(Commands.OperatorListResult.self).operators.map(\.username) == ["op-admin"])
        await platform.close()
    }

    @Test("escrowctl operator list, passwd (generated password printed once) and delete")
    func cli() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        await oem.close()
        let env = ["ESCROW_CONFIG": platform.escrowd.dataDirectory + "/admin.conf"]
        let list = try await runCLI(["operator", "list", "--account", "oem"], env: env)
        #expect(list.status == 0 && list.stdout.contains("op-oem") && list.stdout.hasPrefix("USERNAME"), "\(list)")
        let passwd = try await runCLI(["operator", "passwd", "op-oem"], env: env)
        #expect(passwd.status == 0 && passwd.stdout.contains("has a new password") && passwd.stdout.contains("password: "), "\(passwd)")
        let gone = try await runCLI(["operator", "delete", "op-oem"], env: env)
        #expect(gone.status == 0 && gone.stdout.contains("deleted"), "\(gone)")
        let again = try await runCLI(["operator", "delete", "op-oem"], env: env)
        #expect(again.status == 66 && again.stderr.contains("not_found"), "\(again)")
        await platform.close()
    }
}
