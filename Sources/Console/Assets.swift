/// The console's stylesheet and script, served from the binary (`/static/...`): no build step, no
/// CDN, and with them in files of their own the Content-Security-Policy forbids every inline script.
enum Assets {
    static let css = """
        :root { --ink: #1d2330; --muted: #5b6475; --line: #d9dee7; --bg: #f6f7f9; --ok: #1f7a3f; --bad: #b3261e; --accent: #2457c5; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); background: var(--bg); }
        header { display: flex; gap: 1.5rem; align-items: center; padding: .7rem 1.5rem; background: #fff; border-bottom: 1px solid var(--line); }
        header .brand { font-weight: 700; }
        header nav a { margin-right: 1rem; color: var(--ink); text-decoration: none; }
        header nav a.here { color: var(--accent); font-weight: 600; }
        header .who { margin-left: auto; color: var(--muted); }
        header form { display: inline; }
        main { padding: 1.2rem 1.5rem; max-width: 1100px; }
        h1 { font-size: 1.35rem; margin: .2rem 0 1rem; }
        h2 { font-size: 1.1rem; margin: 1.4rem 0 .6rem; }
        table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
        th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
        th { background: #eef1f5; font-weight: 600; font-size: .9rem; }
        .card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 1rem; margin-bottom: 1rem; }
        .muted { color: var(--muted); }
        .error { background: #fdecea; border: 1px solid #f3b8b2; color: var(--bad); padding: .6rem .8rem; border-radius: 6px; margin-bottom: 1rem; }
        .notice { background: #e8f4ec; border: 1px solid #b7dcc4; color: var(--ok); padding: .6rem .8rem; border-radius: 6px; margin-bottom: 1rem; }
        .counts span { display: inline-block; margin-right: 1.2rem; }
        .counts b { font-size: 1.3rem; }
        .ok { color: var(--ok); } .bad { color: var(--bad); }
        button, input[type=submit] { font: inherit; padding: .35rem .8rem; border-radius: 4px; border: 1px solid var(--accent); background: var(--accent); color: #fff; cursor: pointer; }
        button.secondary { background: #fff; color: var(--accent); }
        button.danger { background: var(--bad); border-color: var(--bad); }
        input[type=text], input[type=password], select { font: inherit; padding: .3rem .5rem; border: 1px solid var(--line); border-radius: 4px; }
        .actions { display: flex; flex-wrap: wrap; gap: .6rem; align-items: center; margin-top: .7rem; }
        .login { max-width: 360px; margin: 4rem auto; }
        .login label { display: block; margin: .6rem 0 .2rem; }
        .login input { width: 100%; }
        code { font-family: ui-monospace, monospace; font-size: .9em; }
        #events tbody tr:first-child { animation: flash 1s; }
        @keyframes flash { from { background: #fff7cc; } to { background: #fff; } }
        """

    static let js = """
        // Live events: the account's event stream (server-sent events), newest first.
        (function () {
          var table = document.getElementById('events');
          if (!table) return;
          var body = table.querySelector('tbody');
          var status = document.getElementById('stream-status');
          var source = new EventSource(table.getAttribute('data-stream'));
          var received = 0;
          source.onopen = function () { status.textContent = 'live'; status.className = 'ok'; };
          source.onerror = function () { status.textContent = 'reconnecting'; status.className = 'bad'; };
          source.onmessage = function (m) {
            var e; try { e = JSON.parse(m.data); } catch (x) { return; }
            var row = document.createElement('tr');
            [e.at, e.type, e.deviceId || '', e.transferId || '', JSON.stringify(e.details || {})].forEach(function (v) {
              var td = document.createElement('td'); td.textContent = v; row.appendChild(td);
            });
            body.insertBefore(row, body.firstChild);
            received += 1;
            document.getElementById('event-count').textContent = String(received);
          };
        })();
        // "Select all" boxes on the inbox.
        document.querySelectorAll('input[data-select-all]').forEach(function (box) {
          box.addEventListener('change', function () {
            box.form.querySelectorAll('input[name=device]').forEach(function (b) { b.checked = box.checked; });
          });
        });
        """
}
