#!/bin/sh
# SQLite and PostgreSQL side by side on this machine (issue 16): the 10,000-device bulk approval,
# then heartbeats at 50,000/s, ROUNDS rounds alternating the order. PostgreSQL is a private server
# at its default durability (bench/postgres.sh), a fresh database per run.
#   bench/store-compare.sh [DEVICES] [ROUNDS]      (defaults 10000 3)
set -eu
cd "$(dirname "$0")/.."
devices=${1:-10000}
rounds=${2:-3}
swift build -c release --product escrowbench >/dev/null
pg=$(mktemp -d /tmp/escrow-bench-pg-XXXXXX)
trap 'bench/postgres.sh stop "$pg" 2>/dev/null || true; rm -rf "$pg"' EXIT INT TERM
bench/postgres.sh start "$pg" >/dev/null
ulimit -n 20000 2>/dev/null || true
bulk() {  # STORE-ARGS...
  .build/release/escrowbench bulk-transfer --devices "$devices" "$@" | awk '
    /approve -> reply/ {r=$5} /reply -> last config/ {c=$6} /last config -> all applied/ {a=$7}
    END {printf "approve->reply %s s, reply->last config %s s, last config->all applied %s s\n", r, c, a}'
}
i=1
while [ "$i" -le "$rounds" ]; do
  if [ $((i % 2)) -eq 1 ]; then order="sqlite postgres"; else order="postgres sqlite"; fi
  for s in $order; do
    if [ "$s" = sqlite ]; then printf "round %d sqlite   %s\n" "$i" "$(bulk)"
    else printf "round %d postgres %s\n" "$i" "$(bulk --store "$(bench/postgres.sh url "$pg")")"; fi
  done
  i=$((i + 1))
done
for s in sqlite postgres; do
  if [ "$s" = sqlite ]; then args=""; else args="--store $(bench/postgres.sh url "$pg")"; fi
  # shellcheck disable=SC2086
  .build/release/escrowbench heartbeats --devices 20000 --duration 20s --rate 50000 $args \
    | grep -E "processed \(flood|last_seen persisted|command latency|flushLastSeen" | sed "s/^/heartbeats $s: /"
done
