/*
 * refclient: a reference MQTT connect-load client built on libmosquitto.
 *
 * It opens N MQTT connections (plain TCP, or mutual TLS with the device bundles written by
 * `escrowctl device provision --out DIR`), measures the connect latency of every device the
 * same way fleetsim does, holds the fleet for a moment, disconnects cleanly and reports.
 * bench/connect-compare.sh and bench/tls-compare.sh run it next to fleetsim against the same
 * broker.
 *
 * Build:  gcc -O2 -Wall -Wextra -o refclient refclient.c -lmosquitto -lssl -lcrypto
 *         (libmosquitto-dev, libssl-dev; OpenSSL is used for the TLS handshake state and for
 *         --tls-setup preload)
 *
 * How it drives libmosquitto
 *   One thread, one epoll. Every client is a `struct mosquitto` (clean session) with
 *   MOSQ_OPT_TCP_NODELAY; mosquitto_connect_async / mosquitto_connect_bind_async starts the
 *   non-blocking TCP connect (and, with TLS, the handshake) and queues CONNECT; the socket
 *   (mosquitto_socket) is registered in epoll and served with mosquitto_loop_read,
 *   mosquitto_loop_write (when mosquitto_want_write) and, once a second, mosquitto_loop_misc
 *   (keepalive). This is what mosquitto_loop() does for one client, minus its select(), which
 *   cannot watch descriptors >= 1024. The CONNACK arrives in the on_connect callback.
 *
 *   libmosquitto quirks handled here (2.0.11):
 *   - each client holds 3 descriptors (its socket plus a wake-up socketpair nobody drains
 *     here; only CONNECT, PINGREQ and DISCONNECT are queued, one byte each);
 *   - during the TLS handshake mosquitto_loop_write does nothing and a stale internal
 *     want_write flag may stay set: the handshake is driven by mosquitto_loop_read, and the
 *     epoll interest comes from OpenSSL's own SSL_want_write while the handshake runs;
 *   - a failed handshake closes the socket inside mosquitto_loop_read without calling
 *     on_disconnect: the return code is checked as well as the callbacks.
 *
 * Connect latency (identical definition to fleetsim's)
 *   CLOCK_MONOTONIC read immediately before the connect call (the TCP connect start) to the
 *   moment the CONNACK is processed (read inside on_connect, per event, not once per epoll
 *   batch). Every latency is kept (microseconds); percentiles are exact nearest-rank values
 *   of the sorted array. Connects in flight (connect start to CONNACK) are bounded by
 *   --window; new ones start after each epoll batch, like fleetsim.
 *
 * Exit status: 0 when every device connected, 1 otherwise, 64 on usage errors.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h> /* isfinite (a macro: no libm needed) */
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define EXIT_USAGE 64
#define MAX_EVENTS 1024                 /* epoll_wait batch, as fleetsim */
#define AUTO_SOURCE_THRESHOLD 5000      /* fleetsim: one source address per 5,000 devices */
#define FDS_PER_CLIENT 3                /* socket + wake-up socketpair */
#define SHUTDOWN_BOUND_S 3.0            /* at most this long to flush DISCONNECTs */

/* ------------------------------------------------------------------------------------------ */
/* Options                                                                                    */

enum tls_setup { TLS_SETUP_CONNECT, TLS_SETUP_PRELOAD };

typedef struct {
    const char *host;
    int port;
    int devices;
    bool devices_given;
    int window;
    double rate;                /* connects per second, 0 = unlimited */
    const char *prefix;
    int source_count;           /* 0 = do not bind */
    bool source_count_given;
    int keepalive;
    double hold;
    double timeout;             /* overall bound */
    double connect_timeout;     /* per connect: no CONNACK within this = timeout error */
    const char *bundles;
    bool tls_insecure_hostname;
    enum tls_setup tls_setup;
    const char *json;
    int mqtt;                   /* MQTT_PROTOCOL_V311 or MQTT_PROTOCOL_V5 */
    bool agent;                 /* escrow-agent's session traffic, like fleetsim's devices */
    bool quiet;
} options_t;

static const char *usage_text =
    "refclient: reference MQTT connect-load client on libmosquitto (one thread, one epoll).\n"
    "Connects N clients, measures TCP-connect-start -> CONNACK latency per device exactly like\n"
    "fleetsim, holds the fleet, disconnects cleanly, prints a summary and writes JSON.\n"
    "\n"
    "USAGE: refclient [--host H] [--port P] [--devices N] [options]\n"
    "       refclient --bundles DIR [options]          (mutual TLS)\n"
    "\n"
    "OPTIONS\n"
    "  --host H                  broker IPv4 address or name (default 127.0.0.1; with --bundles\n"
    "                            the host of DIR/{id}/agent.conf's broker = mqtts://HOST:PORT)\n"
    "  --port P                  broker port (default 1883; with --bundles from agent.conf)\n"
    "  --devices N               clients to connect (default 100; with --bundles all bundles)\n"
    "  --window W                connects in flight at once, TCP connect start to CONNACK\n"
    "                            (default 64; mosquitto's listen backlog is 100)\n"
    "  --rate R                  new connects per second, 0 = unlimited (default 0)\n"
    "  --prefix P                client ids P000000, P000001, ... (default ref-; not with --bundles)\n"
    "  --source-count K          bind device i to 127.0.0.(1 + i %% K) (mosquitto_connect_bind_async);\n"
    "                            default: like fleetsim, one source per 5,000 devices when the\n"
    "                            broker is on 127.x and N > 5,000, otherwise no bind\n"
    "  --keepalive S             MQTT keepalive seconds, 0 or 5...65535 (default 60)\n"
    "  --hold S                  seconds to stay connected once all are connected (default 2)\n"
    "  --timeout S               bound on the whole run; the program always stops by itself\n"
    "                            (default 60)\n"
    "  --connect-timeout S       a connect without CONNACK after S seconds is a timeout error\n"
    "                            (default 10, as fleetsim)\n"
    "  --mqtt 311|5              protocol version (default 311; 3.1.1 is accepted too)\n"
    "  --agent                   per device, the MQTT traffic of an escrow-agent session (what\n"
    "                            fleetsim's devices send): CONNECT with a will (devices/{id}/status,\n"
    "                            offline, QoS 1, retained), and after CONNACK SUBSCRIBE\n"
    "                            devices/{id}/config QoS 1 + PUBLISH devices/{id}/status online\n"
    "                            (QoS 1, retained). Default: CONNECT only. No heartbeats.\n"
    "  --json FILE               write the report as JSON\n"
    "  --quiet                   no progress lines (the summary is still printed)\n"
    "  -h, --help                this text\n"
    "\n"
    "MUTUAL TLS\n"
    "  --bundles DIR             device identities from `escrowctl device provision --out DIR`:\n"
    "                            the devices are the sorted subdirectories holding device.crt;\n"
    "                            client id = directory name; DIR/{id}/device.crt, device.key,\n"
    "                            broker-ca.pem (CA of the broker certificate)\n"
    "  --tls-insecure-hostname   do not check that the broker certificate names --host (escrowd's\n"
    "                            broker certificate has IP SAN 127.0.0.1, so this is not needed\n"
    "                            on loopback)\n"
    "  --tls-setup connect|preload\n"
    "                            connect (default): mosquitto_tls_set per client; libmosquitto\n"
    "                            creates the client's SSL_CTX and reads CA, certificate and key\n"
    "                            inside mosquitto_connect_async (the usual libmosquitto client).\n"
    "                            preload: one SSL_CTX per device is built before the run (CA\n"
    "                            store shared, certificate and key parsed once) and handed over\n"
    "                            with MOSQ_OPT_SSL_CTX: connects then cost the handshake only\n"
    "                            (as fleetsim, which parses its identities before the run)\n"
    "\n"
    "REPORT\n"
    "  connect latency p50 p90 p99 p99.9 max mean (ms, exact nearest-rank), errors by cause\n"
    "  (refused with CONNACK code, connect error, timeout, not started), time from the first\n"
    "  connect to all connected, connects/s (= N / that time), CPU seconds (getrusage),\n"
    "  RSS (VmRSS before any per-device state, after setup, at all connected, at the end;\n"
    "  peak = VmHWM) and RSS per connected device = (RSS at all connected - RSS before) / connected.\n"
    "\n"
    "Exit: 0 all connected, 1 otherwise, 64 usage error.\n";

