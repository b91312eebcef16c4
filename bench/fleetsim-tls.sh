#!/usr/bin/env bash
# Mutual-TLS connect benchmark against escrowd's real device listener: a private escrowd on free
# ports, N devices provisioned with `escrowctl device provision --out` (bundles), then
# `fleetsim ${SCENARIO:-connect} --bundles`.
#   bench/fleetsim-tls.sh [DEVICES] [extra fleetsim options...]
# e.g. bench/fleetsim-tls.sh 5000
#      SCENARIO=storm bench/fleetsim-tls.sh 2000 --tls-handshakes 64
# Writes $OUT/tls-SCENARIO-N.json and .html (default /tmp/fleetsim-bench). BIN_DIR as in fleetsim-transfer.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}; shift || true
free_port() { python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }
DEVPORT=$(free_port); OPPORT=$(free_port)
OUT=${OUT:-/tmp/fleetsim-bench}; mkdir -p "$OUT"
if [ -z "${BIN_DIR:-}" ]; then
  for p in fleetsim escrowd escrowctl EscrowBrokerPlugin; do swift build -c release --product $p >/dev/null; done
  BIN_DIR=$(swift build -c release --show-bin-path)
fi
ulimit -n 20000
DATA=$(mktemp -d); BUNDLES=$(mktemp -d)
"$BIN_DIR/escrowd" --data "$DATA" --device-port "$DEVPORT" --operator-port "$OPPORT" > "$OUT/escrowd-tls-$N.log" 2>&1 & ESCROWD=$!
trap 'kill $ESCROWD 2>/dev/null; wait $ESCROWD 2>/dev/null || true; rm -rf "$DATA" "$BUNDLES"' EXIT
for _ in $(seq 100); do grep -q "serving " "$OUT/escrowd-tls-$N.log" 2>/dev/null && break; sleep 0.1; done
grep -q "serving " "$OUT/escrowd-tls-$N.log" || { echo "escrowd did not start" >&2; exit 1; }

RUN=b$RANDOM
CTL=("$BIN_DIR/escrowctl" --config "$DATA/admin.conf")
"${CTL[@]}" --quiet account create "oem-$RUN" --name "OEM $RUN" --kind provisioner >/dev/null
PW=$(python3 -c "import secrets;print(secrets.token_hex(12))")
"${CTL[@]}" --quiet operator create "op-oem-$RUN" --account "oem-$RUN" --password "$PW" >/dev/null
sleep 0.5 # the broker reloads its password file
OEM=("$BIN_DIR/escrowctl" --broker "$(awk -F' = ' '/^broker/{print $2}' "$DATA/admin.conf")" --user "op-oem-$RUN" --password "$PW" --account "oem-$RUN")
"${OEM[@]}" device provision --prefix "tls-$RUN-" --count "$N" --out "$BUNDLES" >/dev/null
echo "provisioned $N bundles into $BUNDLES"

${TIMECMD:-} "$BIN_DIR/fleetsim" "${SCENARIO:-connect}" --bundles "$BUNDLES" --duration "${DURATION:-20}" \
  --report "$OUT/tls-${SCENARIO:-connect}-$N.json" --html "$OUT/tls-${SCENARIO:-connect}-$N.html" "$@"
