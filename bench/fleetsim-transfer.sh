#!/usr/bin/env bash
# Transfer benchmark/demo: a private escrowd (managed mosquitto, mutual TLS for devices) on free
# ports, then `fleetsim transfer` with N devices through it.
#   bench/fleetsim-transfer.sh [DEVICES] [extra fleetsim transfer options...]
# e.g. bench/fleetsim-transfer.sh 1000
#      bench/fleetsim-transfer.sh 10000 --via none --approve 0.5
# Writes $OUT/transfer-N.json and .html (default /tmp/fleetsim-bench). BIN_DIR=... uses binaries
# built elsewhere (default: swift build -c release). Raises ulimit -n to 20000.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}; shift || true
free_port() { python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }
DEVPORT=$(free_port); OPPORT=$(free_port)
OUT=${OUT:-/tmp/fleetsim-bench}; mkdir -p "$OUT"
if [ -z "${BIN_DIR:-}" ]; then
  for p in fleetsim escrowd EscrowBrokerPlugin; do swift build -c release --product $p >/dev/null; done
  BIN_DIR=$(swift build -c release --show-bin-path)
fi
ulimit -n 20000
DATA=$(mktemp -d)
"$BIN_DIR/escrowd" --data "$DATA" --device-port "$DEVPORT" --operator-port "$OPPORT" > "$OUT/escrowd-$N.log" 2>&1 & ESCROWD=$!
trap 'kill $ESCROWD 2>/dev/null; wait $ESCROWD 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do grep -q "serving " "$OUT/escrowd-$N.log" 2>/dev/null && break; sleep 0.1; done
grep -q "serving " "$OUT/escrowd-$N.log" || { echo "escrowd did not start; see $OUT/escrowd-$N.log" >&2; exit 1; }

${TIMECMD:-} "$BIN_DIR/fleetsim" transfer --admin-config "$DATA/admin.conf" --devices "$N" \
  --report "$OUT/transfer-$N.json" --html "$OUT/transfer-$N.html" "$@"
