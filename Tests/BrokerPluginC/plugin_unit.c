/*
 * plugin_unit.c: unit tests of the EscrowFleet broker plugin with no broker.
 *
 * The plugin source is included whole and the few broker functions it calls
 * are stubbed here, so its static functions (topic coverage, overlap, parser)
 * can be tested directly. run.sh builds this with AddressSanitizer, whose leak
 * check runs at exit: init, reload and cleanup must free everything.
 *
 * Output: one "ok - NAME" or "FAIL - NAME: detail" line per check, which
 * run.sh counts, and "# " lines with measurements.
 * Usage: plugin_unit SCRATCH_DIR [bench]   (bench: only the revocation
 * micro benchmark, for an optimised build without sanitizers)
 */

#include "escrow_broker_plugin.c"

#include <stdarg.h>
#include <time.h>

/* ---- Broker stubs ---- */

struct mosquitto {
    const char *id;
    const char *username;
    X509 *cert; /* the peer certificate; NULL without TLS or once the socket is closed */
};

const char *mosquitto_client_id(const struct mosquitto *client) { return client->id; }
const char *mosquitto_client_username(const struct mosquitto *client) { return client->username; }

static unsigned long certificate_calls;

/* As the broker: SSL_get_peer_certificate, a new reference the caller frees. */
void *mosquitto_client_certificate(const struct mosquitto *client)
{
    certificate_calls++;
    if (client->cert == NULL) {
        return NULL;
    }
    X509_up_ref(client->cert);
    return client->cert;
}

static char last_log[1024];
static char log_needle[128];   /* counts the log lines containing this */
static unsigned log_matches;

void mosquitto_log_printf(int level, const char *fmt, ...)
{
    va_list args;
    (void)level;
    va_start(args, fmt);
    vsnprintf(last_log, sizeof(last_log), fmt, args);
    va_end(args);
    if (log_needle[0] != '\0' && strstr(last_log, log_needle) != NULL) {
        log_matches++;
    }
}

static void count_log_lines(const char *needle)
{
    snprintf(log_needle, sizeof(log_needle), "%s", needle);
    log_matches = 0;
}

static MOSQ_FUNC_generic_callback registered[MOSQ_EVT_DISCONNECT + 1];
static void *registered_userdata[MOSQ_EVT_DISCONNECT + 1];

int mosquitto_callback_register(mosquitto_plugin_id_t *identifier, int event,
                                MOSQ_FUNC_generic_callback cb, const void *event_data, void *userdata)
{
    (void)identifier;
    (void)event_data;
    if (registered[event] != NULL) {
        return MOSQ_ERR_ALREADY_EXISTS;
    }
    registered[event] = cb;
    registered_userdata[event] = userdata;
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_callback_unregister(mosquitto_plugin_id_t *identifier, int event,
                                  MOSQ_FUNC_generic_callback cb, const void *event_data)
{
    (void)identifier;
    (void)event_data;
    if (registered[event] != cb) {
        return MOSQ_ERR_NOT_FOUND;
    }
    registered[event] = NULL;
    registered_userdata[event] = NULL;
    return MOSQ_ERR_SUCCESS;
}

/* Kicks: the ids asked for, and the connected clients the stub broker knows
 * (a kick of one of them fires MOSQ_EVT_DISCONNECT from inside the tick, as
 * mosquitto's do_disconnect does). */
#define MAX_KICKS 16
static char kicked[MAX_KICKS][64];
static unsigned kick_calls;
static struct mosquitto *connected[8];

/* Publishes by the plugin (mosquitto_broker_publish_copy): the last one, and how many. */
static char published_topic[256];
static char published_payload[256];
static int published_qos = -1;
static bool published_retain;
static unsigned publish_calls;

int mosquitto_broker_publish_copy(const char *clientid, const char *topic, int payloadlen, const void *payload,
                                  int qos, bool retain, mosquitto_property *properties)
{
    (void)properties;
    if (clientid != NULL) {
        return MOSQ_ERR_INVAL; /* the plugin publishes to every subscriber */
    }
    publish_calls++;
    snprintf(published_topic, sizeof(published_topic), "%s", topic);
    snprintf(published_payload, sizeof(published_payload), "%.*s", payloadlen, (const char *)payload);
    published_qos = qos;
    published_retain = retain;
    return MOSQ_ERR_SUCCESS;
}

static void fire_disconnect(struct mosquitto *client)
{
    struct mosquitto_evt_disconnect ed = {.client = client, .reason = MOSQ_ERR_ADMINISTRATIVE_ACTION};
    if (registered[MOSQ_EVT_DISCONNECT] != NULL) {
        registered[MOSQ_EVT_DISCONNECT](MOSQ_EVT_DISCONNECT, &ed, registered_userdata[MOSQ_EVT_DISCONNECT]);
    }
}

int mosquitto_kick_client_by_clientid(const char *clientid, bool with_will)
{
    (void)with_will;
    if (kick_calls < MAX_KICKS) {
        snprintf(kicked[kick_calls], sizeof(kicked[0]), "%s", clientid != NULL ? clientid : "(all)");
    }
    kick_calls++;
    for (size_t i = 0; i < sizeof(connected) / sizeof(connected[0]); i++) {
        if (connected[i] != NULL && clientid != NULL && strcmp(connected[i]->id, clientid) == 0) {
            struct mosquitto *client = connected[i];
            connected[i] = NULL;
            fire_disconnect(client);
            return MOSQ_ERR_SUCCESS;
        }
    }
    return MOSQ_ERR_NOT_FOUND;
}

static void reset_kicks(void)
{
    kick_calls = 0;
    memset(connected, 0, sizeof(connected));
}

/* ---- Test helpers ---- */

static int failures;

static void check(bool ok, const char *name, const char *detail)
{
    if (ok) {
        printf("ok - %s\n", name);
    } else {
        printf("FAIL - %s: %s\n", name, detail);
        failures++;
    }
}

static void write_file(const char *path, const char *text)
{
    FILE *file = fopen(path, "w");
    if (file == NULL || fputs(text, file) < 0 || fclose(file) != 0) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        exit(2);
    }
}

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static int subscribe(const char *username, const char *client_id, const char *topic)
{
    struct mosquitto client = {.id = client_id, .username = username};
    struct mosquitto_evt_acl_check ed = {.client = &client, .topic = topic, .access = MOSQ_ACL_SUBSCRIBE};
    return registered[MOSQ_EVT_ACL_CHECK](MOSQ_EVT_ACL_CHECK, &ed, registered_userdata[MOSQ_EVT_ACL_CHECK]);
}

static int basic_auth(const char *username, const char *client_id)
{
    struct mosquitto client = {.id = client_id, .username = username};
    struct mosquitto_evt_basic_auth ed = {.client = &client, .username = (char *)username};
    return registered[MOSQ_EVT_BASIC_AUTH](MOSQ_EVT_BASIC_AUTH, &ed, registered_userdata[MOSQ_EVT_BASIC_AUTH]);
}

static int acl_check(struct mosquitto *client, int access, const char *topic)
{
    struct mosquitto_evt_acl_check ed = {.client = client, .topic = topic, .access = access};
    return registered[MOSQ_EVT_ACL_CHECK](MOSQ_EVT_ACL_CHECK, &ed, registered_userdata[MOSQ_EVT_ACL_CHECK]);
}

static void tick(void)
{
    struct mosquitto_evt_tick ed = {.now_s = 0};
    registered[MOSQ_EVT_TICK](MOSQ_EVT_TICK, &ed, registered_userdata[MOSQ_EVT_TICK]);
}

