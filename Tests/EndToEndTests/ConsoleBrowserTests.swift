import Foundation
import Testing
import EscrowCore
import POSIX
import TestSupport

/// The web console in a real headless Chromium (WebDriver), against a real escrowd and broker.
/// Screenshots go to a temp directory, or to `ESCROW_SCREENSHOTS` (docs/console when refreshing
/// the ones the README links).
@Suite("Web console in Chromium", .serialized, .timeLimit(.minutes(4)))
struct ConsoleBrowserTests {
    /// escrowd with three accounts, an open transfer to acme and one to the standalone other customer.
    struct Stage {
        let platform: PlatformSession
        let console: ChildProcess
        let consolePort: Int
        let toAcme: String, toOther: String
        let logs: TempDirectory
        var base: String { "http://127.0.0.1:\(consolePort)" }

        static func start() async throws -> Stage {
            let platform = try await PlatformSession()
            let oem = try await platform.account("oem", kind: .provisioner)
            _ = try await platform.account("acme", kind: .customer)
            _ = try await platform.account("other", kind: .customer)
            _ = try await oem.send("oem", "device.provision", ["prefix": "web-", "count": 8, "issueIdentity": false]).result(Commands.DeviceProvisionResult.self)
            let ids = (1...8).map { String(format: "web-%06d", $0) }
            let a = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": TestSupport.ids(Array(ids.prefix(6))), "note": "PO 4711"]).result(Commands.TransferResult.self)
            let o = try await oem.send("oem", "transfer.request", ["to": "other", "deviceIds": TestSupport.ids(Array(ids.suffix(2)))]).result(Commands.TransferResult.self)
            await oem.close()
            let port = try freePort()
            let logs = try TempDirectory(prefix: "console")
            let console = try ChildProcess.spawn(try Products.path("escrow-console"), ["--listen", "127.0.0.1:\(port)", "--broker", platform.escrowd.operatorURL],
                                                 stdout: logs.file("console.log"))
            try await waitUntil(timeout: .seconds(20), "the console serves") { (try? HTTPExchange.get(port: port, "/healthz").status) == 200 }
            return Stage(platform: platform, console: console, consolePort: port, toAcme: a.transfer.id, toOther: o.transfer.id, logs: logs)
        }

        func stop() async {
            console.signal(SIGTERM)
            await platform.close()
        }
    }

