#!/usr/bin/env bash
# Side-by-side connect benchmark: fleetsim and the libmosquitto reference client (bench/refclient)
# against ONE private mosquitto on loopback, in the same run.
#   bench/connect-compare.sh [DEVICES] [ROUNDS]        (default 5000 devices, 3 rounds)
# Each round runs every client once, same N, same --window, same source addresses; the order
# rotates per round (round 1: ref, ref+agent, fleetsim; round 2: ref+agent, fleetsim, ref; ...).
# After each run it waits until the broker has closed that run's connections. At the end it prints, per run
# and as the median over rounds, connect latency p50/p90/p99/p99.9/max (ms), time to all
# connected, connects/s, RSS per device, process CPU and broker CPU, then the ratios
# fleetsim/ref for p50, p90, p99 with a "within 10%" verdict each, and whether fleetsim's
# p50, p90, p99 differ from each other whenever the reference's do (issue 18).
#
# Environment:
#   BIN_DIR       directory holding a release fleetsim (default: `swift build -c release
#                 --show-bin-path`; this script never builds Swift)
#   OUT           output directory (default /tmp/refclient-bench): refclient binary, reports, logs
#   WINDOW        connects in flight for both clients (default 64)
#   HOLD          seconds the reference stays connected once all are (default 2)
#   DURATION      fleetsim --duration bound (default N/500 + 15 s); fleetsim is stopped with
#                 SIGINT (graceful: DISCONNECTs, report written, exit 130) at its first progress
#                 line (every 5 s) that shows all devices connected
#   REF_VARIANTS  reference variants, space separated (default "bare agent"): "bare" = CONNECT
#                 only; "agent" = refclient --agent, the same MQTT exchange as fleetsim's devices
#                 (will + SUBSCRIBE devices/{id}/config + retained QoS 1 status), which costs the
#                 broker ~50 % more per device and so changes the latencies both clients see.
#                 Verdicts are printed against each variant.
#   PAUSE         seconds between runs (default 1)
#   PORT          broker port (default: a free one)
#   HELPERS_ONLY  set: only write the helpers run.py and table.py into OUT and exit (for tls-compare.sh)
# Columns: cpu s = the client process (wait4 rusage, setup included); ref conn cpu = refclient's
# own CPU from its first connect to all connected; broker cpu s = the broker during the run.
# fleetsim's percentiles come from its log-linear histogram (bucket midpoints, ~3 % wide);
# refclient's are exact nearest-rank values.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
ROUNDS=${2:-3}
case "$N$ROUNDS" in *[!0-9]*) echo "usage: $0 [DEVICES] [ROUNDS]" >&2; exit 64 ;; esac
[ "$N" -ge 1 ] && [ "$ROUNDS" -ge 1 ] || { echo "usage: $0 [DEVICES>=1] [ROUNDS>=1]" >&2; exit 64; }
OUT=${OUT:-/tmp/refclient-bench}; mkdir -p "$OUT"

# Runner: waits (bounded) for a quiet broker, runs one client, records wall time, its CPU (wait4
# rusage), the broker's CPU during the run, and waits (bounded) until the broker has closed the
# run's connections. With STOP_AT > 0 it sends SIGINT at the first output line "connected N/..."
# with N >= STOP_AT (fleetsim's progress line). exit 130 in the table = stopped that way.
cat > "$OUT/run.py" <<'EOF'
import json, os, re, signal, subprocess, sys, threading, time
out, log, stop_at, hard = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
pids = [int(p) for p in sys.argv[5].split(",") if p]
idle_fds = int(sys.argv[6]); cmd = sys.argv[7:]
def cpu(ps):
    t = 0
    for p in ps:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            t += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return t / os.sysconf("SC_CLK_TCK")
def fds(p):
    try:
        return len(os.listdir(f"/proc/{p}/fd"))
    except OSError:
        return -1
# Start from a quiet broker: wait (at most 15 s) until it used < 5 % of a core over 0.5 s
# (escrowd keeps working for a while after provisioning, for example).
q0 = time.monotonic()
while pids and time.monotonic() - q0 < 15:
    c0 = cpu(pids); time.sleep(0.5)
    if cpu(pids) - c0 < 0.025: break