static int reload(void)
{
    struct mosquitto_evt_reload ed = {.options = NULL};
    return registered[MOSQ_EVT_RELOAD](MOSQ_EVT_RELOAD, &ed, registered_userdata[MOSQ_EVT_RELOAD]);
}

static const char *rc_name(int rc)
{
    switch (rc) {
    case MOSQ_ERR_PLUGIN_DEFER: return "DEFER";
    case MOSQ_ERR_ACL_DENIED: return "DENIED";
    case MOSQ_ERR_AUTH: return "AUTH";
    case MOSQ_ERR_SUCCESS: return "SUCCESS";
    default: return "other";
    }
}

/* ---- Tests ---- */

static void test_coverage(void)
{
    static const struct { const char *rule, *filter; bool covered; } cases[] = {
        {"accounts/acme/events/#", "accounts/acme/events/#", true},
        {"accounts/acme/events/#", "accounts/acme/events", true}, /* '#' matches the parent */
        {"accounts/acme/events/#", "accounts/acme/events/+", true},
        {"accounts/acme/events/#", "accounts/acme/events/a/b/c", true},
        {"accounts/acme/events/#", "accounts/+/events/#", false},
        {"accounts/acme/events/#", "accounts/globex/events/#", false},
        {"accounts/acme/events/#", "accounts/acme", false},
        {"accounts/acme/events/#", "#", false},
        {"accounts/+/events", "accounts/acme/events", true},
        {"accounts/+/events", "accounts/+/events", true},
        {"accounts/+/events", "accounts/#", false},
        {"accounts/+/events", "accounts/acme", false},
        {"accounts/+/events", "accounts/acme/events/x", false},
        {"accounts/acme", "accounts/+", false},
        {"a/b", "a/b", true},
        {"a/b", "a/b/", false},
        {"a/", "a/", true},
        {"a//b", "a/+/b", false},
        {"a/+/b", "a//b", true},
        {"#", "#", true},
        {"#", "anything/at/all", true},
        {"#", "$SYS/broker/uptime", false},
        {"+/broker/uptime", "$SYS/broker/uptime", false},
        {"$SYS/#", "$SYS/broker/uptime", true},
        {"$SYS/#", "#", false},
        {"devices/dev-1/config", "devices/+/config", false},
    };
    char name[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(name, sizeof(name), "coverage: rule %s %s filter %s", cases[i].rule,
                 cases[i].covered ? "covers" : "does not cover", cases[i].filter);
        check(rule_covers(cases[i].rule, cases[i].filter) == cases[i].covered, name, "wrong answer");
    }
}

static void test_overlap(void)
{
    static const struct { const char *a, *b; bool overlap; } cases[] = {
        {"#", "accounts/acme/events/#", true},
        {"#", "$SYS/#", false},
        {"accounts/acme/events/secret/#", "accounts/acme/events/#", true},
        {"accounts/acme/events/secret/#", "accounts/acme/events/+", true}, /* .../secret */
        {"accounts/acme/events/secret/#", "accounts/acme/events/public", false},
        {"accounts/+/events", "accounts/acme/+", true},
        {"a/b", "a/b/c", false},
        {"a/b", "a/b/#", true},
        {"a/+", "a", false},
        {"$SYS/x", "+/x", false},
        {"$SYS/x", "$SYS/+", true},
    };
    char name[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(name, sizeof(name), "overlap: %s and %s %s", cases[i].a, cases[i].b,
                 cases[i].overlap ? "overlap" : "are disjoint");
        bool forward = filters_overlap(cases[i].a, cases[i].b);
        bool backward = filters_overlap(cases[i].b, cases[i].a);
        check(forward == cases[i].overlap && backward == cases[i].overlap, name, "wrong answer");
    }
}

static void test_filter_validity(void)
{
    static const struct { const char *filter; bool valid; } cases[] = {
        {"a/b", true}, {"#", true}, {"+", true}, {"a/+/b", true}, {"a/#", true}, {"/", true},
        {"", false}, {"a/#/b", false}, {"a#", false}, {"a/b+", false}, {"+a/b", false}, {"##", false},
    };
    char name[128];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(name, sizeof(name), "filter \"%s\" is %s", cases[i].filter, cases[i].valid ? "valid" : "invalid");
        check(filter_is_valid(cases[i].filter) == cases[i].valid, name, "wrong answer");
    }
}

static void test_parse_errors(const char *dir)
{
    static const struct { const char *text; const char *expect; } cases[] = {
        {"user op-a\ntopic sometimes accounts/#\n", "line 2: invalid access type"},
        {"pattern\n", "line 1: empty topic"},
        {"# ok\n\nuser\n", "line 3: missing username"},
        {"usr op-a\n", "line 1: invalid line"},
        {"user op-a\ntopic read accounts/#/x\n", "line 2: invalid topic"},
        {"user op-a\ntopic read accounts/a+\n", "line 2: invalid topic"},
    };
    char path[4096], name[256];
    snprintf(path, sizeof(path), "%s/bad.acl", dir);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct load_error error = {{0}};
        write_file(path, cases[i].text);
        struct rule_set *set = rule_set_load(path, &error);
        snprintf(name, sizeof(name), "parse error reported as \"%s\"", cases[i].expect);
        check(set == NULL && strstr(error.message, cases[i].expect) != NULL, name, error.message);
        rule_set_free(set);
    }

    struct load_error error = {{0}};
    snprintf(path, sizeof(path), "%s/does-not-exist.acl", dir);
    struct rule_set *set = rule_set_load(path, &error);
    check(set == NULL && strstr(error.message, "cannot open") != NULL, "missing file reported", error.message);
    rule_set_free(set);

    struct load_error dir_error = {{0}};
    set = rule_set_load(dir, &dir_error);
    check(set == NULL && strstr(dir_error.message, "read error") != NULL, "directory reported as unreadable",
          dir_error.message);
    rule_set_free(set);
}

static void test_parse_forms(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/forms.acl", dir);
    write_file(path,
               "  # indented comment\r\n"
               "topic read anonymous/rules/are/skipped\n"
               "user op-a   \n"
               "topic accounts/acme/both\n"            /* no access word: readwrite */
               "\ttopic\tread\taccounts/acme/tabs/#\n"
               "pattern read inside/%u/block\n"        /* patterns are global */
               "user op-b\n"
               "topic read accounts/globex/#\n"
               "user op-a\n"                           /* a second block merges */
               "topic read accounts/acme/more/#\n");
    struct load_error error = {{0}};
    struct rule_set *set = rule_set_load(path, &error);
    check(set != NULL, "parse: mosquitto's line forms load", error.message);
    if (set == NULL) {
        return;
    }
    const struct user_rules *a = rule_set_find(set, "op-a");
    check(a != NULL && a->rules.count == 3, "parse: repeated user blocks merge", "op-a should have 3 rules");
    check(a != NULL && a->rules.items[0].access == (MOSQ_ACL_READ | MOSQ_ACL_WRITE) &&
              strcmp(a->rules.items[0].topic, "accounts/acme/both") == 0,
          "parse: topic without access word is readwrite", "wrong first rule");
    check(set->patterns.count == 1 && set->patterns.items[0].username_refs == 1,
          "parse: pattern inside a user block is global", "wrong pattern list");
    check(set->user_count == 2 && rule_set_find(set, "nobody") == NULL, "parse: anonymous topic lines skipped",
          "unexpected users");
    rule_set_free(set);
}

