import Foundation
import EscrowCore

/// The console's HTML, rendered on the server (readable without JavaScript; only the live events
/// page and "select all" use the script). Every value from the platform is escaped.
enum Pages {
    static func h(_ s: String) -> String { HTMLText.escape(s) }

    static func date(_ d: Date?) -> String { d.map { $0.formatted(.iso8601) } ?? "-" }

    /// `in 6 d 23 h`, `in 14 min`, `expired`.
    static func timeLeft(_ until: Date, now: Date = Date()) -> String {
        let s = Int(until.timeIntervalSince(now))
        if s <= 0 { return "expired" }
        if s >= 86_400 { return "in \(s / 86_400) d \((s % 86_400) / 3600) h" }
        if s >= 3600 { return "in \(s / 3600) h \((s % 3600) / 60) min" }
        return "in \(max(1, s / 60)) min"
    }

    static func suffix(_ account: AccountID, _ user: AccountID?) -> String { account == user ? "" : "?account=\(h(account.rawValue))" }

    static func layout(title: String, body: String, user: (name: String, account: AccountID, csrf: String)?) -> String {
        var nav = ""
        if let user {
            let q = "?account=\(h(user.account.rawValue))"
            nav = """
                <nav><a href="/inbox\(q)"\(title.hasPrefix("Transfer") ? " class=\"here\"" : "")>Transfers</a><a href="/fleet\(q)"\(title == "Fleet" || title.hasPrefix("Device") ? " class=\"here\"" : "")>Fleet</a><a href="/events\(q)"\(title == "Live events" ? " class=\"here\"" : "")>Live events</a></nav>
                <span class="who">\(h(user.name)) in <b>\(h(user.account.rawValue))</b></span>
                <form method="post" action="/logout"><input type="hidden" name="csrf" value="\(h(user.csrf))"><button class="secondary" type="submit">Log out</button></form>
                """
        }
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(h(title)) · EscrowFleet</title><link rel="stylesheet" href="/static/app.css"></head>
            <body><header><span class="brand">EscrowFleet</span>\(nav)</header>
            <main><h1>\(h(title))</h1>
            \(body)
            </main><script src="/static/app.js"></script></body></html>
            """
    }

    static func message(error: String) -> String { "<div class=\"error\" role=\"alert\">\(h(error))</div>" }

    static func login(error: String?, username: String) -> String {
        """
        <div class="card login">
        \(error.map { message(error: $0) } ?? "")
        <form method="post" action="/login">
          <label for="username">Username</label><input id="username" name="username" type="text" autocomplete="username" value="\(h(username))" required>
          <label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
          <label for="account">Account</label><input id="account" name="account" type="text" required>
          <div class="actions"><button id="login" type="submit">Log in</button></div>
          <p class="muted">The same login as on the broker; the console acts as you, so you see what the broker lets you see.</p>
        </form></div>
        """
    }

    static func inbox(open: [TransferView], closed: [TransferView], outgoing: [TransferView], csrf: String, account: AccountID, notice: String?) -> String {
        var s = notice.map { "<div class=\"notice\" role=\"status\" id=\"notice\">\(h($0))</div>" } ?? ""
        let q = "?account=\(h(account.rawValue))"
        s += "<h2>Incoming requests</h2>"
        if open.isEmpty { s += "<p class=\"muted\" id=\"no-incoming\">No open incoming requests.</p>" }
        for t in open {
            let pending = (t.items ?? []).filter { $0.outcome == "pending" }
            s += """
                <div class="card transfer" id="transfer-\(h(t.id))" data-transfer="\(h(t.id))">
                <div><b>\(h(t.id))</b> from <b>\(h(t.from.rawValue))</b> · \(h(t.status.rawValue)) · expires \(h(timeLeft(t.expiresAt))) <span class="muted">(\(h(date(t.expiresAt))))</span>\(t.note.map { " · note: " + h($0) } ?? "")</div>
                <form method="post" action="/transfers/\(h(t.id))/decide\(q)">
                <input type="hidden" name="csrf" value="\(h(csrf))">
                <table><thead><tr><th><input type="checkbox" data-select-all="1" aria-label="select all"></th><th>Device</th><th>Outcome</th><th>Detail</th></tr></thead><tbody>
                """
            for item in t.items ?? [] {
                let box = item.outcome == "pending" ? "<input type=\"checkbox\" name=\"device\" value=\"\(h(item.deviceId.rawValue))\">" : ""
                s += "<tr><td>\(box)</td><td>\(h(item.deviceId.rawValue))</td><td>\(h(item.outcome))</td><td>\(h(item.action?.rawValue ?? item.reason ?? ""))</td></tr>"
            }
            s += """
                </tbody></table>
                <div class="actions"><span class="muted">\(pending.count) pending; with none ticked, a decision applies to all of them.</span>
                <button type="submit" name="decision" value="activate">Approve: activate</button>
                <button type="submit" name="decision" value="hold" class="secondary">Approve: hold in escrow</button>
                <input type="text" name="reason" placeholder="reason for rejecting" aria-label="reason">
                <button type="submit" name="decision" value="reject" class="danger">Reject</button></div>
                </form></div>
                """
        }
        s += "<h2>Outgoing requests</h2>"
        s += table(["Transfer", "To", "Status", "Devices", "Expires", ""], outgoing.map { t in
            let cancel = (t.status == .pending || t.status == .partiallyApproved)
                ? "<form method=\"post\" action=\"/transfers/\(h(t.id))/cancel\(q)\"><input type=\"hidden\" name=\"csrf\" value=\"\(h(csrf))\"><button class=\"secondary\" type=\"submit\">Cancel</button></form>" : ""
            return [h(t.id), h(t.to.rawValue), h(t.status.rawValue), h(counts(t.counts)), h(timeLeft(t.expiresAt)), cancel]
        }, empty: "No outgoing requests.")
        if !closed.isEmpty {
            s += "<h2>Decided incoming requests</h2>"
            s += table(["Transfer", "From", "Status", "Devices"], closed.map { [h($0.id), h($0.from.rawValue), h($0.status.rawValue), h(counts($0.counts))] }, empty: "")
        }
        return s
    }

    static func counts(_ c: [String: Int]) -> String { c.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") }

    static func table(_ headers: [String], _ rows: [[String]], empty: String, id: String? = nil) -> String {
        if rows.isEmpty, !empty.isEmpty { return "<p class=\"muted\">\(h(empty))</p>" }
        return "<table\(id.map { " id=\"\($0)\"" } ?? "")><thead><tr>" + headers.map { "<th>\(h($0))</th>" }.joined() + "</tr></thead><tbody>"
            + rows.map { "<tr>" + $0.map { "<td>\($0)</td>" }.joined() + "</tr>" }.joined() + "</tbody></table>"
    }

    static func fleet(_ list: Commands.DeviceListResult, counts: [(String, Int)], query: [String: String], account: AccountID) -> String {
        let a = h(account.rawValue)
        var s = "<div class=\"card counts\" id=\"counts\">" + counts.map { "<span data-count=\"\($0.0)\"><b>\($0.1)</b> \($0.0)</span>" }.joined() + "</div>"
        s += """
            <form method="get" action="/fleet" class="actions"><input type="hidden" name="account" value="\(a)">
            <input type="text" name="q" id="search" placeholder="device id prefix" value="\(h(query["q"] ?? ""))" aria-label="search">
            <select name="state" aria-label="state"><option value="">any state</option><option value="escrow"\(query["state"] == "escrow" ? " selected" : "")>escrow</option><option value="active"\(query["state"] == "active" ? " selected" : "")>active</option></select>
            <button type="submit">Search</button></form>
            """
        s += table(["Device", "State", "Mode", "Online", "Config", "Last seen"], list.devices.map { d in
            ["<a href=\"/devices/\(h(d.id.rawValue))?account=\(a)\">\(h(d.id.rawValue))</a>", h(d.state.rawValue), h(d.mode.rawValue),
             d.online ? "<span class=\"ok\">online</span>" : "<span class=\"muted\">offline</span>",
             "v\(d.appliedVersion) / v\(d.configVersion) \(h(d.configState.rawValue))", h(date(d.lastSeen))]
        }, empty: "No devices match.", id: "devices")
        let offset = Int(query["offset"] ?? "0") ?? 0
        s += "<p class=\"muted\" id=\"paging\">\(list.devices.isEmpty ? 0 : offset + 1)–\(offset + list.devices.count) of \(list.total)"
        var base = "/fleet?account=\(a)"
        if let q = query["q"], !q.isEmpty { base += "&q=\(h(q.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""))" }
        if let st = query["state"], !st.isEmpty { base += "&state=\(h(st))" }
        if offset > 0 { s += " · <a href=\"\(base)&offset=\(max(0, offset - 50))\">previous</a>" }
        if offset + list.devices.count < list.total { s += " · <a href=\"\(base)&offset=\(offset + 50)\">next</a>" }
        return s + "</p>"
    }

    static func device(_ r: Commands.DeviceShowResult, account: AccountID) -> String {
        let d = r.device
        var s = "<div class=\"card\" id=\"device\"><table>"
        for (k, v) in [("Device", d.id.rawValue), ("Owner", d.owner.rawValue), ("State", "\(d.state.rawValue) (mode \(d.mode.rawValue))"),
                       ("Presence", d.online ? "online" : "offline"), ("Last seen", date(d.lastSeen)), ("Created", date(d.createdAt)),
                       ("Agent", d.agentVersion ?? "-"), ("Fingerprint", d.fingerprint ?? "-"),
                       ("Configuration", "desired v\(d.configVersion), applied v\(d.appliedVersion) (\(d.configState.rawValue))"),
                       ("Pending transfer", d.pendingTransfer ?? "-")] {
            s += "<tr><th>\(h(k))</th><td>\(h(v))</td></tr>"
        }
        s += "</table></div><h2>Chain of custody</h2>"
        let v = r.verification
        s += v.valid ? "<p class=\"ok\" id=\"verification\">verified: \(v.entries) entries, each hash chained to the one before</p>"
                     : "<p class=\"bad\" id=\"verification\">broken at entry \(v.brokenAt ?? 0): \(h(v.problem ?? ""))</p>"
        s += table(["Seq", "At", "Holder", "From", "Decision", "Transfer", "Hash"], r.custody.map { e in
            ["\(e.seq)", h(date(e.at)), h(e.holder.rawValue), h(e.previousHolder?.rawValue ?? "-"), h(e.decision.rawValue), h(e.transferId ?? "-"), "<code>\(h(String(e.hash.prefix(12))))</code>"]
        }, empty: "No custody entries.")
        return s
    }

    static func events(account: AccountID, type: String) -> String {
        let a = h(account.rawValue)
        let options = ["<option value=\"\">every type</option>"] + EventType.allCases.map { "<option value=\"\($0.rawValue)\"\(type == $0.rawValue ? " selected" : "")>\($0.rawValue)</option>" }
        let stream = "/events/stream?account=\(a)" + (type.isEmpty ? "" : "&type=\(h(type))")
        return """
            <form method="get" action="/events" class="actions"><input type="hidden" name="account" value="\(a)">
            <select name="type" aria-label="event type">\(options.joined())</select><button type="submit">Filter</button>
            <span>stream: <span id="stream-status" class="muted">connecting</span> · <span id="event-count">0</span> events since this page opened</span></form>
            <table id="events" data-stream="\(stream)"><thead><tr><th>At</th><th>Type</th><th>Device</th><th>Transfer</th><th>Details</th></tr></thead><tbody></tbody></table>
            <noscript><p class="muted">Live events need JavaScript; <code>escrowctl tail</code> shows the same stream.</p></noscript>
            """
    }
}
