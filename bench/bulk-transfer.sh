#!/bin/sh
# Bulk transfer benchmark (see bench/README.md). Extra arguments are passed on.
set -eu
cd "$(dirname "$0")/.."
swift build -c release --product escrowbench
exec .build/release/escrowbench bulk-transfer --devices 10000 "$@"