static const char *project_acl =
    "# Generated by EscrowFleet. Do not edit: regenerated on every change.\n"
    "pattern write devices/%u/status\n"
    "pattern write devices/%u/heartbeat\n"
    "pattern write devices/%u/config/ack\n"
    "pattern write devices/%u/csr\n"
    "pattern read devices/%u/config\n"
    "pattern read devices/%u/error\n"
    "pattern read clients/%c/inbox/#\n"
    "\n"
    "user svc-escrowd\n"
    "topic readwrite devices/#\n"
    "topic readwrite accounts/#\n"
    "\n"
    "user op-a\n"
    "topic write accounts/acme/cmd/#\n"
    "topic read accounts/acme/reply/#\n"
    "topic read accounts/acme/events/#\n"
    "\n"
    "user op-c\n"
    "topic read accounts/acme/events/#\n"
    "topic deny accounts/acme/events/secret/#\n"
    "\n"
    "user dev-revoked\n"
    "topic deny #\n";

static void test_plugin(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/project.acl", dir);
    write_file(path, project_acl);
    mosquitto_plugin_id_t *identifier = (mosquitto_plugin_id_t *)path; /* opaque to the plugin */
    void *userdata = NULL;

    int versions[] = {2, 3, 4, 5};
    check(mosquitto_plugin_version(4, versions) == 5, "plugin: asks for API version 5", "wrong version");
    check(mosquitto_plugin_version(3, versions) == -1, "plugin: refuses a broker without API 5", "accepted");

    struct mosquitto_opt no_path[] = {{(char *)"service_prefix", (char *)"svc-"}};
    check(mosquitto_plugin_init(identifier, &userdata, no_path, 1) != MOSQ_ERR_SUCCESS &&
              strstr(last_log, "plugin_opt_acl_file is required") != NULL,
          "plugin: init fails without acl_file", last_log);
    struct mosquitto_opt empty_prefix[] = {{(char *)"acl_file", path}, {(char *)"service_prefix", (char *)""}};
    check(mosquitto_plugin_init(identifier, &userdata, empty_prefix, 2) != MOSQ_ERR_SUCCESS,
          "plugin: init fails with an empty service_prefix", last_log);
    char missing[4200];
    snprintf(missing, sizeof(missing), "%s/missing.acl", dir);
    struct mosquitto_opt missing_file[] = {{(char *)"acl_file", missing}};
    check(mosquitto_plugin_init(identifier, &userdata, missing_file, 1) != MOSQ_ERR_SUCCESS &&
              strstr(last_log, "Error: cannot load ACL file") != NULL && registered[MOSQ_EVT_ACL_CHECK] == NULL,
          "plugin: init fails on an unreadable ACL file", last_log);

    struct mosquitto_opt options[] = {{(char *)"acl_file", path}};
    int rc = mosquitto_plugin_init(identifier, &userdata, options, 1);
    check(rc == MOSQ_ERR_SUCCESS && registered[MOSQ_EVT_ACL_CHECK] != NULL && registered[MOSQ_EVT_BASIC_AUTH] != NULL &&
              registered[MOSQ_EVT_RELOAD] != NULL,
          "plugin: init registers ACL_CHECK, BASIC_AUTH, RELOAD", last_log);
    if (rc != MOSQ_ERR_SUCCESS) {
        return;
    }

    static const struct { const char *user, *id, *topic; int expect; } subs[] = {
        {"op-a", "op-a", "$share/escrowd/accounts/+/cmd/+", MOSQ_ERR_ACL_DENIED},
        {"op-a", "op-a", "$share/x/accounts/acme/events/#", MOSQ_ERR_ACL_DENIED},
        {"op-a", "op-a", "#", MOSQ_ERR_ACL_DENIED},
        {"op-a", "op-a", "accounts/+/events/#", MOSQ_ERR_ACL_DENIED},
        {"op-a", "op-a", "accounts/globex/events/#", MOSQ_ERR_ACL_DENIED},
        {"op-a", "op-a", "devices/+/status", MOSQ_ERR_ACL_DENIED},
        {"op-a", "op-a", "accounts/acme/cmd/x", MOSQ_ERR_ACL_DENIED}, /* write only */
        {"op-a", "op-a", "accounts/acme/events/#", MOSQ_ERR_PLUGIN_DEFER},
        {"op-a", "op-a", "accounts/acme/reply/abc", MOSQ_ERR_PLUGIN_DEFER},
        {"op-a", "op-a", "accounts/acme/events/+", MOSQ_ERR_PLUGIN_DEFER},
        {NULL, "anon", "accounts/acme/events/#", MOSQ_ERR_ACL_DENIED},
        {"svc-escrowd", "svc-escrowd", "$share/escrowd/accounts/+/cmd/+", MOSQ_ERR_PLUGIN_DEFER},
        {"svc-escrowd", "svc-escrowd", "$share/escrowd/devices/+/status", MOSQ_ERR_PLUGIN_DEFER},
        {"svc-escrowd", "svc-escrowd", "$share/escrowd/#", MOSQ_ERR_ACL_DENIED},
        {"svc-escrowd", "svc-escrowd", "$share/escrowd", MOSQ_ERR_ACL_DENIED},
        {"svc-escrowd", "svc-escrowd", "$share//accounts/#", MOSQ_ERR_ACL_DENIED},
        {"svc-escrowd", "svc-escrowd", "$share/escrowd/", MOSQ_ERR_ACL_DENIED},
        {"svc-escrowd", "svc-escrowd", "$SYS/#", MOSQ_ERR_ACL_DENIED},
        {"op-c", "op-c", "accounts/acme/events/#", MOSQ_ERR_ACL_DENIED},
        {"op-c", "op-c", "accounts/acme/events/+", MOSQ_ERR_ACL_DENIED},
        {"op-c", "op-c", "accounts/acme/events/public", MOSQ_ERR_PLUGIN_DEFER},
        {"dev-1", "dev-1", "devices/dev-1/config", MOSQ_ERR_PLUGIN_DEFER},
        {"dev-1", "dev-1", "devices/dev-1/error", MOSQ_ERR_PLUGIN_DEFER},
        {"dev-1", "dev-1", "devices/dev-1/status", MOSQ_ERR_ACL_DENIED},
        {"dev-1", "dev-1", "devices/dev-2/config", MOSQ_ERR_ACL_DENIED},
        {"dev-1", "dev-1", "devices/+/config", MOSQ_ERR_ACL_DENIED},
        {"dev-revoked", "dev-revoked", "devices/dev-revoked/config", MOSQ_ERR_ACL_DENIED},
        {"dev/x", "dev/x", "devices/dev/x/config", MOSQ_ERR_ACL_DENIED}, /* '/' in %u */
        {"dev+", "dev+", "devices/dev+/config", MOSQ_ERR_ACL_DENIED},
        {"op-a", "op-a:cli-1", "clients/op-a:cli-1/inbox/#", MOSQ_ERR_PLUGIN_DEFER}, /* %c */
        {"op-a", "op-a:cli-1", "clients/op-a/inbox/#", MOSQ_ERR_ACL_DENIED},
        {"op-a", "op-a/x", "clients/op-a/x/inbox/#", MOSQ_ERR_ACL_DENIED}, /* '/' in %c */
    };
    char name[256], detail[64];
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        int got = subscribe(subs[i].user, subs[i].id, subs[i].topic);
        snprintf(name, sizeof(name), "subscribe: %s as %s (%s) -> %s", subs[i].topic,
                 subs[i].user != NULL ? subs[i].user : "(anonymous)", subs[i].id, rc_name(subs[i].expect));
        snprintf(detail, sizeof(detail), "got %s", rc_name(got));
        check(got == subs[i].expect, name, detail);
    }

    struct mosquitto client = {.id = "op-a", .username = "op-a"};
    static const int others[] = {MOSQ_ACL_READ, MOSQ_ACL_WRITE, MOSQ_ACL_UNSUBSCRIBE};
    bool all_deferred = true;
    for (size_t i = 0; i < 3; i++) {
        struct mosquitto_evt_acl_check ed = {.client = &client, .topic = "#", .access = others[i]};
        all_deferred &= registered[MOSQ_EVT_ACL_CHECK](MOSQ_EVT_ACL_CHECK, &ed, userdata) == MOSQ_ERR_PLUGIN_DEFER;
    }
    check(all_deferred, "acl: READ, WRITE and UNSUBSCRIBE are deferred", "one was decided");

    static const struct { const char *user, *id; int expect; } auths[] = {
        {"op-a", "op-a", MOSQ_ERR_PLUGIN_DEFER},   {"op-a", "op-a:cli-1", MOSQ_ERR_PLUGIN_DEFER},
        {"op-a", "op-a:", MOSQ_ERR_PLUGIN_DEFER},  {"op-a", "escrowd", MOSQ_ERR_AUTH},
        {"op-a", "op-b:x", MOSQ_ERR_AUTH},         {"op-a", "op-ab", MOSQ_ERR_AUTH},
        {"op-a", "op-", MOSQ_ERR_AUTH},            {"op-a", "", MOSQ_ERR_AUTH},
        {NULL, "op-a", MOSQ_ERR_AUTH},
    };
    for (size_t i = 0; i < sizeof(auths) / sizeof(auths[0]); i++) {
        int got = basic_auth(auths[i].user, auths[i].id);
        snprintf(name, sizeof(name), "basic auth: username %s, client id \"%s\" -> %s",
                 auths[i].user != NULL ? auths[i].user : "(none)", auths[i].id, rc_name(auths[i].expect));
        snprintf(detail, sizeof(detail), "got %s", rc_name(got));
        check(got == auths[i].expect, name, detail);
    }

    /* Reload: new rules apply; a broken file keeps the old ones. */
    char text[4096];
    snprintf(text, sizeof(text), "%suser op-a\ntopic read accounts/initech/events/#\n", project_acl);
    write_file(path, text);
    check(reload() == MOSQ_ERR_PLUGIN_DEFER && strstr(last_log, "reloaded") != NULL &&
              subscribe("op-a", "op-a", "accounts/initech/events/#") == MOSQ_ERR_PLUGIN_DEFER,
          "reload: an added rule applies", last_log);
    snprintf(text, sizeof(text), "%sthis is not an ACL line\n", project_acl);
    write_file(path, text);
    check(reload() == MOSQ_ERR_PLUGIN_DEFER && strstr(last_log, "keeping the previous rules") != NULL &&
              strstr(last_log, "line 25") != NULL &&
              subscribe("op-a", "op-a", "accounts/initech/events/#") == MOSQ_ERR_PLUGIN_DEFER,
          "reload: a broken file keeps the previous rules and names the line", last_log);

    mosquitto_plugin_cleanup(userdata, options, 1);
    check(registered[MOSQ_EVT_ACL_CHECK] == NULL && registered[MOSQ_EVT_BASIC_AUTH] == NULL &&
              registered[MOSQ_EVT_RELOAD] == NULL,
          "cleanup: callbacks unregistered", "still registered");
}

