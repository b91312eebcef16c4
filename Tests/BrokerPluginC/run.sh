#!/usr/bin/env bash
# Tests/BrokerPluginC/run.sh: builds the EscrowFleet broker plugin
# (Sources/EscrowBrokerPlugin) and tests it in a real Mosquitto 2.0.11 broker
# with real clients (mosquitto_sub, mosquitto_pub), including certificate
# revocation through the plugin's revoked file on a device listener shaped like
# BrokerPlan's (empty CRL, revoked serials in plugin_opt_revoked_file).
#
#   Tests/BrokerPluginC/run.sh          KEEP_WORK=1 keeps the scratch directory
#
# Needs: gcc, mosquitto, mosquitto-clients, mosquitto-dev, openssl.
# The last line printed is "N passed, M failed"; the exit status is 0 only if
# nothing failed. Every wait is bounded. Events are awaited by reading the
# clients' output and the broker log as they are written; the only polls are
# the TCP probe until the broker accepts and the SUBACK retry after a reload.
# Needs libssl-dev too (the plugin links libcrypto).

set -u
export LC_ALL=C
PATH="$PATH:/usr/sbin:/sbin"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SRC="$ROOT/Sources/EscrowBrokerPlugin"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/escrow-broker-plugin.XXXXXX") || exit 1

MAIN_PID=$BASHPID
PASSED=0
FAILED=0
BROKER_PID=
BACKGROUND_PIDS=()
declare -A STREAM_FD STREAM_PID DEVICE_IN
AWAITED=

# ---------------------------------------------------------------- reporting

pass() { PASSED=$((PASSED + 1)); echo "ok   $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1${2:+ ($2)}"; }

# check NAME DETAIL COMMAND...: passes if COMMAND succeeds.
check() {
    local name=$1 detail=$2
    shift 2
    if "$@"; then pass "$name"; else fail "$name" "$detail"; fi
}

finish() {
    if [ "$FAILED" -ne 0 ] || [ -n "${KEEP_WORK:-}" ]; then
        echo "scratch directory kept: $WORK (broker log: $WORK/broker.log)"
    fi
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
    exit
}

fatal() { fail "$1" "${2:-}"; echo "stopping: the remaining cases need this"; finish; }

# Stops a child: SIGTERM, then SIGKILL if it has not exited within 5 s.
stop_pid() {
    local pid=$1 timer exited=
    kill "$pid" 2>/dev/null || return 0
    sleep 5 &
    timer=$!
    wait -n -p exited "$pid" "$timer" 2>/dev/null
    if [ "$exited" != "$pid" ]; then
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    kill -9 "$timer" 2>/dev/null
    wait "$timer" 2>/dev/null
}

