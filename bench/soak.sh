#!/usr/bin/env bash
# Soak: DEVICES escrow devices for DURATION seconds against escrowd and a local mosquitto, with
# heartbeats, churn and a transfer of BATCH devices every TRANSFER_EVERY seconds. Samples escrowd's
# RSS, open fds, database size and the broker's RSS every SAMPLE seconds into soak.csv.
#   bench/soak.sh                      # 19,000 devices for an hour
#   DEVICES=2000 DURATION=300 bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=${DEVICES:-19000}; DURATION=${DURATION:-3600}; SAMPLE=${SAMPLE:-60}
TRANSFER_EVERY=${TRANSFER_EVERY:-180}; BATCH=${BATCH:-100}; CHURN=${CHURN:-1}; HEARTBEAT=${HEARTBEAT:-60}
OUT=${OUT:-/tmp/escrowfleet-soak}
rm -rf "$OUT"; mkdir -p "$OUT"
ulimit -n 20000
swift build -c release --product escrowd --product escrowctl --product fleetsim >/dev/null 2>&1 || swift build -c release
BIN=.build/release
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
cat > "$OUT/mosquitto.conf" <<CONF
listener $PORT 127.0.0.1
allow_anonymous true
max_connections -1
max_queued_messages 100000
set_tcp_nodelay true
log_dest file $OUT/mosquitto.log
user root
CONF
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
mosquitto -c "$OUT/mosquitto.conf" & pids+=($!); BROKER=$!
sleep 0.5
$BIN/escrowd --data "$OUT/data" --broker "mqtt://127.0.0.1:$PORT" > "$OUT/escrowd.log" 2>&1 & pids+=($!); ESCROWD=$!
for _ in $(seq 100); do grep -q "serving" "$OUT/escrowd.log" && break; sleep 0.1; done
export ESCROW_CONFIG="$OUT/data/admin.conf"
$BIN/escrowctl account create oem --name OEM --kind provisioner >/dev/null
$BIN/escrowctl account create acme --name Acme --kind customer >/dev/null
$BIN/escrowctl --account oem device provision --prefix sim- --start 0 --count "$DEVICES" --out "$OUT/bundles" >/dev/null
rm -rf "$OUT/bundles"   # identities are not used on this plain-MQTT soak
$BIN/fleetsim soak --broker "mqtt://127.0.0.1:$PORT" --devices "$DEVICES" --prefix sim- --heartbeat "$HEARTBEAT" \
  --churn "$CHURN" --duration "$DURATION" --quiet --report "$OUT/fleetsim.json" --html "$OUT/fleetsim.html" > "$OUT/fleetsim.log" 2>&1 & pids+=($!); SIM=$!
echo "t_s,escrowd_rss_kb,escrowd_fds,db_bytes,wal_bytes,broker_rss_kb,transfers,activated" > "$OUT/soak.csv"
start=$(date +%s); next_transfer=$((start + TRANSFER_EVERY)); transfers=0; activated=0; offset=0
while kill -0 $SIM 2>/dev/null; do
  now=$(date +%s)
  if (( now >= next_transfer )); then
    ids=$(seq $offset $((offset + BATCH - 1)) | awk '{printf "sim-%06d,", $1}' | sed 's/,$//')
    offset=$((offset + BATCH))
    tid=$($BIN/escrowctl --account oem --json transfer request --to acme --ids "$ids" | python3 -c 'import json,sys; print(json.load(sys.stdin)["transfer"]["id"])')
    $BIN/escrowctl --account acme transfer approve "$tid" --activate >/dev/null && transfers=$((transfers + 1)) && activated=$((activated + BATCH))
    next_transfer=$((next_transfer + TRANSFER_EVERY))
  fi
  rss=$(awk '/VmRSS/{print $2}' /proc/$ESCROWD/status); fds=$(ls /proc/$ESCROWD/fd | wc -l)
  db=$(stat -c %s "$OUT/data/escrow.db"); wal=$(stat -c %s "$OUT/data/escrow.db-wal" 2>/dev/null || echo 0)
  brss=$(awk '/VmRSS/{print $2}' /proc/$BROKER/status)
  echo "$((now - start)),$rss,$fds,$db,$wal,$brss,$transfers,$activated" >> "$OUT/soak.csv"
  sleep "$SAMPLE"
done
wait $SIM || true
$BIN/escrowctl --account acme --json config status | python3 -c 'import json,sys; d=json.load(sys.stdin)["devices"]; print("configs applied:", sum(1 for x in d if x["state"]=="applied"), "of", len(d))' | tee "$OUT/converged.txt"
echo "soak finished: $OUT/soak.csv, $OUT/fleetsim.html"