/* ---- Revocation ---- */

/* An unsigned certificate with this serial: all the plugin reads of it. */
static X509 *certificate_with_serial(const uint8_t *bytes, int length, bool negative)
{
    X509 *cert = X509_new();
    BIGNUM *bn = BN_bin2bn(bytes, length, NULL);
    if (cert == NULL || bn == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    BN_set_negative(bn, negative ? 1 : 0);
    if (BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) == NULL) {
        fprintf(stderr, "BN_to_ASN1_INTEGER failed\n");
        exit(2);
    }
    BN_free(bn);
    return cert;
}

/* The serial as escrowd writes it (Certificate.serialNumberHex): BN_bn2hex, lowercased. */
static void writer_hex(const X509 *cert, char *out, size_t size)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *hex = BN_bn2hex(bn);
    size_t i = 0;
    for (; hex[i] != '\0' && i + 1 < size; i++) {
        out[i] = (char)tolower((unsigned char)hex[i]);
    }
    out[i] = '\0';
    OPENSSL_free(hex);
    BN_free(bn);
}

/* The reload confirmation: after every reload, the token file's first line on
 * the reload topic (QoS 1, not retained); both options or neither. */
static void test_reload_confirmation(const char *dir)
{
    mosquitto_plugin_id_t *identifier = NULL;
    void *userdata = NULL;
    char acl[4200], token[4200];
    snprintf(acl, sizeof(acl), "%s/confirm.acl", dir);
    snprintf(token, sizeof(token), "%s/confirm.token", dir);
    write_file(acl, "user svc-escrowd\ntopic read escrow/broker/reloaded\n");

    struct mosquitto_opt half[] = {{(char *)"acl_file", acl}, {(char *)"reload_topic", (char *)"escrow/broker/reloaded"}};
    check(mosquitto_plugin_init(identifier, &userdata, half, 2) != MOSQ_ERR_SUCCESS && strstr(last_log, "go together") != NULL,
          "reload confirmation: a topic without a token file is refused", last_log);
    struct mosquitto_opt wild[] = {{(char *)"acl_file", acl}, {(char *)"reload_topic", (char *)"escrow/#"}, {(char *)"reload_token_file", token}};
    check(mosquitto_plugin_init(identifier, &userdata, wild, 3) != MOSQ_ERR_SUCCESS && strstr(last_log, "plain topic name") != NULL,
          "reload confirmation: a wildcard topic is refused", last_log);

    struct mosquitto_opt options[] = {{(char *)"acl_file", acl}, {(char *)"reload_topic", (char *)"escrow/broker/reloaded"},
                                      {(char *)"reload_token_file", token}};
    int rc = mosquitto_plugin_init(identifier, &userdata, options, 3);
    check(rc == MOSQ_ERR_SUCCESS && publish_calls == 0, "reload confirmation: init publishes nothing", last_log);
    if (rc != MOSQ_ERR_SUCCESS) {
        return;
    }
    write_file(token, "1796683183000042\nignored second line\n");
    check(reload() == MOSQ_ERR_PLUGIN_DEFER && publish_calls == 1 && strcmp(published_topic, "escrow/broker/reloaded") == 0 &&
              strcmp(published_payload, "1796683183000042") == 0 && published_qos == 1 && !published_retain,
          "reload confirmation: the token's first line, QoS 1, not retained", published_payload);
    write_file(acl, "this is not an ACL line\n");
    write_file(token, "1796683183000043");
    check(reload() == MOSQ_ERR_PLUGIN_DEFER && publish_calls == 2 && strcmp(published_payload, "1796683183000043") == 0,
          "reload confirmation: also when the ACL file fails to reload (the rest of the reload happens)", published_payload);
    char longer[400];
    memset(longer, '7', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    write_file(token, longer);
    check(reload() == MOSQ_ERR_PLUGIN_DEFER && strlen(published_payload) == ESCROW_BROKER_PLUGIN_RELOAD_TOKEN_MAX,
          "reload confirmation: a token is cut at 128 bytes", published_payload);
    remove(token);
    check(reload() == MOSQ_ERR_PLUGIN_DEFER && publish_calls == 4 && published_payload[0] == '\0',
          "reload confirmation: no token file confirms with an empty token", published_payload);
    mosquitto_plugin_cleanup(userdata, options, 3);
}

static void test_revoked_parse(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/serials", dir);
    write_file(path,
               "# Generated by EscrowFleet\n"
               "\n"
               "  3f9a  \n"
               "0abc\n"              /* BN_bn2hex pads to whole bytes */
               "abc\n"               /* the same value */
               "00FF\r\n"
               "ff\n"
               "0102030405060708090a0b0c0d0e0f1011121314\n" /* 20 bytes */
               "0000a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4\n" /* 20 bytes after the zeros */
               "00123\n"            /* an odd number of digits: 0x0123 */
               "0\n"
               "\t# indented comment\n");
    struct load_error error = {{0}};
    struct serial_set *set = serial_set_load(path, &error);
    check(set != NULL, "revoked: file with comments, blanks, padding and upper case loads", error.message);
    if (set == NULL) {
        return;
    }
    char detail[128];
    snprintf(detail, sizeof(detail), "%zu distinct of %zu lines", set->count, set->lines);
    check(set->count == 7 && set->lines == 9, "revoked: duplicates by value are counted once (7 of 9)", detail);
    static const struct { uint8_t bytes[24]; size_t length; bool in; const char *what; } cases[] = {
        {{0x3f, 0x9a}, 2, true, "3f9a"},
        {{0x0a, 0xbc}, 2, true, "0abc"},
        {{0x00, 0x0a, 0xbc}, 3, true, "000abc (a leading zero byte)"},
        {{0xff}, 1, true, "ff"},
        {{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11,
          0x12, 0x13, 0x14}, 20, true, "a 20-byte serial"},
        {{0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf, 0xb0, 0xb1,
          0xb2, 0xb3, 0xb4}, 20, true, "a 20-byte serial written with leading zeros beyond 20 bytes"},
        {{0x01, 0x23}, 2, true, "0123 (written 00123, odd digits)"},
        {{0x12, 0x30}, 2, false, "1230 (00123 read a nibble off)"},
        {{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11,
          0x21, 0x31}, 19, false, "a 19-byte prefix of a listed serial"},
        {{0}, 0, true, "0 (empty)"},
        {{0x00}, 1, true, "0 (one zero byte)"},
        {{0x3f, 0x9b}, 2, false, "3f9b"},
        {{0x3f}, 1, false, "3f"},
        {{0x9a, 0x3f}, 2, false, "9a3f"},
        {{0x3f, 0x9a, 0x00}, 3, false, "3f9a00"},
    };
    char name[160];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(name, sizeof(name), "revoked: %s is %s", cases[i].what, cases[i].in ? "in the set" : "not in the set");
        check(serial_set_contains(set, cases[i].bytes, cases[i].length) == cases[i].in, name, "wrong answer");
    }
    serial_set_free(set);

    static const struct { const char *text; const char *expect; } bad[] = {
        {"abc\nxyz\n", "line 2: not a hex serial: \"xyz\""},
        {"0x1234\n", "line 1: not a hex serial"},
        {"ab cd\n", "line 1: not a hex serial"},
        {"-abc\n", "line 1: not a hex serial"},
        {"abc # trailing comment\n", "line 1: not a hex serial"},
        {"# ok\n0102030405060708090a0b0c0d0e0f101112131415\n", "line 2: serial longer than 20 bytes"},
        {"102030405060708090a0b0c0d0e0f1011121314\n1\n", NULL}, /* 39 digits: fine */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct load_error e = {{0}};
        write_file(path, bad[i].text);
        struct serial_set *s = serial_set_load(path, &e);
        if (bad[i].expect == NULL) {
            check(s != NULL && s->count == 2, "revoked: a 39-digit serial loads", e.message);
        } else {
            snprintf(name, sizeof(name), "revoked: \"%.*s\" reported as \"%s\"",
                     (int)strcspn(bad[i].text, "\n"), bad[i].text, bad[i].expect);
            check(s == NULL && strstr(e.message, bad[i].expect) != NULL, name, e.message);
        }
        serial_set_free(s);
    }

    write_file(path, "");
    struct load_error e = {{0}};
    set = serial_set_load(path, &e);
    check(set != NULL && set->count == 0 && serial_set_bytes(set) == 0, "revoked: an empty file is an empty set",
          e.message);
    static const uint8_t zero[] = {0};
    check(set != NULL && !serial_set_contains(set, zero, 0), "revoked: the empty set contains nothing", "found");
    serial_set_free(set);

    snprintf(path, sizeof(path), "%s/no-such-serials", dir);
    set = serial_set_load(path, &e);
    check(set == NULL && strstr(e.message, "cannot open: No such file") != NULL, "revoked: missing file reported",
          e.message);
    set = serial_set_load(dir, &e);
    check(set == NULL && strstr(e.message, "read error") != NULL, "revoked: directory reported as unreadable",
          e.message);
}

