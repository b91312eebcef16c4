#!/usr/bin/env bash
# Side-by-side mutual-TLS connect benchmark against escrowd's real device listener: fleetsim and
# the libmosquitto reference client (bench/refclient), same broker, same run.
#   bench/tls-compare.sh [DEVICES] [ROUNDS]            (default 5000 devices, 2 rounds)
# Starts a private escrowd on free ports (--data in a temp dir; as bench/fleetsim-tls.sh),
# creates an OEM account and operator, provisions DEVICES bundles with
# `escrowctl device provision --out BUNDLES`, then per round runs each client once with the same
# bundles (the same device ids reconnect; after every run it waits until the broker has closed
# that run's connections), the order rotating per round. Prints per run and as medians: handshake
# rate (connects/s until all connected), connect-latency percentiles, RSS per device, process CPU
# and broker CPU (escrowd + its mosquitto), then fleetsim rate / ref rate with a verdict against
# 0.95 (issue 18: ">= 0.95 of the handshake rate a C client reaches") and the latency ratios.
#
# Environment:
#   BIN_DIR       directory holding release fleetsim, escrowd, escrowctl (default: `swift build
#                 -c release --show-bin-path`; this script never builds Swift)
#   OUT           output directory (default /tmp/refclient-bench)
#   WINDOW        TLS connects in flight for both: refclient --window and fleetsim --window and
#                 --tls-handshakes (default 32, fleetsim's --tls-handshakes default)
#   REF_VARIANTS  reference variants, space separated (default "preload preload+agent"):
#                   preload   refclient --tls-setup preload: each device's SSL_CTX (certificate and
#                             key parsed, CA store shared) is built before the run, as fleetsim
#                             parses its identities before it starts; connects cost the handshake
#                   connect   refclient --tls-setup connect: plain mosquitto_tls_set, libmosquitto
#                             creates an SSL_CTX and reads CA, certificate and key inside every
#                             connect (~1 ms more client CPU per device with OpenSSL 3)
#                   +agent    also send fleetsim's per-device MQTT exchange (refclient --agent)
#                 Verdicts are printed against each variant.
#   HOLD          seconds the reference stays connected once all are (default 2)
#   DURATION      fleetsim --duration bound (default N/100 + 20 s); fleetsim is stopped with
#                 SIGINT (graceful) at its first progress line (every 5 s) showing all connected
#   PAUSE         seconds between runs (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
ROUNDS=${2:-2}
case "$N$ROUNDS" in *[!0-9]*) echo "usage: $0 [DEVICES] [ROUNDS]" >&2; exit 64 ;; esac
[ "$N" -ge 1 ] && [ "$ROUNDS" -ge 1 ] || { echo "usage: $0 [DEVICES>=1] [ROUNDS>=1]" >&2; exit 64; }
OUT=${OUT:-/tmp/refclient-bench}; mkdir -p "$OUT"
WINDOW=${WINDOW:-32}
HOLD=${HOLD:-2}
PAUSE=${PAUSE:-1}
DURATION=${DURATION:-$((N / 100 + 20))}
REF_VARIANTS=${REF_VARIANTS:-preload preload+agent}
for v in $REF_VARIANTS; do
  case "$v" in preload|connect|preload+agent|connect+agent) ;;
    *) echo "REF_VARIANTS: unknown variant '$v' (preload, connect, preload+agent, connect+agent)" >&2; exit 64 ;;
  esac
done
BIN_DIR=${BIN_DIR:-$(swift build -c release --show-bin-path)}
for p in fleetsim escrowd escrowctl; do
  [ -x "$BIN_DIR/$p" ] || { echo "no $p in $BIN_DIR: build it (swift build -c release --product $p) or set BIN_DIR" >&2; exit 1; }
done

ulimit -n 20000
if [ $((N * 3 + 32)) -gt "$(ulimit -n)" ]; then
  echo "refclient needs ~$((N * 3 + 32)) descriptors for $N devices but the open-file limit is $(ulimit -n); use at most $((($(ulimit -n) - 32) / 3)) devices" >&2
  exit 64
fi
SRC=()
if [ "$N" -gt 5000 ]; then SRC=(--source-count $(((N + 4999) / 5000))); fi

REF="$OUT/refclient"
gcc -O2 -Wall -Wextra -o "$REF" bench/refclient/refclient.c -lmosquitto -lssl -lcrypto \
  || { echo "cannot build bench/refclient (needs gcc, libmosquitto-dev, libssl-dev)" >&2; exit 1; }
OUT="$OUT" HELPERS_ONLY=1 bench/connect-compare.sh # writes $OUT/run.py and $OUT/table.py