quiet_wait = time.monotonic() - q0
load = os.getloadavg()[0]
b0, t0 = cpu(pids), time.monotonic()
stopped_at = None
with open(log, "wb") as lf:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killer = threading.Timer(hard, p.kill); killer.daemon = True; killer.start()
    for line in p.stdout:
        lf.write(line); lf.flush()
        if stop_at and stopped_at is None:
            m = re.search(rb"connected (\d+)/(\d+)", line)
            if m and int(m.group(1)) >= stop_at:
                p.send_signal(signal.SIGINT); stopped_at = time.monotonic() - t0
    _, status, ru = os.wait4(p.pid, 0)
    killer.cancel()
wall, b1 = time.monotonic() - t0, cpu(pids)
w0 = time.monotonic()
while pids and time.monotonic() - w0 < 20 and fds(pids[-1]) > idle_fds:
    time.sleep(0.1)
json.dump({"exit": os.waitstatus_to_exitcode(status), "wall": round(wall, 3), "cpu": round(ru.ru_utime + ru.ru_stime, 3),
           "maxRSSKB": ru.ru_maxrss, "brokerCPU": round(b1 - b0, 2), "brokerIdleWait": round(time.monotonic() - w0, 2),
           "brokerIdle": not pids or fds(pids[-1]) <= idle_fds, "stoppedBySignalAt": stopped_at, "loadAvg1": load, "brokerQuietWait": round(quiet_wait, 2)},
          open(out, "w"))
EOF

# Table: per run, medians, ratios and verdicts.
cat > "$OUT/table.py" <<'EOF'
import json, statistics, sys
mode, n, manifest = sys.argv[1], int(sys.argv[2]), sys.argv[3]
runs = [json.loads(l) for l in open(manifest) if l.strip()]
def metrics(r):
    rep = json.load(open(r["report"])); run = json.load(open(r["runner"]))
    lat = rep["connectLatencyMs"]
    if r["client"].startswith("ref"):
        allc, rss, conn = rep["allConnectedSeconds"], rep["rssPerDeviceKB"], rep["connected"]
        errs, rate = rep["errors"]["total"], rep["connectsPerSec"]
    else:
        allc, rss, conn = rep.get("timeToAllConnected"), rep.get("rssPerDeviceKB"), rep["peakConnected"]
        errs = sum(rep.get("errors", {}).values()); rate = n / allc if allc else None
    return dict(p50=lat["p50"], p90=lat["p90"], p99=lat["p99"], p999=lat["p999"], max=lat["max"], all=allc,
                rate=rate, rss=rss, cpu=run["cpu"], ccpu=rep.get("cpuConnectSeconds"), bcpu=run["brokerCPU"], conn=conn, errs=errs, exit=run["exit"],
                load=run["loadAvg1"], idle=run["brokerIdle"])
for r in runs: r["m"] = metrics(r)
cols = [("p50", "p50 ms", "%.3f"), ("p90", "p90 ms", "%.3f"), ("p99", "p99 ms", "%.3f"), ("p999", "p99.9 ms", "%.3f"),
        ("max", "max ms", "%.3f"), ("all", "all conn s", "%.3f"), ("rate", "conn/s", "%.0f"), ("rss", "RSS/dev KB", "%.2f"),
        ("cpu", "cpu s", "%.2f"), ("ccpu", "ref conn cpu", "%.2f"), ("bcpu", "broker cpu s", "%.2f")]
def fmt(f, v): return "-" if v is None else f % v
head = "%-5s %-18s %-4s" % ("round", "client", "pos") + "".join("%13s" % c[1] for c in cols) + "%10s %6s %5s %5s" % ("connected", "errors", "exit", "load")
print(head); print("-" * len(head))
for r in runs:
    m = r["m"]
    print("%-5s %-18s %-4s" % (r["round"], r["client"], r["pos"]) + "".join("%13s" % fmt(c[2], m[c[0]]) for c in cols)
          + "%10s %6s %5s %5.2f" % (m["conn"], m["errs"], m["exit"], m["load"]) + ("" if m["idle"] else "  (broker not idle after)"))
clients = list(dict.fromkeys(r["client"] for r in runs))
med = {}
print("-" * len(head))
for c in clients:
    rs = [r["m"] for r in runs if r["client"] == c]
    med[c] = {k: (statistics.median([x[k] for x in rs if x[k] is not None]) if any(x[k] is not None for x in rs) else None) for k, _, _ in cols}
    print("%-5s %-18s %-4s" % ("med", c, "") + "".join("%13s" % fmt(f, med[c][k]) for k, _, f in cols) + "   (%d runs)" % len(rs))