static void test_revocation(const char *dir)
{
    char acl[4096], revoked[4096], text[1024];
    snprintf(acl, sizeof(acl), "%s/revocation.acl", dir);
    snprintf(revoked, sizeof(revoked), "%s/revoked", dir);
    write_file(acl, project_acl);
    mosquitto_plugin_id_t *identifier = (mosquitto_plugin_id_t *)acl;
    void *userdata = NULL;

    static const uint8_t serial_a[16] = {0x0a, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                         0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}; /* "0a11..." */
    static const uint8_t serial_b[16] = {0xb0, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
                                         0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f};
    X509 *cert_a = certificate_with_serial(serial_a, 16, false);
    X509 *cert_b = certificate_with_serial(serial_b, 16, false);
    X509 *cert_a_negative = certificate_with_serial(serial_a, 16, true);
    char hex_a[64], hex_b[64];
    writer_hex(cert_a, hex_a, sizeof(hex_a));
    writer_hex(cert_b, hex_b, sizeof(hex_b));
    check(strcmp(hex_a, "0a112233445566778899aabbccddeeff") == 0, "revoked: BN_bn2hex keeps a leading zero nibble",
          hex_a);

    /* Init failures. */
    struct mosquitto_opt missing[] = {{(char *)"acl_file", acl}, {(char *)"revoked_file", revoked}};
    remove(revoked);
    check(mosquitto_plugin_init(identifier, &userdata, missing, 2) != MOSQ_ERR_SUCCESS &&
              strstr(last_log, "Error: cannot load revoked file") != NULL &&
              strstr(last_log, "No such file") != NULL && registered[MOSQ_EVT_ACL_CHECK] == NULL,
          "revocation: init fails on a missing revoked file", last_log);
    write_file(revoked, "abc\nnot-hex\n");
    check(mosquitto_plugin_init(identifier, &userdata, missing, 2) != MOSQ_ERR_SUCCESS &&
              strstr(last_log, "line 2: not a hex serial") != NULL,
          "revocation: init fails on an invalid line, naming it", last_log);
    struct mosquitto_opt empty[] = {{(char *)"acl_file", acl}, {(char *)"revoked_file", (char *)""}};
    check(mosquitto_plugin_init(identifier, &userdata, empty, 2) != MOSQ_ERR_SUCCESS &&
              strstr(last_log, "plugin_opt_revoked_file must not be empty") != NULL,
          "revocation: init fails on an empty plugin_opt_revoked_file", last_log);

    /* Without the option: no TICK or DISCONNECT callback, no certificate read. */
    struct mosquitto dev_a = {.id = "dev-a", .username = "dev-a", .cert = cert_a};
    struct mosquitto_opt acl_only[] = {{(char *)"acl_file", acl}};
    check(mosquitto_plugin_init(identifier, &userdata, acl_only, 1) == MOSQ_ERR_SUCCESS &&
              registered[MOSQ_EVT_TICK] == NULL && registered[MOSQ_EVT_DISCONNECT] == NULL,
          "revocation: without plugin_opt_revoked_file no TICK or DISCONNECT callback", "registered");
    certificate_calls = 0;
    check(acl_check(&dev_a, MOSQ_ACL_WRITE, "devices/dev-a/heartbeat") == MOSQ_ERR_PLUGIN_DEFER &&
              certificate_calls == 0,
          "revocation: without plugin_opt_revoked_file certificates are not read", "read or decided");
    mosquitto_plugin_cleanup(userdata, acl_only, 1);

    /* The set: serial A, as escrowd writes it. */
    snprintf(text, sizeof(text), "# revoked\n%s\n", hex_a);
    write_file(revoked, text);
    struct mosquitto_opt options[] = {{(char *)"acl_file", acl}, {(char *)"revoked_file", revoked}};
    int rc = mosquitto_plugin_init(identifier, &userdata, options, 2);
    check(rc == MOSQ_ERR_SUCCESS && registered[MOSQ_EVT_TICK] != NULL && registered[MOSQ_EVT_DISCONNECT] != NULL,
          "revocation: init registers TICK and DISCONNECT with plugin_opt_revoked_file", last_log);
    if (rc != MOSQ_ERR_SUCCESS) {
        X509_free(cert_a);
        X509_free(cert_b);
        X509_free(cert_a_negative);
        return;
    }
    reset_kicks();
    struct mosquitto dev_b = {.id = "dev-b", .username = "dev-b", .cert = cert_b};
    struct mosquitto svc = {.id = "svc-escrowd", .username = "svc-escrowd", .cert = NULL};
    struct mosquitto dev_neg = {.id = "dev-n", .username = "dev-n", .cert = cert_a_negative};
    connected[0] = &dev_a;
    connected[1] = &dev_b;

    count_log_lines("revoked certificate serial");
    static const struct { int access; const char *topic; const char *name; } accesses[] = {
        {MOSQ_ACL_SUBSCRIBE, "devices/dev-a/config", "SUBSCRIBE of its own config"},
        {MOSQ_ACL_WRITE, "devices/dev-a/heartbeat", "WRITE of its heartbeat"},
        {MOSQ_ACL_READ, "devices/dev-a/config", "READ (delivery) of its config"},
        {MOSQ_ACL_UNSUBSCRIBE, "devices/dev-a/config", "UNSUBSCRIBE"},
    };
    char name[160];
    for (size_t i = 0; i < sizeof(accesses) / sizeof(accesses[0]); i++) {
        snprintf(name, sizeof(name), "revocation: revoked certificate denied %s", accesses[i].name);
        check(acl_check(&dev_a, accesses[i].access, accesses[i].topic) == MOSQ_ERR_ACL_DENIED, name, "not denied");
    }
    snprintf(text, sizeof(text), "revoked certificate serial %s for client \"dev-a\"", hex_a);
    check(log_matches == 1, "revocation: the refusal is logged once per connection, not per check", last_log);
    count_log_lines(text);
    check(acl_check(&dev_a, MOSQ_ACL_WRITE, "x") == MOSQ_ERR_ACL_DENIED && log_matches == 0,
          "revocation: the log line names the serial as BN_bn2hex lowercased", last_log);
    check(kick_calls == 0, "revocation: nobody is kicked from inside the ACL callback", "kicked");

    check(acl_check(&dev_b, MOSQ_ACL_WRITE, "devices/dev-b/heartbeat") == MOSQ_ERR_PLUGIN_DEFER &&
              acl_check(&dev_b, MOSQ_ACL_SUBSCRIBE, "devices/dev-b/config") == MOSQ_ERR_PLUGIN_DEFER &&
              acl_check(&dev_b, MOSQ_ACL_SUBSCRIBE, "devices/dev-a/config") == MOSQ_ERR_ACL_DENIED,
          "revocation: an unrevoked certificate goes on to the other rules", "wrong answer");
    check(acl_check(&svc, MOSQ_ACL_READ, "devices/dev-a/heartbeat") == MOSQ_ERR_PLUGIN_DEFER &&
              acl_check(&svc, MOSQ_ACL_SUBSCRIBE, "$share/escrowd/devices/+/status") == MOSQ_ERR_PLUGIN_DEFER,
          "revocation: a client without certificate is unaffected", "decided");
    check(acl_check(&dev_neg, MOSQ_ACL_WRITE, "devices/dev-n/heartbeat") == MOSQ_ERR_PLUGIN_DEFER,
          "revocation: a negative serial never matches (the file has none)", "denied");

    count_log_lines("disconnected client \"dev-a\"");
    tick();
    check(kick_calls == 1 && strcmp(kicked[0], "dev-a") == 0 && log_matches == 1,
          "revocation: the next tick kicks the revoked client by id, once", last_log);
    tick();
    check(kick_calls == 1, "revocation: the kick is not repeated at the following tick", "kicked again");

    /* Queued, then the connection closes before the tick (a takeover by a
     * new certificate with the same CN): the new session is not kicked. */
    reset_kicks();
    check(acl_check(&dev_a, MOSQ_ACL_WRITE, "devices/dev-a/heartbeat") == MOSQ_ERR_ACL_DENIED,
          "revocation: a new connection with the revoked certificate is denied again", "not denied");
    fire_disconnect(&dev_a);
    struct mosquitto dev_a_new = {.id = "dev-a", .username = "dev-a", .cert = cert_b};
    connected[0] = &dev_a_new;
    tick();
    check(kick_calls == 0, "revocation: a queued kick is dropped when its connection closes first (takeover)",
          "the new session was kicked");
    check(acl_check(&dev_a_new, MOSQ_ACL_WRITE, "devices/dev-a/heartbeat") == MOSQ_ERR_PLUGIN_DEFER,
          "revocation: the same client id with an unrevoked certificate is served", "denied");

    /* The will: the broker checks it after closing the socket. */
    dev_a.cert = cert_a;
    fire_disconnect(&dev_a);
    dev_a.cert = NULL; /* socket closed */
    count_log_lines("refused the will");
    check(acl_check(&dev_a, MOSQ_ACL_WRITE, "devices/dev-a/status") == MOSQ_ERR_ACL_DENIED && log_matches == 1,
          "revocation: the will of a revoked client, checked after its socket closed, is refused", last_log);
    tick();
    check(acl_check(&dev_a, MOSQ_ACL_WRITE, "devices/dev-a/status") == MOSQ_ERR_PLUGIN_DEFER,
          "revocation: that memory of the closing client ends at the next tick", "still denied");
    fire_disconnect(&dev_a);
    fire_disconnect(&dev_b);
    check(acl_check(&dev_a, MOSQ_ACL_WRITE, "devices/dev-a/status") == MOSQ_ERR_PLUGIN_DEFER,
          "revocation: a later unrevoked disconnection clears it too", "still denied");
    dev_a.cert = cert_a;

    /* A pending kick whose client is not there any more (stub: not connected). */
    reset_kicks();
    acl_check(&dev_a, MOSQ_ACL_READ, "devices/dev-a/config");
    count_log_lines("was gone before its disconnection");
    tick();
    check(kick_calls == 1 && log_matches == 1, "revocation: a kick of a client already gone is logged at info",
          last_log);

    /* Reload: B added; a broken file, then a missing one, keep the set. */
    snprintf(text, sizeof(text), "%s\n%s\n", hex_a, hex_b);
    write_file(revoked, text);
    check(reload() == MOSQ_ERR_PLUGIN_DEFER && acl_check(&dev_b, MOSQ_ACL_WRITE, "x") == MOSQ_ERR_ACL_DENIED,
          "revocation: reload applies a newly revoked serial to a connected client", last_log);
    write_file(revoked, "this is not a serial\n");
    count_log_lines("Error: cannot reload revoked file");
    check(reload() == MOSQ_ERR_PLUGIN_DEFER && log_matches == 1 &&
              acl_check(&dev_b, MOSQ_ACL_WRITE, "x") == MOSQ_ERR_ACL_DENIED &&
              acl_check(&dev_a, MOSQ_ACL_WRITE, "x") == MOSQ_ERR_ACL_DENIED,
          "revocation: a broken file at reload keeps the previous set and returns DEFER", "set lost");
    remove(revoked);
    count_log_lines("keeping the previous 2 serials");
    check(reload() == MOSQ_ERR_PLUGIN_DEFER && log_matches == 1 &&
              acl_check(&dev_b, MOSQ_ACL_WRITE, "x") == MOSQ_ERR_ACL_DENIED,
          "revocation: a missing file at reload keeps the previous set", last_log);
    /* The ACL file failing does not stop the revoked file from reloading. */
    write_file(acl, "this is not an ACL line\n");
    snprintf(text, sizeof(text), "%s\n", hex_b);
    write_file(revoked, text);
    check(reload() == MOSQ_ERR_PLUGIN_DEFER && acl_check(&dev_a, MOSQ_ACL_WRITE, "x") == MOSQ_ERR_PLUGIN_DEFER &&
              acl_check(&dev_b, MOSQ_ACL_WRITE, "x") == MOSQ_ERR_ACL_DENIED,
          "revocation: the revoked file reloads even when the ACL file fails", last_log);
    write_file(acl, project_acl);

    /* An empty set: no certificate is read. */
    write_file(revoked, "# nothing revoked\n");
    reload();
    certificate_calls = 0;
    check(acl_check(&dev_b, MOSQ_ACL_WRITE, "devices/dev-b/heartbeat") == MOSQ_ERR_PLUGIN_DEFER &&
              certificate_calls == 0,
          "revocation: with an empty set certificates are not even read", "read or denied");

    /* Cleanup with a kick still queued frees it (the leak check would say). */
    snprintf(text, sizeof(text), "%s\n", hex_a);
    write_file(revoked, text);
    reload();
    acl_check(&dev_a, MOSQ_ACL_WRITE, "x");
    mosquitto_plugin_cleanup(userdata, options, 2);
    check(registered[MOSQ_EVT_TICK] == NULL && registered[MOSQ_EVT_DISCONNECT] == NULL &&
              registered[MOSQ_EVT_ACL_CHECK] == NULL,
          "revocation: cleanup unregisters TICK and DISCONNECT", "still registered");
    X509_free(cert_a);
    X509_free(cert_b);
    X509_free(cert_a_negative);
}