static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("refclient: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see --help)\n", stderr);
    va_end(ap);
    exit(EXIT_USAGE);
}

static double parse_number(const char *name, const char *s, double min, double max)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v) || v < min || v > max)
        usage_error("%s expects a number in %g...%g, got '%s'", name, min, max, s);
    return v;
}

static int parse_int(const char *name, const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < min || v > max)
        usage_error("%s expects an integer in %ld...%ld, got '%s'", name, min, max, s);
    return (int)v;
}

static void parse_options(int argc, char **argv, options_t *o)
{
    memset(o, 0, sizeof *o);
    o->host = NULL;
    o->port = 0;
    o->devices = 100;
    o->window = 64;
    o->prefix = "ref-";
    o->keepalive = 60;
    o->hold = 2;
    o->timeout = 60;
    o->connect_timeout = 10;
    o->mqtt = MQTT_PROTOCOL_V311;
    o->tls_setup = TLS_SETUP_CONNECT;
    bool prefix_given = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define VALUE() (i + 1 < argc ? argv[++i] : (usage_error("%s needs a value", a), (char *)NULL))
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            exit(0);
        } else if (!strcmp(a, "--host")) {
            o->host = VALUE();
            if (!*o->host) usage_error("--host must not be empty");
        } else if (!strcmp(a, "--port")) {
            o->port = parse_int(a, VALUE(), 1, 65535);
        } else if (!strcmp(a, "--devices")) {
            o->devices = parse_int(a, VALUE(), 1, 1000000);
            o->devices_given = true;
        } else if (!strcmp(a, "--window")) {
            o->window = parse_int(a, VALUE(), 1, 100000);
        } else if (!strcmp(a, "--rate")) {
            o->rate = parse_number(a, VALUE(), 0, 1e9);
        } else if (!strcmp(a, "--prefix")) {
            o->prefix = VALUE();
            prefix_given = true;
            if (strlen(o->prefix) > 50) usage_error("--prefix must be at most 50 characters");
        } else if (!strcmp(a, "--source-count")) {
            o->source_count = parse_int(a, VALUE(), 1, 254);
            o->source_count_given = true;
        } else if (!strcmp(a, "--keepalive")) {
            o->keepalive = parse_int(a, VALUE(), 0, 65535);
            if (o->keepalive > 0 && o->keepalive < 5) usage_error("--keepalive must be 0 or 5...65535 (libmosquitto)");
        } else if (!strcmp(a, "--hold")) {
            o->hold = parse_number(a, VALUE(), 0, 86400);
        } else if (!strcmp(a, "--timeout")) {
            o->timeout = parse_number(a, VALUE(), 0.1, 86400);
        } else if (!strcmp(a, "--connect-timeout")) {
            o->connect_timeout = parse_number(a, VALUE(), 0.001, 3600);
        } else if (!strcmp(a, "--bundles")) {
            o->bundles = VALUE();
        } else if (!strcmp(a, "--tls-insecure-hostname")) {
            o->tls_insecure_hostname = true;
        } else if (!strcmp(a, "--tls-setup")) {
            const char *v = VALUE();
            if (!strcmp(v, "connect")) o->tls_setup = TLS_SETUP_CONNECT;
            else if (!strcmp(v, "preload")) o->tls_setup = TLS_SETUP_PRELOAD;
            else usage_error("--tls-setup expects connect or preload, got '%s'", v);
        } else if (!strcmp(a, "--json")) {
            o->json = VALUE();
        } else if (!strcmp(a, "--mqtt")) {
            const char *v = VALUE();
            if (!strcmp(v, "311") || !strcmp(v, "3.1.1")) o->mqtt = MQTT_PROTOCOL_V311;
            else if (!strcmp(v, "5")) o->mqtt = MQTT_PROTOCOL_V5;
            else usage_error("--mqtt expects 311 or 5, got '%s'", v);
        } else if (!strcmp(a, "--agent")) {
            o->agent = true;
        } else if (!strcmp(a, "--quiet")) {
            o->quiet = true;
        } else {
            usage_error("unknown option '%s'", a);
        }
