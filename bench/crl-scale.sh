#!/usr/bin/env bash
# Certificate revocation at scale (issue 13): Mosquitto's reload time and memory with N revoked
# certificates, in two designs side by side: the serials in the CRL, or in the EscrowFleet plugin's
# revoked file (plugin_opt_revoked_file) with empty CRLs.
#   bench/crl-scale.sh                    # both designs, N = 100,000 revoked serials
#   bench/crl-scale.sh --design plugin --revoked 20000 --connects 100 --reloads 2
# Self-contained: openssl CLI, mosquitto, mosquitto_pub/sub/passwd, coreutils, procps (Debian
# packages mosquitto mosquitto-clients openssl procps); for --design plugin|both also gcc,
# mosquitto-dev and libssl-dev: the plugin is built from Sources/EscrowBrokerPlugin with gcc, as
# Tests/BrokerPluginC/run.sh does. No Swift build. Everything runs in a mktemp -d directory (kept
# with --keep) against private brokers on free 127.0.0.1 ports.
#
# The broker is configured like BrokerPlan: per_listener_settings false, allow_anonymous false,
# password_file, acl_file, set_tcp_nodelay, a device listener (cafile, certfile, keyfile, crlfile,
# require_certificate, use_identity_as_username, use_username_as_clientid) and a plain password
# listener (used here by a probe that measures how long the broker stops serving during a
# reload). Keys are EC P-256 and serials random 128-bit, like CertificateAuthority; one CRL per
# CA, concatenated, like BrokerLayout.installTrust; files are replaced with mv (rename), like
# writeBrokerFile.
#
# Phase S (a 1-entry CRL): startup, RSS, per-connect cost, reload; then what SIGHUP does to the
#   trust store: a CRL with the same lastUpdate as the loaded one, a newer CRL, a CRL file that
#   no longer has a CA's CRL, a CA appended to cafile, an empty (unloadable) crlfile; then
#   restarts as the control (same files; an empty crlfile at startup).
# Phase B (an N-entry CRL): generation time and size, startup, RSS, per-connect cost, a reload of
#   the unchanged file, the revocation of a live certificate (regenerate, mv, SIGHUP) with the
#   probe running, a fresh mTLS connect fired right after the signal and a session opened with
#   the certificate before its revocation; then RELOADS reloads of a changed CRL with no TLS
#   session open, RELOADS more with one more long-lived mTLS session connected before each
#   (memory kept per reload), one after those sessions closed, a SIGHUP sent while a reload is
#   running (after 50-400 ms), and a restart with the final file.
#
# --design crl (phases S and B above): the CRL holds the serials.
# --design plugin: BrokerPlan's configuration with the plugin loaded (plugin_opt_acl_file,
#   plugin_opt_revoked_file) and one EMPTY CRL per CA. Phase P0 (no serial): startup, RSS,
#   per-connect cost, reload, a CA appended to cafile. Phase P1 (N serials in the revoked file):
#   the same, then the revocation of a live certificate (file swapped with mv, SIGHUP, probe
#   running, fresh mTLS connect, a session opened before the revocation), the memory across
#   reloads with sessions held, the SIGHUP-during-reload attempts and a restart. "Refused" means
#   an MQTT 5 QoS 1 publish with the certificate gets PUBACK 135 (the TLS handshake succeeds).
# --design both (default): crl, then plugin, on the same machine; then a side-by-side table.
# Ends with `key: value` lines (prefixed crl. / plugin.) and a Markdown table. Exit 0: the
# revocation checks passed; 1: one failed or the broker misbehaved; 64: usage.
set -uo pipefail
export LC_ALL=C

N=100000; CONNECTS=200; RELOADS=3; KEEP=0; DESIGNS=both
usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; echo "options: --design crl|plugin|both (both) --revoked N (100000) --connects N (200) --reloads N (3) --keep"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --design) DESIGNS=${2:-}; shift 2 || { usage >&2; exit 64; } ;;
    --revoked) N=${2:-}; shift 2 || { usage >&2; exit 64; } ;;
    --connects) CONNECTS=${2:-}; shift 2 || { usage >&2; exit 64; } ;;
    --reloads) RELOADS=${2:-}; shift 2 || { usage >&2; exit 64; } ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 64 ;;
  esac
done
for v in "$N" "$CONNECTS" "$RELOADS"; do [[ "$v" =~ ^[0-9]+$ ]] || { usage >&2; exit 64; }; done
[ "$N" -ge 1 ] && [ "$CONNECTS" -ge 1 ] || { usage >&2; exit 64; }
case "$DESIGNS" in crl|plugin) ;; both) DESIGNS="crl plugin" ;; *) usage >&2; exit 64 ;; esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
for t in "$MOSQUITTO" openssl mosquitto_pub mosquitto_sub mosquitto_passwd timeout awk fold sort; do
  command -v "$t" >/dev/null || { echo "crl-scale: missing $t" >&2; exit 1; }
done
if [[ " $DESIGNS " == *" plugin "* ]]; then
  command -v gcc >/dev/null && [ -f /usr/include/mosquitto_broker.h ] && [ -f /usr/include/openssl/x509.h ] ||
    { echo "crl-scale: --design plugin needs gcc, mosquitto-dev and libssl-dev" >&2; exit 1; }
fi

W=$(mktemp -d /tmp/crl-scale.XXXXXX)
BROKER_PID=""; PROBE_PIDS=""; EXISTING_PID=""; HOLD_PIDS=""; FAILED=0
declare -A R            # results of the design running
declare -a ORDER
put() { R[$1]=$2; ORDER+=("$1"); }
declare -A ALL          # every design's results, as DESIGN.key
declare -a ALL_ORDER
save_design() { # design: moves R to ALL under "design."
  local k
  for k in "${ORDER[@]}"; do ALL[$1.$k]=${R[$k]}; ALL_ORDER+=("$1.$k"); done
  R=(); ORDER=()
}
DESIGN=crl; BLOG=$W/broker-crl.log   # the design running and its broker log
STALLS=()               # broker-unresponsive ms of each reload of the current phase
stall_stats() { # -> "p50 max n" of STALLS
  printf '%s\n' "${STALLS[@]}" | sort -g | awk '{v[NR]=$1} END{ if (NR == 0) { print "- - 0"; exit }
    printf "%.1f %.1f %d\n", (NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2), v[NR], NR }'
}
log() { printf '[%6.1fs] %s\n' "$(awk -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')" "$*"; }
die() { echo "crl-scale: $*" >&2; [ -n "$BROKER_PID" ] && tail -5 "$BLOG" >&2; exit 1; }
fail() { echo "CHECK FAILED: $*" >&2; FAILED=1; }