/* 100,000 random 128-bit serials, as CertificateAuthority draws them and
 * escrowd writes them; then the cost of one ACL check. */
static void test_revocation_scale(const char *dir, bool optimised)
{
    enum { SERIALS = 100000, CHECKS = 2000000 };
    char path[4096], acl[4096];
    snprintf(path, sizeof(path), "%s/revoked-100k", dir);
    snprintf(acl, sizeof(acl), "%s/scale.acl", dir);
    write_file(acl, project_acl);
    FILE *file = fopen(path, "w");
    uint8_t (*serials)[16] = malloc(SERIALS * sizeof(*serials));
    if (file == NULL || serials == NULL) {
        check(false, "revocation scale: write file", strerror(errno));
        free(serials);
        return;
    }
    fputs("# Generated by EscrowFleet: revoked certificate serials, enforced by the broker plugin.\n", file);
    uint64_t x = UINT64_C(0x9e3779b97f4a7c15);
    for (int i = 0; i < SERIALS; i++) {
        for (int j = 0; j < 16; j++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17; /* xorshift64 */
            serials[i][j] = (uint8_t)(x >> 24);
        }
        if (serials[i][0] == 0) {
            serials[i][0] = 1; /* as CertificateAuthority: all 16 bytes significant */
        }
        BIGNUM *bn = BN_bin2bn(serials[i], 16, NULL);
        char *hex = BN_bn2hex(bn);
        for (char *p = hex; *p != '\0'; p++) {
            *p = (char)tolower((unsigned char)*p);
        }
        fprintf(file, "%s\n", hex);
        OPENSSL_free(hex);
        BN_free(bn);
    }
    fclose(file);

    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    struct load_error error = {{0}};
    struct serial_set *set = serial_set_load(path, &error);
    double load_ms = seconds_since(&start) * 1e3;
    char detail[256];
    snprintf(detail, sizeof(detail), "%zu serials in %.1f ms, %.2f MB (%s build)", set != NULL ? set->count : 0,
             load_ms, set != NULL ? (double)serial_set_bytes(set) / 1e6 : 0.0,
             optimised ? "-O2" : "-O1, sanitizers");
    printf("# revoked: load %s\n", detail);
    check(set != NULL && set->count == SERIALS && serial_set_bytes(set) < 4 * 1000 * 1000 &&
              load_ms < (optimised ? 100.0 : 1000.0),
          optimised ? "revocation scale (-O2): 100,000 serials load in < 100 ms and < 4 MB"
                    : "revocation scale: 100,000 serials load in < 1 s (sanitizers) and < 4 MB",
          detail);
    if (set == NULL) {
        free(serials);
        return;
    }
    size_t found = 0;
    for (int i = 0; i < SERIALS; i++) {
        found += serial_set_contains(set, serials[i], 16);
    }
    snprintf(detail, sizeof(detail), "%zu of %d", found, SERIALS);
    check(found == SERIALS, "revocation scale: every serial written is found", detail);
    serial_set_free(set);

    /* One ACL check (WRITE of a heartbeat, as on every device message), through
     * the registered callback: without a revoked file, then with 100,000
     * serials for an unrevoked certificate and for a revoked one. */
    uint8_t other[16];
    memcpy(other, serials[0], 16);
    other[15] ^= 0x5a;
    X509 *unrevoked = certificate_with_serial(other, 16, false);
    X509 *revoked_cert = certificate_with_serial(serials[SERIALS / 2], 16, false);
    mosquitto_plugin_id_t *identifier = (mosquitto_plugin_id_t *)path;
    double ns[3] = {0};
    for (int round = 0; round < 3; round++) {
        void *userdata = NULL;
        struct mosquitto_opt options[] = {{(char *)"acl_file", acl}, {(char *)"revoked_file", path}};
        if (mosquitto_plugin_init(identifier, &userdata, options, round == 0 ? 1 : 2) != MOSQ_ERR_SUCCESS) {
            check(false, "revocation scale: init", last_log);
            break;
        }
        struct mosquitto client = {.id = "dev-x", .username = "dev-x", .cert = round == 2 ? revoked_cert : unrevoked};
        int expect = round == 2 ? MOSQ_ERR_ACL_DENIED : MOSQ_ERR_PLUGIN_DEFER;
        int wrong = 0;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (int i = 0; i < CHECKS; i++) {
            wrong += acl_check(&client, MOSQ_ACL_WRITE, "devices/dev-x/heartbeat") != expect;
        }
        ns[round] = seconds_since(&start) * 1e9 / CHECKS;
        static const char *const names[] = {
            "revocation scale: without a revoked file every check is deferred",
            "revocation scale: with 100,000 serials the unrevoked certificate is deferred every time",
            "revocation scale: the revoked certificate is denied every time",
        };
        snprintf(detail, sizeof(detail), "%d wrong answers", wrong);
        check(wrong == 0, names[round], detail);
        mosquitto_plugin_cleanup(userdata, options, 2);
    }
    snprintf(detail, sizeof(detail),
             "ACL check (WRITE): %.0f ns without a revoked file, %.0f ns with 100,000 serials (unrevoked "
             "certificate), %.0f ns (revoked, denied) (%s build, %d checks each)",
             ns[0], ns[1], ns[2], optimised ? "-O2" : "-O1, sanitizers", CHECKS);
    printf("# revoked: %s\n", detail);
    if (optimised) {
        check(ns[1] < 1000.0, "revocation scale (-O2): an ACL check with 100,000 serials costs < 1 us", detail);
    }
    X509_free(unrevoked);
    X509_free(revoked_cert);
    free(serials);
}

