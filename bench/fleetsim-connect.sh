#!/usr/bin/env bash
# Connect benchmark: N simulated devices against a private mosquitto on loopback.
#   bench/fleetsim-connect.sh [DEVICES] [extra fleetsim options...]
# e.g. bench/fleetsim-connect.sh 5000
#      bench/fleetsim-connect.sh 19000 --source-count 2 --window 64
# SCENARIO=storm or soak runs that scenario instead (same broker setup).
# Prints fleetsim's summary (connect time, latency percentiles, RSS per device) and writes
# $OUT/connect-N.json and .html (default /tmp/fleetsim-bench). Needs /usr/sbin/mosquitto; raises ulimit -n to 20000.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}; shift || true
PORT=${PORT:-$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")}
OUT=${OUT:-/tmp/fleetsim-bench}; mkdir -p "$OUT"
swift build -c release --product fleetsim >/dev/null
BIN=$(swift build -c release --show-bin-path)/fleetsim

ulimit -n 20000
CONF=$(mktemp -d)/mosquitto.conf
{
  echo "listener $PORT 127.0.0.1"
  echo "allow_anonymous true"
  echo "max_connections -1"
  echo "persistence false"
  echo "log_dest none"
  echo "set_tcp_nodelay true"
  [ "$(id -u)" = 0 ] && echo "user root"
} > "$CONF"
/usr/sbin/mosquitto -c "$CONF" & BROKER=$!
trap 'kill $BROKER 2>/dev/null; wait $BROKER 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
kill -0 $BROKER 2>/dev/null || { echo "mosquitto did not start on port $PORT" >&2; exit 1; }

${TIMECMD:-} "$BIN" "${SCENARIO:-connect}" --broker mqtt://127.0.0.1:$PORT --devices "$N" --duration "${DURATION:-15}" \
  --heartbeat 30 --window "${WINDOW:-64}" --report "$OUT/${SCENARIO:-connect}-$N.json" --html "$OUT/${SCENARIO:-connect}-$N.html" "$@"
echo "broker RSS: $(awk '/VmRSS/{print $2" "$3}' /proc/$BROKER/status)"