# Private escrowd (managed mosquitto: mutual TLS for devices), as bench/fleetsim-tls.sh.
free_port() { python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }
DEVPORT=$(free_port); OPPORT=$(free_port)
DATA=$(mktemp -d); BUNDLES=$(mktemp -d)
LOG="$OUT/escrowd-tls-compare-$N.log"
"$BIN_DIR/escrowd" --data "$DATA" --device-port "$DEVPORT" --operator-port "$OPPORT" > "$LOG" 2>&1 & ESCROWD=$!
trap 'kill $ESCROWD 2>/dev/null; wait $ESCROWD 2>/dev/null || true; rm -rf "$DATA" "$BUNDLES"' EXIT
for _ in $(seq 100); do grep -q "serving " "$LOG" 2>/dev/null && break; sleep 0.1; done
grep -q "serving " "$LOG" || { echo "escrowd did not start; see $LOG" >&2; exit 1; }
BROKER=$(cat "$DATA/broker/mosquitto.pid" 2>/dev/null || pgrep -P $ESCROWD mosquitto | head -1)
kill -0 "$BROKER" 2>/dev/null || { echo "cannot find escrowd's mosquitto" >&2; exit 1; }

RUN=c$RANDOM
CTL=("$BIN_DIR/escrowctl" --config "$DATA/admin.conf")
"${CTL[@]}" --quiet account create "oem-$RUN" --name "OEM $RUN" --kind provisioner >/dev/null
PW=$(python3 -c "import secrets;print(secrets.token_hex(12))")
"${CTL[@]}" --quiet operator create "op-oem-$RUN" --account "oem-$RUN" --password "$PW" >/dev/null
sleep 0.5 # the broker reloads its password file
OEM=("$BIN_DIR/escrowctl" --broker "$(awk -F' = ' '$1 == "broker" {print $2}' "$DATA/admin.conf")" --user "op-oem-$RUN" --password "$PW" --account "oem-$RUN")
"${OEM[@]}" device provision --prefix "tls-$RUN-" --count "$N" --out "$BUNDLES" >/dev/null
echo "provisioned $N bundles into $BUNDLES (broker $(awk -F' = ' '$1 == "broker" {print $2}' "$BUNDLES/$(ls "$BUNDLES" | head -1)/agent.conf"))"
sleep 1
IDLE_FDS=$(($(ls /proc/$BROKER/fd | wc -l) + 2))

echo "tls-compare: $N devices, $ROUNDS rounds, TLS window $WINDOW (refclient --window $WINDOW; fleetsim --window $WINDOW --tls-handshakes $WINDOW)," \
     "escrowd pid $ESCROWD, broker pid $BROKER, sources ${SRC[*]:-none}, load $(cut -d' ' -f1-3 /proc/loadavg)"
MANIFEST="$OUT/tls-compare-$N.manifest"; : > "$MANIFEST"
CLIENTS=()
for v in $REF_VARIANTS; do CLIENTS+=("ref/$v"); done
CLIENTS+=(fleetsim)
for round in $(seq "$ROUNDS"); do
  k=${#CLIENTS[@]}
  for pos in $(seq 0 $((k - 1))); do
    c=${CLIENTS[$(((pos + round - 1) % k))]}
    tag="$OUT/tls-$N-r$round-${c//[\/+]/-}"
    case $c in
      fleetsim)
        cmd=("$BIN_DIR/fleetsim" connect --bundles "$BUNDLES" --devices "$N" --duration "$DURATION" --heartbeat 30
             --window "$WINDOW" --tls-handshakes "$WINDOW" "${SRC[@]}" --report "$tag.json")
        stop_at=$N ;;
      ref/*)
        v=${c#ref/}
        cmd=("$REF" --bundles "$BUNDLES" --devices "$N" --window "$WINDOW" "${SRC[@]}" --tls-setup "${v%+agent}"
             --hold "$HOLD" --timeout "$((DURATION + N / 500 + 30))" --json "$tag.json" --quiet)
        [ "$v" != "${v%+agent}" ] && cmd+=(--agent)
        stop_at=0 ;;
    esac
    rm -f "$tag.json"
    python3 "$OUT/run.py" "$tag.run.json" "$tag.log" "$stop_at" "$((DURATION + N / 500 + 90))" "$ESCROWD,$BROKER" "$IDLE_FDS" "${cmd[@]}"
    ex=$(python3 -c "import json;print(json.load(open('$tag.run.json'))['exit'])")
    [ -s "$tag.json" ] || { echo "round $round $c: no report (exit $ex); see $tag.log" >&2; tail -5 "$tag.log" >&2; exit 1; }
    echo "{\"round\": $round, \"pos\": \"$((pos + 1))\", \"client\": \"$c\", \"report\": \"$tag.json\", \"runner\": \"$tag.run.json\"}" >> "$MANIFEST"
    echo "  round $round: $c done (exit $ex, $(python3 -c "import json;r=json.load(open('$tag.run.json'));print('%.1f s, waited %.1f s for a quiet broker before, %.1f s for its connections to close after' % (r['wall'], r['brokerQuietWait'], r['brokerIdleWait']))"))"
    sleep "$PAUSE"
  done
done
echo
echo "mutual TLS to escrowd's device listener; connect latency = TCP connect start -> CONNACK (handshake included);" \
     "$N devices, window $WINDOW; cpu s = the client process (setup included), broker cpu s = escrowd + mosquitto; load now $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$OUT/table.py" tls "$N" "$MANIFEST" | tee "$OUT/tls-compare-$N.txt"
echo "table: $OUT/tls-compare-$N.txt; reports: $OUT/tls-$N-r*.json"