/* 20,000 users and 100k lines, plus one 64 KiB line: load and look up fast. */
static void test_scale(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/big.acl", dir);
    FILE *file = fopen(path, "w");
    if (file == NULL) {
        check(false, "scale: write file", strerror(errno));
        return;
    }
    fputs("pattern read devices/%u/config\npattern write devices/%u/status\n", file);
    for (int i = 0; i < 20000; i++) {
        fprintf(file, "user op-%05d\ntopic write accounts/a%05d/cmd/#\ntopic read accounts/a%05d/reply/#\n"
                      "topic read accounts/a%05d/events/#\ntopic read accounts/shared%d/events/#\n",
                i, i, i, i, i % 7);
    }
    fputs("user op-long\ntopic read ", file);
    for (int i = 0; i < 65000; i++) {
        fputc(i % 100 == 99 ? '/' : 'x', file);
    }
    fputc('\n', file);
    fclose(file);

    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    struct load_error error = {{0}};
    struct rule_set *set = rule_set_load(path, &error);
    double load_seconds = seconds_since(&start);
    char detail[640];
    if (set == NULL) {
        snprintf(detail, sizeof(detail), "%s", error.message);
    } else {
        snprintf(detail, sizeof(detail), "%zu users in %.3f s", set->user_count, load_seconds);
    }
    printf("# scale: load %s\n", detail);
    check(set != NULL && set->user_count == 20001 && load_seconds < 2.0,
          "scale: 100k-line, 20,001-user file with a 64 KiB line loads in < 2 s", detail);
    if (set == NULL) {
        return;
    }

    struct plugin_state state = {.service_prefix = (char *)"svc-", .service_prefix_length = 4, .rules = set};
    char user[32], topic[64];
    int granted = 0;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < 100000; i++) {
        int n = (i * 7919) % 20000;
        snprintf(user, sizeof(user), "op-%05d", n);
        snprintf(topic, sizeof(topic), "accounts/a%05d/events/+", n);
        struct mosquitto client = {.id = user, .username = user};
        granted += check_subscribe(&state, &client, topic) == MOSQ_ERR_PLUGIN_DEFER;
    }
    double lookup_seconds = seconds_since(&start);
    snprintf(detail, sizeof(detail), "%d of 100000 granted in %.3f s", granted, lookup_seconds);
    printf("# scale: %s\n", detail);
    check(granted == 100000 && lookup_seconds < 1.0, "scale: 100k subscribe checks in < 1 s", detail);
    rule_set_free(set);
}

