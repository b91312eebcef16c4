import Foundation
import EscrowCore
import POSIX
#if canImport(Glibc)
import Glibc
#endif

/// A headless Chromium driven over the W3C WebDriver protocol by Debian's chromedriver, started on
/// a free port for one test and stopped with it.
public final class Browser: @unchecked Sendable {
    public let driverPort: Int
    let driver: ChildProcess
    let session: String
    let scratch: TempDirectory

    public static var isInstalled: Bool {
        FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver") && FileManager.default.isExecutableFile(atPath: chromium)
    }
    static var chromium: String {
        FileManager.default.isExecutableFile(atPath: "/usr/lib/chromium/chromium") ? "/usr/lib/chromium/chromium" : "/usr/bin/chromium"
    }

    public init() async throws {
        guard Self.isInstalled else { throw TestSupportError("chromium and chromedriver are missing: apt-get install chromium chromium-driver (.ci/install-deps does)") }
        scratch = try TempDirectory(prefix: "browser")
        driverPort = try freePort()
        driver = try ChildProcess.spawn("/usr/bin/chromedriver", ["--port=\(driverPort)"], stdout: scratch.file("chromedriver.log"))
        let port = driverPort
        try await waitUntil(timeout: .seconds(20), "chromedriver answers on port \(port)") {
            ((try? Self.request(port, "GET", "/status"))?["value"]?["ready"]?.boolValue) == true
        }
        let capabilities: JSONValue = ["capabilities": ["alwaysMatch": ["browserName": "chrome", "goog:chromeOptions": [
            "binary": .string(Self.chromium),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                     .string("--user-data-dir=" + scratch.file("profile"))],
        ]]]]
        let created = try Self.request(port, "POST", "/session", capabilities, timeout: .seconds(60))
        guard let id = created["value"]?["sessionId"]?.stringValue else {
            driver.signal(SIGKILL)
            throw TestSupportError("chromedriver did not create a session: \(created)")
        }
        session = id
    }

    deinit { close() }

    public func close() {
        _ = try? Self.request(driverPort, "DELETE", "/session/\(session)", timeout: .seconds(10))
        driver.signal(SIGKILL)
    }

    // MARK: commands

    @discardableResult
    public func command(_ method: String, _ path: String, _ body: JSONValue? = nil) throws -> JSONValue {
        let payload: JSONValue? = body ?? (method == "POST" ? JSONValue.object([:]) : Optional<JSONValue>.none)
        let reply = try Self.request(driverPort, method, "/session/\(session)" + path, payload)
        if let error = reply["value"]?["error"]?.stringValue {
            throw TestSupportError("WebDriver \(method) \(path): \(error): \(reply["value"]?["message"]?.stringValue?.prefix(300) ?? "")")
        }
        return reply["value"] ?? .null
    }

    public func open(_ url: String) throws { try command("POST", "/url", ["url": .string(url)]) }
    public var url: String { (try? command("GET", "/url").stringValue) ?? "" }
    public var source: String { (try? command("GET", "/source").stringValue) ?? "" }

    /// The first element matching a CSS selector.
    public func element(_ css: String) throws -> String {
        let v = try command("POST", "/element", ["using": "css selector", "value": .string(css)])
        guard case .object(let o) = v, let id = o.values.first?.stringValue else { throw TestSupportError("no element \(css)") }
        return id
    }

    public func elements(_ css: String) throws -> [String] {
        let v = try command("POST", "/elements", ["using": "css selector", "value": .string(css)])
        return (v.arrayValue ?? []).compactMap { e in e.objectValue?.values.first?.stringValue }
    }

    public func type(_ css: String, _ text: String) throws { try command("POST", "/element/\(try element(css))/value", ["text": .string(text)]) }
    public func click(_ css: String) throws { try command("POST", "/element/\(try element(css))/click") }
    public func click(element id: String) throws { try command("POST", "/element/\(id)/click") }
    public func text(_ css: String) throws -> String { try command("GET", "/element/\(try element(css))/text").stringValue ?? "" }

    /// Cookies of the current page, name -> value.
    public func cookies() throws -> [String: String] {
        Dictionary(uniqueKeysWithValues: (try command("GET", "/cookie").arrayValue ?? []).compactMap { c in
            c["name"]?.stringValue.flatMap { n in c["value"]?.stringValue.map { (n, $0) } }
        })
    }

    /// Opens a new tab and returns its handle; `switchTo` moves between tabs.
    public func newTab() throws -> String { try command("POST", "/window/new", ["type": "tab"])["handle"]?.stringValue ?? "" }
    public var currentTab: String { (try? command("GET", "/window").stringValue) ?? "" }
    public func switchTo(_ handle: String) throws { try command("POST", "/window", ["handle": .string(handle)]) }

    /// A PNG of the viewport, written to `path`.
    public func screenshot(to path: String) throws {
        guard let b64 = try command("GET", "/screenshot").stringValue, let data = Data(base64Encoded: b64) else { throw TestSupportError("no screenshot") }
        try data.write(to: URL(fileURLWithPath: path))
    }

    // MARK: transport

    static func request(_ port: Int, _ method: String, _ path: String, _ body: JSONValue? = nil, timeout: Duration = .seconds(30)) throws -> JSONValue {
        let payload = body.map { String(decoding: WireCodec.encode($0), as: UTF8.self) } ?? ""
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        if body != nil { head += "Content-Type: application/json; charset=utf-8\r\n" }
        head += "Content-Length: \(payload.utf8.count)\r\n\r\n"
        let r = try HTTPExchange.send(port: port, head + payload, timeout: timeout)
        return (try? JSONDecoder().decode(JSONValue.self, from: Data(r.body.utf8))) ?? .null
    }
}