refs = [c for c in clients if c.startswith("ref")]
print()
for ref in refs:
    print("fleetsim / %s (medians over rounds):" % ref)
    for k in ("p50", "p90", "p99"):
        f, r = med["fleetsim"][k], med[ref][k]
        ratio = f / r if r else float("nan")
        per_round = []
        for rd in sorted({x["round"] for x in runs}):
            fr = [x["m"][k] for x in runs if x["round"] == rd and x["client"] == "fleetsim"]
            rr = [x["m"][k] for x in runs if x["round"] == rd and x["client"] == ref]
            if fr and rr and rr[0]: per_round.append("%.2f" % (fr[0] / rr[0]))
        verdict = "within 10%" if abs(ratio - 1) <= 0.10 else "NOT within 10%% (%+.0f%%)" % ((ratio - 1) * 100)
        print("  %-4s fleetsim %8.3f ms  ref %8.3f ms  ratio %.3f  %s   per round: %s" % (k, f, r, ratio, verdict, " ".join(per_round)))
    f, r = med["fleetsim"]["rate"], med[ref]["rate"]
    ratio = f / r if f and r else float("nan")
    if mode == "tls":
        print("  handshake rate: fleetsim %.0f/s  ref %.0f/s  ratio %.3f  %s" % (f or 0, r or 0, ratio,
              ">= 0.95: ok" if ratio >= 0.95 else "below 0.95: NOT met"))
    else:
        print("  connects/s:     fleetsim %.0f/s  ref %.0f/s  ratio %.3f" % (f or 0, r or 0, ratio))
    # "its p50, p90, p99 differ from each other whenever the reference's do"
    bad = []
    for rd in sorted({x["round"] for x in runs}) + ["median"]:
        if rd == "median": fm, rm = med["fleetsim"], med[ref]
        else:
            fr = [x["m"] for x in runs if x["round"] == rd and x["client"] == "fleetsim"]
            rr = [x["m"] for x in runs if x["round"] == rd and x["client"] == ref]
            if not fr or not rr: continue
            fm, rm = fr[0], rr[0]
        for a, b in (("p50", "p90"), ("p90", "p99"), ("p50", "p99")):
            if rm[a] != rm[b] and fm[a] == fm[b]: bad.append("round %s: %s == %s (%.3f)" % (rd, a, b, fm[a]))
    print("  distinct percentiles: " + ("ok (fleetsim's p50, p90, p99 differ wherever the reference's do)" if not bad else "FAILED: " + "; ".join(bad)))
EOF

# bench/tls-compare.sh uses the same two helpers.
[ -n "${HELPERS_ONLY:-}" ] && exit 0

WINDOW=${WINDOW:-64}
HOLD=${HOLD:-2}
PAUSE=${PAUSE:-1}
DURATION=${DURATION:-$((N / 500 + 15))}
REF_VARIANTS=${REF_VARIANTS:-bare agent}
for v in $REF_VARIANTS; do case "$v" in bare|agent) ;; *) echo "REF_VARIANTS: unknown variant '$v' (bare, agent)" >&2; exit 64 ;; esac; done
BIN_DIR=${BIN_DIR:-$(swift build -c release --show-bin-path)}
[ -x "$BIN_DIR/fleetsim" ] || { echo "no fleetsim in $BIN_DIR: build it (swift build -c release --product fleetsim) or set BIN_DIR" >&2; exit 1; }
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || { echo "mosquitto not found (apt-get install mosquitto)" >&2; exit 1; }

ulimit -n 20000
# libmosquitto holds 3 descriptors per client (socket + wake-up socketpair).
if [ $((N * 3 + 32)) -gt "$(ulimit -n)" ]; then
  echo "refclient needs ~$((N * 3 + 32)) descriptors for $N devices but the open-file limit is $(ulimit -n); use at most $((($(ulimit -n) - 32) / 3)) devices" >&2
  exit 64
fi
# Same source addresses for both: fleetsim's own rule (one per 5,000 devices above 5,000).
SRC=()
if [ "$N" -gt 5000 ]; then SRC=(--source-count $(((N + 4999) / 5000))); fi