# Subshells may briefly inherit these traps (a signal that arrives between
# fork and trap reset runs them there): only the main shell cleans up.
cleanup() {
    local pid
    [ "$BASHPID" = "$MAIN_PID" ] || return 0
    for pid in "${BACKGROUND_PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    [ -n "$BROKER_PID" ] && stop_pid "$BROKER_PID"
    if [ "$FAILED" -eq 0 ] && [ -z "${KEEP_WORK:-}" ]; then
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- time and streams

now_us() { echo "${EPOCHREALTIME/./}"; }
deadline_after() { echo $(($(now_us) + $1 * 1000000)); }

# Seconds left until DEADLINE (microseconds) as "S.UUUUUU"; fails once passed.
seconds_left() {
    local left=$(($1 - $(now_us)))
    [ "$left" -gt 0 ] || return 1
    printf '%d.%06d' $((left / 1000000)) $((left % 1000000))
}

# start_stream NAME COMMAND...: runs COMMAND in the background with its output
# (line buffered) going to a FIFO this shell reads with await_line.
start_stream() {
    local name=$1 fd
    shift
    mkfifo "$WORK/$name.fifo" || return 1
    stdbuf -oL -eL "$@" >"$WORK/$name.fifo" 2>&1 &
    STREAM_PID[$name]=$!
    BACKGROUND_PIDS+=("$!")
    exec {fd}<"$WORK/$name.fifo"
    STREAM_FD[$name]=$fd
}

stop_stream() {
    local name=$1 fd=${STREAM_FD[$1]}
    stop_pid "${STREAM_PID[$name]}"
    exec {fd}<&-
}

# await_line NAME REGEX SECONDS: reads NAME's output until a line matches REGEX
# (it is left in AWAITED). Every line read is kept in $WORK/NAME.out. Fails on
# timeout or when the stream ends.
await_line() {
    local name=$1 pattern=$2 deadline left line
    deadline=$(deadline_after "$3")
    AWAITED=
    while left=$(seconds_left "$deadline"); do
        IFS= read -r -t "$left" -u "${STREAM_FD[$name]}" line || return 1
        printf '%s\n' "$line" >>"$WORK/$name.out"
        if [[ $line =~ $pattern ]]; then
            AWAITED=$line
            return 0
        fi
    done
    return 1
}

# await_count NAME REGEX COUNT SECONDS: reads until COUNT lines matched REGEX.
# The number seen is left in COUNTED.
await_count() {
    local name=$1 pattern=$2 want=$3 deadline left line
    deadline=$(deadline_after "$4")
    COUNTED=0
    while [ "$COUNTED" -lt "$want" ] && left=$(seconds_left "$deadline"); do
        IFS= read -r -t "$left" -u "${STREAM_FD[$name]}" line || return 1
        printf '%s\n' "$line" >>"$WORK/$name.out"
        [[ $line =~ $pattern ]] && COUNTED=$((COUNTED + 1))
    done
    [ "$COUNTED" -eq "$want" ]
}

# await_end NAME SECONDS: reads NAME's output until the stream ends (its
# command exited). Fails on timeout. ENDED_MS: milliseconds it took.
await_end() {
    local name=$1 deadline left line rc start
    start=$(now_us)
    deadline=$(deadline_after "$2")
    while left=$(seconds_left "$deadline"); do
        IFS= read -r -t "$left" -u "${STREAM_FD[$name]}" line
        rc=$?
        [ -n "$line" ] && printf '%s\n' "$line" >>"$WORK/$name.out"
        [ "$rc" -eq 0 ] && continue
        [ "$rc" -gt 128 ] && return 1
        ENDED_MS=$((($(now_us) - start) / 1000))
        return 0
    done
    return 1
}

# timed_await NAME REGEX SECONDS: await_line, leaving in WAITED_MS how long it took.
timed_await() {
    local start rc
    start=$(now_us)
    await_line "$@"
    rc=$?
    WAITED_MS=$((($(now_us) - start) / 1000))
    return "$rc"
}

# ---------------------------------------------------------------- clients

password_of() { echo "pw-$1"; }

# suback USER CLIENT_ID FILTER [ARGS...]: prints the SUBACK codes ("0", "128",
# "128, 1"...) of one subscription, or nothing if there was no SUBACK.
suback() {
    local user=$1 id=$2 filter=$3
    shift 3
    timeout 10 mosquitto_sub -d -h 127.0.0.1 -p "$PORT" -u "$user" -P "$(password_of "$user")" \
        -i "$id" -t "$filter" "$@" -E -W 5 2>&1 | sed -n 's/^Subscribed (mid: [0-9]*): //p' | head -n 1
}

# expect_suback CODES USER FILTER [ARGS...]
expect_suback() {
    local want=$1 user=$2 filter=$3 got
    shift 3
    got=$(suback "$user" "$user" "$filter" "$@")
    if [ "$got" = "$want" ]; then
        pass "SUBACK $want: $user subscribes $filter $*"
    else
        fail "SUBACK $want: $user subscribes $filter $*" "got '${got:-no SUBACK}'"
    fi
}

# connack USER PASSWORD CLIENT_ID [ARGS...]: prints the CONNACK code.
connack() {
    local user=$1 password=$2 id=$3
    shift 3
    timeout 10 mosquitto_sub -d -h 127.0.0.1 -p "$PORT" -u "$user" -P "$password" -i "$id" \
        -t accounts/none "$@" -E -W 5 2>&1 | sed -n 's/.*received CONNACK (\([0-9]*\)).*/\1/p' | head -n 1
}

# expect_connack CODE DESCRIPTION USER PASSWORD CLIENT_ID [ARGS...]
expect_connack() {
    local want=$1 what=$2 got
    shift 2
    got=$(connack "$@")
    if [ "$got" = "$want" ]; then
        pass "CONNACK $want: $what"
    else
        fail "CONNACK $want: $what" "got '${got:-no CONNACK}'"
    fi
}

# publish USER CLIENT_ID TOPIC MESSAGE [ARGS...]: QoS 1, prints the PUBACK
# reason code (MQTT 5) from the client's debug output.
publish() {
    local user=$1 id=$2 topic=$3 message=$4
    shift 4
    timeout 10 mosquitto_pub -d -V mqttv5 -q 1 -h 127.0.0.1 -p "$PORT" -u "$user" \
        -P "$(password_of "$user")" -i "$id" -t "$topic" -m "$message" "$@" 2>&1 |
        sed -n 's/.*received PUBACK (Mid: [0-9]*, RC:\([0-9]*\)).*/\1/p' | head -n 1
}

# tls_sub PORT CLIENT_ID FILTER: a certificate client (CN dev-1); prints
# "CONNACK=<code> SUBACK=<codes>".
tls_sub() {
    local out
    out=$(timeout 10 mosquitto_sub -d -h localhost -p "$1" --cafile "$WORK/tls/ca.crt" \
        --cert "$WORK/tls/dev-1.crt" --key "$WORK/tls/dev-1.key" -i "$2" -t "$3" -E -W 5 2>&1)
    printf 'CONNACK=%s SUBACK=%s' \
        "$(sed -n 's/.*received CONNACK (\([0-9]*\)).*/\1/p' <<<"$out" | head -n 1)" \
        "$(sed -n 's/^Subscribed (mid: [0-9]*): //p' <<<"$out" | head -n 1)"
}

# dev_sub CERT FILTER [ARGS...]: a device on the device listener (certificate
# $WORK/tls/CERT.crt); prints "CONNACK=<code> SUBACK=<codes>".
dev_sub() {
    local cert=$1 filter=$2 out
    shift 2
    out=$(timeout 10 mosquitto_sub -d -h localhost -p "$DEV_PORT" --cafile "$WORK/tls/ca.crt" \
        --cert "$WORK/tls/$cert.crt" --key "$WORK/tls/$cert.key" -t "$filter" "$@" -E -W 5 2>&1)
    printf 'CONNACK=%s SUBACK=%s' \
        "$(sed -n 's/.*received CONNACK (\([0-9]*\)).*/\1/p' <<<"$out" | head -n 1)" \
        "$(sed -n 's/^Subscribed (mid: [0-9]*): //p' <<<"$out" | head -n 1)"
}

# dev_pub CERT TOPIC MESSAGE: one QoS 1 MQTT 5 publish on the device listener;
# prints the PUBACK reason code.
dev_pub() {
    timeout 10 mosquitto_pub -d -V mqttv5 -q 1 -h localhost -p "$DEV_PORT" --cafile "$WORK/tls/ca.crt" \
        --cert "$WORK/tls/$1.crt" --key "$WORK/tls/$1.key" -t "$2" -m "$3" 2>&1 |
        sed -n 's/.*received PUBACK (Mid: [0-9]*, RC:\([0-9]*\)).*/\1/p' | head -n 1
}

# start_device NAME CERT CN [ARGS...]: a long-lived device connection
# (mosquitto_pub -l, MQTT 5, QoS 1, debug output in stream NAME) that publishes
# each line written to fd ${DEVICE_IN[NAME]} on devices/CN/heartbeat.
start_device() {
    local name=$1 cert=$2 cn=$3 fd
    shift 3
    mkfifo "$WORK/$name.in" || return 1
    start_stream "$name" bash -c 'exec "$@" <"$0"' "$WORK/$name.in" \
        mosquitto_pub -d -V mqttv5 -q 1 -h localhost -p "$DEV_PORT" --cafile "$WORK/tls/ca.crt" \
        --cert "$WORK/tls/$cert.crt" --key "$WORK/tls/$cert.key" -t "devices/$cn/heartbeat" -l "$@"
    exec {fd}>"$WORK/$name.in"
    DEVICE_IN[$name]=$fd
}

# device_says NAME LINE: publishes LINE from device NAME; prints its PUBACK code.
device_says() {
    printf '%s\n' "$2" >&"${DEVICE_IN[$1]}"
    if await_line "$1" 'received PUBACK \(Mid: [0-9]+, RC:[0-9]+\)' 5; then
        sed -n 's/.*RC:\([0-9]*\)).*/\1/p' <<<"$AWAITED"
    fi
}

# drop_device NAME: kills the device's client at once (SIGKILL): its TCP
# connection closes without DISCONNECT, so the broker publishes its will.
drop_device() {
    kill -9 "${STREAM_PID[$1]}"
    { wait "${STREAM_PID[$1]}"; } 2>/dev/null
}

stop_device() {
    local fd=${DEVICE_IN[$1]}
    exec {fd}>&-
    stop_stream "$1"
}

serial_of() { openssl x509 -in "$WORK/tls/$1.crt" -noout -serial | sed 's/^serial=//' | tr A-F a-f; }

# revoke CERT...: rewrites the revoked file (as escrowd: a temporary file and
# rename) with the given certificates' serials, as BN_bn2hex lowercased.
revoke() {
    local cert
    {
        echo "# Generated by EscrowFleet: revoked certificate serials, enforced by the broker plugin."
        for cert in "$@"; do serial_of "$cert"; done
    } >"$REVOKED.tmp" && mv -f "$REVOKED.tmp" "$REVOKED"
}

# ---------------------------------------------------------------- broker

# Sets FREE_PORT to a loopback port nothing listens on and this run has not
# used, below the kernel's ephemeral range (client sockets take those).
USED_PORTS=
free_port() {
    local port _ low=32768 high
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null
    high=$((low > 12000 ? low : 61000))
    for _ in $(seq 1 200); do
        port=$((10000 + RANDOM % (high - 10000)))
        case " $USED_PORTS " in *" $port "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            USED_PORTS="$USED_PORTS $port"
            FREE_PORT=$port
            return 0
        fi
    done
    echo "no free loopback port found" >&2
    return 1
}

# write_config FILE LOG ACL_FILE PLUGIN_ACL_FILE [REVOKED_FILE]
write_config() {
    local user_line= port tls_port tls_id_port dev_port
    [ "$(id -u)" -eq 0 ] && user_line="user root"
    free_port && port=$FREE_PORT && free_port && tls_port=$FREE_PORT && free_port && tls_id_port=$FREE_PORT &&
        free_port && dev_port=$FREE_PORT || return 1
    sed -e "s|@USER_LINE@|$user_line|" -e "s|@WORK@|$WORK|g" -e "s|@PLUGIN@|$PLUGIN|" \
        -e "s|@LOG@|$2|" -e "s|@ACL_FILE@|$3|" -e "s|@PLUGIN_ACL_FILE@|$4|" -e "s|@REVOKED_FILE@|${5:-$REVOKED}|" \
        -e "s|@PORT@|$port|" -e "s|@TLS_PORT@|$tls_port|" -e "s|@TLS_ID_PORT@|$tls_id_port|" \
        -e "s|@DEV_PORT@|$dev_port|" "$HERE/mosquitto.conf.in" >"$1"
}

config_port() { sed -n "s/^listener \([0-9]*\) .*/\1/p" "$1" | sed -n "${2}p"; }

# Waits up to 10 s until 127.0.0.1:PORT accepts a TCP connection, failing at
# once if the broker exits. (Accepting is not an event a script can await.)
wait_accepting() {
    local port=$1 deadline
    deadline=$(deadline_after 10)
    while seconds_left "$deadline" >/dev/null; do
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            wait "$BROKER_PID"
            echo "    broker exited with status $? before accepting; last log lines:"
            tail -n 5 "$WORK/broker.log" 2>/dev/null | sed 's/^/    /'
            return 1
        fi
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "    broker did not accept on 127.0.0.1:$port within 10 s"
    return 1
}

# expect_start_failure NAME CONFIG REGEX: the broker must exit non-zero within
# 10 s and its log must contain a line matching REGEX.
expect_start_failure() {
    local name=$1 config=$2 pattern=$3 log status
    log=$(sed -n 's/^log_dest file //p' "$config")
    [ -n "$log" ] || { fail "$name" "no 'log_dest file' in $config"; return; }
    timeout 10 mosquitto -c "$config" >"$config.stdout" 2>&1
    status=$?
    if [ "$status" -eq 124 ]; then
        fail "$name" "the broker was still running after 10 s"
    elif [ "$status" -eq 0 ]; then
        fail "$name" "the broker exited with status 0"
    elif ! grep -Eq "$pattern" "$log"; then
        fail "$name" "exit status $status but no line matching /$pattern/ in $log"
    else
        pass "$name (exit status $status; log: $(grep -Em1 "$pattern" "$log" | cut -d' ' -f2- | cut -c1-150))"
    fi
}

# ================================================================ build

for tool in gcc mosquitto mosquitto_sub mosquitto_pub mosquitto_passwd openssl stdbuf timeout; do
    command -v "$tool" >/dev/null ||
        fatal "tool $tool is installed" "apt-get install -y gcc mosquitto mosquitto-clients mosquitto-dev openssl"
done
[ -f /usr/include/mosquitto_broker.h ] || fatal "mosquitto_broker.h is installed" "apt-get install -y mosquitto-dev"
[ -f /usr/include/openssl/x509.h ] || fatal "openssl/x509.h is installed" "apt-get install -y libssl-dev"
mosquitto -h 2>&1 | grep -q 'mosquitto version 2\.0\.' ||
    fail "the broker is Mosquitto 2.0.x" "$(mosquitto -h 2>&1 | head -n 1)"

PLUGIN="$WORK/libEscrowBrokerPlugin.so"
if gcc -std=c99 -shared -fPIC -O2 -Wall -Wextra -Werror -I"$SRC/include" \
    -o "$PLUGIN" "$SRC/escrow_broker_plugin.c" -lcrypto >"$WORK/gcc.log" 2>&1; then
    pass "plugin builds: gcc -std=c99 -shared -fPIC -O2 -Wall -Wextra -Werror ... -lcrypto"
else
    sed 's/^/    /' "$WORK/gcc.log"
    fatal "plugin builds"
fi

# Unit tests: the plugin's source with stubbed broker functions, under
# AddressSanitizer (leaks included) and UndefinedBehaviorSanitizer.
if gcc -std=c99 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
    -Wall -Wextra -Werror -I"$SRC" -I"$SRC/include" -o "$WORK/plugin_unit" "$HERE/plugin_unit.c" -lcrypto -lmosquitto \
    >"$WORK/gcc-unit.log" 2>&1; then
    mkdir -p "$WORK/unit"
    "$WORK/plugin_unit" "$WORK/unit" >"$WORK/unit.out" 2>&1
    unit_status=$?
    unit_ok=$(grep -c '^ok - ' "$WORK/unit.out")
    unit_failed=$(grep -c '^FAIL - ' "$WORK/unit.out")
    PASSED=$((PASSED + unit_ok))
    grep '^FAIL - ' "$WORK/unit.out" | while IFS= read -r line; do echo "FAIL unit: ${line#FAIL - }"; done
    FAILED=$((FAILED + unit_failed))
    echo "#    unit: $unit_ok checks passed, $unit_failed failed; $(grep '^# ' "$WORK/unit.out" | sed 's/^# //' | paste -sd ';' -)"
    if [ "$unit_status" -ne 0 ] && [ "$unit_failed" -eq 0 ]; then
        tail -n 20 "$WORK/unit.out" | sed 's/^/    /'
        fail "unit tests exit cleanly under the sanitizers" "status $unit_status"
    fi
else
    sed 's/^/    /' "$WORK/gcc-unit.log"
    fail "unit tests build"
fi

# The revocation micro benchmark again, optimised as the plugin is (-O2, no
# sanitizers): load time of 100,000 serials and the cost of one ACL check.
if gcc -std=c99 -O2 -Wall -Wextra -Werror -I"$SRC" -I"$SRC/include" -o "$WORK/plugin_bench" \
    "$HERE/plugin_unit.c" -lcrypto -lmosquitto >"$WORK/gcc-bench.log" 2>&1; then
    "$WORK/plugin_bench" "$WORK/unit" bench >"$WORK/bench.out" 2>&1
    PASSED=$((PASSED + $(grep -c '^ok - ' "$WORK/bench.out")))
    grep '^FAIL - ' "$WORK/bench.out" | while IFS= read -r line; do echo "FAIL bench: ${line#FAIL - }"; done
    FAILED=$((FAILED + $(grep -c '^FAIL - ' "$WORK/bench.out")))
    grep '^# ' "$WORK/bench.out" | sed 's/^# /#    bench: /'
else
    sed 's/^/    /' "$WORK/gcc-bench.log"
    fail "revocation benchmark builds (-O2)"
fi

# ================================================================ fixtures

mkdir -p "$WORK/tls"
(
    cd "$WORK/tls" || exit 1
    key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"; }
    key ca && openssl req -x509 -new -key ca.key -subj /CN=escrow-test-ca -days 2 -out ca.crt &&
        for name in server dev-1; do
            cn=$name
            [ "$name" = server ] && cn=localhost
            key "$name" && openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr" &&
                printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$name.ext" &&
                openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
                    -extfile "$name.ext" -out "$name.crt" || exit 1
        done
    # Device certificates with random 128-bit serials, as CertificateAuthority
    # issues them. dev-2's starts with a zero nibble (BN_bn2hex writes "0a...").
    # dev-3-new is dev-3's next identity: same CN, another serial.
    for spec in dev-2:dev-2:0a dev-3:dev-3: dev-3-new:dev-3: dev-4:dev-4: dev-5:dev-5:; do
        IFS=: read -r name cn prefix <<<"$spec"
        serial=$prefix$(openssl rand -hex $((16 - ${#prefix} / 2)))
        [ -n "$prefix" ] || serial=$(printf '%x' $((0x${serial:0:1} | 8)))${serial:1}
        key "$name" && openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr" &&
            openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -set_serial "0x$serial" -days 2 \
                -out "$name.crt" || exit 1
    done
    # The CA's CRL: empty, from openssl ca -gencrl, as escrowd installs it.
    mkdir -p ca-db && : >ca-db/index.txt && echo 1000 >ca-db/crlnumber &&
        printf '%s\n' '[ ca ]' 'default_ca = ca_default' '[ ca_default ]' "database = $PWD/ca-db/index.txt" \
            "crlnumber = $PWD/ca-db/crlnumber" "certificate = $PWD/ca.crt" "private_key = $PWD/ca.key" \
            'default_md = sha256' 'default_crl_days = 2' >ca.cnf &&
        openssl ca -config ca.cnf -gencrl -batch -out crl.pem
) >"$WORK/openssl.log" 2>&1 || fatal "test certificates are generated" "see $WORK/openssl.log"
openssl crl -in "$WORK/tls/crl.pem" -noout -text | grep -q 'No Revoked Certificates' ||
    fatal "the device listener's CRL is empty"
REVOKED="$WORK/revoked"
revoke dev-2 || fatal "the revoked file is written"

rm -f "$WORK/passwd"
for user in svc-escrowd op-a op-b op-c dev-1 dev-revoked; do
    create=
    [ -f "$WORK/passwd" ] || create=-c
    mosquitto_passwd -b $create "$WORK/passwd" "$user" "$(password_of "$user")" ||
        fatal "password file is written"
done
ACL="$WORK/acl"
cp "$HERE/acl.txt" "$ACL"

# ================================================================ broker up

# A port found free can be taken before the broker binds it: retry twice.
CONFIG="$WORK/mosquitto.conf"
for attempt in 1 2 3; do
    write_config "$CONFIG" "$WORK/broker.log" "$ACL" "$ACL" || fatal "broker config is written"
    PORT=$(config_port "$CONFIG" 1)
    TLS_PORT=$(config_port "$CONFIG" 2)
    TLS_ID_PORT=$(config_port "$CONFIG" 3)
    DEV_PORT=$(config_port "$CONFIG" 4)
    : >"$WORK/broker.log"
    mosquitto -c "$CONFIG" >"$WORK/broker.stdout" 2>&1 &
    BROKER_PID=$!
    wait_accepting "$PORT" && break
    stop_pid "$BROKER_PID"
    BROKER_PID=
    [ "$attempt" -lt 3 ] && grep -q 'Address already in use' "$WORK/broker.log" ||
        fatal "broker starts with the plugin"
done
start_stream log tail -n +1 -F "$WORK/broker.log"
pass "broker starts with the plugin on 127.0.0.1:$PORT (TLS $TLS_PORT, $TLS_ID_PORT, devices $DEV_PORT)"
check "plugin logs the revoked file it loaded" "no 'loaded revoked file' line in the log" \
    await_line log 'escrow_broker_plugin: loaded revoked file ".*/revoked": 1 serials from 1 lines' 5
check "plugin logs the rules it loaded" "no 'loaded ACL file' line in the log" \
    await_line log 'escrow_broker_plugin: loaded ACL file .*: 5 users, 12 topic rules, 6 patterns' 5

# ================================================================ rule 1: SUBSCRIBE

# MQTT 3.1.1: a refusal is 0x80 (128). Mosquitto answers 0x87 (135) on MQTT 5.
expect_suback 128 op-a '$share/escrowd/accounts/+/cmd/+'
expect_suback 128 op-a '$share/x/accounts/acme/events/#'
expect_suback 128 op-a '#'
expect_suback 128 op-a 'accounts/+/events/#'
expect_suback 128 op-a 'accounts/globex/events/#'
expect_suback 128 op-a 'devices/+/status'
expect_suback 128 op-a 'accounts/acme/cmd/x'
expect_suback 128 op-a '$SYS/#'
expect_suback 0 op-a 'accounts/acme/events/#'
expect_suback 0 op-a 'accounts/acme/reply/abc'
expect_suback 0 op-a 'accounts/acme/events/+'
expect_suback 135 op-a '#' -V mqttv5
expect_suback 0 op-a 'accounts/acme/events/#' -V mqttv5
expect_suback 0 svc-escrowd '$share/escrowd/accounts/+/cmd/+'
expect_suback 0 svc-escrowd '$share/escrowd/devices/+/status'
expect_suback 128 svc-escrowd '$share/escrowd/#'
expect_suback 128 svc-escrowd '$share/escrowd'
expect_suback 128 svc-escrowd '$share//accounts/#'
expect_suback 128 op-c 'accounts/acme/events/#'
expect_suback 128 op-c 'accounts/acme/events/+'
expect_suback 0 op-c 'accounts/acme/events/public'
expect_suback 0 dev-1 'devices/dev-1/config'
expect_suback 0 dev-1 'devices/dev-1/error'
expect_suback 128 dev-1 'devices/dev-1/status'
expect_suback 128 dev-1 'devices/dev-2/config'
expect_suback 128 dev-1 'devices/+/config'
expect_suback 128 dev-revoked 'devices/dev-revoked/config'
expect_suback '0, 128' op-a 'accounts/acme/events/#' -t '$share/escrowd/accounts/+/cmd/+'

# ================================================================ shared group

start_stream svc mosquitto_sub -d -v -q 1 -h 127.0.0.1 -p "$PORT" -u svc-escrowd \
    -P "$(password_of svc-escrowd)" -i svc-escrowd -t '$share/escrowd/accounts/+/cmd/+'
check "svc-escrowd joins \$share/escrowd/accounts/+/cmd/+ (SUBACK 1)" "no SUBACK 1" \
    await_line svc '^Subscribed \(mid: [0-9]+\): 1$' 10
rc=$(publish op-a op-a:pub accounts/acme/cmd/x hello)
check "op-a publishes accounts/acme/cmd/x (PUBACK 0)" "PUBACK '${rc:-none}'" test "$rc" = 0
check "svc-escrowd receives it through the shared group" "not received within 5 s" \
    await_line svc '^accounts/acme/cmd/x hello$' 5

# Rule 2: with the plugin loaded, acl_file still decides publishes.
rc=$(publish op-a op-a:pub accounts/globex/cmd/x intruder)
check "acl_file still refuses op-a's publish to accounts/globex/cmd/x (PUBACK 135)" "PUBACK '${rc:-none}'" \
    test "$rc" = 135
publish op-a op-a:pub accounts/acme/cmd/marker marker >/dev/null
await_line svc '^accounts/' 5
check "the refused publish never reaches svc-escrowd (next message is the marker)" "got '$AWAITED'" \
    test "$AWAITED" = "accounts/acme/cmd/marker marker"

# No starvation: op-a sits in the group's name with a refused $share
# subscription (and a granted one, so that mosquitto_sub stays connected).
start_stream hold mosquitto_sub -d -v -q 1 -h 127.0.0.1 -p "$PORT" -u op-a -P "$(password_of op-a)" \
    -i op-a:hold -t '$share/escrowd/accounts/+/cmd/+' -t 'accounts/acme/events/#'
check "op-a:hold stays connected with \$share refused and events granted (SUBACK 128, 1)" "no SUBACK 128, 1" \
    await_line hold '^Subscribed \(mid: [0-9]+\): 128, 1$' 10
for i in $(seq 1 20); do echo "msg-$i"; done |
    timeout 10 mosquitto_pub -q 1 -h 127.0.0.1 -p "$PORT" -u op-a -P "$(password_of op-a)" -i op-a:load \
        -t accounts/acme/cmd/load -l
await_count svc '^accounts/acme/cmd/load msg-[0-9]+$' 20 10
check "svc-escrowd receives 20 of 20 messages while op-a:hold is connected" "received $COUNTED" \
    test "$COUNTED" -eq 20

# Rule 2: reads are decided by acl_file at delivery.
rc=$(publish svc-escrowd svc-escrowd:pub accounts/acme/events/e1 event-1)
check "op-a:hold receives accounts/acme/events/e1 (acl_file grants the read)" "PUBACK '${rc:-none}', not received" \
    await_line hold '^accounts/acme/events/e1 event-1$' 5

# ================================================================ rule 3: client ids

expect_connack 0 "op-a with client id op-a" op-a "$(password_of op-a)" op-a
expect_connack 0 "op-a with client id op-a:cli-1" op-a "$(password_of op-a)" op-a:cli-1
expect_connack 5 "op-a with client id escrowd" op-a "$(password_of op-a)" escrowd
expect_connack 5 "op-a with client id op-b:x" op-a "$(password_of op-a)" op-b:x
expect_connack 5 "op-a with client id op-ab" op-a "$(password_of op-a)" op-ab
expect_connack 135 "op-a with client id escrowd on MQTT 5" op-a "$(password_of op-a)" escrowd -V mqttv5
expect_connack 5 "op-a, right client id, wrong password (DEFER reaches password_file)" op-a wrong-password op-a
expect_connack 5 "op-a, right client id, no password" op-a "" op-a
expect_connack 5 "unknown user nobody with client id nobody" nobody "$(password_of nobody)" nobody
check "the plugin logs the client id it refused" "no 'refused client id \"op-ab\"' line" \
    await_line log 'escrow_broker_plugin: refused client id "op-ab" for username "op-a"' 5

# Takeover: op-b reusing op-a:hold's client id is refused, op-a:hold keeps its session.
expect_connack 5 "op-b with op-a's client id op-a:hold" op-b "$(password_of op-b)" op-a:hold
publish svc-escrowd svc-escrowd:pub accounts/acme/events/e2 event-2 >/dev/null
check "op-a:hold was not disconnected by the refused takeover" "no event-2 at op-a:hold" \
    await_line hold '^accounts/acme/events/e2 event-2$' 5
check "the broker saw no client-id takeover of op-a:hold" "op-a:hold was taken over" \
    bash -c "! grep -q 'op-a:hold already connected' '$WORK/broker.log'"

# ================================================================ certificate clients

result=$(tls_sub "$TLS_PORT" anything devices/dev-1/config)
check "certificate client dev-1 (CN as client id) subscribes its config" "$result" \
    test "$result" = "CONNACK=0 SUBACK=0"
result=$(tls_sub "$TLS_PORT" anything devices/dev-2/config)
check "certificate client dev-1 is refused another device's config" "$result" \
    test "$result" = "CONNACK=0 SUBACK=128"
# On this listener the client id is the client's own, not the CN: had
# BASIC_AUTH run, the plugin would refuse "not-dev-1" for username dev-1.
result=$(tls_sub "$TLS_ID_PORT" not-dev-1 devices/dev-1/config)
check "BASIC_AUTH is not called for certificate clients (dev-1 connects as not-dev-1)" "$result" \
    test "$result" = "CONNACK=0 SUBACK=0"
check "no BASIC_AUTH refusal was logged for the certificate client" "found one" \
    bash -c "! grep -q 'refused client id \"not-dev-1\"' '$WORK/broker.log'"

# ================================================================ revocation (plugin_opt_revoked_file)

# The control plane's view: svc-escrowd receives every heartbeat and status.
start_stream fleet mosquitto_sub -d -v -q 1 -h 127.0.0.1 -p "$PORT" -u svc-escrowd \
    -P "$(password_of svc-escrowd)" -i svc-escrowd:fleet -t 'devices/+/heartbeat' -t 'devices/+/status'
check "svc-escrowd subscribes devices/+/heartbeat and devices/+/status (SUBACK 1, 1)" "no SUBACK 1, 1" \
    await_line fleet '^Subscribed \(mid: [0-9]+\): 1, 1$' 10

# A certificate revoked before the broker started: the TLS handshake and
# CONNECT succeed (the CRL is empty), every access is refused.
result=$(dev_sub dev-2 devices/dev-2/config)
check "revoked dev-2 connects (empty CRL) but its SUBSCRIBE of devices/dev-2/config is refused (SUBACK 128)" \
    "$result" test "$result" = "CONNACK=0 SUBACK=128"
result=$(dev_sub dev-2 devices/dev-2/config -V mqttv5)
check "revoked dev-2 on MQTT 5: SUBACK 135" "$result" test "$result" = "CONNACK=0 SUBACK=135"
check "the plugin logs the revoked serial as BN_bn2hex lowercased ($(serial_of dev-2))" "no such line" \
    await_line log "escrow_broker_plugin: revoked certificate serial $(serial_of dev-2) for client \"dev-2\" \(username \"dev-2\"\): access denied" 5

start_device rev dev-2 dev-2
check "revoked dev-2 opens a long-lived connection (CONNACK 0)" "no CONNACK 0" \
    await_line rev 'received CONNACK \(0\)' 10
rc=$(device_says rev hb-revoked)
check "revoked dev-2's heartbeat on devices/dev-2/heartbeat is refused (PUBACK 135)" "PUBACK '${rc:-none}'" \
    test "$rc" = 135
# (mosquitto_pub -l stays up after the broker closed its connection: the
# DISCONNECT it prints is the event.)
if timed_await rev '^Received DISCONNECT \(152\)$' 5; then
    pass "revoked dev-2 is disconnected by the broker (MQTT 5 DISCONNECT 152 ${WAITED_MS} ms after the PUBACK)"
else
    fail "revoked dev-2 is disconnected by the broker (MQTT 5 DISCONNECT 152)" "none within 5 s"
fi
check "the plugin logs the disconnection" "no 'disconnected client \"dev-2\"' line" \
    await_line log 'escrow_broker_plugin: disconnected client "dev-2": revoked certificate serial' 5
stop_device rev

# A certificate of the same CA that is not revoked.
result=$(dev_sub dev-5 devices/dev-5/config)
check "unrevoked dev-5 (same CA) subscribes devices/dev-5/config (SUBACK 0)" "$result" \
    test "$result" = "CONNACK=0 SUBACK=0"
start_device d5 dev-5 dev-5 --will-topic devices/dev-5/status --will-payload dev-5-offline --will-qos 1
await_line d5 'received CONNACK \(0\)' 10
rc=$(device_says d5 hb-5a)
check "unrevoked dev-5's heartbeat is accepted (PUBACK 0)" "PUBACK '${rc:-none}'" test "$rc" = 0
await_line fleet '^devices/' 5
check "svc-escrowd receives dev-5's heartbeat, and never received revoked dev-2's" "got '$AWAITED'" \
    test "$AWAITED" = "devices/dev-5/heartbeat hb-5a"

# Revocation of connected devices: dev-3 publishes, dev-4 is subscribed.
start_device d3 dev-3 dev-3
await_line d3 'received CONNACK \(0\)' 10
rc=$(device_says d3 hb-3a)
check "dev-3, connected before its revocation, publishes (PUBACK 0)" "PUBACK '${rc:-none}'" test "$rc" = 0
await_line fleet '^devices/dev-3/heartbeat hb-3a$' 5
start_stream d4 mosquitto_sub -d -V mqttv5 -q 1 -h localhost -p "$DEV_PORT" --cafile "$WORK/tls/ca.crt" \
    --cert "$WORK/tls/dev-4.crt" --key "$WORK/tls/dev-4.key" -t devices/dev-4/config
await_line d4 '^Subscribed \(mid: [0-9]+\): 1$' 10
publish svc-escrowd svc-escrowd:pub devices/dev-4/config cfg-1 >/dev/null
check "dev-4, connected before its revocation, receives its config" "cfg-1 not received" \
    await_line d4 '^cfg-1$' 5

revoke dev-2 dev-3 dev-4
kill -HUP "$BROKER_PID"
check "SIGHUP: the plugin reloads the revoked file (3 serials)" "no 'reloaded revoked file' line within 5 s" \
    await_line log 'escrow_broker_plugin: reloaded revoked file ".*": 3 serials from 3 lines, [0-9]+ KiB, in [0-9.]+ ms' 5
await_line log 'escrow_broker_plugin: reloaded ACL file' 5
rc=$(device_says d3 hb-3b)
check "after revocation + SIGHUP, connected dev-3's next heartbeat is refused (PUBACK 135)" "PUBACK '${rc:-none}'" \
    test "$rc" = 135
if timed_await d3 '^Received DISCONNECT \(152\)$' 5; then
    pass "connected dev-3 is disconnected after that heartbeat (DISCONNECT 152 ${WAITED_MS} ms after the PUBACK)"
else
    fail "connected dev-3 is disconnected after that heartbeat (DISCONNECT 152)" "none within 5 s"
fi
rc=$(publish svc-escrowd svc-escrowd:pub devices/dev-4/config cfg-2)
check "svc-escrowd's publish to revoked dev-4's config is accepted (PUBACK 0): svc-* is unaffected" \
    "PUBACK '${rc:-none}'" test "$rc" = 0
if timed_await d4 '^Received DISCONNECT \(152\)$' 5; then
    pass "connected dev-4 is disconnected at the delivery of its next config (DISCONNECT 152 after ${WAITED_MS} ms)"
else
    fail "connected dev-4 is disconnected at the delivery of its next config (DISCONNECT 152)" "none within 5 s"
fi
if await_end d4 5 && ! grep -q '^cfg-2$' "$WORK/d4.out"; then
    pass "and dev-4's mosquitto_sub exits, having never received cfg-2"
else
    fail "and dev-4's mosquitto_sub exits, having never received cfg-2" "still running, or cfg-2 received"
fi
check "the plugin logs dev-4's disconnection" "no line" \
    await_line log 'escrow_broker_plugin: disconnected client "dev-4": revoked certificate serial' 5
stop_stream d4
rc=$(device_says d5 hb-5b)
await_line fleet '^devices/' 5
check "svc-escrowd still receives unrevoked dev-5 (next heartbeat is hb-5b, not revoked dev-3's hb-3b)" \
    "PUBACK '${rc:-none}', got '$AWAITED'" test "$AWAITED" = "devices/dev-5/heartbeat hb-5b"

# dev-3 comes back with its next identity: same CN (client id), new serial.
start_device d3n dev-3-new dev-3
check "dev-3 reconnects with its new certificate (same CN, unrevoked serial)" "no CONNACK 0" \
    await_line d3n 'received CONNACK \(0\)' 10
rc=$(device_says d3n hb-3c)
check "dev-3's heartbeat with the new certificate is accepted (PUBACK 0)" "PUBACK '${rc:-none}'" test "$rc" = 0
check "svc-escrowd receives it" "not received" await_line fleet '^devices/dev-3/heartbeat hb-3c$' 5
rc=$(device_says d3n hb-3d)
check "dev-3 with the new certificate is not kicked (second heartbeat PUBACK 0)" "PUBACK '${rc:-none}'" \
    test "$rc" = 0

# Wills: the broker checks a will after closing the socket, when the
# certificate is no longer visible; the plugin remembers the revoked client.
start_device w2 dev-2 dev-2 --will-topic devices/dev-2/status --will-payload revoked-will --will-qos 1 --will-retain
await_line w2 'received CONNACK \(0\)' 10
drop_device w2
check "revoked dev-2's will (connection dropped without DISCONNECT) is refused" "no 'refused the will' line" \
    await_line log 'escrow_broker_plugin: refused the will "devices/dev-2/status" of client "dev-2" after its disconnection' 5
stop_device w2
drop_device d5
await_line fleet '^devices/.*/status ' 5
check "unrevoked dev-5's will is published; revoked dev-2's never was (next status is dev-5's)" "got '$AWAITED'" \
    test "$AWAITED" = "devices/dev-5/status dev-5-offline"
stop_device d5

# A reload that fails keeps the previous set (and the broker keeps running).
printf 'not-a-serial\n' >"$REVOKED.tmp" && mv -f "$REVOKED.tmp" "$REVOKED"
kill -HUP "$BROKER_PID"
check "SIGHUP with an invalid revoked file: the plugin logs an error and keeps its 3 serials" "no error line" \
    await_line log 'escrow_broker_plugin: Error: cannot reload revoked file ".*": line 1: not a hex serial: "not-a-serial"; keeping the previous 3 serials' 5
await_line log 'escrow_broker_plugin: reloaded ACL file' 5
rc=$(dev_pub dev-3 devices/dev-3/heartbeat old-cert)
check "dev-3's old certificate is still refused (PUBACK 135)" "PUBACK '${rc:-none}'" test "$rc" = 135
rc=$(device_says d3n hb-3e)
check "dev-3's new certificate is still served (PUBACK 0)" "PUBACK '${rc:-none}'" test "$rc" = 0
rm -f "$REVOKED"
kill -HUP "$BROKER_PID"
check "SIGHUP with the revoked file missing: error, the 3 serials are kept" "no error line" \
    await_line log 'escrow_broker_plugin: Error: cannot reload revoked file ".*": cannot open: No such file or directory; keeping the previous 3 serials' 5
await_line log 'escrow_broker_plugin: reloaded ACL file' 5
check "the broker is still running" "it exited" kill -0 "$BROKER_PID"
rc=$(dev_pub dev-4 devices/dev-4/heartbeat while-missing)
check "dev-4 is still refused while the file is missing (PUBACK 135)" "PUBACK '${rc:-none}'" test "$rc" = 135
revoke dev-2 dev-3
kill -HUP "$BROKER_PID"
check "SIGHUP with the file back (dev-4 no longer listed): 2 serials" "no 'reloaded' line" \
    await_line log 'escrow_broker_plugin: reloaded revoked file ".*": 2 serials from 2 lines' 5
await_line log 'escrow_broker_plugin: reloaded ACL file' 5
rc=$(dev_pub dev-4 devices/dev-4/heartbeat reinstated)
check "a serial dropped from the file is served again (dev-4 PUBACK 0)" "PUBACK '${rc:-none}'" test "$rc" = 0
rc=$(dev_pub dev-2 devices/dev-2/heartbeat still-revoked)
check "dev-2 is still refused (PUBACK 135)" "PUBACK '${rc:-none}'" test "$rc" = 135
stop_device d3n
stop_stream fleet

# ================================================================ rule 4: reload

expect_suback 128 op-a 'accounts/initech/events/#'
printf '\nuser op-a\ntopic read accounts/initech/events/#\n' >>"$ACL"
kill -HUP "$BROKER_PID"
check "SIGHUP: the plugin reloads the ACL file" "no 'reloaded' line within 5 s" \
    await_line log 'escrow_broker_plugin: reloaded ACL file .*: 5 users, 13 topic rules' 5
deadline=$(deadline_after 5)
got=
while seconds_left "$deadline" >/dev/null; do
    got=$(suback op-a op-a 'accounts/initech/events/#')
    [ "$got" = 0 ] && break
    sleep 0.1
done
check "after reload op-a may subscribe accounts/initech/events/# (SUBACK 0)" "got '${got:-no SUBACK}'" \
    test "$got" = 0

# A subscription granted under a rule the next reload removes gets nothing
# more: acl_file checks each delivery.
start_stream initech mosquitto_sub -d -v -q 1 -h 127.0.0.1 -p "$PORT" -u op-a -P "$(password_of op-a)" \
    -i op-a:initech -t 'accounts/initech/events/#' -t 'accounts/acme/events/#'
await_line initech '^Subscribed \(mid: [0-9]+\): 1, 1$' 10
publish svc-escrowd svc-escrowd:pub accounts/initech/events/e1 initech-1 >/dev/null
check "op-a:initech receives accounts/initech/events/e1" "not received" \
    await_line initech '^accounts/initech/events/e1 initech-1$' 5
cp "$HERE/acl.txt" "$ACL"
kill -HUP "$BROKER_PID"
check "SIGHUP: the plugin reloads the original ACL file" "no 'reloaded' line within 5 s" \
    await_line log 'escrow_broker_plugin: reloaded ACL file .*: 5 users, 12 topic rules' 5
publish svc-escrowd svc-escrowd:pub accounts/initech/events/e2 initech-2 >/dev/null
publish svc-escrowd svc-escrowd:pub accounts/acme/events/e3 event-3 >/dev/null
await_line initech '^accounts/' 5
check "after the rule is removed, op-a:initech gets no initech event (next is acme's)" "got '$AWAITED'" \
    test "$AWAITED" = "accounts/acme/events/e3 event-3"
expect_suback 128 op-a 'accounts/initech/events/#'

# A broken file at reload: the plugin keeps its rules and logs an error; the
# broker keeps running. Mosquitto's own acl_file then fails and, with no
# acl_file check registered, the broker refuses every publish and subscription
# until the file is fixed (fail closed: mosquitto's behaviour, not the plugin's).
printf 'this is not an ACL line\n' >>"$ACL"
kill -HUP "$BROKER_PID"
check "SIGHUP with a broken file: the plugin logs an error and keeps its rules" "no error line within 5 s" \
    await_line log 'escrow_broker_plugin: Error: cannot reload ACL file .*line 36: invalid line.*keeping the previous rules' 5
check "the broker is still running" "it exited" kill -0 "$BROKER_PID"
rc=$(publish op-a op-a:pub accounts/acme/cmd/x while-broken)
check "while acl_file is broken mosquitto refuses publishes (PUBACK 135)" "PUBACK '${rc:-none}'" test "$rc" = 135
cp "$HERE/acl.txt" "$ACL"
kill -HUP "$BROKER_PID"
check "SIGHUP with the file fixed: the plugin reloads" "no 'reloaded' line within 5 s" \
    await_line log 'escrow_broker_plugin: reloaded ACL file' 5
rc=$(publish op-a op-a:pub accounts/acme/cmd/x fixed)
check "after the fix publishes are accepted again (PUBACK 0)" "PUBACK '${rc:-none}'" test "$rc" = 0
expect_suback 0 op-a 'accounts/acme/events/#'

# ================================================================ reload confirmation

# After a SIGHUP the plugin publishes the token file's first line on
# escrow/broker/reloaded; it arrives once the reload is complete, so a login
# added to the password file just before works at the first attempt.
start_stream reloads mosquitto_sub -d -v -q 1 -h 127.0.0.1 -p "$PORT" -u svc-escrowd -P "$(password_of svc-escrowd)" \
    -i svc-escrowd:reloads -t escrow/broker/reloaded
check "svc-escrowd subscribes escrow/broker/reloaded (SUBACK 1)" "no SUBACK" \
    await_line reloads '^Subscribed \(mid: [0-9]+\): 1$' 10
for round in 1 2 3; do
    mosquitto_passwd -b "$WORK/passwd" "op-new$round" "$(password_of "op-new$round")"
    echo "token-$round" >"$WORK/reload-token.tmp" && mv -f "$WORK/reload-token.tmp" "$WORK/reload-token"
    kill -HUP "$BROKER_PID"
    check "SIGHUP $round: the confirmation carries token-$round" "no confirmation within 5 s" \
        await_line reloads "^escrow/broker/reloaded token-$round\$" 5
    expect_connack 0 "op-new$round logs in at the first attempt right after the confirmation" \
        "op-new$round" "$(password_of "op-new$round")" "op-new$round"
done
expect_suback 128 op-a escrow/broker/reloaded
rc=$(publish op-a op-a:forge escrow/broker/reloaded token-forged)
check "an operator cannot forge a confirmation (PUBACK 135)" "PUBACK '${rc:-none}'" test "$rc" = 135
rm -f "$WORK/reload-token"
kill -HUP "$BROKER_PID"
check "SIGHUP without a token file: a warning, and an empty confirmation" "no empty confirmation" \
    await_line reloads '^escrow/broker/reloaded( \(null\))?$' 5
stop_stream reloads

stop_stream initech
stop_stream hold
stop_stream svc
stop_pid "$BROKER_PID"
BROKER_PID=
check "the broker shuts down cleanly" "no 'mosquitto version .* terminating' line" \
    await_line log 'mosquitto version .* terminating' 5
stop_stream log

# ================================================================ start failures

bad_config() { # NAME ACL_FILE PLUGIN_ACL_FILE: writes $WORK/NAME.conf
    write_config "$WORK/$1.conf" "$WORK/$1.log" "$2" "$3"
}
bad_config missing "$ACL" "$WORK/no-such-acl"
expect_start_failure "broker refuses to start when the plugin's ACL file is missing" "$WORK/missing.conf" \
    'escrow_broker_plugin: Error: cannot load ACL file ".*no-such-acl": cannot open: No such file'
mkdir -p "$WORK/acl-directory"
bad_config unreadable "$ACL" "$WORK/acl-directory"
expect_start_failure "broker refuses to start when the plugin's ACL file cannot be read" "$WORK/unreadable.conf" \
    'escrow_broker_plugin: Error: cannot load ACL file ".*acl-directory": read error'
if [ "$(id -u)" -ne 0 ]; then
    cp "$ACL" "$WORK/acl-mode-000" && chmod 000 "$WORK/acl-mode-000"
    bad_config mode000 "$ACL" "$WORK/acl-mode-000"
    expect_start_failure "broker refuses to start when the plugin's ACL file is not readable (mode 000)" \
        "$WORK/mode000.conf" 'escrow_broker_plugin: Error: cannot load ACL file .*Permission denied'
fi
{ cat "$HERE/acl.txt"; echo "user op-d"; echo "topic sometimes accounts/#"; } >"$WORK/acl-invalid"
bad_config invalid "$WORK/acl-invalid" "$WORK/acl-invalid"
expect_start_failure "broker refuses to start on an invalid ACL line (the plugin names the line)" \
    "$WORK/invalid.conf" 'escrow_broker_plugin: Error: cannot load ACL file .*line 37: invalid access type'
write_config "$WORK/norevoked.conf" "$WORK/norevoked.log" "$ACL" "$ACL" "$WORK/no-such-revoked"
expect_start_failure "broker refuses to start when the plugin's revoked file is missing" "$WORK/norevoked.conf" \
    'escrow_broker_plugin: Error: cannot load revoked file ".*no-such-revoked": cannot open: No such file'
printf '# revoked\n0a1b2c\nnot a serial\n' >"$WORK/revoked-invalid"
write_config "$WORK/badrevoked.conf" "$WORK/badrevoked.log" "$ACL" "$ACL" "$WORK/revoked-invalid"
expect_start_failure "broker refuses to start on an invalid revoked line (the plugin names the line)" \
    "$WORK/badrevoked.conf" 'escrow_broker_plugin: Error: cannot load revoked file ".*revoked-invalid": line 3: not a hex serial'
bad_config noopt "$ACL" "$ACL"
sed -i '/^plugin_opt_acl_file /d' "$WORK/noopt.conf"
expect_start_failure "broker refuses to start without plugin_opt_acl_file" "$WORK/noopt.conf" \
    'escrow_broker_plugin: Error: plugin_opt_acl_file is required'

finish