stop_probe() {
  local p
  for p in $PROBE_PIDS; do kill "$p" 2>/dev/null; done
  for p in $PROBE_PIDS; do wait "$p" 2>/dev/null; done
  PROBE_PIDS=""
}
release_sessions() {
  local p
  for p in $HOLD_PIDS; do kill "$p" 2>/dev/null; done
  for p in $HOLD_PIDS; do wait "$p" 2>/dev/null; done
  HOLD_PIDS=""
}
stop_broker() {
  [ -n "$BROKER_PID" ] || return 0
  kill -TERM "$BROKER_PID" 2>/dev/null
  local i
  for i in $(seq 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; pause 0.05; done
  kill -KILL "$BROKER_PID" 2>/dev/null
  wait "$BROKER_PID" 2>/dev/null
  BROKER_PID=""
}
cleanup() {
  stop_probe; [ -n "$EXISTING_PID" ] && kill "$EXISTING_PID" 2>/dev/null; release_sessions; stop_broker
  if [ "$KEEP" = 1 ]; then echo "work directory kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkfifo "$W/sleep.fifo"; exec 9<>"$W/sleep.fifo"
pause() { read -r -t "$1" -u 9 _ 2>/dev/null || true; }   # sleep without a fork
now_us() { local __now=$EPOCHREALTIME; printf -v "$1" "%s" "${__now/./}"; }
START=$EPOCHREALTIME
ms() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", (b-a)/1000}'; }   # two now_us values
utc() { date -u -d "@$1" +%y%m%d%H%M%SZ; }
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$BROKER_PID/status"; }
TICK=$(getconf CLK_TCK)
cpu_ms() { local s; read -r -a s < "/proc/$BROKER_PID/stat"; echo $(( (s[13] + s[14]) * 1000 / TICK )); }
tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p
  while :; do p=$(( 20000 + RANDOM % 40000 )); [ "$p" != "${1:-0}" ] && ! tcp_open "$p" && { echo "$p"; return; }; done
}
hexserial() { local s; s=$(openssl rand -hex 16 | tr a-f A-F); [ "${s:0:1}" = 0 ] && s="1${s:1}"; echo "$s"; }

# ---------------------------------------------------------------- PKI (EC P-256, as in CertificateAuthority)
EC=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
make_ca() { # dir CN
  mkdir -p "$1"
  openssl req -x509 -new "${EC[@]}" -keyout "$1/ca.key" -out "$1/ca.pem" -subj "/CN=$2" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>>"$W/openssl.err" \
    || die "CA $2"
  : > "$1/index.txt"; echo "unique_subject = no" > "$1/index.txt.attr"; echo 1000 > "$1/crlnumber"
  cat > "$1/ca.cnf" <<EOF
[ ca ]
default_ca = CA_default
[ CA_default ]
database = $1/index.txt
crlnumber = $1/crlnumber
certificate = $1/ca.pem
private_key = $1/ca.key
default_md = sha256
default_crl_days = 30
crl_extensions = crl_ext
unique_subject = no
[ crl_ext ]
authorityKeyIdentifier = keyid:always
EOF
}
issue() { # ca_dir CN out_prefix server|client -> prints the serial (hex)
  local serial; serial=$(hexserial)
  openssl req -new "${EC[@]}" -keyout "$3.key" -out "$3.csr" -subj "/CN=$2" 2>>"$W/openssl.err" || die "key $2"
  if [ "$4" = server ]; then
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" > "$3.ext"
  else
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=clientAuth" > "$3.ext"
  fi
  openssl x509 -req -in "$3.csr" -CA "$1/ca.pem" -CAkey "$1/ca.key" -set_serial "0x$serial" -days 30 -sha256 \
    -extfile "$3.ext" -out "$3.pem" 2>>"$W/openssl.err" || die "cert $2"
  echo "$serial"
}
REVDATE=$(utc $(( $(date +%s) - 86400 ))); EXPIRY=$(utc $(( $(date +%s) + 365 * 86400 )))
revoked_line() { printf 'R\t%s\t%s\t%s\tunknown\t/CN=%s\n' "$EXPIRY" "$REVDATE" "$1" "$2"; }
synthetic_index() { # N out: N random unique 128-bit serials as `R` lines for `openssl ca -gencrl`
  openssl rand -hex $(( 16 * $1 + 1024 )) | fold -w 32 | tr a-f A-F | sed 's/^0/1/' | sort -u | head -n "$1" |
    awk -v e="$EXPIRY" -v r="$REVDATE" 'BEGIN{OFS="\t"} {print "R", e, r, $1, "unknown", "/CN=synthetic-" NR}' > "$2"
  [ "$(wc -l < "$2")" -eq "$1" ] || die "synthetic index"
}
gencrl() { # ca_dir index out [lastUpdate YYMMDDHHMMSSZ]
  cp "$2" "$1/index.txt"
  openssl ca -config "$1/ca.cnf" -gencrl -batch -out "$3" ${4:+-crl_lastupdate "$4"} 2>>"$W/openssl.err" || die "gencrl $3"
}

# ---------------------------------------------------------------- broker
PW=probe-$RANDOM$RANDOM
B=$W/broker; mkdir -p "$B"
TLSPORT=$(free_port); PLAINPORT=$(free_port "$TLSPORT")
mosquitto_passwd -c -b "$B/passwd" probe "$PW" >/dev/null 2>&1 || die "mosquitto_passwd"
echo "pattern readwrite #" > "$B/acl"
write_conf() { # design: crl = as BrokerPlan without the plugin; plugin = with it (BrokerPlan today)
{
  echo "per_listener_settings false"
  echo "allow_anonymous false"
  echo "password_file $B/passwd"
  echo "acl_file $B/acl"
  if [ "$1" = plugin ]; then
    echo "plugin $W/libEscrowBrokerPlugin.so"
    echo "plugin_opt_acl_file $B/acl"
    echo "plugin_opt_service_prefix svc-"
    echo "plugin_opt_revoked_file $B/revoked"
  fi
  echo "persistence false"
  echo "log_dest stderr"
  echo "log_type error"; echo "log_type warning"; echo "log_type notice"; echo "log_type information"
  echo "log_timestamp true"
  echo "set_tcp_nodelay true"
  [ "$(id -u)" = 0 ] && echo "user root"
  echo "listener $TLSPORT 127.0.0.1"
  echo "cafile $B/ca.pem"; echo "certfile $B/server.pem"; echo "keyfile $B/server.key"; echo "crlfile $B/crl.pem"
  echo "require_certificate true"; echo "use_identity_as_username true"; echo "use_username_as_clientid true"
  echo "listener $PLAINPORT 127.0.0.1"
} > "$B/mosquitto.conf"
}

install_file() { cp "$1" "$B/.tmp.$$" && mv -f "$B/.tmp.$$" "$B/$2"; }   # atomic swap, as writeBrokerFile

tls_pub() { # name (client cert W/name.pem): 0 = CONNACK received and published
  timeout 10 mosquitto_pub -h 127.0.0.1 -p "$TLSPORT" --cafile "$W/ca1/ca.pem" --cert "$W/$1.pem" --key "$W/$1.key" \
    -i "$1-$RANDOM" -t "devices/$1/status" -m x -q 0 >/dev/null 2>>"$W/client.err"
}
plain_pub() { timeout 10 mosquitto_pub -h 127.0.0.1 -p "$PLAINPORT" -u probe -P "$PW" -i "probe:sync-$RANDOM" -t bench/sync -m x -q 0 >/dev/null 2>&1; }
# Returns once the broker has handled the signal sent before it: its main loop checks the reload
# flag before it accepts the next connection.
sync_broker() { plain_pub || die "broker not answering on the plain listener"; }
# served name: yes if an MQTT 5 QoS 1 publish with the certificate is acknowledged with success
# (PUBACK 0, or 16 "no matching subscribers"); the plugin refuses a revoked certificate's publish
# with 135 after a successful handshake
served() {
  local rc
  rc=$(timeout 10 mosquitto_pub -d -V mqttv5 -q 1 -h 127.0.0.1 -p "$TLSPORT" --cafile "$W/ca1/ca.pem" \
    --cert "$W/$1.pem" --key "$W/$1.key" -t "devices/$1/status" -m x 2>>"$W/client.err" |
    sed -n 's/.*received PUBACK (Mid: [0-9]*, RC:\([0-9]*\)).*/\1/p' | head -n 1)
  if [ "$rc" = 0 ] || [ "$rc" = 16 ]; then echo yes; else echo no; fi
}
accepted() {
  if [ "$DESIGN" = plugin ]; then served "$1"
  elif tls_pub "$1"; then echo yes; else echo no; fi
}

start_broker() { # label: sets START_TCP_MS (TLS port accepts TCP) and START_READY_MS (first mTLS CONNACK)
  local t0 t1 t2 t deadline
  now_us t0
  "$MOSQUITTO" -c "$B/mosquitto.conf" >> "$BLOG" 2>&1 &
  BROKER_PID=$!
  deadline=$(( t0 + 60000000 ))
  until tcp_open "$TLSPORT"; do
    kill -0 "$BROKER_PID" 2>/dev/null || { BROKER_PID=""; tail -5 "$BLOG" >&2; die "broker exited during startup ($1)"; }
    now_us t; [ "$t" -lt "$deadline" ] || die "TLS port not accepting after 60 s ($1)"
    pause 0.005
  done
  now_us t1
  until tls_pub valid; do
    kill -0 "$BROKER_PID" 2>/dev/null || die "broker exited during startup ($1)"
    now_us t; [ "$t" -lt "$deadline" ] || die "no mTLS CONNACK after 60 s ($1)"
    pause 0.02
  done
  now_us t2
  START_TCP_MS=$(ms "$t0" "$t1"); START_READY_MS=$(ms "$t0" "$t2")
  log "$1: broker $BROKER_PID up: TCP after $START_TCP_MS ms, first mTLS CONNACK after $START_READY_MS ms, RSS $(rss_kb) kB"
}

connect_loop() { # label: CONNECTS sequential mTLS connects with the valid cert
  local t0 t1 c0 c1 i fails=0
  c0=$(cpu_ms); now_us t0
  for i in $(seq "$CONNECTS"); do tls_pub valid || fails=$((fails + 1)); done
  now_us t1; c1=$(cpu_ms)
  [ "$fails" = 0 ] || fail "$1: $fails of $CONNECTS mTLS connects with the valid certificate failed"
  CL_WALL_MS=$(ms "$t0" "$t1")
  CL_PER_MS=$(awk -v w="$CL_WALL_MS" -v n="$CONNECTS" 'BEGIN{printf "%.2f", w/n}')
  CL_CPU_MS=$(( c1 - c0 ))
  CL_CPU_PER=$(awk -v c="$CL_CPU_MS" -v n="$CONNECTS" 'BEGIN{printf "%.2f", c/n}')
  log "$1: $CONNECTS mTLS connects in $CL_WALL_MS ms ($CL_PER_MS ms each), broker CPU $CL_CPU_MS ms ($CL_CPU_PER ms per connect)"
}

# The probe: a subscriber and a publisher on the plain listener; the publisher sends its send time
# every 10 ms, the subscriber prints receive time and payload. While the broker is busy reloading,
# nothing is delivered: the largest send->receive latency is how long it stopped serving.
probe_start() {
  : > "$W/probe.txt"; rm -f "$W/probe.fifo"; mkfifo "$W/probe.fifo"
  mosquitto_sub -h 127.0.0.1 -p "$PLAINPORT" -u probe -P "$PW" -i probe:sub -t bench/probe -F '%U %p' \
    > "$W/probe.txt" 2>>"$W/client.err" &
  PROBE_PIDS="$!"
  mosquitto_pub -h 127.0.0.1 -p "$PLAINPORT" -u probe -P "$PW" -i probe:pub -t bench/probe -l \
    < "$W/probe.fifo" 2>>"$W/client.err" &
  PROBE_PIDS="$PROBE_PIDS $!"
  ( trap 'exit 0' PIPE TERM; while printf '%s\n' "$EPOCHREALTIME"; do read -r -t 0.01 -u 9 _; done ) > "$W/probe.fifo" 2>/dev/null &
  PROBE_PIDS="$PROBE_PIDS $!"
  local i
  for i in $(seq 500); do [ "$(wc -l < "$W/probe.txt")" -ge 100 ] && return 0; pause 0.02; done
  die "probe: no messages flowing"
}

reload() { # label: SIGHUP with the probe running; a fresh mTLS connect is fired right after the signal
  local c0 c1 th th_us t deadline rss0 fresh_pid
  probe_start
  rss0=$(rss_kb); c0=$(cpu_ms)
  th=$EPOCHREALTIME; th_us=${th/./}
  kill -HUP "$BROKER_PID"
  ( now_us a; tls_pub valid; rc=$?; now_us b; echo "$rc $(ms "$a" "$b")" > "$W/fresh.txt" ) &
  fresh_pid=$!
  deadline=$(( th_us + 60000000 ))
  while :; do   # until a probe message sent 0.2 s after the signal has come through
    awk -v h="$th" 'BEGIN{ok=1} $2 > h + 0.2 {ok=0; exit} END{exit ok}' "$W/probe.txt" && break
    now_us t; [ "$t" -lt "$deadline" ] || die "$1: broker still not serving 60 s after SIGHUP"
    pause 0.02
  done
  wait "$fresh_pid"
  pause 0.2
  stop_probe
  c1=$(cpu_ms)
  read -r RL_BASE_MS RL_BLOCK_MS RL_GAP_MS RL_MSGS < <(awk -v h="$th" '
    { lat = $1 - $2
      if ($2 < h - 0.5) { if (lat > base) base = lat; next }
      n++; if (lat > max) max = lat
      if (prev != "" && $1 - prev > gap) gap = $1 - prev
      prev = $1 }
    END { printf "%.1f %.1f %.1f %d\n", base * 1000, max * 1000, gap * 1000, n }' "$W/probe.txt")
  read -r RL_FRESH_RC RL_FRESH_MS < "$W/fresh.txt"
  RL_CPU_MS=$(( c1 - c0 ))
  RL_RSS_BEFORE=$rss0; RL_RSS_AFTER=$(rss_kb)
  STALLS+=("$RL_BLOCK_MS")
  [ "$RL_FRESH_RC" = 0 ] || fail "$1: fresh mTLS connect with the valid certificate after SIGHUP failed (rc $RL_FRESH_RC)"
  log "$1: broker unresponsive for max $RL_BLOCK_MS ms (latency before: max $RL_BASE_MS ms; largest delivery gap $RL_GAP_MS ms; $RL_MSGS probe messages), reload CPU ${RL_CPU_MS} ms, fresh mTLS connect after SIGHUP $RL_FRESH_MS ms (rc $RL_FRESH_RC), RSS $rss0 -> $RL_RSS_AFTER kB"
}

# A subscriber connected with dev-revoked's certificate before its revocation: is it still
# connected, and still served, after the CRL that revokes it has been loaded?
existing_start() {
  : > "$W/existing.txt"
  timeout 120 stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$TLSPORT" --cafile "$W/ca1/ca.pem" --cert "$W/revoked.pem" \
    --key "$W/revoked.key" -i existing-revoked -t bench/existing -C 1 -d -V mqttv5 > "$W/existing.txt" 2>&1 &
  EXISTING_PID=$!
  local i
  for i in $(seq 250); do grep -q SUBACK "$W/existing.txt" && return 0; pause 0.02; done
  fail "existing session: dev-revoked could not subscribe before its revocation"
}
existing_check() {
  local i t0 t1 kicked=""
  now_us t0
  timeout 10 mosquitto_pub -h 127.0.0.1 -p "$PLAINPORT" -u probe -P "$PW" -i probe:existing -t bench/existing \
    -m after-revocation -q 1 >/dev/null 2>&1
  for i in $(seq 250); do
    grep -q 'Received DISCONNECT (152)' "$W/existing.txt" && { now_us t1; kicked=$(ms "$t0" "$t1"); break; }
    kill -0 "$EXISTING_PID" 2>/dev/null || break; pause 0.02
  done
  kill "$EXISTING_PID" 2>/dev/null; wait "$EXISTING_PID" 2>/dev/null; EXISTING_PID=""
  if grep -qx after-revocation "$W/existing.txt"; then
    put existing_session_of_revoked_cert "still connected and served after SIGHUP"
  elif [ -n "$kicked" ]; then
    put existing_session_of_revoked_cert "not served; disconnected by the broker (DISCONNECT 152) within $kicked ms of the next publish to it"
  else
    put existing_session_of_revoked_cert "disconnected or not served"
  fi
  log "session opened with dev-revoked before its revocation: ${R[existing_session_of_revoked_cert]}"
}

# ================================================================= setup
log "work directory $W; ports TLS $TLSPORT, plain $PLAINPORT; N = $N; designs: $DESIGNS; $(nproc) cores; $("$MOSQUITTO" -h 2>&1 | head -1); $(openssl version)"
if [[ " $DESIGNS " == *" plugin "* ]]; then
  gcc -std=c99 -shared -fPIC -O2 -Wall -Wextra -Werror -I"$ROOT/Sources/EscrowBrokerPlugin/include" \
    -o "$W/libEscrowBrokerPlugin.so" "$ROOT/Sources/EscrowBrokerPlugin/escrow_broker_plugin.c" -lcrypto \
    2>"$W/gcc.log" || { cat "$W/gcc.log" >&2; die "the plugin does not build"; }
fi
make_ca "$W/ca1" "Bench Provisioner CA"
make_ca "$W/ca2" "Bench Owner CA"
issue "$W/ca1" broker "$W/server" server >/dev/null
cat "$W/server.pem" "$W/ca1/ca.pem" > "$W/server-chain.pem"   # as installServerIdentity: cert + CA
VALID_SERIAL=$(issue "$W/ca1" dev-valid "$W/valid" client)
REVOKED_SERIAL=$(issue "$W/ca1" dev-revoked "$W/revoked" client)
[ -n "$VALID_SERIAL" ] && [ -n "$REVOKED_SERIAL" ] && [ -s "$W/server.pem" ] || die "certificates"
issue "$W/ca2" dev-owner "$W/owner" client >/dev/null
for k in $(seq "$RELOADS"); do issue "$W/ca1" "dev-hold-$k" "$W/hold-$k" client >/dev/null; done
install_file "$W/server-chain.pem" server.pem; install_file "$W/server.key" server.key
install_file "$W/ca1/ca.pem" ca.pem
T=$(date +%s)
LU_BASE=$(utc $((T - 900))); LU_NEWER=$(utc $((T - 800)))   # explicit lastUpdate values, all in the past

# index files: small (1 synthetic entry), big (N), each optionally + the revoked client
synthetic_index 1 "$W/index-small"
{ cat "$W/index-small"; revoked_line "$REVOKED_SERIAL" dev-revoked; } > "$W/index-small-rev"
now_us a; synthetic_index "$N" "$W/index-big"; now_us b
INDEX_WRITE_MS=$(ms "$a" "$b")
{ cat "$W/index-big"; revoked_line "$REVOKED_SERIAL" dev-revoked; } > "$W/index-big-rev"
: > "$W/index-empty"
gencrl "$W/ca2" "$W/index-empty" "$W/crl-ca2.pem" "$LU_BASE"

hold_session() { # k: one more idle mTLS session (its own certificate, CN dev-hold-k), kept open
  timeout 600 stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$TLSPORT" --cafile "$W/ca1/ca.pem" --cert "$W/hold-$1.pem" \
    --key "$W/hold-$1.key" -i "hold-$1" -t "bench/hold/$1" -d > "$W/hold-$1.txt" 2>&1 &
  HOLD_PIDS="$HOLD_PIDS $!"
  local i
  for i in $(seq 250); do grep -q SUBACK "$W/hold-$1.txt" && return 0; pause 0.02; done
  fail "could not open held session $1"
}

# ================================================================= design crl
design_crl() {
DESIGN=crl; BLOG=$W/broker-crl.log; write_conf crl
gencrl "$W/ca1" "$W/index-small" "$W/crl-small.pem" "$LU_BASE"
now_us a; gencrl "$W/ca1" "$W/index-big" "$W/crl-big.pem" "$LU_BASE"; now_us b
put revoked_entries "$N"
put crl_index_write_ms "$INDEX_WRITE_MS"
put crl_gen_ms "$(ms "$a" "$b")"
put crl_file_bytes "$(stat -c %s "$W/crl-big.pem")"
put crl_entries_check "$(openssl crl -in "$W/crl-big.pem" -noout -text | grep -c 'Serial Number:')"
[ "${R[crl_entries_check]}" = "$N" ] || die "CRL has ${R[crl_entries_check]} entries, expected $N"
log "index for $N serials written in ${R[crl_index_write_ms]} ms; openssl ca -gencrl ${R[crl_gen_ms]} ms; CRL ${R[crl_file_bytes]} bytes PEM"

# ----------------------------------------------------------------- phase S: 1-entry CRL
install_file "$W/ca1/ca.pem" ca.pem
install_file "$W/crl-small.pem" crl.pem
start_broker "small CRL"
put small_startup_tcp_ms "$START_TCP_MS"; put small_startup_ready_ms "$START_READY_MS"
put small_rss_kb "$(rss_kb)"
connect_loop "small CRL"
put small_connect_wall_ms_each "$CL_PER_MS"; put small_connect_broker_cpu_ms_each "$CL_CPU_PER"
reload "small CRL, unchanged file"
put small_reload_block_ms "$RL_BLOCK_MS"; put small_reload_cpu_ms "$RL_CPU_MS"

[ "$(accepted revoked)" = yes ] || fail "small: dev-revoked refused before it was revoked"
# (a) a CRL that revokes dev-revoked but has the same lastUpdate as the loaded one
gencrl "$W/ca1" "$W/index-small-rev" "$W/crl-small-rev-same.pem" "$LU_BASE"
install_file "$W/crl-small-rev-same.pem" crl.pem; kill -HUP "$BROKER_PID"; sync_broker
put same_lastupdate_crl_applied "$( [ "$(accepted revoked)" = no ] && echo yes || echo no )"
log "CRL with the loaded CRL's lastUpdate, revoking dev-revoked, mv + SIGHUP: revocation applied = ${R[same_lastupdate_crl_applied]}"
# (b) the same revocation in a CRL with a newer lastUpdate
gencrl "$W/ca1" "$W/index-small-rev" "$W/crl-small-rev.pem" "$LU_NEWER"
install_file "$W/crl-small-rev.pem" crl.pem; kill -HUP "$BROKER_PID"; sync_broker
S_REV=$(accepted revoked); S_VALID=$(accepted valid)
put small_revoked_refused_after_sighup "$( [ "$S_REV" = no ] && echo yes || echo no )"
put small_valid_accepted_after_sighup "$S_VALID"
[ "$S_REV" = no ] || fail "small: dev-revoked still accepted after a newer CRL + SIGHUP"
[ "$S_VALID" = yes ] || fail "small: dev-valid refused after SIGHUP"
log "newer CRL revoking dev-revoked, mv + SIGHUP: dev-revoked accepted = $S_REV, dev-valid accepted = $S_VALID"
# (c) a CRL file without the provisioner CA's CRL (mosquitto refuses a CA without a CRL at startup)
install_file "$W/crl-ca2.pem" crl.pem; kill -HUP "$BROKER_PID"; sync_broker
C_VALID=$(accepted valid); C_REV=$(accepted revoked)
put ca_without_crl_after_sighup "$( [ "$C_VALID" = yes ] && echo accepted || echo refused )"
# meaningful only if dev-valid is still accepted (else the CA is refused as a whole)
put dropped_crl_still_enforced_after_sighup "$( [ "$C_VALID" = no ] && echo n/a || { [ "$C_REV" = no ] && echo yes || echo no; } )"
log "crlfile rewritten without the CA's CRL, SIGHUP: dev-valid ${R[ca_without_crl_after_sighup]}, old revocation still enforced = ${R[dropped_crl_still_enforced_after_sighup]}"
# (d) a new CA appended to cafile, its CRL to crlfile
cat "$W/ca1/ca.pem" "$W/ca2/ca.pem" > "$W/bundle2.pem"; cat "$W/crl-small-rev.pem" "$W/crl-ca2.pem" > "$W/crls2.pem"
[ "$(accepted owner)" = no ] || fail "small: dev-owner accepted before its CA was trusted"
install_file "$W/bundle2.pem" ca.pem; install_file "$W/crls2.pem" crl.pem; kill -HUP "$BROKER_PID"; sync_broker
put new_ca_trusted_after_sighup "$(accepted owner)"
log "CA appended to cafile (+ its CRL), SIGHUP: dev-owner accepted = ${R[new_ca_trusted_after_sighup]}"
grep -q "Error when reloading" "$BLOG" && log "broker log: $(grep "Error when reloading" "$BLOG" | tail -1)"
# (e) an unreadable crlfile (empty) on SIGHUP: at startup mosquitto refuses to start with one
: > "$W/crl-empty.pem"; install_file "$W/crl-empty.pem" crl.pem; kill -HUP "$BROKER_PID"; sync_broker
E_VALID=$(accepted valid); E_REV=$(accepted revoked)
put invalid_crlfile_on_sighup "dev-valid $( [ "$E_VALID" = yes ] && echo accepted || echo refused ), revoked dev-revoked $( [ "$E_REV" = yes ] && echo accepted || echo refused )"
log "empty crlfile, SIGHUP: ${R[invalid_crlfile_on_sighup]}; broker log: $(grep -c 'Unable to load certificate revocation file' "$BLOG") 'Unable to load certificate revocation file' errors"
install_file "$W/crls2.pem" crl.pem
# control: a restart with the same files
stop_broker; start_broker "small CRL, restart (control)"
put restart_new_ca_trusted "$(accepted owner)"
put restart_revoked_refused "$( [ "$(accepted revoked)" = no ] && echo yes || echo no )"
install_file "$W/crl-ca2.pem" crl.pem; stop_broker
"$MOSQUITTO" -c "$B/mosquitto.conf" >> "$BLOG" 2>&1 & BROKER_PID=$!
for i in $(seq 200); do tcp_open "$PLAINPORT" && break; kill -0 "$BROKER_PID" 2>/dev/null || break; pause 0.02; done
put restart_ca_without_crl "$( tls_pub valid && echo accepted || echo refused )"
stop_broker
log "control restart: dev-owner accepted = ${R[restart_new_ca_trusted]}, dev-revoked refused = ${R[restart_revoked_refused]}; provisioner CA without CRL at startup: dev-valid ${R[restart_ca_without_crl]}"
# the same empty crlfile at startup
install_file "$W/crl-empty.pem" crl.pem
"$MOSQUITTO" -c "$B/mosquitto.conf" >> "$BLOG" 2>&1 & BROKER_PID=$!
for i in $(seq 250); do kill -0 "$BROKER_PID" 2>/dev/null || break; tcp_open "$PLAINPORT" && break; pause 0.02; done
if kill -0 "$BROKER_PID" 2>/dev/null; then put startup_with_invalid_crlfile "runs"; stop_broker
else wait "$BROKER_PID"; put startup_with_invalid_crlfile "refuses to start (exit $?)"; BROKER_PID=""; fi
log "empty crlfile at startup: broker ${R[startup_with_invalid_crlfile]}"
install_file "$W/ca1/ca.pem" ca.pem

# ----------------------------------------------------------------- phase B: N-entry CRL
install_file "$W/crl-big.pem" crl.pem
STALLS=()
start_broker "big CRL"
put big_startup_tcp_ms "$START_TCP_MS"; put big_startup_ready_ms "$START_READY_MS"
put big_rss_kb "$(rss_kb)"
put rss_cost_of_crl_kb $(( R[big_rss_kb] - R[small_rss_kb] ))
connect_loop "big CRL"
put big_connect_wall_ms_each "$CL_PER_MS"; put big_connect_broker_cpu_ms_each "$CL_CPU_PER"
put extra_broker_cpu_ms_per_connect "$(awk -v a="${R[big_connect_broker_cpu_ms_each]}" -v b="${R[small_connect_broker_cpu_ms_each]}" 'BEGIN{printf "%.2f", a-b}')"
reload "big CRL, unchanged file"
put big_reload_unchanged_block_ms "$RL_BLOCK_MS"; put big_reload_unchanged_cpu_ms "$RL_CPU_MS"
put big_reload_unchanged_rss_growth_kb $(( RL_RSS_AFTER - RL_RSS_BEFORE ))

[ "$(accepted revoked)" = yes ] || fail "big: dev-revoked refused before it was revoked"
existing_start
now_us a; gencrl "$W/ca1" "$W/index-big-rev" "$W/crl-big-rev.pem" "$LU_NEWER"; now_us b
put crl_regen_ms "$(ms "$a" "$b")"
install_file "$W/crl-big-rev.pem" crl.pem
reload "big CRL, revocation of dev-revoked"
RSS_PRE=$RL_RSS_BEFORE
put big_reload_block_ms "$RL_BLOCK_MS"; put big_reload_delivery_gap_ms "$RL_GAP_MS"; put big_reload_cpu_ms "$RL_CPU_MS"
put big_fresh_mtls_connect_after_sighup_ms "$RL_FRESH_MS"
put big_reload_rss_growth_kb $(( RL_RSS_AFTER - RL_RSS_BEFORE ))
B_REV=$(accepted revoked); B_VALID=$(accepted valid)
put revoked_refused_after_sighup "$( [ "$B_REV" = no ] && echo yes || echo no )"
put valid_accepted_after_sighup "$B_VALID"
[ "$B_REV" = no ] || fail "big: dev-revoked still accepted after the CRL was rewritten and the broker got SIGHUP"
[ "$B_VALID" = yes ] || fail "big: dev-valid refused after SIGHUP"
log "after revocation + SIGHUP: dev-revoked accepted = $B_REV, dev-valid accepted = $B_VALID"
existing_check
# Memory across reloads. SIGHUP replaces the device listener's SSL_CTX (and with it the
# X509_STORE holding the CRL) by a new one, but every TLS connection keeps a reference to the
# SSL_CTX it was accepted on: a CRL generation stays in memory while any session accepted under
# it is connected. First RELOADS changed-CRL reloads with no TLS session open, then RELOADS more
# where one more long-lived mTLS session connects before each reload and stays (devices that
# stay connected for days), then one after those sessions have gone.
RSS_FIRST=$(rss_kb); BLOCK_MAX=${R[big_reload_block_ms]}; PEAK=$RSS_FIRST; GEN=0
next_crl() {
  GEN=$((GEN + 1))
  gencrl "$W/ca1" "$W/index-big-rev" "$W/crl-big-gen.pem" "$(utc $((T - 800 + 10 * GEN)))"
  install_file "$W/crl-big-gen.pem" crl.pem
}
after_reload() {
  BLOCK_MAX=$(awk -v a="$BLOCK_MAX" -v b="$RL_BLOCK_MS" 'BEGIN{print (b > a ? b : a)}')
  [ "$RL_RSS_AFTER" -gt "$PEAK" ] && PEAK=$RL_RSS_AFTER
  [ "$(accepted revoked)" = no ] || fail "big: dev-revoked accepted after reload $1"
}
for k in $(seq "$RELOADS"); do
  next_crl; reload "big CRL, changed-file reload $k of $RELOADS, no TLS session open"; after_reload "$k"
done
RSS_NOSESS=$(rss_kb)
for k in $(seq "$RELOADS"); do
  hold_session "$k"
  next_crl; reload "big CRL, changed-file reload $k of $RELOADS, $k mTLS sessions held"; after_reload "held $k"
done
RSS_HELD=$(rss_kb)
grep -q "as dev-hold-$RELOADS " "$BLOG" && ! grep -q "Client dev-hold-1 disconnected" "$BLOG" \
  || fail "a held session was disconnected by a reload"
release_sessions
next_crl; reload "big CRL, changed-file reload after the held sessions closed"; after_reload "after release"
put big_rss_after_revocation_kb "$RSS_FIRST"
put big_rss_after_reloads_no_session_kb "$RSS_NOSESS"
put big_rss_after_reloads_sessions_held_kb "$RSS_HELD"
put rss_retained_per_reload_with_session_held_kb $(( RELOADS > 0 ? (RSS_HELD - RSS_NOSESS) / RELOADS : 0 ))
put big_rss_after_sessions_closed_kb "$(rss_kb)"
put big_rss_peak_kb "$PEAK"
put crl_rss_peak_cost_kb $(( PEAK - R[small_rss_kb] ))
put changed_reloads "$(( 2 * RELOADS + 2 ))"
put big_reload_block_max_ms "$BLOCK_MAX"
# A SIGHUP that arrives while the broker is reloading. mosquitto's handler only sets a flag, and
# the main loop clears it when the reload ends, so such a signal is dropped. escrowd swaps the CRL
# and signals after every ack flush that has a revocation, which can be 100 ms apart. Each
# attempt: the CRL without dev-revoked is loaded; SIGHUP 1; D ms later the CRL that revokes
# dev-revoked is swapped in and SIGHUP 2 sent; once the broker answers, is dev-revoked refused?
RACE_OK=""; RACE_LOST=""
for d in 50 100 150 200 250 300 400; do
  install_file "$W/crl-big.pem" crl.pem; kill -HUP "$BROKER_PID"; sync_broker
  [ "$(accepted revoked)" = yes ] || { fail "race: dev-revoked refused under the CRL without it"; break; }
  kill -HUP "$BROKER_PID"; pause "0.$(printf %03d "$d")"
  install_file "$W/crl-big-rev.pem" crl.pem; kill -HUP "$BROKER_PID"; sync_broker
  if [ "$(accepted revoked)" = no ]; then RACE_OK="$RACE_OK $d"; else RACE_LOST="$RACE_LOST $d"; fi
done
put sighup_during_reload "revocation applied at offsets${RACE_OK:- none} ms; LOST (revoked cert still accepted, broker idle) at${RACE_LOST:- none} ms"
log "SIGHUP sent during a reload: ${R[sighup_during_reload]}"
stop_broker
start_broker "big CRL, restart with the final file"
put big_rss_fresh_restart_kb "$(rss_kb)"
stop_broker

read -r p50 pmax pn < <(stall_stats)
put big_reload_block_p50_ms "$p50 (over $pn reloads with the N-entry CRL)"
block=${R[big_reload_block_max_ms]}; mem_kb=$(( R[crl_rss_peak_cost_kb] > R[rss_cost_of_crl_kb] ? R[crl_rss_peak_cost_kb] : R[rss_cost_of_crl_kb] ))
put bar_reload_block_1s "$(awk -v b="$block" 'BEGIN{print (b <= 1000 ? "PASS" : "FAIL")}') (max ${block} ms)"
put bar_memory_50mb "$( [ "$mem_kb" -le 51200 ] && echo PASS || echo FAIL ) (CRL resident at start ${R[rss_cost_of_crl_kb]} kB; peak over the run ${R[crl_rss_peak_cost_kb]} kB above the 1-entry broker; +${R[rss_retained_per_reload_with_session_held_kb]} kB kept per reload while a session from before it stays connected)"
put sighup_rereads_crlfile "$( [ "${R[revoked_refused_after_sighup]}" = yes ] && echo yes || echo no )"
put correctness "$( [ "$FAILED" = 0 ] && echo PASS || echo FAIL )"
save_design crl
}

# ================================================================= design plugin
# The serials in the plugin's revoked file (BN_bn2hex lowercased, sorted, one per line, as
# BrokerLayout.installTrust writes it); every CA gets an empty CRL.
revoked_file() { # out [extra serial...]: the N synthetic serials plus the given ones
  { echo "# Generated by EscrowFleet: revoked certificate serials, enforced by the broker plugin."
    { cut -f4 "$W/index-big"; local x; for x in "${@:2}"; do echo "$x"; done; } | tr A-F a-f | sort
  } > "$1"
}
plugin_loaded() { # last "loaded|reloaded revoked file" line of the broker log: "<serials> <ms>"
  grep -E 'escrow_broker_plugin: (re)?loaded revoked file' "$BLOG" | tail -1 |
    sed -E 's/.*": ([0-9]+) serials from .* in ([0-9.]+) ms$/\1 \2/'
}
design_plugin() {
DESIGN=plugin; BLOG=$W/broker-plugin.log; write_conf plugin
local rev_lc; rev_lc=$(tr A-F a-f <<<"$REVOKED_SERIAL")
gencrl "$W/ca1" "$W/index-empty" "$W/crl-ca1-empty.pem" "$LU_BASE"
[ "$(openssl crl -in "$W/crl-ca1-empty.pem" -noout -text | grep -c 'Serial Number:')" = 0 ] || die "CRL not empty"
{ echo "# Generated by EscrowFleet: revoked certificate serials, enforced by the broker plugin."; } > "$W/revoked-empty"
now_us a; revoked_file "$W/revoked-big"; now_us b
revoked_file "$W/revoked-big-rev" "$rev_lc"
put revoked_entries "$N"
put revoked_file_write_ms "$(ms "$a" "$b")"
put revoked_file_bytes "$(stat -c %s "$W/revoked-big")"
log "plugin design: revoked file with $N serials written in ${R[revoked_file_write_ms]} ms, ${R[revoked_file_bytes]} bytes; CRLs empty"
install_file "$W/ca1/ca.pem" ca.pem
install_file "$W/crl-ca1-empty.pem" crl.pem

# ----------------------------------------------------------------- phase P0: no serial
install_file "$W/revoked-empty" revoked
start_broker "plugin, 0 serials"
put small_startup_tcp_ms "$START_TCP_MS"; put small_startup_ready_ms "$START_READY_MS"
put small_rss_kb "$(rss_kb)"
connect_loop "plugin, 0 serials"
put small_connect_wall_ms_each "$CL_PER_MS"; put small_connect_broker_cpu_ms_each "$CL_CPU_PER"
reload "plugin, 0 serials, unchanged files"
put small_reload_block_ms "$RL_BLOCK_MS"; put small_reload_cpu_ms "$RL_CPU_MS"
[ "$(accepted revoked)" = yes ] || fail "plugin: dev-revoked refused before it was revoked"
# a new CA appended to cafile, its (empty) CRL to crlfile: trusted after SIGHUP?
[ "$(accepted owner)" = no ] || fail "plugin: dev-owner accepted before its CA was trusted"
cat "$W/ca1/ca.pem" "$W/ca2/ca.pem" > "$W/bundle2.pem"; cat "$W/crl-ca1-empty.pem" "$W/crl-ca2.pem" > "$W/crls2-empty.pem"
install_file "$W/bundle2.pem" ca.pem; install_file "$W/crls2-empty.pem" crl.pem; kill -HUP "$BROKER_PID"; sync_broker
put new_ca_trusted_after_sighup "$(accepted owner)"
[ "${R[new_ca_trusted_after_sighup]}" = yes ] || fail "plugin: a CA appended to cafile is not trusted after SIGHUP"
log "plugin: CA appended to cafile (+ its empty CRL), SIGHUP: dev-owner accepted = ${R[new_ca_trusted_after_sighup]}"
install_file "$W/ca1/ca.pem" ca.pem; install_file "$W/crl-ca1-empty.pem" crl.pem; kill -HUP "$BROKER_PID"; sync_broker
stop_broker

# ----------------------------------------------------------------- phase P1: N serials
install_file "$W/revoked-big" revoked
STALLS=()
start_broker "plugin, $N serials"
put big_startup_tcp_ms "$START_TCP_MS"; put big_startup_ready_ms "$START_READY_MS"
read -r n_loaded load_ms < <(plugin_loaded)
[ "$n_loaded" = "$N" ] || die "plugin loaded $n_loaded serials, expected $N"
put revoked_load_ms "$load_ms"
put big_rss_kb "$(rss_kb)"
put rss_cost_of_revoked_kb $(( R[big_rss_kb] - R[small_rss_kb] ))
connect_loop "plugin, $N serials"
put big_connect_wall_ms_each "$CL_PER_MS"; put big_connect_broker_cpu_ms_each "$CL_CPU_PER"
put extra_broker_cpu_ms_per_connect "$(awk -v a="${R[big_connect_broker_cpu_ms_each]}" -v b="${R[small_connect_broker_cpu_ms_each]}" 'BEGIN{printf "%.2f", a-b}')"
reload "plugin, $N serials, unchanged files"
put big_reload_unchanged_block_ms "$RL_BLOCK_MS"; put big_reload_unchanged_cpu_ms "$RL_CPU_MS"
put big_reload_unchanged_rss_growth_kb $(( RL_RSS_AFTER - RL_RSS_BEFORE ))
read -r n_loaded load_ms < <(plugin_loaded); put revoked_reload_ms "$load_ms"

[ "$(accepted revoked)" = yes ] || fail "plugin: dev-revoked refused before it was revoked"
existing_start
install_file "$W/revoked-big-rev" revoked
reload "plugin, revocation of dev-revoked"
put big_reload_block_ms "$RL_BLOCK_MS"; put big_reload_delivery_gap_ms "$RL_GAP_MS"; put big_reload_cpu_ms "$RL_CPU_MS"
put big_fresh_mtls_connect_after_sighup_ms "$RL_FRESH_MS"
put big_reload_rss_growth_kb $(( RL_RSS_AFTER - RL_RSS_BEFORE ))
read -r n_loaded load_ms < <(plugin_loaded)
[ "$n_loaded" = $((N + 1)) ] || fail "plugin: reloaded $n_loaded serials, expected $((N + 1))"
# First the session from before the revocation (a new connection with the same certificate would
# take its client id over, the CN, and close it).
existing_check
case "${R[existing_session_of_revoked_cert]}" in *"DISCONNECT 152"*) ;; *) fail "plugin: the session opened before the revocation was not kicked" ;; esac
B_REV=$(accepted revoked); B_VALID=$(accepted valid)
put revoked_refused_after_sighup "$( [ "$B_REV" = no ] && echo yes || echo no )"
put valid_accepted_after_sighup "$B_VALID"
[ "$B_REV" = no ] || fail "plugin: dev-revoked still served after the revoked file was rewritten and the broker got SIGHUP"
[ "$B_VALID" = yes ] || fail "plugin: dev-valid refused after SIGHUP"
grep -q "revoked certificate serial $rev_lc for client \"dev-revoked\"" "$BLOG" || fail "plugin: no log line for dev-revoked"
log "after revocation + SIGHUP: dev-revoked served = $B_REV, dev-valid served = $B_VALID"
# Memory across reloads, as in the CRL design: RELOADS changed-file reloads with no TLS session
# open, RELOADS more with one more long-lived mTLS session connected before each, one after.
RSS_FIRST=$(rss_kb); BLOCK_MAX=${R[big_reload_block_ms]}; PEAK=$RSS_FIRST; GEN=0
next_revoked() { GEN=$((GEN + 1)); revoked_file "$W/revoked-gen" "$rev_lc" $(for g in $(seq "$GEN"); do printf 'fe%030x\n' "$g"; done); install_file "$W/revoked-gen" revoked; }
after_reload_p() {
  BLOCK_MAX=$(awk -v a="$BLOCK_MAX" -v b="$RL_BLOCK_MS" 'BEGIN{print (b > a ? b : a)}')
  [ "$RL_RSS_AFTER" -gt "$PEAK" ] && PEAK=$RL_RSS_AFTER
  [ "$(accepted revoked)" = no ] || fail "plugin: dev-revoked served after reload $1"
}
for k in $(seq "$RELOADS"); do
  next_revoked; reload "plugin, changed-file reload $k of $RELOADS, no TLS session open"; after_reload_p "$k"
done
RSS_NOSESS=$(rss_kb)
for k in $(seq "$RELOADS"); do
  hold_session "$k"
  next_revoked; reload "plugin, changed-file reload $k of $RELOADS, $k mTLS sessions held"; after_reload_p "held $k"
done
RSS_HELD=$(rss_kb)
grep -q "as dev-hold-$RELOADS " "$BLOG" && ! grep -q "Client dev-hold-1 disconnected" "$BLOG" \
  || fail "plugin: a held session was disconnected by a reload"
release_sessions
next_revoked; reload "plugin, changed-file reload after the held sessions closed"; after_reload_p "after release"
put big_rss_after_revocation_kb "$RSS_FIRST"
put big_rss_after_reloads_no_session_kb "$RSS_NOSESS"
put big_rss_after_reloads_sessions_held_kb "$RSS_HELD"
put rss_retained_per_reload_with_session_held_kb $(( RELOADS > 0 ? (RSS_HELD - RSS_NOSESS) / RELOADS : 0 ))
put big_rss_after_sessions_closed_kb "$(rss_kb)"
put big_rss_peak_kb "$PEAK"
put revoked_rss_peak_cost_kb $(( PEAK - R[small_rss_kb] ))
put changed_reloads "$(( 2 * RELOADS + 2 ))"
put big_reload_block_max_ms "$BLOCK_MAX"
# A SIGHUP that arrives while the broker is reloading (see the CRL design): the revoked file
# without dev-revoked is loaded; SIGHUP 1; D ms later the file that revokes it is swapped in and
# SIGHUP 2 sent; once the broker answers, is dev-revoked refused?
RACE_OK=""; RACE_LOST=""
for d in 50 100 150 200 250 300 400; do
  install_file "$W/revoked-big" revoked; kill -HUP "$BROKER_PID"; sync_broker
  [ "$(accepted revoked)" = yes ] || { fail "plugin race: dev-revoked refused under the file without it"; break; }
  kill -HUP "$BROKER_PID"; pause "0.$(printf %03d "$d")"
  install_file "$W/revoked-big-rev" revoked; kill -HUP "$BROKER_PID"; sync_broker
  if [ "$(accepted revoked)" = no ]; then RACE_OK="$RACE_OK $d"; else RACE_LOST="$RACE_LOST $d"; fi
done
put sighup_during_reload "revocation applied at offsets${RACE_OK:- none} ms; LOST (revoked cert still served, broker idle) at${RACE_LOST:- none} ms"
log "SIGHUP sent during a reload: ${R[sighup_during_reload]}"
stop_broker
start_broker "plugin, restart with the final file"
put big_rss_fresh_restart_kb "$(rss_kb)"
stop_broker

read -r p50 pmax pn < <(stall_stats)
put big_reload_block_p50_ms "$p50 (over $pn reloads with $N serials)"
block=${R[big_reload_block_max_ms]}; mem_kb=$(( R[revoked_rss_peak_cost_kb] > R[rss_cost_of_revoked_kb] ? R[revoked_rss_peak_cost_kb] : R[rss_cost_of_revoked_kb] ))
put bar_reload_block_1s "$(awk -v b="$block" 'BEGIN{print (b <= 1000 ? "PASS" : "FAIL")}') (max ${block} ms)"
put bar_memory_50mb "$( [ "$mem_kb" -le 51200 ] && echo PASS || echo FAIL ) (revoked set resident at start ${R[rss_cost_of_revoked_kb]} kB; peak over the run ${R[revoked_rss_peak_cost_kb]} kB above the 0-serial broker; +${R[rss_retained_per_reload_with_session_held_kb]} kB kept per reload while a session from before it stays connected)"
put correctness "$( [ "$FAILED" = 0 ] && echo PASS || echo FAIL )"
save_design plugin
}

