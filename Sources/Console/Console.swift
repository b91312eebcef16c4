import Foundation
import Synchronization
import EscrowCore
import HTTPServer
import OperatorCLI

/// The operators' web console: transfer inbox, fleet, device detail and live events.
///
/// Each logged-in browser session holds its own MQTT connection **as that operator**
/// (`OperatorSession`, the same one escrowctl uses), so the broker decides what the page may see and
/// do: a page that asks for another account gets the broker's refusal (403). Security: a random
/// session cookie (`HttpOnly; SameSite=Strict`, `Secure` when `secureCookies`), a CSRF token on every
/// POST, logout, an idle timeout, at most 5 failed logins per user a minute, credentials only in a
/// POST body and never logged, and a Content-Security-Policy that allows no inline script.
public final class Console: Sendable {
    public struct Options: Sendable {
        /// Where operators' MQTT connections go (the operator listener).
        public var broker: String
        /// With `mqtts://`: the CA that signed the broker's certificate.
        public var caFile: String?
        public var idleTimeout: Duration = .seconds(15 * 60)
        public var commandTimeout: Duration = .seconds(10)
        /// Adds `Secure` to the cookie (when a TLS proxy or listener fronts the console).
        public var secureCookies = false
        public var log: @Sendable (String) -> Void = { _ in }
        public init(broker: String, caFile: String? = nil) { self.broker = broker; self.caFile = caFile }
    }

    struct Session: Sendable {
        let id: String
        let csrf: String
        let username: String
        let account: AccountID
        let mqtt: OperatorSession
        var lastUsed: ContinuousClock.Instant
    }

    let options: Options
    private let sessions = Mutex<[String: Session]>([:])
    private let failures = Mutex<[String: [ContinuousClock.Instant]]>([:])
    static let cookie = "escrow_session"

    public init(options: Options) { self.options = options }

    /// The request handler for an `HTTPServer`.
    public func handle(_ r: HTTPRequest) -> HTTPResponse {
        switch (r.method, r.path) {
        case ("GET", "/static/app.css"): return HTTPResponse(status: 200, contentType: "text/css; charset=utf-8", headers: Self.securityHeaders, body: Array(Assets.css.utf8))
        case ("GET", "/static/app.js"): return HTTPResponse(status: 200, contentType: "text/javascript; charset=utf-8", headers: Self.securityHeaders, body: Array(Assets.js.utf8))
        case ("GET", "/login"): return page(200, "Log in", Pages.login(error: nil, username: ""), session: nil)
        case ("POST", "/login"): return login(r)
        case ("GET", "/healthz"): return HTTPResponse(status: 200, text: "ok\n")
        default: break
        }
        guard let session = currentSession(r) else {
            if r.path == "/events/stream" { return HTTPResponse(status: 401, text: "log in first\n") }
            return r.method == "GET" ? Self.redirect("/login") : HTTPResponse(status: 401, headers: Self.securityHeaders, body: Array("log in first\n".utf8))
        }
        if r.method == "POST" {
            let form = Self.form(r.body)
            guard let token = form["csrf"]?.first, Self.constantTimeEqual(token, session.csrf) else {
                return page(403, "Refused", Pages.message(error: "forbidden: this form has no valid CSRF token; reload the page and try again"), session: session)
            }
            if r.path == "/logout" { return logout(session) }
            let parts = r.path.split(separator: "/").map(String.init)
            if parts.count == 3, parts[0] == "transfers" {
                return decide(session, transfer: parts[1], verb: parts[2], form: form, account: Self.account(r, session))
            }
            return page(404, "Not found", Pages.message(error: "not_found: no such action"), session: session)
        }
        guard r.method == "GET" || r.method == "HEAD" else { return HTTPResponse(status: 405, text: "GET or POST\n") }
        let account = Self.account(r, session)
        switch r.path {
        case "/": return Self.redirect("/inbox")
        case "/inbox": return inbox(session, account: account, notice: r.query["notice"])
        case "/fleet": return fleet(session, account: account, r.query)
        case "/events": return page(200, "Live events", Pages.events(account: account, type: r.query["type"] ?? ""), session: session, account: account)
        case "/events/stream": return stream(session, account: account, types: r.query["type"] ?? "")
        default:
            let parts = r.path.split(separator: "/").map(String.init)
            if parts.count == 2, parts[0] == "devices" { return device(session, id: parts[1], account: account) }
            return page(404, "Not found", Pages.message(error: "not_found: no page \(r.path.prefix(100))"), session: session)
        }
    }

