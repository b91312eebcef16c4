/*
 * plugin_unit.c: unit tests of the EscrowFleet broker plugin with no broker.
 *
 * The plugin source is included whole and the few broker functions it calls
 * are stubbed here, so its static functions (topic coverage, overlap, parser)
 * can be tested directly. run.sh builds this with AddressSanitizer, whose leak
 * check runs at exit: init, reload and cleanup must free everything.
 *
 * Output: one "ok - NAME" or "FAIL - NAME: detail" line per check, which
 * run.sh counts. Usage: plugin_unit SCRATCH_DIR
 */

#include "escrow_broker_plugin.c"

#include <stdarg.h>
#include <time.h>

/* ---- Broker stubs ---- */

struct mosquitto {
    const char *id;
    const char *username;
};

const char *mosquitto_client_id(const struct mosquitto *client) { return client->id; }
const char *mosquitto_client_username(const struct mosquitto *client) { return client->username; }

static char last_log[1024];

void mosquitto_log_printf(int level, const char *fmt, ...)
{
    va_list args;
    (void)level;
    va_start(args, fmt);
    vsnprintf(last_log, sizeof(last_log), fmt, args);
    va_end(args);
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

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 64;
    }
    test_coverage();
    test_overlap();
    test_filter_validity();
    test_parse_errors(argv[1]);
    test_parse_forms(argv[1]);
    test_plugin(argv[1]);
    test_scale(argv[1]);
    return failures == 0 ? 0 : 1;
}