# Reference client
REF="$OUT/refclient"
gcc -O2 -Wall -Wextra -o "$REF" bench/refclient/refclient.c -lmosquitto -lssl -lcrypto \
  || { echo "cannot build bench/refclient (needs gcc, libmosquitto-dev, libssl-dev)" >&2; exit 1; }

# One private broker for all runs (the setup of bench/fleetsim-connect.sh).
PORT=${PORT:-$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")}
CONF="$OUT/mosquitto-compare.conf"
{
  echo "listener $PORT 127.0.0.1"
  echo "allow_anonymous true"
  echo "max_connections -1"
  echo "persistence false"
  echo "log_dest none"
  echo "set_tcp_nodelay true"
  [ "$(id -u)" = 0 ] && echo "user root"
} > "$CONF"
"$MOSQUITTO" -c "$CONF" > "$OUT/mosquitto-compare.log" 2>&1 & BROKER=$!
trap 'kill $BROKER 2>/dev/null; wait $BROKER 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
kill -0 $BROKER 2>/dev/null || { echo "mosquitto did not start on port $PORT" >&2; exit 1; }
sleep 0.2
IDLE_FDS=$(($(ls /proc/$BROKER/fd | wc -l) + 2))

echo "connect-compare: $N devices, $ROUNDS rounds, window $WINDOW, broker mqtt://127.0.0.1:$PORT (pid $BROKER)," \
     "sources ${SRC[*]:-none (the fleetsim rule: one per 5,000 above 5,000)}, fleetsim $BIN_DIR/fleetsim, load $(cut -d' ' -f1-3 /proc/loadavg)"
MANIFEST="$OUT/connect-compare-$N.manifest"; : > "$MANIFEST"
CLIENTS=()
for v in $REF_VARIANTS; do [ "$v" = bare ] && CLIENTS+=(ref) || CLIENTS+=(ref+agent); done
CLIENTS+=(fleetsim)
for round in $(seq "$ROUNDS"); do
  k=${#CLIENTS[@]}
  for pos in $(seq 0 $((k - 1))); do
    c=${CLIENTS[$(((pos + round - 1) % k))]}
    tag="$OUT/connect-$N-r$round-$c"
    case $c in
      fleetsim)
        cmd=("$BIN_DIR/fleetsim" connect --broker "mqtt://127.0.0.1:$PORT" --devices "$N" --duration "$DURATION"
             --heartbeat 30 --window "$WINDOW" "${SRC[@]}" --report "$tag.json")
        stop_at=$N ;;
      ref*)
        cmd=("$REF" --host 127.0.0.1 --port "$PORT" --devices "$N" --window "$WINDOW" "${SRC[@]}" --hold "$HOLD"
             --timeout "$((DURATION + 30))" --json "$tag.json" --quiet)
        [ "$c" = ref+agent ] && cmd+=(--agent)
        stop_at=0 ;;
    esac
    rm -f "$tag.json"
    python3 "$OUT/run.py" "$tag.run.json" "$tag.log" "$stop_at" "$((DURATION + 60))" "$BROKER" "$IDLE_FDS" "${cmd[@]}"
    ex=$(python3 -c "import json;print(json.load(open('$tag.run.json'))['exit'])")
    [ -s "$tag.json" ] || { echo "round $round $c: no report (exit $ex); see $tag.log" >&2; tail -5 "$tag.log" >&2; exit 1; }
    echo "{\"round\": $round, \"pos\": \"$((pos + 1))\", \"client\": \"$c\", \"report\": \"$tag.json\", \"runner\": \"$tag.run.json\"}" >> "$MANIFEST"
    echo "  round $round: $c done (exit $ex, $(python3 -c "import json;r=json.load(open('$tag.run.json'));print('%.1f s, waited %.1f s for a quiet broker before, %.1f s for its connections to close after' % (r['wall'], r['brokerQuietWait'], r['brokerIdleWait']))"))"
    sleep "$PAUSE"
  done
done
echo
echo "connect latency = TCP connect start -> CONNACK, per device; $N devices, window $WINDOW; load now $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$OUT/table.py" plain "$N" "$MANIFEST" | tee "$OUT/connect-compare-$N.txt"
echo "table: $OUT/connect-compare-$N.txt; reports: $OUT/connect-$N-r*.json"