/* MOSQ_EVT_MESSAGE: commands get their sender's username, appended after any
 * user property of that name the client sent; other topics are untouched. */
static void test_operator_stamp(void)
{
    check(is_command_topic("accounts/acme/cmd/device.list"), "stamp: accounts/A/cmd/C is a command topic", "no");
    const char *not_commands[] = {"accounts/acme/cmd/", "accounts//cmd/x", "accounts/acme/cmd/a/b", "accounts/acme/reply/r",
                                  "devices/d/status", "accounts/acme/cmdx/y", "accounts/acme", NULL};
    for (int i = 0; not_commands[i] != NULL; i++) {
        char name[160];
        snprintf(name, sizeof(name), "stamp: %s is not a command topic", not_commands[i]);
        check(!is_command_topic(not_commands[i]), name, "it is");
    }
    struct mosquitto alice = {.id = "op-alice", .username = "op-alice", .cert = NULL};
    struct mosquitto_evt_message m = {0};
    m.client = &alice;
    m.topic = (char *)"accounts/acme/cmd/profile.put";
    /* A forged stamp from the client comes first; the broker's comes last. */
    check(mosquitto_property_add_string_pair(&m.properties, MQTT_PROP_USER_PROPERTY, "escrow-operator", "op-bob") == MOSQ_ERR_SUCCESS,
          "stamp: a client property is added", "libmosquitto refused");
    check(on_message(MOSQ_EVT_MESSAGE, &m, NULL) == MOSQ_ERR_SUCCESS, "stamp: a command is accepted", "refused");
    char *name = NULL, *value = NULL, *last = NULL;
    int count = 0;
    const mosquitto_property *p = mosquitto_property_read_string_pair(m.properties, MQTT_PROP_USER_PROPERTY, &name, &value, false);
    while (p != NULL) {
        if (strcmp(name, "escrow-operator") == 0) { count++; free(last); last = value; } else { free(value); }
        free(name);
        p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, true);
    }
    check(count == 2 && last != NULL && strcmp(last, "op-alice") == 0, "stamp: the last escrow-operator is the authenticated username",
          last == NULL ? "none" : last);
    free(last);
    mosquitto_property_free_all(&m.properties);

    struct mosquitto_evt_message other = {0};
    other.client = &alice;
    other.topic = (char *)"devices/d/status";
    check(on_message(MOSQ_EVT_MESSAGE, &other, NULL) == MOSQ_ERR_SUCCESS && other.properties == NULL,
          "stamp: other topics are untouched", "stamped");
    struct mosquitto anonymous = {.id = "x", .username = NULL, .cert = NULL};
    struct mosquitto_evt_message anon = {0};
    anon.client = &anonymous;
    anon.topic = (char *)"accounts/acme/cmd/device.list";
    check(on_message(MOSQ_EVT_MESSAGE, &anon, NULL) == MOSQ_ERR_SUCCESS && anon.properties == NULL,
          "stamp: no username, no stamp", "stamped");
}

int main(int argc, char **argv)
{
    if (argc != 2 && !(argc == 3 && strcmp(argv[2], "bench") == 0)) {
        fprintf(stderr, "usage: %s SCRATCH_DIR [bench]\n", argv[0]);
        return 64;
    }
    if (argc == 3) {
        test_revocation_scale(argv[1], true);
        return failures == 0 ? 0 : 1;
    }
    test_coverage();
    test_overlap();
    test_filter_validity();
    test_parse_errors(argv[1]);
    test_parse_forms(argv[1]);
    test_plugin(argv[1]);
    test_operator_stamp();
    test_scale(argv[1]);
    test_revoked_parse(argv[1]);
    test_reload_confirmation(argv[1]);
    test_revocation(argv[1]);
    test_revocation_scale(argv[1], false);
    return failures == 0 ? 0 : 1;
}