#undef VALUE
    }
    if (o->bundles && prefix_given) usage_error("--prefix does not apply to --bundles (client id = bundle directory name)");
    if (!o->bundles && o->tls_insecure_hostname) usage_error("--tls-insecure-hostname needs --bundles");
}

/* ------------------------------------------------------------------------------------------ */
/* Clock, process statistics                                                                  */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double seconds_between(uint64_t a, uint64_t b) { return (double)(b - a) / 1e9; }

/* VmRSS or VmHWM of this process in KB (0 if unreadable). */
static long proc_status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    long v = 0;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, key, klen) && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* Raises the soft open-file limit to the hard limit; returns the soft limit. */
static long raise_file_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? LONG_MAX : (long)rl.rlim_cur;
}

/* ------------------------------------------------------------------------------------------ */
/* Device bundles (mutual TLS)                                                                */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The sorted names of DIR's subdirectories that hold device.crt. */
static char **list_bundles(const char *dir, int *count)
{
    DIR *d = opendir(dir);
    if (!d) usage_error("--bundles %s cannot be read: %s", dir, strerror(errno));
    size_t n = 0, cap = 1024;
    char **names = malloc(cap * sizeof *names);
    char path[4096];
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s/device.crt", dir, e->d_name);
        if (!file_exists(path)) continue;
        if (n == cap) names = realloc(names, (cap *= 2) * sizeof *names);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n == 0) usage_error("--bundles %s holds no device bundle (expected DIR/{id}/device.crt, device.key, broker-ca.pem)", dir);
    qsort(names, n, sizeof *names, cmp_str);
    *count = (int)n;
    return names;
}

/* Reads `broker = mqtts://HOST:PORT` from DIR/{id}/agent.conf; false if absent. */
static bool bundle_broker(const char *dir, const char *id, char *host, size_t hostlen, int *port)
{
    char path[4096], line[1024];
    snprintf(path, sizeof path, "%s/%s/agent.conf", dir, id);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (strncmp(p, "broker", 6)) continue;
        p += 6;
        while (*p == ' ' || *p == '\t') p++;
        if (*p != '=') continue;
        p++;
        while (*p == ' ' || *p == '\t') p++;
        p[strcspn(p, " \t\r\n")] = '\0';
        if (!strncmp(p, "mqtts://", 8)) p += 8;
        else if (!strncmp(p, "mqtt://", 7)) p += 7;
        char *colon = strrchr(p, ':');
        if (!colon) break;
        *colon = '\0';
        snprintf(host, hostlen, "%s", p);
        *port = atoi(colon + 1);
        found = *port > 0 && *port <= 65535 && *host;
    }
    fclose(f);
    return found;
}

/* --tls-setup preload: a client context like the one libmosquitto builds in net__init_ssl_ctx
 * (TLS >= 1.2, no compression, SSL_MODE_RELEASE_BUFFERS, peer verification), sharing one CA
 * store, with the device's certificate and key already parsed. With MOSQ_OPT_SSL_CTX,
 * libmosquitto installs no hostname callback, so the broker's name/IP is checked by OpenSSL's
 * X509_VERIFY_PARAM instead (same effect as libmosquitto's own check). */
