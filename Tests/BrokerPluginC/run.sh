#!/usr/bin/env bash
# Tests/BrokerPluginC/run.sh: builds the EscrowFleet broker plugin
# (Sources/EscrowBrokerPlugin) and tests it in a real Mosquitto 2.0.11 broker
# with real clients (mosquitto_sub, mosquitto_pub).
#
#   Tests/BrokerPluginC/run.sh          KEEP_WORK=1 keeps the scratch directory
#
# Needs: gcc, mosquitto, mosquitto-clients, mosquitto-dev, openssl.
# The last line printed is "N passed, M failed"; the exit status is 0 only if
# nothing failed. Every wait is bounded. Events are awaited by reading the
# clients' output and the broker log as they are written; the only polls are
# the TCP probe until the broker accepts and the SUBACK retry after a reload.

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
declare -A STREAM_FD STREAM_PID
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

# write_config FILE LOG ACL_FILE PLUGIN_ACL_FILE
write_config() {
    local user_line= port tls_port tls_id_port
    [ "$(id -u)" -eq 0 ] && user_line="user root"
    free_port && port=$FREE_PORT && free_port && tls_port=$FREE_PORT && free_port && tls_id_port=$FREE_PORT ||
        return 1
    sed -e "s|@USER_LINE@|$user_line|" -e "s|@WORK@|$WORK|g" -e "s|@PLUGIN@|$PLUGIN|" \
        -e "s|@LOG@|$2|" -e "s|@ACL_FILE@|$3|" -e "s|@PLUGIN_ACL_FILE@|$4|" \
        -e "s|@PORT@|$port|" -e "s|@TLS_PORT@|$tls_port|" -e "s|@TLS_ID_PORT@|$tls_id_port|" \
        "$HERE/mosquitto.conf.in" >"$1"
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
mosquitto -h 2>&1 | grep -q 'mosquitto version 2\.0\.' ||
    fail "the broker is Mosquitto 2.0.x" "$(mosquitto -h 2>&1 | head -n 1)"

PLUGIN="$WORK/libEscrowBrokerPlugin.so"
if gcc -std=c99 -shared -fPIC -O2 -Wall -Wextra -Werror -I"$SRC/include" \
    -o "$PLUGIN" "$SRC/escrow_broker_plugin.c" >"$WORK/gcc.log" 2>&1; then
    pass "plugin builds: gcc -std=c99 -shared -fPIC -O2 -Wall -Wextra -Werror"
else
    sed 's/^/    /' "$WORK/gcc.log"
    fatal "plugin builds"
fi

# Unit tests: the plugin's source with stubbed broker functions, under
# AddressSanitizer (leaks included) and UndefinedBehaviorSanitizer.
if gcc -std=c99 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
    -Wall -Wextra -Werror -I"$SRC" -I"$SRC/include" -o "$WORK/plugin_unit" "$HERE/plugin_unit.c" \
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
) >"$WORK/openssl.log" 2>&1 || fatal "test certificates are generated" "see $WORK/openssl.log"

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
pass "broker starts with the plugin on 127.0.0.1:$PORT (TLS $TLS_PORT, $TLS_ID_PORT)"
check "plugin logs the rules it loaded" "no 'loaded ACL file' line in the log" \
    await_line log 'escrow_broker_plugin: loaded ACL file .*: 5 users, 11 topic rules, 6 patterns' 5

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

# ================================================================ rule 4: reload

expect_suback 128 op-a 'accounts/initech/events/#'
printf '\nuser op-a\ntopic read accounts/initech/events/#\n' >>"$ACL"
kill -HUP "$BROKER_PID"
check "SIGHUP: the plugin reloads the ACL file" "no 'reloaded' line within 5 s" \
    await_line log 'escrow_broker_plugin: reloaded ACL file .*: 5 users, 12 topic rules' 5
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
    await_line log 'escrow_broker_plugin: reloaded ACL file .*: 5 users, 11 topic rules' 5
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
    await_line log 'escrow_broker_plugin: Error: cannot reload ACL file .*line 35: invalid line.*keeping the previous rules' 5
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
    "$WORK/invalid.conf" 'escrow_broker_plugin: Error: cannot load ACL file .*line 36: invalid access type'
bad_config noopt "$ACL" "$ACL"
sed -i '/^plugin_opt_acl_file /d' "$WORK/noopt.conf"
expect_start_failure "broker refuses to start without plugin_opt_acl_file" "$WORK/noopt.conf" \
    'escrow_broker_plugin: Error: plugin_opt_acl_file is required'

finish