# ================================================================= run and summary
for d in $DESIGNS; do "design_$d"; done
echo
echo "== crl-scale summary (mosquitto $("$MOSQUITTO" -h 2>&1 | head -1 | awk '{print $3}'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); N = $N; designs: $DESIGNS) =="
for k in "${ALL_ORDER[@]}"; do printf '%s: %s\n' "$k" "${ALL[$k]}"; done
# Side by side (Markdown), for docs/BENCHMARKS.md.
v() { local x=${ALL[$1.$2]:-}; [ -n "$x" ] && printf '%s' "$x" || printf '—'; }
mb() { local x=${ALL[$1.$2]:-}; [ -n "$x" ] && awk -v k="$x" 'BEGIN{printf "%.1f MB", k/1024}' || printf '—'; }
dmb() { local x=${ALL[$1.$2]:-}; [ -n "$x" ] && awk -v k="$x" 'BEGIN{printf "%+.1f MB", k/1024}' || printf '—'; }
row() { printf '| %s | %s | %s |\n' "$1" "$2" "$3"; }
echo
echo "| $N revoked serials | CRL design | plugin-set design |"
echo "|---|---|---|"
row "revocation data" "CRL $(v crl crl_file_bytes) B PEM, gencrl $(v crl crl_gen_ms) ms" "revoked file $(v plugin revoked_file_bytes) B; loaded in $(v plugin revoked_load_ms) ms (reload $(v plugin revoked_reload_ms) ms)"
row "broker RSS at rest: baseline / with the N serials" "$(mb crl small_rss_kb) / $(mb crl big_rss_kb) ($(dmb crl rss_cost_of_crl_kb))" "$(mb plugin small_rss_kb) / $(mb plugin big_rss_kb) ($(dmb plugin rss_cost_of_revoked_kb))"
row "first mTLS CONNACK after start" "$(v crl big_startup_ready_ms) ms" "$(v plugin big_startup_ready_ms) ms"
row "SIGHUP stall (probe), p50 / max" "$(v crl big_reload_block_p50_ms | sed 's/ (.*//') / $(v crl big_reload_block_max_ms) ms" "$(v plugin big_reload_block_p50_ms | sed 's/ (.*//') / $(v plugin big_reload_block_max_ms) ms"
row "reload CPU (revocation reload)" "$(v crl big_reload_cpu_ms) ms" "$(v plugin big_reload_cpu_ms) ms"
row "fresh mTLS connect fired right after SIGHUP" "$(v crl big_fresh_mtls_connect_after_sighup_ms) ms" "$(v plugin big_fresh_mtls_connect_after_sighup_ms) ms"
row "broker CPU per mTLS connect: baseline / N serials" "$(v crl small_connect_broker_cpu_ms_each) / $(v crl big_connect_broker_cpu_ms_each) ms (+$(v crl extra_broker_cpu_ms_per_connect))" "$(v plugin small_connect_broker_cpu_ms_each) / $(v plugin big_connect_broker_cpu_ms_each) ms (+$(v plugin extra_broker_cpu_ms_per_connect))"
row "RSS after $RELOADS changed reloads, no session open" "$(mb crl big_rss_after_reloads_no_session_kb)" "$(mb plugin big_rss_after_reloads_no_session_kb)"
row "RSS after $RELOADS more, sessions from before them held" "$(mb crl big_rss_after_reloads_sessions_held_kb) ($(v crl rss_retained_per_reload_with_session_held_kb) kB kept per reload)" "$(mb plugin big_rss_after_reloads_sessions_held_kb) ($(v plugin rss_retained_per_reload_with_session_held_kb) kB kept per reload)"
row "peak RSS above baseline" "$(mb crl crl_rss_peak_cost_kb)" "$(mb plugin revoked_rss_peak_cost_kb)"
row "revoked after start, SIGHUP: new connection refused / valid served" "$(v crl revoked_refused_after_sighup) / $(v crl valid_accepted_after_sighup) (handshake fails)" "$(v plugin revoked_refused_after_sighup) / $(v plugin valid_accepted_after_sighup) (PUBACK 135, then kicked)"
row "session opened before the revocation" "$(v crl existing_session_of_revoked_cert)" "$(v plugin existing_session_of_revoked_cert)"
row "SIGHUP sent 50-400 ms into a reload" "$(v crl sighup_during_reload)" "$(v plugin sighup_during_reload)"
row "bar: reload ≤ 1 s" "$(v crl bar_reload_block_1s)" "$(v plugin bar_reload_block_1s)"
row "bar: memory ≤ 50 MB" "$(v crl bar_memory_50mb | sed 's/ (.*//')" "$(v plugin bar_memory_50mb | sed 's/ (.*//')"
exit "$FAILED"