static SSL_CTX *preload_context(const char *dir, const char *id, X509_STORE *store, const char *host, bool insecure,
                                char *err, size_t errlen)
{
    char crt[4096], key[4096];
    snprintf(crt, sizeof crt, "%s/%s/device.crt", dir, id);
    snprintf(key, sizeof key, "%s/%s/device.key", dir, id);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) { snprintf(err, errlen, "SSL_CTX_new failed"); return NULL; }
    SSL_CTX_set_options(ctx, SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_dh_auto(ctx, 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set1_cert_store(ctx, store);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (!insecure) {
        X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
        struct in_addr a4;
        struct in6_addr a6;
        int ok = (inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1)
                     ? X509_VERIFY_PARAM_set1_ip_asc(param, host)
                     : X509_VERIFY_PARAM_set1_host(param, host, 0);
        if (ok != 1) { snprintf(err, errlen, "cannot set the expected broker name %s", host); SSL_CTX_free(ctx); return NULL; }
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, crt) != 1 || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        char e[256];
        ERR_error_string_n(ERR_get_error(), e, sizeof e);
        snprintf(err, errlen, "%s/%s: cannot load device.crt/device.key: %s", dir, id, e);
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* ------------------------------------------------------------------------------------------ */
/* Run state                                                                                  */

typedef enum {
    ST_IDLE,          /* not started yet */
    ST_CONNECTING,    /* connect started, no CONNACK yet (counts against the window) */
    ST_CONNECTED,     /* CONNACK 0 received */
    ST_FAILED,        /* counted as an error; socket closed or about to be */
    ST_DISCONNECTING, /* DISCONNECT queued at the end of the run */
    ST_CLOSED         /* disconnected after having been connected */
} cstate_t;

typedef struct {
    struct mosquitto *m;
    uint64_t start_ns;  /* clock read immediately before the connect call */
    int index;
    int fd;             /* socket registered in epoll, -1 when none */
    uint32_t interest;  /* current epoll interest */
    cstate_t state;
    long long session;  /* --agent: DeviceStatus.session of this connection (will and status) */
} client_t;

enum cause { CAUSE_REFUSED, CAUSE_CONNECT, CAUSE_TIMEOUT, CAUSE_NOT_STARTED, CAUSE_DROPPED, CAUSE_COUNT };
static const char *cause_key[CAUSE_COUNT] = {"refused", "connectError", "timeout", "notStarted", "droppedAfterConnect"};

typedef struct {
    options_t o;
    bool tls;
    char host[256];
    int port;
    char **ids;                 /* client ids */
    client_t *clients;
    int n;                      /* devices */
    int epfd;

    int next;                   /* next device to start */
    int oldest;                 /* lowest index that may still be connecting (timeout scan) */
    int inflight;
    int connected;              /* currently connected */
    int connacks;               /* CONNACK 0 received */
    int subacks, pubacks;       /* --agent */
    int suback_denied;          /* --agent: SUBACK return code 0x80 */
    uint32_t *latency_us;       /* one per CONNACK 0, in arrival order */
    int errors[CAUSE_COUNT];
    int refused_by_code[256];
    char detail[CAUSE_COUNT][512]; /* first message per cause */
    char last_log[512];         /* last libmosquitto error/warning log line (TLS reasons) */

    double tokens;              /* --rate token bucket */
    uint64_t last_refill;

    uint64_t t_start, t_first, t_last_connack, t_all, t_settled;
    long rss_before, rss_after_setup, rss_all, rss_end, hwm_end;
    double cpu_before_connect, cpu_all, cpu_end, setup_seconds;
} run_t;

static run_t R;
static volatile sig_atomic_t g_stop = 0;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static void note_detail(enum cause c, const char *fmt, ...)
{
    if (R.detail[c][0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(R.detail[c], sizeof R.detail[c], fmt, ap);
    va_end(ap);
}

/* Leaves the window with an error. */
static void fail(client_t *c, enum cause cause)
{
    if (c->state != ST_CONNECTING) return;
    c->state = ST_FAILED;
    R.inflight--;
    R.errors[cause]++;
}

/* ------------------------------------------------------------------------------------------ */
/* libmosquitto callbacks                                                                     */

/* A DeviceStatus payload like escrow-agent's; the will and the online status of a connection
 * carry the same session (escrow-agent: Unix time in ms when it opened the connection). */
static int status_payload(char *buf, size_t len, long long session, const char *state)
{
    return snprintf(buf, len, "{\"agentVersion\":\"refclient/1\",\"mode\":\"escrow\",\"schema\":1,\"session\":%lld,\"state\":\"%s\"}",
                    session, state);
}

static void on_connect(struct mosquitto *m, void *obj, int rc)
{
    (void)m;
    client_t *c = obj;
    uint64_t t = now_ns(); /* event time, read per CONNACK */
    if (c->state != ST_CONNECTING) return;
    if (rc != 0) {
        R.refused_by_code[rc & 0xff]++;
        note_detail(CAUSE_REFUSED, "%s: CONNACK code %d (%s)", R.ids[c->index], rc,
                    R.o.mqtt == MQTT_PROTOCOL_V5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc));
        fail(c, CAUSE_REFUSED);
        return;
    }
    uint64_t us = (t - c->start_ns) / 1000;
    R.latency_us[R.connacks++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    R.t_last_connack = t;
    c->state = ST_CONNECTED;
    R.inflight--;
    R.connected++;
    if (R.o.agent) {
        /* Queued here (inside a callback libmosquitto does not write); handle_event writes them
         * right after mosquitto_loop_read returns. */
        char topic[128], payload[256];
        snprintf(topic, sizeof topic, "devices/%s/config", R.ids[c->index]);
        mosquitto_subscribe(c->m, NULL, topic, 1);
        snprintf(topic, sizeof topic, "devices/%s/status", R.ids[c->index]);
        int len = status_payload(payload, sizeof payload, c->session, "online");
        mosquitto_publish(c->m, NULL, topic, len, payload, 1, true);
    }
}

static void on_subscribe(struct mosquitto *m, void *obj, int mid, int qos_count, const int *granted)
{
    (void)m, (void)obj, (void)mid;
    R.subacks++;
    if (qos_count > 0 && granted[0] >= 0x80) R.suback_denied++;
}

static void on_publish(struct mosquitto *m, void *obj, int mid)
{
    (void)m, (void)obj, (void)mid;
    R.pubacks++;
}

static void on_disconnect(struct mosquitto *m, void *obj, int rc)
{
    (void)m;
    client_t *c = obj;
    int e = errno;
    c->fd = -1; /* libmosquitto closed the socket; epoll forgets it by itself */
    switch (c->state) {
    case ST_CONNECTING:
        note_detail(CAUSE_CONNECT, "%s: connection closed before CONNACK: %s%s%s%s%s", R.ids[c->index], mosquitto_strerror(rc),
                    rc == MOSQ_ERR_ERRNO ? " (" : "", rc == MOSQ_ERR_ERRNO ? strerror(e) : "", rc == MOSQ_ERR_ERRNO ? ")" : "",
                    R.last_log[0] ? "; last libmosquitto error: " : "", R.last_log);
        fail(c, CAUSE_CONNECT);
        break;
    case ST_CONNECTED:
        R.connected--;
        R.errors[CAUSE_DROPPED]++;
        note_detail(CAUSE_DROPPED, "%s: %s", R.ids[c->index], mosquitto_strerror(rc));
        c->state = ST_CLOSED;
        break;
    case ST_DISCONNECTING:
        R.connected--;
        c->state = ST_CLOSED;
        break;
    default:
        break;
    }
}

/* Installed with TLS only: OpenSSL's reasons reach us through libmosquitto's log. (Every
 * installed log callback costs a malloc + vsnprintf per libmosquitto debug message.) */
static void on_log(struct mosquitto *m, void *obj, int level, const char *str)
{
    (void)m;
    (void)obj;
    if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)) snprintf(R.last_log, sizeof R.last_log, "%s", str);
}

/* ------------------------------------------------------------------------------------------ */
/* epoll plumbing                                                                             */

/* True while this client's TLS handshake is still running. */
static bool tls_handshaking(client_t *c)
{
    if (!R.tls) return false;
    SSL *ssl = mosquitto_ssl_get(c->m);
    return ssl && !SSL_is_init_finished(ssl);
}

static uint32_t wanted_interest(client_t *c)
{
    uint32_t ev = EPOLLIN | EPOLLRDHUP;
    if (R.tls) {
        SSL *ssl = mosquitto_ssl_get(c->m);
        if (ssl && !SSL_is_init_finished(ssl)) return SSL_want_write(ssl) ? ev | EPOLLOUT : ev;
    }
    return mosquitto_want_write(c->m) ? ev | EPOLLOUT : ev;
}

/* Registers the client's socket after a connect call, or updates its interest. */
static void update_interest(client_t *c)
{
    int fd = mosquitto_socket(c->m);
    if (fd < 0) { c->fd = -1; return; }
    uint32_t want = wanted_interest(c);
    struct epoll_event ev = {.events = want, .data.u64 = (uint64_t)c->index};
    if (c->fd != fd) {
        if (epoll_ctl(R.epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            note_detail(CAUSE_CONNECT, "%s: epoll_ctl ADD: %s", R.ids[c->index], strerror(errno));
            fail(c, CAUSE_CONNECT);
            return;
        }
        c->fd = fd;
        c->interest = want;
    } else if (c->interest != want) {
        epoll_ctl(R.epfd, EPOLL_CTL_MOD, fd, &ev);
        c->interest = want;
    }
}

/* Closes a client that is still connecting (timeout) without waiting for anything. */
static void abandon(client_t *c)
{
    int fd = mosquitto_socket(c->m);
    if (fd >= 0) epoll_ctl(R.epfd, EPOLL_CTL_DEL, fd, NULL);
    c->fd = -1;
    mosquitto_destroy(c->m); /* closes socket and socketpair */
    c->m = NULL;
}

/* Starts one connect: the clock is read immediately before the connect call. */
static void start_connect(client_t *c)
{
    char source[32];
    const char *bind = NULL;
    if (R.o.source_count > 0) {
        snprintf(source, sizeof source, "127.0.0.%d", 1 + c->index % R.o.source_count);
        bind = source;
    }
    c->state = ST_CONNECTING;
    R.inflight++;
    c->start_ns = now_ns();
    if (!R.t_first) R.t_first = c->start_ns;
    int rc = bind ? mosquitto_connect_bind_async(c->m, R.host, R.port, R.o.keepalive, bind)
                  : mosquitto_connect_async(c->m, R.host, R.port, R.o.keepalive);
    if (rc != MOSQ_ERR_SUCCESS) {
        int e = errno;
        note_detail(CAUSE_CONNECT, "%s: mosquitto_connect%s_async: %s%s%s%s%s%s", R.ids[c->index], bind ? "_bind" : "",
                    mosquitto_strerror(rc), rc == MOSQ_ERR_ERRNO ? " (" : "", rc == MOSQ_ERR_ERRNO ? strerror(e) : "",
                    rc == MOSQ_ERR_ERRNO ? ")" : "", R.last_log[0] ? "; last libmosquitto error: " : "", R.last_log);
        fail(c, CAUSE_CONNECT);
        if (mosquitto_socket(c->m) >= 0) abandon(c);
        return;
    }
    update_interest(c);
}

/* Serves one epoll event of client c. */
static void handle_event(client_t *c, uint32_t events)
{
    if (!c->m || (c->state != ST_CONNECTING && c->state != ST_CONNECTED && c->state != ST_DISCONNECTING)) return;
    int rc = MOSQ_ERR_SUCCESS;
    bool handshaking = tls_handshaking(c);
    /* During the TLS handshake mosquitto_loop_read drives SSL_connect, whichever way the socket
     * became ready; mosquitto_loop_write would do nothing. */
    if (handshaking || (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))) rc = mosquitto_loop_read(c->m, 1);
    /* Write as soon as there is something to write (CONNECT right after the handshake). */
    if (rc == MOSQ_ERR_SUCCESS && c->m && mosquitto_socket(c->m) >= 0 && !tls_handshaking(c) && mosquitto_want_write(c->m))
        rc = mosquitto_loop_write(c->m, 1);
    if (rc != MOSQ_ERR_SUCCESS && c->state == ST_CONNECTING) {
        /* e.g. a failed TLS handshake: libmosquitto closed the socket without on_disconnect */
        note_detail(CAUSE_CONNECT, "%s: %s%s%s", R.ids[c->index], mosquitto_strerror(rc),
                    R.last_log[0] ? "; last libmosquitto error: " : "", R.last_log);
        fail(c, CAUSE_CONNECT);
    }
    if (mosquitto_socket(c->m) < 0) { c->fd = -1; return; }
    update_interest(c);
}

/* Starts connects while the window and the rate allow. */
static void pump_connects(uint64_t now)
{
    if (R.o.rate > 0) {
        double burst = R.o.rate / 20 > 1 ? R.o.rate / 20 : 1;
        R.tokens += seconds_between(R.last_refill, now) * R.o.rate;
        if (R.tokens > burst) R.tokens = burst;
    }
    R.last_refill = now;
    while (R.next < R.n && R.inflight < R.o.window && !g_stop) {
        if (R.o.rate > 0) {
            if (R.tokens < 1) break;
            R.tokens -= 1;
        }
        start_connect(&R.clients[R.next++]);
    }
}

/* Connects older than --connect-timeout become timeout errors (starts are in index order). */
static void check_connect_timeouts(uint64_t now)
{
    uint64_t limit = (uint64_t)(R.o.connect_timeout * 1e9);
    while (R.oldest < R.next) {
        client_t *c = &R.clients[R.oldest];
        if (c->state != ST_CONNECTING) { R.oldest++; continue; }
        if (now < c->start_ns || now - c->start_ns < limit) break;
        note_detail(CAUSE_TIMEOUT, "%s: no CONNACK within %g s", R.ids[c->index], R.o.connect_timeout);
        fail(c, CAUSE_TIMEOUT);
        abandon(c);
        R.oldest++;
    }
}

/* Keepalive (PINGREQ) for connected clients, once a second. */
static void keepalive_tick(void)
{
    for (int i = 0; i < R.next; i++) {
        client_t *c = &R.clients[i];
        if (c->state != ST_CONNECTED) continue;
        mosquitto_loop_misc(c->m);
        if (c->state == ST_CONNECTED && mosquitto_socket(c->m) >= 0) update_interest(c);
    }
}

static void serve_events(int timeout_ms)
{
    static struct epoll_event evs[MAX_EVENTS];
    int k = epoll_wait(R.epfd, evs, MAX_EVENTS, timeout_ms);
    for (int i = 0; i < k; i++) handle_event(&R.clients[evs[i].data.u64], evs[i].events);
}

/* ------------------------------------------------------------------------------------------ */
/* Report                                                                                     */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct { int count; double p50, p90, p99, p999, max, mean, min; } summary_t;

/* Nearest rank: the smallest value with at least p% of the values <= it. */
static double rank_ms(const uint32_t *sorted, int n, double p)
{
    double x = p / 100.0 * n;
    long rank = (long)x;
    if ((double)rank < x - 1e-9) rank++; /* ceil without libm */
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return sorted[rank - 1] / 1000.0;
}

static summary_t summarize(void)
{
    summary_t s = {0};
    int n = R.connacks;
    s.count = n;
    if (n == 0) return s;
    qsort(R.latency_us, (size_t)n, sizeof *R.latency_us, cmp_u32);
    double sum = 0;
    for (int i = 0; i < n; i++) sum += R.latency_us[i];
    s.p50 = rank_ms(R.latency_us, n, 50);
    s.p90 = rank_ms(R.latency_us, n, 90);
    s.p99 = rank_ms(R.latency_us, n, 99);
    s.p999 = rank_ms(R.latency_us, n, 99.9);
    s.max = R.latency_us[n - 1] / 1000.0;
    s.min = R.latency_us[0] / 1000.0;
    s.mean = sum / n / 1000.0;
    return s;
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static int total_errors(void)
{
    int t = 0;
    for (int i = 0; i < CAUSE_COUNT; i++) t += R.errors[i];
    return t;
}

static void write_json(const char *path, const summary_t *s, bool all, double all_s, double rate, double per_dev)
{
    FILE *f = fopen(path, "w");
    if (!f) { fprintf(stderr, "refclient: cannot write %s: %s\n", path, strerror(errno)); return; }
    int maj, min, rev;
    mosquitto_lib_version(&maj, &min, &rev);
    fprintf(f, "{\n  \"tool\": \"refclient\",\n  \"libmosquitto\": \"%d.%d.%d\",\n", maj, min, rev);
    fprintf(f, "  \"broker\": \"%s://%s:%d\",\n", R.tls ? "mqtts" : "mqtt", R.host, R.port);
    fprintf(f, "  \"tls\": %s,\n", R.tls ? "true" : "false");
    if (R.tls) fprintf(f, "  \"tlsSetup\": \"%s\",\n", R.o.tls_setup == TLS_SETUP_PRELOAD ? "preload" : "connect");
    fprintf(f, "  \"mqtt\": \"%s\",\n  \"window\": %d,\n  \"rate\": %g,\n  \"sourceCount\": %d,\n  \"keepalive\": %d,\n",
            R.o.mqtt == MQTT_PROTOCOL_V5 ? "5" : "3.1.1", R.o.window, R.o.rate, R.o.source_count, R.o.keepalive);
    fprintf(f, "  \"agent\": %s,\n  \"subacks\": %d,\n  \"subacksDenied\": %d,\n  \"pubacks\": %d,\n", R.o.agent ? "true" : "false",
            R.subacks, R.suback_denied, R.pubacks);
    fprintf(f, "  \"devices\": %d,\n  \"connected\": %d,\n  \"allConnected\": %s,\n", R.n, R.connacks, all ? "true" : "false");
    fprintf(f, "  \"errors\": {\"total\": %d", total_errors());
    for (int i = 0; i < CAUSE_COUNT; i++) fprintf(f, ", \"%s\": %d", cause_key[i], R.errors[i]);
    fprintf(f, ", \"refusedByCode\": {");
    bool first = true;
    for (int i = 0; i < 256; i++)
        if (R.refused_by_code[i]) { fprintf(f, "%s\"%d\": %d", first ? "" : ", ", i, R.refused_by_code[i]); first = false; }
    fprintf(f, "}},\n  \"errorDetails\": {");
    first = true;
    for (int i = 0; i < CAUSE_COUNT; i++) {
        if (!R.detail[i][0]) continue;
        fprintf(f, "%s\"%s\": ", first ? "" : ", ", cause_key[i]);
        json_string(f, R.detail[i]);
        first = false;
    }
    fprintf(f, "},\n");
    if (all) fprintf(f, "  \"allConnectedSeconds\": %.6f,\n", all_s);
    else fprintf(f, "  \"allConnectedSeconds\": null,\n");
    fprintf(f, "  \"connectsPerSec\": %.1f,\n", rate);
    fprintf(f, "  \"connectLatencyMs\": {\"count\": %d, \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"p999\": %.3f, "
               "\"max\": %.3f, \"mean\": %.3f, \"min\": %.3f},\n",
            s->count, s->p50, s->p90, s->p99, s->p999, s->max, s->mean, s->min);
    fprintf(f, "  \"setupSeconds\": %.3f,\n  \"cpuSeconds\": %.3f,\n  \"cpuConnectSeconds\": %.3f,\n", R.setup_seconds,
            R.cpu_end, R.cpu_all - R.cpu_before_connect);
    fprintf(f, "  \"rssBeforeKB\": %ld,\n  \"rssAfterSetupKB\": %ld,\n  \"rssAllConnectedKB\": %ld,\n  \"rssEndKB\": %ld,\n"
               "  \"peakRSSKB\": %ld,\n",
            R.rss_before, R.rss_after_setup, R.rss_all, R.rss_end, R.hwm_end);
    if (R.connacks > 0) fprintf(f, "  \"rssPerDeviceKB\": %.2f\n}\n", per_dev);
    else fprintf(f, "  \"rssPerDeviceKB\": null\n}\n");
    if (fclose(f) != 0) fprintf(stderr, "refclient: cannot write %s: %s\n", path, strerror(errno));
}

/* ------------------------------------------------------------------------------------------ */
/* main                                                                                       */

int main(int argc, char **argv)
{
    options_t *o = &R.o;
    parse_options(argc, argv, o);
    R.t_start = now_ns();
    signal(SIGPIPE, SIG_IGN); /* libmosquitto writes with write(2) */
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* Broker, devices, ids */
    R.tls = o->bundles != NULL;
    if (R.tls) {
        int count;
        R.ids = list_bundles(o->bundles, &count);
        char host[256] = "";
        int port = 0;
        bool have = bundle_broker(o->bundles, R.ids[0], host, sizeof host, &port);
        if (!o->host && !have) usage_error("%s/%s/agent.conf names no broker: give --host and --port", o->bundles, R.ids[0]);
        snprintf(R.host, sizeof R.host, "%s", o->host ? o->host : host);
        R.port = o->port ? o->port : (have ? port : 8883);
        if (!o->devices_given) o->devices = count;
        if (o->devices > count) usage_error("--devices %d exceeds the %d bundles in %s", o->devices, count, o->bundles);
    } else {
        snprintf(R.host, sizeof R.host, "%s", o->host ? o->host : "127.0.0.1");
        R.port = o->port ? o->port : 1883;
    }
    R.n = o->devices;
    if (!o->source_count_given && !strncmp(R.host, "127.", 4) && R.n > AUTO_SOURCE_THRESHOLD) {
        int k = (R.n + AUTO_SOURCE_THRESHOLD - 1) / AUTO_SOURCE_THRESHOLD;
        o->source_count = k > 254 ? 254 : k;
    }
    long limit = raise_file_limit();
    long need = (long)R.n * FDS_PER_CLIENT + 32;
    if (need > limit)
        usage_error("%d devices need about %ld descriptors (libmosquitto: socket + socketpair per client) but the "
                    "open-file limit is %ld; lower --devices or run several processes",
                    R.n, need, limit);

    /* Baseline before any per-device state (like fleetsim's baselineRSSKB). */
    R.rss_before = proc_status_kb("VmRSS");

    /* Setup: one struct mosquitto per device (and, with preload, its SSL_CTX), before the clock. */
    mosquitto_lib_init();
    if (!R.tls) {
        R.ids = malloc((size_t)R.n * sizeof *R.ids);
        for (int i = 0; i < R.n; i++) {
            if (asprintf(&R.ids[i], "%s%06d", o->prefix, i) < 0) { perror("refclient: asprintf"); return 1; }
        }
    }
    R.clients = calloc((size_t)R.n, sizeof *R.clients);
    R.latency_us = malloc((size_t)R.n * sizeof *R.latency_us);
    if (!R.clients || !R.latency_us) { fprintf(stderr, "refclient: out of memory\n"); return 1; }
    X509_STORE *store = NULL;
    if (R.tls && o->tls_setup == TLS_SETUP_PRELOAD) {
        char ca[4096];
        snprintf(ca, sizeof ca, "%s/%s/broker-ca.pem", o->bundles, R.ids[0]);
        store = X509_STORE_new();
        if (!store || X509_STORE_load_file(store, ca) != 1) {
            fprintf(stderr, "refclient: cannot load the broker CA %s\n", ca);
            return 1;
        }
    }
    for (int i = 0; i < R.n; i++) {
        client_t *c = &R.clients[i];
        c->index = i;
        c->fd = -1;
        c->m = mosquitto_new(R.ids[i], true, c);
        if (!c->m) {
            fprintf(stderr, "refclient: mosquitto_new(%s) failed: %s\n", R.ids[i], strerror(errno));
            return 1;
        }
        mosquitto_int_option(c->m, MOSQ_OPT_TCP_NODELAY, 1);
        mosquitto_int_option(c->m, MOSQ_OPT_PROTOCOL_VERSION, o->mqtt);
        mosquitto_connect_callback_set(c->m, on_connect);
        mosquitto_disconnect_callback_set(c->m, on_disconnect);
        if (o->agent) {
            char topic[128], payload[256];
            snprintf(topic, sizeof topic, "devices/%s/status", R.ids[i]);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            c->session = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + i; /* unique, increasing */
            int len = status_payload(payload, sizeof payload, c->session, "offline");
            mosquitto_will_set(c->m, topic, len, payload, 1, true);
            mosquitto_subscribe_callback_set(c->m, on_subscribe);
            mosquitto_publish_callback_set(c->m, on_publish);
        }
        if (!R.tls) continue;
        mosquitto_log_callback_set(c->m, on_log);
        if (o->tls_setup == TLS_SETUP_PRELOAD) {
            char err[512];
            SSL_CTX *ctx = preload_context(o->bundles, R.ids[i], store, R.host, o->tls_insecure_hostname, err, sizeof err);
            if (!ctx) { fprintf(stderr, "refclient: %s\n", err); return 1; }
            /* our context as is: without this, libmosquitto (ssl_ctx_defaults is on by default)
             * would re-apply its settings and insist on a cafile */
            mosquitto_int_option(c->m, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
            mosquitto_void_option(c->m, MOSQ_OPT_SSL_CTX, ctx); /* takes its own reference */
            SSL_CTX_free(ctx);
        } else {
            char ca[4096], crt[4096], key[4096];
            snprintf(ca, sizeof ca, "%s/%s/broker-ca.pem", o->bundles, R.ids[i]);
            snprintf(crt, sizeof crt, "%s/%s/device.crt", o->bundles, R.ids[i]);
            snprintf(key, sizeof key, "%s/%s/device.key", o->bundles, R.ids[i]);
            int rc = mosquitto_tls_set(c->m, ca, NULL, crt, key, NULL);
            if (rc != MOSQ_ERR_SUCCESS) {
                fprintf(stderr, "refclient: mosquitto_tls_set(%s): %s (check %s, %s, %s)\n", R.ids[i], mosquitto_strerror(rc), ca,
                        crt, key);
                return 1;
            }
            mosquitto_tls_opts_set(c->m, 1 /* SSL_VERIFY_PEER */, NULL, NULL);
            if (o->tls_insecure_hostname) mosquitto_tls_insecure_set(c->m, true);
        }
    }
    if (store) X509_STORE_free(store); /* each SSL_CTX holds a reference */
    R.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (R.epfd < 0) { perror("refclient: epoll_create1"); return 1; }
    R.rss_after_setup = proc_status_kb("VmRSS");
    R.setup_seconds = seconds_between(R.t_start, now_ns());
    R.cpu_before_connect = cpu_seconds();

    if (!o->quiet) {
        char src[64] = "no bind";
        if (o->source_count > 0) snprintf(src, sizeof src, "127.0.0.1..127.0.0.%d", o->source_count);
        printf("refclient: %d devices -> %s://%s:%d, window %d, rate %s, sources %s%s (setup %.2f s)\n", R.n,
               R.tls ? "mqtts" : "mqtt", R.host, R.port, o->window, o->rate > 0 ? "paced" : "unlimited", src,
               R.tls ? (o->tls_setup == TLS_SETUP_PRELOAD ? ", TLS contexts preloaded" : ", TLS set up at connect") : "",
               R.setup_seconds);
    }

    /* Connect phase, then hold. */
    uint64_t deadline = R.t_start + (uint64_t)(o->timeout * 1e9);
    uint64_t next_tick = now_ns() + 1000000000u;
    uint64_t hold_until = 0;
    bool timed_out = false;
    R.last_refill = now_ns();
    for (;;) {
        uint64_t now = now_ns();
        if (g_stop) break;
        if (now >= deadline) { timed_out = true; break; }
        if (hold_until && now >= hold_until) break;
        if (!R.t_settled) {
            pump_connects(now);
            check_connect_timeouts(now_ns()); /* not `now`: connects just started are younger */
            if (R.next == R.n && R.inflight == 0) {
                /* everyone has an outcome */
                R.t_settled = now;
                R.rss_all = proc_status_kb("VmRSS");
                R.cpu_all = cpu_seconds();
                if (R.connacks == R.n) {
                    R.t_all = R.t_last_connack;
                    hold_until = now + (uint64_t)(o->hold * 1e9);
                    if (!o->quiet) printf("all %d connected after %.3f s; holding %g s\n", R.n, seconds_between(R.t_first, R.t_all), o->hold);
                    if (o->hold <= 0) break;
                } else {
                    break; /* errors: nothing to hold for */
                }
            }
        }
        if (now >= next_tick) {
            next_tick += 1000000000u;
            keepalive_tick();
            if (!o->quiet && !R.t_settled)
                printf("t=%5.1fs connected %d/%d in-flight %d errors %d\n", seconds_between(R.t_first ? R.t_first : now, now),
                       R.connected, R.n, R.inflight, total_errors());
        }
        /* Wait: short when connects are due (window not full), else until the next tick. */
        int wait_ms = 100;
        if (!R.t_settled && R.next < R.n && R.inflight < o->window) {
            if (o->rate > 0) {
                double need_tokens = 1 - R.tokens;
                wait_ms = need_tokens > 0 ? (int)(need_tokens / o->rate * 1000) + 1 : 0;
                if (wait_ms > 100) wait_ms = 100;
            } else {
                wait_ms = 0;
            }
        }
        serve_events(wait_ms);
    }
    if (!R.t_settled) { /* timeout or signal during the connect phase */
        R.rss_all = proc_status_kb("VmRSS");
        R.cpu_all = cpu_seconds();
        for (int i = R.oldest; i < R.next; i++) {
            client_t *c = &R.clients[i];
            if (c->state != ST_CONNECTING) continue;
            note_detail(CAUSE_TIMEOUT, "%s: no CONNACK when the run ended (%s)", R.ids[i], timed_out ? "--timeout" : "signal");
            fail(c, CAUSE_TIMEOUT);
            abandon(c);
        }
        R.errors[CAUSE_NOT_STARTED] += R.n - R.next;
        if (R.n > R.next) note_detail(CAUSE_NOT_STARTED, "%d devices never started (%s)", R.n - R.next, timed_out ? "--timeout" : "signal");
    }

    /* Clean disconnect, bounded: DISCONNECT is normally written (and the socket closed) inside
     * mosquitto_disconnect; anything left is flushed from epoll for at most SHUTDOWN_BOUND_S. */
    for (int i = 0; i < R.next; i++) {
        client_t *c = &R.clients[i];
        if (c->state != ST_CONNECTED) continue;
        c->state = ST_DISCONNECTING;
        mosquitto_disconnect(c->m);
        if (c->state == ST_DISCONNECTING && mosquitto_socket(c->m) >= 0) update_interest(c);
    }
    uint64_t shutdown_deadline = now_ns() + (uint64_t)(SHUTDOWN_BOUND_S * 1e9);
    while (R.connected > 0 && now_ns() < shutdown_deadline) serve_events(50);
    R.rss_end = proc_status_kb("VmRSS");
    R.hwm_end = proc_status_kb("VmHWM");
    R.cpu_end = cpu_seconds();

    /* Report */
    summary_t s = summarize();
    bool all = R.connacks == R.n && R.t_all != 0;
    double all_s = all ? seconds_between(R.t_first, R.t_all) : 0;
    double span = R.t_last_connack > R.t_first ? seconds_between(R.t_first, R.t_last_connack) : 0;
    double rate = all ? R.n / all_s : (span > 0 ? R.connacks / span : 0);
    double per_dev = R.connacks > 0 ? (double)(R.rss_all - R.rss_before) / R.connacks : 0;
    printf("refclient %s %s://%s:%d  devices %d  connected %d  errors %d", R.tls ? "TLS" : "plain", R.tls ? "mqtts" : "mqtt", R.host,
           R.port, R.n, R.connacks, total_errors());
    for (int i = 0; i < CAUSE_COUNT; i++)
        if (R.errors[i]) printf(" %s=%d", cause_key[i], R.errors[i]);
    printf("%s\n", g_stop ? "  (stopped by a signal)" : "");
    for (int i = 0; i < CAUSE_COUNT; i++)
        if (R.detail[i][0]) printf("  %s: %s\n", cause_key[i], R.detail[i]);
    if (all) printf("  all connected after   %.3f s  (%.0f connects/s, window %d)\n", all_s, rate, o->window);
    else printf("  all connected after   never  (%d of %d; %.0f connects/s, window %d)\n", R.connacks, R.n, rate, o->window);
    if (o->agent)
        printf("  agent traffic         %d SUBACKs (%d denied), %d PUBACKs (will + SUBSCRIBE + retained status per device)\n", R.subacks,
               R.suback_denied, R.pubacks);
    if (s.count > 0)
        printf("  connect latency ms    p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f  (n=%d)\n", s.p50, s.p90, s.p99,
               s.p999, s.max, s.mean, s.count);
    else
        printf("  connect latency ms    none (no CONNACK)\n");
    printf("  CPU                   %.2f s total, %.2f s connect phase (setup %.2f s)\n", R.cpu_end, R.cpu_all - R.cpu_before_connect,
           R.setup_seconds);
    printf("  RSS KB                before %ld  after setup %ld  all connected %ld  end %ld  peak %ld  per device %.2f\n", R.rss_before,
           R.rss_after_setup, R.rss_all, R.rss_end, R.hwm_end, per_dev);
    if (o->json) write_json(o->json, &s, all, all_s, rate, per_dev);

    for (int i = 0; i < R.n; i++)
        if (R.clients[i].m) mosquitto_destroy(R.clients[i].m);
    mosquitto_lib_cleanup();
    close(R.epfd);
    return all && total_errors() == 0 ? 0 : 1;
}
