#!/usr/bin/env bash
# Per-call cost and heap of parsing a device identity (P-256 key + certificate) with OpenSSL 3:
# the PEM readers, d2i, and EVP_PKEY_fromdata from the raw key (what fleetsim does at connect).
#   bench/openssl-parse-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/openssl-parse-cost}; mkdir -p "$OUT"
openssl ecparam -name prime256v1 -genkey -noout -out "$OUT/sec1.pem" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$OUT/sec1.pem" -out "$OUT/k.pem"
openssl pkcs8 -topk8 -nocrypt -in "$OUT/sec1.pem" -outform DER -out "$OUT/k.der"
openssl req -new -x509 -key "$OUT/k.pem" -subj /CN=dev-000001 -days 30 -out "$OUT/c.pem" 2>/dev/null
openssl x509 -in "$OUT/c.pem" -outform DER -out "$OUT/c.der"
gcc -O2 -Wall -Wextra -o "$OUT/parse-cost" bench/refclient/parse-cost.c -lssl -lcrypto
"$OUT/parse-cost" "$OUT"