    // MARK: sessions

    private func currentSession(_ r: HTTPRequest) -> Session? {
        guard let id = Self.cookies(r)[Self.cookie] else { return nil }
        let now = ContinuousClock.now
        let (found, expired) = sessions.withLock { all -> (Session?, Session?) in
            guard var s = all[id] else { return (nil, nil) }
            if now - s.lastUsed > options.idleTimeout { all[id] = nil; return (nil, s) }
            s.lastUsed = now
            all[id] = s
            return (s, nil)
        }
        if let expired { Task { await expired.mqtt.close() } }
        return found
    }

    private func login(_ r: HTTPRequest) -> HTTPResponse {
        let form = Self.form(r.body)
        let username = form["username"]?.first ?? "", password = form["password"]?.first ?? ""
        guard !username.isEmpty, !password.isEmpty, let account = AccountID(form["account"]?.first ?? "") else {
            return page(400, "Log in", Pages.login(error: "usage: username, password and account are required", username: username), session: nil)
        }
        let now = ContinuousClock.now
        let recent = failures.withLock { f -> Int in
            f[username] = (f[username] ?? []).filter { now - $0 < .seconds(60) }
            return f[username]!.count
        }
        guard recent < 5 else {
            return page(429, "Log in", Pages.login(error: "too many failed logins for \(username): wait a minute and try again", username: username), session: nil)
        }
        let configuration = OperatorSession.Configuration(broker: options.broker, username: username, password: password, account: account,
                                                          timeout: options.commandTimeout, clientID: "\(username):console-\(OperatorSession.randomToken(8))",
                                                          caFile: options.caFile)
        let outcome = awaitBlocking(timeout: options.commandTimeout + .seconds(2)) { () -> Result<OperatorSession, OperatorError> in
            do { return .success(try await OperatorSession.connect(configuration)) } catch let e as OperatorError { return .failure(e) } catch {
                return .failure(.invalidArgument("\(error)"))
            }
        }
        switch outcome {
        case .success(let mqtt)?:
            let session = Session(id: Self.token(), csrf: Self.token(), username: username, account: account, mqtt: mqtt, lastUsed: now)
            sessions.withLock { $0[session.id] = session }
            options.log("console: \(username) logged in (account \(account))")
            var cookie = "\(Self.cookie)=\(session.id); Path=/; HttpOnly; SameSite=Strict; Max-Age=\(Int(options.idleTimeout.components.seconds))"
            if options.secureCookies { cookie += "; Secure" }
            return Self.redirect("/inbox", headers: [("Set-Cookie", cookie)])
        case .failure(let e)?:
            failures.withLock { $0[username, default: []].append(now) }
            options.log("console: login refused for \(username)")
            let message: String
            switch e {
            case .connection(let m) where m.kind == .refused || m.kind == .notAuthorized: message = "refused: the broker refused user \(username); check the username and password"
            case .connection(let m): message = "unreachable: cannot reach the broker at \(options.broker) (\(m.message))"
            default: message = "error: \(e.description)"
            }
            return page(401, "Log in", Pages.login(error: message, username: username), session: nil)
        case nil:
            return page(503, "Log in", Pages.login(error: "timeout: the broker did not answer in time", username: username), session: nil)
        }
    }

    private func logout(_ s: Session) -> HTTPResponse {
        sessions.withLock { $0[s.id] = nil }
        _ = awaitBlocking { await s.mqtt.close() }
        return Self.redirect("/login", headers: [("Set-Cookie", "\(Self.cookie)=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")])
    }

    // MARK: commands through the operator's own connection

    enum Failure: Error { case wire(String, status: Int) }

