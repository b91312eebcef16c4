#!/bin/sh
# Heartbeat ingest benchmark (see bench/README.md). Extra arguments are passed on,
# e.g. `bench/heartbeat-ingest.sh --rate 0` for the maximum rate.
set -eu
cd "$(dirname "$0")/.."
swift build -c release --product escrowbench
exec .build/release/escrowbench heartbeats --devices 20000 --duration 20s --rate 50000 "$@"