    static func screenshotDirectory() throws -> String {
        if let dir = ProcessInfo.processInfo.environment["ESCROW_SCREENSHOTS"] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            return dir
        }
        return NSTemporaryDirectory()
    }

    static func login(_ b: Browser, _ stage: Stage, user: String, password: String, account: String) throws {
        try b.open(stage.base + "/login")
        try b.type("#username", user)
        try b.type("#password", password)
        try b.type("#account", account)
        try b.click("#login")
    }

    @Test("log in, approve part of an incoming transfer and reject the rest, watch the events arrive live, see the devices change state", .enabled(if: Browser.isInstalled))
    func inboxToFleet() async throws {
        let stage = try await Stage.start()
        let browser = try await Browser()
        defer { browser.close() }
        let shots = try Self.screenshotDirectory()
        try Self.login(browser, stage, user: "op-acme", password: "pw-acme-secret", account: "acme")
        do {
            try await waitUntil("the inbox shows the incoming transfer") { browser.url.hasSuffix("/inbox") && browser.source.contains(stage.toAcme) }
        } catch {
            Issue.record("at \(browser.url):\n\(browser.source.prefix(3000))\nconsole log:\n\((try? String(contentsOfFile: stage.logs.file("console.log"), encoding: .utf8)) ?? "")")
            throw error
        }
        #expect(browser.source.contains("PO 4711") && browser.source.contains("expires in 6 d"))
        #expect(!browser.source.contains(stage.toOther), "acme's inbox holds nothing of other's")
        try browser.screenshot(to: shots + "/console-inbox.png")

        // A second tab follows the live events while the first decides.
        let inboxTab = browser.currentTab
        let eventsTab = try browser.newTab()
        try browser.switchTo(eventsTab)
        try browser.open(stage.base + "/events?account=acme")
        try await waitUntil("the event stream is live") { (try? browser.text("#stream-status")) == "live" }
        try browser.switchTo(inboxTab)
        let boxes = try browser.elements("#transfer-\(stage.toAcme) input[name=device]")
        #expect(boxes.count == 6)
        for box in boxes.prefix(4) { try browser.click(element: box) }
        try browser.click("#transfer-\(stage.toAcme) button[value=activate]")
        try await waitUntil("the approval is confirmed") { browser.source.contains("4 devices approved (activate)") }
        try browser.type("#transfer-\(stage.toAcme) input[name=reason]", "wrong model")
        try browser.click("#transfer-\(stage.toAcme) button[value=reject]")
        try await waitUntil("the rejection is confirmed") { browser.source.contains("2 devices rejected") }
        #expect(browser.source.contains("No open incoming requests."))

        try browser.switchTo(eventsTab)
        try await waitUntil("the events arrived live") {
            let s = browser.source
            return s.contains("transfer.approved") && s.contains("transfer.rejected") && s.components(separatedBy: "device.activated").count - 1 >= 4
        }
        try browser.screenshot(to: shots + "/console-events.png")

        try browser.open(stage.base + "/fleet?account=acme")
        try await waitUntil("the fleet counts four active devices") { browser.source.contains("<b>4</b> active") }
        try browser.screenshot(to: shots + "/console-fleet.png")
        try browser.type("#search", "web-000002")
        try browser.click("form.actions button[type=submit]")
        try await waitUntil("the search finds one device") { browser.source.contains("1–1 of 1") }
        try browser.open(stage.base + "/devices/web-000001?account=acme")
        try await waitUntil("the device page shows its verified custody") { browser.source.contains("verified: 3 entries") || browser.source.contains("verified: 2 entries") }
        #expect(browser.source.contains("active (mode"))
        try browser.screenshot(to: shots + "/console-device.png")

        // Log out: the cookie no longer opens a page.
        let cookie = try #require(try browser.cookies()["escrow_session"])
        try browser.click("header form button")
        try await waitUntil("logged out") { browser.url.hasSuffix("/login") }
        let after = try HTTPExchange.send(port: stage.consolePort, "GET /inbox HTTP/1.1\r\nCookie: escrow_session=\(cookie)\r\n\r\n")
        #expect(after.status == 303 && after.headers["location"] == "/login")
        await stage.stop()
    }

    @Test("an operator of acme cannot see or act on other's transfers even by crafting requests; CSRF-less and cookie-less requests are refused", .enabled(if: Browser.isInstalled))
    func isolationAndCSRF() async throws {
        let stage = try await Stage.start()
        let browser = try await Browser()
        defer { browser.close() }
        try Self.login(browser, stage, user: "op-acme", password: "pw-acme-secret", account: "acme")
        try await waitUntil("logged in") { browser.url.hasSuffix("/inbox") }
        try browser.open(stage.base + "/inbox?account=other")
        try await waitUntil("the broker's refusal is shown") { browser.source.contains("forbidden: the broker refused op-acme access to account other") }
        #expect(!browser.source.contains(stage.toOther))

        let cookie = try #require(try browser.cookies()["escrow_session"])
        try browser.open(stage.base + "/inbox")
        let csrf = try #require(browser.source.range(of: #"name="csrf" value="([0-9a-f]+)""#, options: .regularExpression).map { String(browser.source[$0]).split(separator: "\"")[3] })
        func post(_ path: String, _ body: String, cookie: String?) throws -> HTTPExchange {
            var head = "POST \(path) HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: \(body.utf8.count)\r\n"
            if let cookie { head += "Cookie: escrow_session=\(cookie)\r\n" }
            return try HTTPExchange.send(port: stage.consolePort, head + "\r\n" + body)
        }
        // Crafted: a valid session and token, but another account's transfer.
        let crafted = try post("/transfers/\(stage.toOther)/decide?account=other", "csrf=\(csrf)&decision=activate", cookie: cookie)
        #expect(crafted.status == 403 && crafted.body.contains("forbidden: the broker refused"), "\(crafted.status) \(crafted.body.prefix(300))")
        // Its own account but the other's transfer id: the contract says not found.
        let foreign = try post("/transfers/\(stage.toOther)/decide", "csrf=\(csrf)&decision=activate", cookie: cookie)
        #expect(foreign.status == 404 && foreign.body.contains("not_found"), "\(foreign.status)")
        #expect(try post("/transfers/\(stage.toAcme)/decide", "decision=activate", cookie: cookie).status == 403, "no CSRF token")
        #expect(try post("/transfers/\(stage.toAcme)/decide", "csrf=deadbeef&decision=activate", cookie: cookie).status == 403, "a wrong CSRF token")
        #expect(try post("/transfers/\(stage.toAcme)/decide", "csrf=\(csrf)&decision=activate", cookie: nil).status == 401, "no cookie")
        // Nothing above changed the transfers.
        let oem = try await stage.platform.operatorProbe(user: "op-oem", password: "pw-oem-secret", accounts: ["oem"])
        for id in [stage.toAcme, stage.toOther] {
            let t = try await oem.send("oem", "transfer.show", ["transferId": .string(id)]).result(TransferView.self)
            #expect(t.status == .pending, "\(id)")
        }
        await oem.close()
        // The page's headers: CSP without inline script, HttpOnly + SameSite=Strict cookie.
        let login = try HTTPExchange.get(port: stage.consolePort, "/login")
        #expect(login.headers["content-security-policy"]?.contains("script-src 'self'") == true)
        let form = "username=op-acme&password=pw-acme-secret&account=acme"
        let ok = try post("/login", form, cookie: nil)
        #expect(ok.status == 303 && ok.headers["set-cookie"]?.contains("HttpOnly; SameSite=Strict") == true, "\(ok.headers)")
        // Five wrong passwords, then even the right one waits a minute; no password reaches the log.
        for _ in 0..<5 { #expect(try post("/login", "username=op-acme&password=wrong-guess&account=acme", cookie: nil).status == 401) }
        #expect(try post("/login", form, cookie: nil).status == 429)
        let log = (try? String(contentsOfFile: stage.logs.file("console.log"), encoding: .utf8)) ?? ""
        #expect(!log.contains("pw-acme-secret") && !log.contains("wrong-guess") && log.contains("login refused for op-acme"))
        await stage.stop()
    }

    @Test("the live events page keeps up with a 1,000-device activation: every device.activated the ledger holds is shown", .enabled(if: Browser.isInstalled))
    func liveEventsKeepUp() async throws {
        let platform = try await PlatformSession()
        let oem = try await platform.account("oem", kind: .provisioner)
        let acme = try await platform.account("acme", kind: .customer)
        _ = try await oem.send("oem", "device.provision", ["prefix": "bulk-", "count": 1_000, "issueIdentity": false], timeout: .seconds(30)).result(Commands.DeviceProvisionResult.self)
        let ids = (1...1_000).map { String(format: "bulk-%06d", $0) }
        let t = try await oem.send("oem", "transfer.request", ["to": "acme", "deviceIds": TestSupport.ids(ids)], timeout: .seconds(30)).result(Commands.TransferResult.self)
        let port = try freePort()
        let logs = try TempDirectory(prefix: "console")
        let console = try ChildProcess.spawn(try Products.path("escrow-console"), ["--listen", "127.0.0.1:\(port)", "--broker", platform.escrowd.operatorURL],
                                             stdout: logs.file("console.log"))
        defer { console.signal(SIGTERM) }
        try await waitUntil(timeout: .seconds(20), "the console serves") { (try? HTTPExchange.get(port: port, "/healthz").status) == 200 }
        let browser = try await Browser()
        defer { browser.close() }
        let stage = Stage(platform: platform, console: console, consolePort: port, toAcme: t.transfer.id, toOther: "", logs: logs)
        try Self.login(browser, stage, user: "op-acme", password: "pw-acme-secret", account: "acme")
        try await waitUntil("logged in") { browser.url.hasSuffix("/inbox") }
        try browser.open(stage.base + "/events?account=acme&type=device.activated")
        try await waitUntil("the event stream is live") { (try? browser.text("#stream-status")) == "live" }
        // All 1,000 at once, through the contract (not the page), while the page listens.
        _ = try await acme.send("acme", "transfer.approve", ["transferId": .string(t.transfer.id), "action": "activate"], timeout: .seconds(60)).result(Commands.TransferResult.self)
        let ledger = try await acme.send("acme", "device.list", ["state": "active", "limit": 1]).result(Commands.DeviceListResult.self).total
        #expect(ledger == 1_000)
        do {
            try await waitUntil(timeout: .seconds(60), "the page shows one row per activation the ledger holds") {
                (try? browser.text("#event-count")) == String(ledger) && (try? browser.elements("#events tbody tr").count) == ledger
            }
        } catch {
            Issue.record("the page counted \((try? browser.text("#event-count")) ?? "?") of \(ledger)")
            throw error
        }
        await oem.close(); await acme.close()
        await platform.close()
    }
}