    /// Sends a command as the session's operator; a refusal by the broker is 403, a contract error its code.
    func call<R: Decodable & Sendable>(_ s: Session, _ command: CommandName, _ args: [String: JSONValue], in account: AccountID, as: R.Type) -> Result<R, Failure> {
        let mqtt = s.mqtt
        let outcome = awaitBlocking(timeout: options.commandTimeout + .seconds(2)) { () -> Result<R, Failure> in
            do {
                let json = try await mqtt.call(command, JSONValue.object(args), in: account)
                return .success(try OperatorSession.decodeResult(json, as: R.self, command: command))
            } catch let e as OperatorError {
                switch e {
                case .notAuthorized: return .failure(.wire("forbidden: the broker refused \(s.username) access to account \(account)", status: 403))
                case .command(let w): return .failure(.wire("\(w.code.rawValue): \(w.message)", status: w.code == .forbidden ? 403 : w.code == .notFound ? 404 : 409))
                case .noReply: return .failure(.wire("timeout: escrowd did not reply in time", status: 504))
                default: return .failure(.wire("error: \(e.description)", status: 502))
                }
            } catch {
                return .failure(.wire("bad_reply: \(error)", status: 502))
            }
        }
        return outcome ?? .failure(.wire("timeout: no answer in time", status: 504))
    }

    private func inbox(_ s: Session, account: AccountID, notice: String?) -> HTTPResponse {
        let incoming = call(s, .transferList, ["direction": "incoming", "limit": 100], in: account, as: Commands.TransferListResult.self)
        let outgoing = call(s, .transferList, ["direction": "outgoing", "limit": 100], in: account, as: Commands.TransferListResult.self)
        switch (incoming, outgoing) {
        case (.success(let i), .success(let o)):
            var open: [TransferView] = []
            for t in i.transfers where t.status == .pending || t.status == .partiallyApproved {
                if case .success(let full) = call(s, .transferShow, ["transferId": .string(t.id)], in: account, as: TransferView.self) { open.append(full) }
            }
            let closed = i.transfers.filter { $0.status != .pending && $0.status != .partiallyApproved }
            return page(200, "Transfer inbox", Pages.inbox(open: open, closed: closed, outgoing: o.transfers, csrf: s.csrf, account: account, notice: notice), session: s, account: account)
        case (.failure(.wire(let m, let status)), _), (_, .failure(.wire(let m, let status))):
            return page(status, "Transfer inbox", Pages.message(error: m), session: s, account: account)
        }
    }

    private func decide(_ s: Session, transfer: String, verb: String, form: [String: [String]], account: AccountID) -> HTTPResponse {
        guard Identifier.isValid(transfer) else { return page(400, "Refused", Pages.message(error: "invalid_argument: bad transfer id"), session: s) }
        var args: [String: JSONValue] = ["transferId": .string(transfer)]
        let devices = (form["device"] ?? []).map(JSONValue.string)
        if !devices.isEmpty { args["deviceIds"] = .array(devices) }
        let command: CommandName
        switch (verb, form["decision"]?.first) {
        case ("decide", "activate"), ("decide", "hold"):
            command = .transferApprove
            args["action"] = .string(form["decision"]![0])
        case ("decide", "reject"):
            command = .transferReject
            args["reason"] = .string((form["reason"]?.first).flatMap { $0.isEmpty ? nil : $0 } ?? "rejected in the console by \(s.username)")
        case ("cancel", _):
            command = .transferCancel
            args = ["transferId": .string(transfer)]
        default:
            return page(400, "Refused", Pages.message(error: "invalid_argument: choose activate, hold or reject"), session: s)
        }
        switch call(s, command, args, in: account, as: Commands.TransferResult.self) {
        case .success(let r):
            let what = command == .transferCancel ? "cancelled" : "\(r.decided.count) device\(r.decided.count == 1 ? "" : "s") \(command == .transferReject ? "rejected" : "approved (\(form["decision"]![0]))")"
            let notice = "transfer \(transfer): \(what); status now \(r.transfer.status.rawValue)" + (r.refused.isEmpty ? "" : "; \(r.refused.count) not decided")
            let query = "notice=" + (notice.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "") + (account == s.account ? "" : "&account=\(account)")
            return Self.redirect("/inbox?" + query)
        case .failure(.wire(let m, let status)):
            return page(status, "Refused", Pages.message(error: m), session: s, account: account)
        }
    }

