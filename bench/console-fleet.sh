#!/usr/bin/env bash
# The console's fleet page and device search with N devices in one account (issue 17: < 200 ms
# of server time at 100,000 devices). Starts escrowd (managed broker) and escrow-console on free
# ports in a temp directory, provisions N escrow devices (1,000 per command, no identities, sent
# with mosquitto_pub as the OEM's operator), logs in over HTTP, and times each page R times with
# curl on loopback (time_total: request sent -> last byte; the server's time plus a loopback RTT).
#   bench/console-fleet.sh                   # N = 100,000, R = 20
#   bench/console-fleet.sh --devices 10000 --repeat 10
# Needs: swift build (escrowd, escrowctl, escrow-console), curl, mosquitto-clients, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
N=100000; R=20
while (($#)); do case "$1" in --devices) N=$2; shift 2;; --repeat) R=$2; shift 2;; *) echo "unknown option $1" >&2; exit 64;; esac; done
BIN=.build/debug
for b in escrowd escrowctl escrow-console; do [[ -x $BIN/$b ]] || { echo "build first: swift build" >&2; exit 1; }; done
RUN=$(mktemp -d /tmp/console-bench.XXXXXX)
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
DP=$(port); OP=$(port); CP=$(port)
cleanup() { kill $CPID $EPID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$RUN"; }
trap cleanup EXIT
$BIN/escrowd --data "$RUN/data" --device-port $DP --operator-port $OP > "$RUN/escrowd.log" 2>&1 & EPID=$!
for _ in $(seq 300); do grep -q serving "$RUN/escrowd.log" && break; sleep 0.1; done
export ESCROW_CONFIG=$RUN/data/admin.conf
$BIN/escrowctl account create oem --name OEM --kind provisioner >/dev/null
$BIN/escrowctl operator create op-oem --account oem --password bench-secret-1 >/dev/null
sleep 1   # the broker reloads its password file
echo "provisioning $N devices..."
t0=$(date +%s.%N)
for ((start = 1; start <= N; start += 1000)); do
  n=$(( N - start + 1 < 1000 ? N - start + 1 : 1000 ))
  mosquitto_pub -h 127.0.0.1 -p $OP -u op-oem -P bench-secret-1 -i op-oem:bench-$start -q 1 -V mqttv311 \
    -t accounts/oem/cmd/device.provision -m "{\"schema\":1,\"requestId\":\"p-$start\",\"args\":{\"prefix\":\"f-\",\"count\":$n,\"start\":$start,\"issueIdentity\":false}}"
done
until [[ "$($BIN/escrowctl --user op-oem --password bench-secret-1 --account oem --json device list --limit 1 | python3 -c 'import json,sys;print(json.load(sys.stdin)["total"])')" == "$N" ]]; do sleep 0.5; done
t1=$(date +%s.%N)
printf 'provisioned %d devices in %.1f s\n' "$N" "$(echo "$t1 - $t0" | bc)"
$BIN/escrow-console --listen 127.0.0.1:$CP --broker mqtt://127.0.0.1:$OP > "$RUN/console.log" 2>&1 & CPID=$!
for _ in $(seq 100); do curl -fs http://127.0.0.1:$CP/healthz >/dev/null && break; sleep 0.1; done
COOKIE=$(curl -s -o /dev/null -D - -X POST --data 'username=op-oem&password=bench-secret-1&account=oem' http://127.0.0.1:$CP/login | sed -n 's/^Set-Cookie: \(escrow_session=[0-9a-f]*\).*/\1/ip')
[[ -n "$COOKIE" ]] || { echo "login failed"; exit 1; }
measure() {  # name path
  local times=()
  for ((i = 0; i < R; i++)); do
    read -r code t < <(curl -s -o "$RUN/page.html" -w '%{http_code} %{time_total}\n' -H "Cookie: $COOKIE" "http://127.0.0.1:$CP$2")
    [[ "$code" == 200 ]] || { echo "$1: HTTP $code"; head -c 400 "$RUN/page.html"; exit 1; }
    times+=("$t")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v name="$1" -v path="$2" '
    function q(p,  i) { i = int(NR * p) + 1; if (i > NR) i = NR; return a[i] }
    { a[NR] = $1 * 1000 }
    END { printf "%-28s p50 %6.1f ms  p90 %6.1f ms  max %6.1f ms  (n=%d)  %s\n", name, q(0.5), q(0.9), a[NR], NR, path }'
}
echo "console pages with $N devices in account oem (debug build, curl on loopback, $R requests each):"
measure "fleet, first page" "/fleet"
measure "fleet, page 1,000 (offset)" "/fleet?offset=$(( (N / 100) * 50 ))"
measure "fleet, escrow filter" "/fleet?state=escrow"
measure "search, prefix of 1" "/fleet?q=f-$(printf '%06d' $(( N / 2 )))"
measure "search, prefix of 1,000" "/fleet?q=f-$(printf '%06d' $(( N / 2 )) | cut -c1-3)"
measure "device page" "/devices/f-$(printf '%06d' $(( N / 2 )))"
