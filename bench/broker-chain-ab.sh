#!/usr/bin/env bash
# A/B of the broker's certificate file: leaf + CA (what escrowd wrote before) against the leaf
# alone (what it writes now), measured with the libmosquitto reference client (bench/refclient,
# --tls-setup preload) on one escrowd: escrowd is stopped, server.pem swapped, escrowd started
# again on the same ports, data and bundles, rounds alternating.
#   BIN_DIR=.build/release bench/broker-chain-ab.sh [DEVICES]      (default 3000)
# Prints per run: handshakes/s, client CPU per connect, p50. Needs release escrowd + escrowctl +
# EscrowBrokerPlugin in BIN_DIR (never builds Swift) and gcc + libmosquitto-dev.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3000}; BIN_DIR=${BIN_DIR:-$(swift build -c release --show-bin-path)}
OUT=${OUT:-/tmp/refclient-bench}; make -s -C bench/refclient OUT="$OUT" >/dev/null
free_port() { python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }
DEVPORT=$(free_port); OPPORT=$(free_port)
ulimit -n 20000
DATA=$(mktemp -d); BUNDLES=$(mktemp -d); LOG=$OUT/chain-ab-escrowd.log
start() { "$BIN_DIR/escrowd" --data "$DATA" --device-port "$DEVPORT" --operator-port "$OPPORT" > $LOG 2>&1 & ESCROWD=$!
  for _ in $(seq 100); do grep -q "serving " $LOG 2>/dev/null && break; sleep 0.1; done; }
stop() { kill $ESCROWD; wait $ESCROWD 2>/dev/null || true; }
start
trap 'kill $ESCROWD 2>/dev/null || true; rm -rf "$DATA" "$BUNDLES"' EXIT
RUN=c$RANDOM; CTL=("$BIN_DIR/escrowctl" --config "$DATA/admin.conf")
"${CTL[@]}" --quiet account create "oem-$RUN" --name "OEM" --kind provisioner >/dev/null
PW=$(python3 -c "import secrets;print(secrets.token_hex(12))")
"${CTL[@]}" --quiet operator create "op-$RUN" --account "oem-$RUN" --password "$PW" >/dev/null
sleep 0.5
"$BIN_DIR/escrowctl" --broker "$(awk -F' = ' '/^broker/{print $2}' "$DATA/admin.conf")" --user "op-$RUN" --password "$PW" --account "oem-$RUN" device provision --prefix "c-$RUN-" --count "$N" --out "$BUNDLES" >/dev/null
CERT=$DATA/broker/certs/server.pem
# The leaf is the file's first certificate; the chain variant appends the platform CA to it.
python3 - "$CERT" <<'PY' > $OUT/server-leaf.pem
import sys; t=open(sys.argv[1]).read(); e="-----END CERTIFICATE-----"; print(t[:t.index(e)+len(e)])
PY
cat $OUT/server-leaf.pem "$DATA/platform-ca.pem" > $OUT/server-chain.pem
for round in 1 2; do for v in chain leaf; do
  stop; cp $OUT/server-$v.pem $CERT; start
  $OUT/refclient --bundles "$BUNDLES" --tls-setup preload --window 32 --hold 1 --json $OUT/chain-$v-$round.json >/dev/null 2>&1 || true
  python3 -c "import json;r=json.load(open('$OUT/chain-$v-$round.json'));print('$v', $round, 'rate', r['connectsPerSec'], 'client cpu/connect ms', round(r['cpuConnectSeconds']/r['connected']*1000,3), 'p50', r['connectLatencyMs']['p50'])"
done; done