    private func fleet(_ s: Session, account: AccountID, _ q: [String: String]) -> HTTPResponse {
        func total(_ extra: [String: JSONValue]) -> Int? {
            if case .success(let r) = call(s, .deviceList, extra.merging(["limit": 1]) { a, _ in a }, in: account, as: Commands.DeviceListResult.self) { return r.total }
            return nil
        }
        var args: [String: JSONValue] = ["limit": 50, "offset": .number(Double(max(0, Int(q["offset"] ?? "0") ?? 0)))]
        if let state = q["state"], ["escrow", "active"].contains(state) { args["state"] = .string(state) }
        if let prefix = q["q"], !prefix.isEmpty { args["prefix"] = .string(String(prefix.prefix(64))) }
        switch call(s, .deviceList, args, in: account, as: Commands.DeviceListResult.self) {
        case .success(let list):
            let unfiltered = args["state"] == nil && args["prefix"] == nil
            let counts = [("all", unfiltered ? list.total : total([:])), ("escrow", total(["state": "escrow"])), ("active", total(["state": "active"])), ("online", total(["online": true]))]
            return page(200, "Fleet", Pages.fleet(list, counts: counts.map { ($0.0, $0.1 ?? 0) }, query: q, account: account), session: s, account: account)
        case .failure(.wire(let m, let status)):
            return page(status, "Fleet", Pages.message(error: m), session: s, account: account)
        }
    }

    private func device(_ s: Session, id: String, account: AccountID) -> HTTPResponse {
        guard Identifier.isValid(id) else { return page(400, "Device", Pages.message(error: "invalid_argument: bad device id"), session: s) }
        switch call(s, .deviceShow, ["deviceId": .string(id)], in: account, as: Commands.DeviceShowResult.self) {
        case .success(let d): return page(200, "Device \(id)", Pages.device(d, account: account), session: s, account: account)
        case .failure(.wire(let m, let status)): return page(status, "Device", Pages.message(error: m), session: s, account: account)
        }
    }

    /// Server-sent events: each event of the account as `data: {json}`, until the browser goes away
    /// (the server sees the hang-up and stops the task) or the operator's session ends.
    private func stream(_ s: Session, account: AccountID, types: String) -> HTTPResponse {
        let wanted = Set(types.split(separator: ",").compactMap { EventType(rawValue: String($0)) })
        let mqtt = s.mqtt
        guard let events = awaitBlocking(timeout: options.commandTimeout, { () -> AsyncStream<ReceivedEvent>? in
            try? await mqtt.events(wanted.isEmpty ? nil : wanted, in: account)
        }) ?? nil else {
            return HTTPResponse(status: 403, text: "forbidden: the broker refused the event subscription\n")
        }
        return .streaming(contentType: "text/event-stream", headers: Self.securityHeaders) { write, finish in
            let task = Task {
                if write(Array(": connected\n\n".utf8)) {
                    for await e in events {
                        guard write(Array("data: \(String(decoding: e.payload, as: UTF8.self))\n\n".utf8)) else { break }
                    }
                }
                finish()
            }
            return { task.cancel() }
        }
    }

    // MARK: HTTP helpers

    static let securityHeaders: [(String, String)] = [
        ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
        ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY"),
    ]

    func page(_ status: Int, _ title: String, _ body: String, session: Session?, account: AccountID? = nil) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "text/html; charset=utf-8", headers: Self.securityHeaders,
                     body: Array(Pages.layout(title: title, body: body, user: session.map { ($0.username, account ?? $0.account, $0.csrf) }).utf8))
    }

    static func redirect(_ location: String, headers: [(String, String)] = []) -> HTTPResponse {
        HTTPResponse(status: 303, headers: [("Location", location)] + headers + securityHeaders, body: [])
    }

    /// The account a page acts in: `?account=` (a managed customer, say) or the login's. The broker
    /// decides whether the operator may.
    static func account(_ r: HTTPRequest, _ s: Session) -> AccountID {
        r.query["account"].flatMap(AccountID.init) ?? s.account
    }

    static func cookies(_ r: HTTPRequest) -> [String: String] {
        var out: [String: String] = [:]
        for part in (r.headers["cookie"] ?? "").split(separator: ";") {
            let kv = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1).map(String.init)
            if kv.count == 2 { out[kv[0]] = kv[1] }
        }
        return out
    }

    /// `application/x-www-form-urlencoded`, repeated names kept in order.
    static func form(_ body: [UInt8]) -> [String: [String]] {
        var out: [String: [String]] = [:]
        for pair in String(decoding: body, as: UTF8.self).split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "" }
            out[kv[0], default: []].append(kv.count > 1 ? kv[1] : "")
        }
        return out
    }

    static func token() -> String {
        var rng = SystemRandomNumberGenerator()
        return (0..<4).map { _ in String(format: "%016llx", rng.next() as UInt64) }.joined()
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
