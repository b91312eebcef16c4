/*
 * escrow_broker_plugin.c: the EscrowFleet plugin for Mosquitto 2.0 (plugin API 5).
 *
 * Mosquitto 2.0.11's acl_file grants every SUBSCRIBE and filters only at
 * delivery. That lets a client without read rights join a shared subscription
 * group ($share/GROUP/filter), take its round-robin share of the group's
 * messages and have them dropped, starving the legitimate members. This plugin
 * closes that gap and one more, reading the same ACL file as the broker:
 *
 *  - MOSQ_EVT_ACL_CHECK, SUBSCRIBE only: a $share filter needs a service user
 *    (username starts with the service_prefix option); any filter must be
 *    covered by one of the user's read rules and overlap none of its deny
 *    rules. A covered filter is deferred (the broker's acl_file then runs and
 *    grants it); anything else is refused (SUBACK 0x80, or 0x87 on MQTT 5).
 *    Every other access (READ, WRITE, UNSUBSCRIBE) is deferred to acl_file.
 *  - MOSQ_EVT_BASIC_AUTH: the client id must be the username or start with
 *    "USERNAME:", so one user cannot take over another's session by reusing
 *    its client id. An acceptable id is deferred to password_file.
 *  - MOSQ_EVT_ACL_CHECK, every access, before the rules above: a client whose
 *    certificate serial is in the revoked set (plugin_opt_revoked_file) is
 *    denied, and queued for MOSQ_EVT_TICK, which disconnects it
 *    (mosquitto_kick_client_by_clientid). MOSQ_EVT_DISCONNECT drops a queued
 *    kick of a connection that ended first and refuses the will of a revoked
 *    client. The CRLs stay empty: 100,000 entries there cost the broker tens
 *    of MB per reload (docs/BENCHMARKS.md).
 *  - MOSQ_EVT_RELOAD (SIGHUP): the revoked file and the ACL file are read
 *    again; if one fails its previous set or rules stay in force. With
 *    plugin_opt_reload_topic, the token file's first line is then published
 *    there (delivered once the whole reload is done: the confirmation escrowd
 *    waits for before answering a command that changed access).
 *  - MOSQ_EVT_MESSAGE: a PUBLISH on accounts/+/cmd/+ gets the publisher's
 *    authenticated username appended as the MQTT 5 user property
 *    "escrow-operator" (ESCROW_BROKER_PLUGIN_OPERATOR_PROPERTY), after any the
 *    client sent: the last one is the broker's word for who sent the command
 *    (escrowd's audit), whatever the payload or the client's own properties say.
 *
 * Options (plugin_opt_NAME in mosquitto.conf): acl_file (required),
 * service_prefix (default "svc-"), revoked_file (optional). See README.md
 * next to this file.
 *
 * The broker is single threaded: callbacks never run concurrently, so the
 * state behind the userdata pointer needs no locking.
 */

/* getline, strdup and ssize_t are POSIX.1-2008, not C99. */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <mqtt_protocol.h>

#include "escrow_broker_plugin.h"

#define LOG_PREFIX "escrow_broker_plugin: "

/* Longest topic mosquitto accepts (MQTT strings are length-prefixed by 16 bits). */
#define MAX_TOPIC_LENGTH 65535

/* ------------------------------------------------------------------------
 * String arena: every topic and username of one rule set lives here, so a
 * rule set is freed in a handful of calls whatever its size.
 * ------------------------------------------------------------------------ */

#define ARENA_CHUNK_SIZE (64 * 1024)

struct arena_chunk {
    struct arena_chunk *next;
    size_t used;
    size_t size;
    char data[];
};

struct arena {
    struct arena_chunk *head;
};

/* Copies the len bytes at s into the arena, NUL-terminated. NULL on OOM. */
static const char *arena_strndup(struct arena *arena, const char *s, size_t len)
{
    struct arena_chunk *chunk = arena->head;

    if (chunk == NULL || chunk->size - chunk->used < len + 1) {
        size_t size = len + 1 > ARENA_CHUNK_SIZE ? len + 1 : ARENA_CHUNK_SIZE;
        chunk = malloc(sizeof(*chunk) + size);
        if (chunk == NULL) {
            return NULL;
        }
        chunk->used = 0;
        chunk->size = size;
        chunk->next = arena->head;
        arena->head = chunk;
    }
    char *copy = chunk->data + chunk->used;
    memcpy(copy, s, len);
    copy[len] = '\0';
    chunk->used += len + 1;
    return copy;
}

static void arena_free(struct arena *arena)
{
    struct arena_chunk *chunk = arena->head;
    while (chunk != NULL) {
        struct arena_chunk *next = chunk->next;
        free(chunk);
        chunk = next;
    }
    arena->head = NULL;
}

/* ------------------------------------------------------------------------
 * Rule set: the parsed ACL file.
 * ------------------------------------------------------------------------ */

/* One `topic` or `pattern` line. access is MOSQ_ACL_READ and/or
 * MOSQ_ACL_WRITE, or MOSQ_ACL_NONE for `deny` (as in mosquitto). */
struct rule {
    const char *topic;
    int access;
    unsigned username_refs;  /* occurrences of %u (patterns only) */
    unsigned client_id_refs; /* occurrences of %c (patterns only) */
};

struct rule_list {
    struct rule *items;
    size_t count;
    size_t capacity;
};

/* The rules of one `user NAME` block (blocks of the same name are merged, as
 * mosquitto does). A slot with username == NULL is empty. */
struct user_rules {
    const char *username;
    uint64_t hash;
    struct rule_list rules;
};

struct rule_set {
    struct user_rules *users; /* open-addressing hash table, linear probing */
    size_t user_capacity;     /* a power of two, at least twice user_count */
    size_t user_count;
    size_t topic_rule_count;
    struct rule_list patterns;
    struct arena strings;
};

static int rule_list_append(struct rule_list *list, struct rule rule)
{
    if (list->count == list->capacity) {
        size_t capacity = list->capacity == 0 ? 4 : list->capacity * 2;
        struct rule *items = realloc(list->items, capacity * sizeof(*items));
        if (items == NULL) {
            return MOSQ_ERR_NOMEM;
        }
        list->items = items;
        list->capacity = capacity;
    }
    list->items[list->count++] = rule;
    return MOSQ_ERR_SUCCESS;
}

/* FNV-1a, 64 bits. */
static uint64_t hash_string(const char *s)
{
    uint64_t hash = UINT64_C(14695981039346656037);
    for (; *s != '\0'; s++) {
        hash ^= (unsigned char)*s;
        hash *= UINT64_C(1099511628211);
    }
    return hash;
}

static struct user_rules *rule_set_slot(struct user_rules *table, size_t capacity,
                                        const char *username, uint64_t hash)
{
    size_t mask = capacity - 1;
    for (size_t i = (size_t)hash & mask;; i = (i + 1) & mask) {
        struct user_rules *slot = &table[i];
        if (slot->username == NULL ||
            (slot->hash == hash && strcmp(slot->username, username) == 0)) {
            return slot;
        }
    }
}

/* The rules of username, or NULL if the file has no block for it. */
static const struct user_rules *rule_set_find(const struct rule_set *set, const char *username)
{
    if (set->user_count == 0) {
        return NULL;
    }
    const struct user_rules *slot =
        rule_set_slot(set->users, set->user_capacity, username, hash_string(username));
    return slot->username != NULL ? slot : NULL;
}

static int rule_set_grow(struct rule_set *set)
{
    size_t capacity = set->user_capacity == 0 ? 64 : set->user_capacity * 2;
    struct user_rules *table = calloc(capacity, sizeof(*table));
    if (table == NULL) {
        return MOSQ_ERR_NOMEM;
    }
    for (size_t i = 0; i < set->user_capacity; i++) {
        struct user_rules *old = &set->users[i];
        if (old->username != NULL) {
            *rule_set_slot(table, capacity, old->username, old->hash) = *old;
        }
    }
    free(set->users);
    set->users = table;
    set->user_capacity = capacity;
    return MOSQ_ERR_SUCCESS;
}

/* The entry for username (a string in the set's arena), created if needed. */
static struct user_rules *rule_set_user(struct rule_set *set, const char *username)
{
    if ((set->user_count + 1) * 2 > set->user_capacity && rule_set_grow(set) != MOSQ_ERR_SUCCESS) {
        return NULL;
    }
    uint64_t hash = hash_string(username);
    struct user_rules *slot = rule_set_slot(set->users, set->user_capacity, username, hash);
    if (slot->username == NULL) {
        slot->username = username;
        slot->hash = hash;
        set->user_count++;
    }
    return slot;
}

static void rule_set_free(struct rule_set *set)
{
    if (set == NULL) {
        return;
    }
    for (size_t i = 0; i < set->user_capacity; i++) {
        free(set->users[i].rules.items);
    }
    free(set->users);
    free(set->patterns.items);
    arena_free(&set->strings);
    free(set);
}

/* ------------------------------------------------------------------------
 * Topic filters, level by level. A cursor walks a filter's levels; "a/" has
 * two levels, "a" and "", so the end is a NULL cursor, not an empty string.
 * ------------------------------------------------------------------------ */

struct level {
    const char *text;
    size_t length;
};

static bool level_next(const char **cursor, struct level *level)
{
    if (*cursor == NULL) {
        return false;
    }
    const char *slash = strchr(*cursor, '/');
    level->text = *cursor;
    if (slash != NULL) {
        level->length = (size_t)(slash - *cursor);
        *cursor = slash + 1;
    } else {
        level->length = strlen(*cursor);
        *cursor = NULL;
    }
    return true;
}

static bool level_is(const struct level *level, char wildcard)
{
    return level->length == 1 && level->text[0] == wildcard;
}

static bool level_equal(const struct level *a, const struct level *b)
{
    return a->length == b->length && memcmp(a->text, b->text, a->length) == 0;
}

/* The wildcards of a topic filter used where mosquitto would accept it as a
 * subscription (mosquitto_sub_topic_check): '+' fills a whole level, '#' fills
 * the whole last level. */
static bool filter_is_valid(const char *filter)
{
    size_t length = strlen(filter);
    if (length == 0 || length > MAX_TOPIC_LENGTH) {
        return false;
    }
    for (size_t i = 0; i < length; i++) {
        char c = filter[i];
        if (c != '+' && c != '#') {
            continue;
        }
        bool starts_level = i == 0 || filter[i - 1] == '/';
        bool ends_level = i + 1 == length || filter[i + 1] == '/';
        if (!starts_level || !ends_level || (c == '#' && i + 1 != length)) {
            return false;
        }
    }
    return true;
}

/* Whether every topic that filter matches is also matched by rule.
 * Topics starting with '$' are only matched by rules starting with '$'
 * (mosquitto's acl_file does the same; MQTT keeps them from wildcards). */
static bool rule_covers(const char *rule, const char *filter)
{
    if (filter[0] == '$' && rule[0] != '$') {
        return false;
    }
    const char *rule_cursor = rule;
    const char *filter_cursor = filter;
    struct level r, f;
    for (;;) {
        bool has_rule = level_next(&rule_cursor, &r);
        bool has_filter = level_next(&filter_cursor, &f);
        if (has_rule && level_is(&r, '#')) {
            return true; /* the rest, including no further level */
        }
        if (!has_rule || !has_filter) {
            return !has_rule && !has_filter;
        }
        if (level_is(&f, '#')) {
            return false; /* only a rule '#' covers a filter '#' */
        }
        if (level_is(&r, '+')) {
            continue; /* a literal or a '+' */
        }
        if (level_is(&f, '+') || !level_equal(&r, &f)) {
            return false;
        }
    }
}

/* Whether some topic is matched by both filters. */
static bool filters_overlap(const char *a, const char *b)
{
    if ((a[0] == '$' && (b[0] == '+' || b[0] == '#')) ||
        (b[0] == '$' && (a[0] == '+' || a[0] == '#'))) {
        return false;
    }
    const char *a_cursor = a;
    const char *b_cursor = b;
    struct level la, lb;
    for (;;) {
        bool has_a = level_next(&a_cursor, &la);
        bool has_b = level_next(&b_cursor, &lb);
        if ((has_a && level_is(&la, '#')) || (has_b && level_is(&lb, '#'))) {
            return true;
        }
        if (!has_a || !has_b) {
            return !has_a && !has_b;
        }
        if (level_is(&la, '+') || level_is(&lb, '+')) {
            continue;
        }
        if (!level_equal(&la, &lb)) {
            return false;
        }
    }
}

/* ------------------------------------------------------------------------
 * ACL file parser: mosquitto's acl_file format.
 *
 *   # comment
 *   pattern read|write|readwrite|deny TOPIC   (%u username, %c client id)
 *   user NAME
 *   topic read|write|readwrite|deny TOPIC
 *
 * As in mosquitto: a `topic` line without an access word grants readwrite;
 * `pattern` lines are global wherever they appear; `topic` lines before the
 * first `user` line are for anonymous clients, which this plugin refuses, so
 * they are skipped; an unknown keyword, access word or invalid topic fails the
 * whole file.
 * ------------------------------------------------------------------------ */

struct load_error {
    char message[512];
};

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static char *skip_blanks(char *s)
{
    while (is_blank(*s)) {
        s++;
    }
    return s;
}

/* Splits the first word off *line; *line moves past it and its blanks. */
static char *take_word(char **line)
{
    char *word = *line;
    char *end = word;
    while (*end != '\0' && !is_blank(*end)) {
        end++;
    }
    *line = skip_blanks(end);
    *end = '\0';
    return word;
}

static unsigned count_refs(const char *topic, char which)
{
    unsigned count = 0;
    for (const char *p = topic; p[0] != '\0' && p[1] != '\0'; p++) {
        if (p[0] == '%' && p[1] == which) {
            count++;
            p++;
        }
    }
    return count;
}

static bool parse_access(const char *word, int *access)
{
    if (strcmp(word, "read") == 0) {
        *access = MOSQ_ACL_READ;
    } else if (strcmp(word, "write") == 0) {
        *access = MOSQ_ACL_WRITE;
    } else if (strcmp(word, "readwrite") == 0) {
        *access = MOSQ_ACL_READ | MOSQ_ACL_WRITE;
    } else if (strcmp(word, "deny") == 0) {
        *access = MOSQ_ACL_NONE;
    } else {
        return false;
    }
    return true;
}

/* Parser state carried from line to line. */
struct parser {
    struct rule_set *set;
    const char *user; /* current `user` block (arena string), NULL before the first */
    size_t line_number;
    struct load_error *error;
};

static int parse_fail(struct parser *parser, const char *what, const char *line)
{
    snprintf(parser->error->message, sizeof(parser->error->message),
             "line %zu: %s: \"%.120s%s\"", parser->line_number, what, line,
             strlen(line) > 120 ? "..." : "");
    return MOSQ_ERR_INVAL;
}

/* line: one line, trailing whitespace removed. original: the same, untouched,
 * for error messages. */
static int parse_line(struct parser *parser, char *line, const char *original)
{
    line = skip_blanks(line);
    if (line[0] == '\0' || line[0] == '#') {
        return MOSQ_ERR_SUCCESS;
    }
    char *keyword = take_word(&line);

    if (strcmp(keyword, "user") == 0) {
        if (line[0] == '\0') {
            return parse_fail(parser, "missing username", original);
        }
        parser->user = arena_strndup(&parser->set->strings, line, strlen(line));
        return parser->user != NULL ? MOSQ_ERR_SUCCESS : MOSQ_ERR_NOMEM;
    }

    bool is_pattern = strcmp(keyword, "pattern") == 0;
    if (!is_pattern && strcmp(keyword, "topic") != 0) {
        return parse_fail(parser, "invalid line", original);
    }
    if (line[0] == '\0') {
        return parse_fail(parser, "empty topic", original);
    }
    int access = MOSQ_ACL_READ | MOSQ_ACL_WRITE;
    char *topic = line;
    char *first = take_word(&line);
    if (line[0] != '\0') {
        if (!parse_access(first, &access)) {
            return parse_fail(parser, "invalid access type (read, write, readwrite or deny)", original);
        }
        topic = line;
    }
    if (!filter_is_valid(topic)) {
        return parse_fail(parser, "invalid topic", original);
    }
    if (!is_pattern && parser->user == NULL) {
        return MOSQ_ERR_SUCCESS; /* anonymous clients: refused by this plugin anyway */
    }

    struct rule rule = {.access = access};
    rule.topic = arena_strndup(&parser->set->strings, topic, strlen(topic));
    if (rule.topic == NULL) {
        return MOSQ_ERR_NOMEM;
    }
    if (is_pattern) {
        rule.username_refs = count_refs(rule.topic, 'u');
        rule.client_id_refs = count_refs(rule.topic, 'c');
        return rule_list_append(&parser->set->patterns, rule);
    }
    struct user_rules *user = rule_set_user(parser->set, parser->user);
    if (user == NULL) {
        return MOSQ_ERR_NOMEM;
    }
    parser->set->topic_rule_count++;
    return rule_list_append(&user->rules, rule);
}

/* Reads path into a new rule set. On failure returns NULL with error filled. */
static struct rule_set *rule_set_load(const char *path, struct load_error *error)
{
    struct rule_set *set = calloc(1, sizeof(*set));
    if (set == NULL) {
        snprintf(error->message, sizeof(error->message), "out of memory");
        return NULL;
    }
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        snprintf(error->message, sizeof(error->message), "cannot open: %s", strerror(errno));
        rule_set_free(set);
        return NULL;
    }

    struct parser parser = {.set = set, .error = error};
    char *line = NULL;     /* getline's buffer: any line length */
    char *original = NULL; /* a copy of the line for error messages */
    size_t line_capacity = 0;
    size_t original_capacity = 0;
    ssize_t length;
    int rc = MOSQ_ERR_SUCCESS;

    while (rc == MOSQ_ERR_SUCCESS && (length = getline(&line, &line_capacity, file)) >= 0) {
        parser.line_number++;
        while (length > 0 && isspace((unsigned char)line[length - 1])) {
            line[--length] = '\0';
        }
        if (original_capacity < (size_t)length + 1) {
            char *grown = realloc(original, (size_t)length + 1);
            if (grown == NULL) {
                rc = MOSQ_ERR_NOMEM;
                break;
            }
            original = grown;
            original_capacity = (size_t)length + 1;
        }
        memcpy(original, line, (size_t)length + 1);
        rc = parse_line(&parser, line, original);
    }
    if (rc == MOSQ_ERR_SUCCESS && ferror(file)) {
        snprintf(error->message, sizeof(error->message), "read error: %s", strerror(errno));
        rc = MOSQ_ERR_ERRNO;
    }
    if (rc == MOSQ_ERR_NOMEM) {
        snprintf(error->message, sizeof(error->message), "out of memory at line %zu", parser.line_number);
    }
    free(line);
    free(original);
    fclose(file);
    if (rc != MOSQ_ERR_SUCCESS) {
        rule_set_free(set);
        return NULL;
    }
    return set;
}

/* ------------------------------------------------------------------------
 * Revocation set: the revoked certificate serials of plugin_opt_revoked_file.
 *
 *   # comment
 *   3f9a0c...      one serial per line, hex (BN_bn2hex of the serial, lowercased)
 *
 * A serial is kept as its value: big-endian bytes without leading zero bytes,
 * so "0abc" (BN_bn2hex pads to whole bytes) and "abc" are the same serial, and
 * the check needs no hex conversion. Upper-case digits are accepted. RFC 5280
 * caps serials at 20 bytes; a longer line fails the file. The serial alone is
 * the key, not (issuer, serial): the CAs draw serials at random from 2^127 or
 * more, so two CAs never issue the same one by chance.
 *
 * Layout: the keys in one dense array (21 bytes each) and an open-addressing
 * table of 32-bit indexes into it (linear probing, at most half full). 100,000
 * serials take 2.1 MB of keys and 1 MB of table.
 * ------------------------------------------------------------------------ */

#define SERIAL_MAX_BYTES 20

struct serial_key {
    uint8_t length; /* 0 for the serial 0 */
    uint8_t bytes[SERIAL_MAX_BYTES];
};

struct serial_set {
    struct serial_key *keys; /* count distinct serials */
    size_t count;
    uint32_t *slots;         /* 0 = empty, else index into keys + 1 */
    size_t slot_capacity;    /* a power of two, at least twice count; 0 when count is 0 */
    size_t lines;            /* serial lines read (duplicates included) */
};

/* FNV-1a, 64 bits, over the value's bytes. */
static uint64_t hash_serial(const uint8_t *bytes, size_t length)
{
    uint64_t hash = UINT64_C(14695981039346656037) ^ length;
    for (size_t i = 0; i < length; i++) {
        hash ^= bytes[i];
        hash *= UINT64_C(1099511628211);
    }
    return hash ^ (hash >> 29);
}

static bool serial_key_equal(const struct serial_key *key, const uint8_t *bytes, size_t length)
{
    return key->length == length && memcmp(key->bytes, bytes, length) == 0;
}

/* Whether the serial with these bytes (big-endian, leading zero bytes
 * allowed) is in the set. */
static bool serial_set_contains(const struct serial_set *set, const uint8_t *bytes, size_t length)
{
    while (length > 0 && bytes[0] == 0) {
        bytes++;
        length--;
    }
    if (set->count == 0 || length > SERIAL_MAX_BYTES) {
        return false;
    }
    size_t mask = set->slot_capacity - 1;
    for (size_t i = (size_t)hash_serial(bytes, length) & mask;; i = (i + 1) & mask) {
        uint32_t slot = set->slots[i];
        if (slot == 0) {
            return false;
        }
        if (serial_key_equal(&set->keys[slot - 1], bytes, length)) {
            return true;
        }
    }
}

static void serial_set_free(struct serial_set *set)
{
    if (set == NULL) {
        return;
    }
    free(set->keys);
    free(set->slots);
    free(set);
}

/* Bytes the set holds on the heap. */
static size_t serial_set_bytes(const struct serial_set *set)
{
    return set->count * sizeof(struct serial_key) + set->slot_capacity * sizeof(uint32_t);
}

/* Hex digit values plus one; 0 for anything else. */
static const uint8_t hex_digits[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
    ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

static int hex_value(char c)
{
    return hex_digits[(unsigned char)c] - 1;
}

/* Parses one line (NUL-terminated, newline included or not). Returns 1 with
 * *key filled for a serial, 0 for a blank or comment line, -1 with error
 * filled otherwise. */
static int parse_serial_line(const char *line, size_t line_number, struct serial_key *key,
                             struct load_error *error)
{
    const char *start = line;
    while (isspace((unsigned char)*start)) {
        start++;
    }
    if (*start == '\0' || *start == '#') {
        return 0;
    }
    const char *end = start;
    while (hex_digits[(unsigned char)*end] != 0) {
        end++;
    }
    const char *rest = end;
    while (isspace((unsigned char)*rest)) {
        rest++;
    }
    if (*rest != '\0') {
        size_t length = strcspn(start, "\r\n");
        snprintf(error->message, sizeof(error->message), "line %zu: not a hex serial: \"%.*s%s\"",
                 line_number, (int)(length > 80 ? 80 : length), start, length > 80 ? "..." : "");
        return -1;
    }
    while (start < end && *start == '0') {
        start++;
    }
    size_t digits = (size_t)(end - start);
    if (digits > 2 * SERIAL_MAX_BYTES) {
        snprintf(error->message, sizeof(error->message),
                 "line %zu: serial longer than %d bytes: \"%.80s...\"", line_number, SERIAL_MAX_BYTES, start);
        return -1;
    }
    key->length = (uint8_t)((digits + 1) / 2);
    uint8_t *out = key->bytes;
    const char *p = start;
    if (digits % 2 == 1) {
        *out++ = (uint8_t)hex_value(*p++);
    }
    for (; p < end; p += 2) {
        *out++ = (uint8_t)(hex_value(p[0]) << 4 | hex_value(p[1]));
    }
    memset(out, 0, (size_t)(key->bytes + SERIAL_MAX_BYTES - out));
    return 1;
}

/* Builds the table over the keys read, dropping duplicates. */
static int serial_set_index(struct serial_set *set)
{
    if (set->count == 0) {
        free(set->keys);
        set->keys = NULL;
        return MOSQ_ERR_SUCCESS;
    }
    if (set->count > UINT32_MAX / 2) {
        return MOSQ_ERR_NOMEM;
    }
    size_t capacity = 16;
    while (capacity < set->count * 2) {
        capacity *= 2;
    }
    set->slots = calloc(capacity, sizeof(*set->slots));
    if (set->slots == NULL) {
        return MOSQ_ERR_NOMEM;
    }
    set->slot_capacity = capacity;
    size_t mask = capacity - 1;
    size_t distinct = 0;
    for (size_t k = 0; k < set->count; k++) {
        const struct serial_key key = set->keys[k];
        size_t i = (size_t)hash_serial(key.bytes, key.length) & mask;
        bool duplicate = false;
        for (; set->slots[i] != 0; i = (i + 1) & mask) {
            if (serial_key_equal(&set->keys[set->slots[i] - 1], key.bytes, key.length)) {
                duplicate = true;
                break;
            }
        }
        if (!duplicate) {
            set->keys[distinct] = key;
            set->slots[i] = (uint32_t)(distinct + 1);
            distinct++;
        }
    }
    set->count = distinct;
    struct serial_key *fitted = realloc(set->keys, distinct * sizeof(*fitted));
    if (fitted != NULL) {
        set->keys = fitted;
    }
    return MOSQ_ERR_SUCCESS;
}

/* Reads path into a new set. On failure returns NULL with error filled. */
static struct serial_set *serial_set_load(const char *path, struct load_error *error)
{
    struct serial_set *set = calloc(1, sizeof(*set));
    if (set == NULL) {
        snprintf(error->message, sizeof(error->message), "out of memory");
        return NULL;
    }
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        snprintf(error->message, sizeof(error->message), "cannot open: %s", strerror(errno));
        serial_set_free(set);
        return NULL;
    }

    char *line = NULL;
    size_t line_capacity = 0;
    size_t line_number = 0;
    size_t key_capacity = 0;
    int rc = MOSQ_ERR_SUCCESS;
    while (getline(&line, &line_capacity, file) >= 0) {
        line_number++;
        struct serial_key key;
        int parsed = parse_serial_line(line, line_number, &key, error);
        if (parsed < 0) {
            rc = MOSQ_ERR_INVAL;
            break;
        }
        if (parsed == 0) {
            continue;
        }
        if (set->count == key_capacity) {
            size_t capacity = key_capacity == 0 ? 1024 : key_capacity * 2;
            struct serial_key *keys = realloc(set->keys, capacity * sizeof(*keys));
            if (keys == NULL) {
                rc = MOSQ_ERR_NOMEM;
                break;
            }
            set->keys = keys;
            key_capacity = capacity;
        }
        set->keys[set->count++] = key;
    }
    if (rc == MOSQ_ERR_SUCCESS && ferror(file)) {
        snprintf(error->message, sizeof(error->message), "read error: %s", strerror(errno));
        rc = MOSQ_ERR_ERRNO;
    }
    free(line);
    fclose(file);
    set->lines = set->count;
    if (rc == MOSQ_ERR_SUCCESS) {
        rc = serial_set_index(set);
    }
    if (rc == MOSQ_ERR_NOMEM) {
        snprintf(error->message, sizeof(error->message), "out of memory at line %zu", line_number);
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        serial_set_free(set);
        return NULL;
    }
    return set;
}

/* ------------------------------------------------------------------------
 * Plugin state and checks.
 * ------------------------------------------------------------------------ */

/* BN_bn2hex of a serial of up to 20 bytes, a sign and a NUL fit in 48. */
#define SERIAL_HEX_SIZE 48

/* A client denied for a revoked certificate, to be disconnected at the next
 * tick. client is only ever compared, never dereferenced: the broker may have
 * freed it (it cannot before MOSQ_EVT_DISCONNECT, which removes the entry). */
struct pending_kick {
    const struct mosquitto *client;
    char *client_id;
    char serial[SERIAL_HEX_SIZE];
};

/* Which version of a file was loaded: a rename over it (how escrowd writes
 * every file) changes the inode, an edit in place the size or mtime. */
struct file_id {
    bool known;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

static struct file_id file_id_of(const char *path)
{
    struct file_id id;
    memset(&id, 0, sizeof id);
    struct stat st;
    if (stat(path, &st) == 0) {
        id.known = true;
        id.dev = st.st_dev;
        id.ino = st.st_ino;
        id.size = st.st_size;
        id.mtime = st.st_mtim;
    }
    return id;
}

static bool file_id_equal(const struct file_id *a, const struct file_id *b)
{
    return a->known == b->known && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

struct plugin_state {
    mosquitto_plugin_id_t *identifier;
    char *acl_path;
    struct file_id acl_id;       /* the version of acl_path that rules came from */
    char *service_prefix;
    size_t service_prefix_length;
    struct rule_set *rules;      /* never NULL once init succeeded */
    char *revoked_path;          /* NULL: no plugin_opt_revoked_file, no revocation checks */
    struct serial_set *revoked;  /* never NULL once init succeeded with revoked_path */
    struct pending_kick *kicks;  /* disconnected at the next MOSQ_EVT_TICK */
    size_t kick_count;
    size_t kick_capacity;
    /* A revoked client whose connection is being closed (set by
     * MOSQ_EVT_DISCONNECT, cleared at the next tick): the broker checks its
     * will after closing the socket, when its certificate is gone. */
    const struct mosquitto *closing_revoked;
    char *reload_topic;          /* NULL: no reload confirmation */
    char *reload_token_path;
};

static bool value_is_substitutable(const char *value)
{
    return value != NULL && strpbrk(value, "+#/") == NULL;
}

/* The pattern's topic with %u and %c replaced, in a new string. NULL with
 * *skip set if the pattern cannot apply to this client: the value is missing
 * or contains '+', '#' or '/', which would let it reach other clients' topics.
 * (Mosquitto 2.0.11 refuses every check of a client whose username or id has
 * '+' or '#' when patterns exist, and does substitute '/'; skipping is at
 * least as strict.) NULL alone on OOM. */
static char *pattern_expand(const struct rule *pattern, const char *username,
                            const char *client_id, bool *skip)
{
    *skip = false;
    if ((pattern->username_refs > 0 && !value_is_substitutable(username)) ||
        (pattern->client_id_refs > 0 && !value_is_substitutable(client_id))) {
        *skip = true;
        return NULL;
    }
    size_t username_length = pattern->username_refs > 0 ? strlen(username) : 0;
    size_t client_id_length = pattern->client_id_refs > 0 ? strlen(client_id) : 0;
    size_t length = strlen(pattern->topic) + pattern->username_refs * username_length +
                    pattern->client_id_refs * client_id_length;
    char *expanded = malloc(length + 1);
    if (expanded == NULL) {
        return NULL;
    }
    char *out = expanded;
    for (const char *p = pattern->topic; *p != '\0'; p++) {
        if (p[0] == '%' && p[1] == 'u') {
            memcpy(out, username, username_length);
            out += username_length;
            p++;
        } else if (p[0] == '%' && p[1] == 'c') {
            memcpy(out, client_id, client_id_length);
            out += client_id_length;
            p++;
        } else {
            *out++ = *p;
        }
    }
    *out = '\0';
    return expanded;
}

enum pattern_test { PATTERN_DENY_OVERLAPS, PATTERN_READ_COVERS };

/* Whether some pattern passes test for this client. *failed is set on OOM. */
static bool patterns_match(const struct rule_list *patterns, enum pattern_test test,
                           const char *filter, const char *username,
                           const char *client_id, bool *failed)
{
    for (size_t i = 0; i < patterns->count; i++) {
        const struct rule *pattern = &patterns->items[i];
        bool wanted = test == PATTERN_DENY_OVERLAPS ? pattern->access == MOSQ_ACL_NONE
                                                    : (pattern->access & MOSQ_ACL_READ) != 0;
        if (!wanted) {
            continue;
        }
        bool skip;
        char *topic = pattern_expand(pattern, username, client_id, &skip);
        if (topic == NULL) {
            if (skip) {
                continue;
            }
            *failed = true;
            return false;
        }
        bool match = test == PATTERN_DENY_OVERLAPS ? filters_overlap(topic, filter)
                                                   : rule_covers(topic, filter);
        free(topic);
        if (match) {
            return true;
        }
    }
    return false;
}

static int deny_subscribe(const char *username, const char *topic, const char *reason)
{
    mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "denied SUBSCRIBE \"%s\" for \"%s\": %s",
                         topic, username != NULL ? username : "(no username)", reason);
    return MOSQ_ERR_ACL_DENIED;
}

/* Rule 1: a SUBSCRIBE (topic is the full filter, $share prefix included). */
static int check_subscribe(const struct plugin_state *state, struct mosquitto *client,
                           const char *topic)
{
    const char *username = mosquitto_client_username(client);
    const char *client_id = mosquitto_client_id(client);
    if (username == NULL) {
        return deny_subscribe(username, topic, "no username");
    }

    const char *filter = topic;
    if (strncmp(topic, "$share/", 7) == 0) {
        if (strncmp(username, state->service_prefix, state->service_prefix_length) != 0) {
            return deny_subscribe(username, topic, "shared subscriptions are for service users");
        }
        const char *group = topic + 7;
        const char *slash = strchr(group, '/');
        if (slash == NULL || slash == group || slash[1] == '\0') {
            return deny_subscribe(username, topic, "malformed shared subscription");
        }
        filter = slash + 1;
    }

    const struct rule_set *set = state->rules;
    const struct user_rules *user = rule_set_find(set, username);
    bool failed = false;

    if (user != NULL) {
        for (size_t i = 0; i < user->rules.count; i++) {
            const struct rule *rule = &user->rules.items[i];
            if (rule->access == MOSQ_ACL_NONE && filters_overlap(rule->topic, filter)) {
                return deny_subscribe(username, topic, "overlaps a deny rule");
            }
        }
    }
    if (patterns_match(&set->patterns, PATTERN_DENY_OVERLAPS, filter, username, client_id, &failed)) {
        return deny_subscribe(username, topic, "overlaps a deny pattern");
    }
    if (failed) {
        return deny_subscribe(username, topic, "out of memory");
    }

    if (user != NULL) {
        for (size_t i = 0; i < user->rules.count; i++) {
            const struct rule *rule = &user->rules.items[i];
            if ((rule->access & MOSQ_ACL_READ) != 0 && rule_covers(rule->topic, filter)) {
                return MOSQ_ERR_PLUGIN_DEFER;
            }
        }
    }
    if (patterns_match(&set->patterns, PATTERN_READ_COVERS, filter, username, client_id, &failed)) {
        return MOSQ_ERR_PLUGIN_DEFER;
    }
    return deny_subscribe(username, topic, failed ? "out of memory" : "not covered by a read rule");
}

/* ------------------------------------------------------------------------
 * Revocation: a client whose certificate serial is in the set is denied
 * everything and disconnected at the next tick.
 * ------------------------------------------------------------------------ */

/* The serial as escrowd writes it (BN_bn2hex, lowercased), for log lines. */
static void serial_hex(const ASN1_INTEGER *serial, char out[SERIAL_HEX_SIZE])
{
    snprintf(out, SERIAL_HEX_SIZE, "?");
    BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
    if (bn == NULL) {
        return;
    }
    char *hex = BN_bn2hex(bn);
    BN_free(bn);
    if (hex == NULL) {
        return;
    }
    size_t i = 0;
    for (; hex[i] != '\0' && i + 1 < SERIAL_HEX_SIZE; i++) {
        out[i] = (char)tolower((unsigned char)hex[i]);
    }
    out[i] = '\0';
    OPENSSL_free(hex);
}

/* The certificate's serial if it is in the set, else NULL. The file format
 * has no negative serials, so a (non-conforming) negative one never matches. */
static const ASN1_INTEGER *revoked_serial(const struct serial_set *set, const X509 *cert)
{
    const ASN1_INTEGER *serial = X509_get0_serialNumber(cert);
    if (serial == NULL || ASN1_STRING_type(serial) != V_ASN1_INTEGER) {
        return NULL;
    }
    int length = ASN1_STRING_length(serial);
    if (length < 0 || !serial_set_contains(set, ASN1_STRING_get0_data(serial), (size_t)length)) {
        return NULL;
    }
    return serial;
}

static bool revocation_enabled(const struct plugin_state *state)
{
    return state->revoked != NULL && state->revoked->count > 0;
}

/* Logs the refusal and queues the client's disconnection, once per
 * connection: a client already queued is not logged again. */
static void queue_kick(struct plugin_state *state, struct mosquitto *client, const ASN1_INTEGER *serial)
{
    for (size_t i = 0; i < state->kick_count; i++) {
        if (state->kicks[i].client == client) {
            return;
        }
    }
    struct pending_kick kick = {.client = client};
    serial_hex(serial, kick.serial);
    const char *client_id = mosquitto_client_id(client);
    const char *username = mosquitto_client_username(client);
    mosquitto_log_printf(MOSQ_LOG_NOTICE,
                         LOG_PREFIX "revoked certificate serial %s for client \"%s\" (username \"%s\"): "
                         "access denied, disconnecting it",
                         kick.serial, client_id != NULL ? client_id : "", username != NULL ? username : "(none)");
    if (client_id == NULL) {
        return; /* the broker refuses every check of a client without an id anyway */
    }
    if (state->kick_count == state->kick_capacity) {
        size_t capacity = state->kick_capacity == 0 ? 8 : state->kick_capacity * 2;
        struct pending_kick *kicks = realloc(state->kicks, capacity * sizeof(*kicks));
        if (kicks == NULL) {
            mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "Error: out of memory queueing the disconnection of \"%s\"",
                                 client_id);
            return;
        }
        state->kicks = kicks;
        state->kick_capacity = capacity;
    }
    kick.client_id = strdup(client_id);
    if (kick.client_id == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "Error: out of memory queueing the disconnection of \"%s\"",
                             client_id);
        return;
    }
    state->kicks[state->kick_count++] = kick;
}

/* Rule 0, before every other: true if the client presents a revoked
 * certificate (or is the revoked client whose connection is being closed). */
static bool check_revoked(struct plugin_state *state, const struct mosquitto_evt_acl_check *ed)
{
    if (!revocation_enabled(state)) {
        return false;
    }
    if (ed->client == state->closing_revoked) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             LOG_PREFIX "refused %s \"%s\" of client \"%s\" after its disconnection: revoked certificate",
                             ed->access == MOSQ_ACL_WRITE ? "the will" : "access to", ed->topic != NULL ? ed->topic : "",
                             mosquitto_client_id(ed->client) != NULL ? mosquitto_client_id(ed->client) : "");
        return true;
    }
    X509 *cert = mosquitto_client_certificate(ed->client);
    if (cert == NULL) {
        return false;
    }
    const ASN1_INTEGER *serial = revoked_serial(state->revoked, cert);
    if (serial != NULL) {
        queue_kick(state, ed->client, serial);
    }
    X509_free(cert);
    return serial != NULL;
}

static void log_loaded(const char *verb, const struct plugin_state *state);

/* A SUBSCRIBE follows the ACL file as it is on disk, not only as of the last
 * SIGHUP: a reload can read the password file after escrowd rewrote it but the
 * ACL file just before, and a login created a moment ago must not have its
 * first subscriptions refused until the next reload. Being ahead of acl_file is
 * safe: acl_file still decides every publish and delivery. One stat() per
 * SUBSCRIBE; a file that fails to parse is not retried until it changes. */
static void follow_acl_file(struct plugin_state *state)
{
    struct file_id id = file_id_of(state->acl_path);
    if (!id.known || file_id_equal(&id, &state->acl_id)) {
        return;
    }
    state->acl_id = id;
    struct load_error error;
    struct rule_set *fresh = rule_set_load(state->acl_path, &error);
    if (fresh == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             LOG_PREFIX "Error: cannot re-read changed ACL file \"%s\": %s; keeping the previous rules",
                             state->acl_path, error.message);
        return;
    }
    rule_set_free(state->rules);
    state->rules = fresh;
    log_loaded("re-read changed", state);
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
    const struct mosquitto_evt_acl_check *ed = event_data;
    (void)event;

    if (check_revoked(userdata, ed)) {
        return MOSQ_ERR_ACL_DENIED;
    }
    if (ed->access != MOSQ_ACL_SUBSCRIBE) {
        return MOSQ_ERR_PLUGIN_DEFER; /* acl_file decides at publish and delivery */
    }
    follow_acl_file(userdata);
    return check_subscribe(userdata, ed->client, ed->topic);
}

/* MOSQ_EVT_TICK: once per pass of the broker's main loop, at its end (every
 * 100 ms when idle, after each batch of network events when busy). Kicking
 * here, not in the ACL callback, leaves no caller holding the client. */
static int on_tick(int event, void *event_data, void *userdata)
{
    struct plugin_state *state = userdata;
    (void)event;
    (void)event_data;

    state->closing_revoked = NULL;
    if (state->kick_count == 0) {
        return MOSQ_ERR_SUCCESS;
    }
    /* Detached first: each kick fires MOSQ_EVT_DISCONNECT, which edits the list. */
    struct pending_kick *kicks = state->kicks;
    size_t count = state->kick_count;
    state->kicks = NULL;
    state->kick_count = 0;
    state->kick_capacity = 0;
    for (size_t i = 0; i < count; i++) {
        int rc = mosquitto_kick_client_by_clientid(kicks[i].client_id, false);
        if (rc == MOSQ_ERR_SUCCESS) {
            mosquitto_log_printf(MOSQ_LOG_NOTICE,
                                 LOG_PREFIX "disconnected client \"%s\": revoked certificate serial %s",
                                 kicks[i].client_id, kicks[i].serial);
        } else {
            mosquitto_log_printf(MOSQ_LOG_INFO,
                                 LOG_PREFIX "client \"%s\" (revoked certificate serial %s) was gone before its disconnection",
                                 kicks[i].client_id, kicks[i].serial);
        }
        free(kicks[i].client_id);
    }
    free(kicks);
    state->closing_revoked = NULL; /* the kicks' own disconnections set it */
    return MOSQ_ERR_SUCCESS;
}

/* MOSQ_EVT_DISCONNECT, called before the broker closes the socket: a queued
 * kick of this connection is dropped (so a client that takes over its id is
 * not kicked), and a revoked client is remembered until the next tick so that
 * its will, checked once the socket (and certificate) is gone, is refused. */
static int on_disconnect(int event, void *event_data, void *userdata)
{
    const struct mosquitto_evt_disconnect *ed = event_data;
    struct plugin_state *state = userdata;
    (void)event;

    state->closing_revoked = NULL;
    for (size_t i = 0; i < state->kick_count;) {
        if (state->kicks[i].client == ed->client) {
            free(state->kicks[i].client_id);
            state->kicks[i] = state->kicks[--state->kick_count];
        } else {
            i++;
        }
    }
    if (revocation_enabled(state)) {
        X509 *cert = mosquitto_client_certificate(ed->client);
        if (cert != NULL) {
            if (revoked_serial(state->revoked, cert) != NULL) {
                state->closing_revoked = ed->client;
            }
            X509_free(cert);
        }
    }
    return MOSQ_ERR_SUCCESS;
}

/* Rule 3: the client id is the username, or "USERNAME:" and anything. */
static int on_basic_auth(int event, void *event_data, void *userdata)
{
    const struct mosquitto_evt_basic_auth *ed = event_data;
    const char *client_id = mosquitto_client_id(ed->client);
    (void)event;
    (void)userdata;

    if (ed->username != NULL && client_id != NULL) {
        size_t length = strlen(ed->username);
        if (strncmp(client_id, ed->username, length) == 0 &&
            (client_id[length] == '\0' || client_id[length] == ':')) {
            return MOSQ_ERR_PLUGIN_DEFER; /* password_file checks the password */
        }
    }
    mosquitto_log_printf(MOSQ_LOG_NOTICE,
                         LOG_PREFIX "refused client id \"%s\" for username \"%s\": "
                         "it must be the username or start with \"USERNAME:\"",
                         client_id != NULL ? client_id : "", ed->username != NULL ? ed->username : "(none)");
    return MOSQ_ERR_AUTH;
}

static void log_loaded(const char *verb, const struct plugin_state *state)
{
    mosquitto_log_printf(MOSQ_LOG_NOTICE,
                         LOG_PREFIX "%s ACL file \"%s\": %zu users, %zu topic rules, %zu patterns",
                         verb, state->acl_path, state->rules->user_count,
                         state->rules->topic_rule_count, state->rules->patterns.count);
}

static double milliseconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) * 1e3 + (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

/* Loads the revoked file into state->revoked (replacing the set only on
 * success). verb is "load" or "reload", for the log lines. */
static int load_revoked(struct plugin_state *state, const char *verb)
{
    struct load_error error;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    struct serial_set *fresh = serial_set_load(state->revoked_path, &error);
    if (fresh == NULL) {
        if (state->revoked != NULL) {
            mosquitto_log_printf(MOSQ_LOG_ERR,
                                 LOG_PREFIX "Error: cannot %s revoked file \"%s\": %s; keeping the previous %zu serials",
                                 verb, state->revoked_path, error.message, state->revoked->count);
        } else {
            mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "Error: cannot %s revoked file \"%s\": %s", verb,
                                 state->revoked_path, error.message);
        }
        return MOSQ_ERR_INVAL;
    }
    serial_set_free(state->revoked);
    state->revoked = fresh;
    mosquitto_log_printf(MOSQ_LOG_NOTICE,
                         LOG_PREFIX "%sed revoked file \"%s\": %zu serials from %zu lines, %zu KiB, in %.1f ms",
                         verb, state->revoked_path, fresh->count, fresh->lines,
                         (serial_set_bytes(fresh) + 1023) / 1024, milliseconds_since(&start));
    return MOSQ_ERR_SUCCESS;
}

/* Publishes the reload token (the token file's first line) on the reload
 * topic. mosquitto_broker_publish only queues the message: the broker sends it
 * from its main loop after this reload has finished (password file, ACL file,
 * certificates, the re-check of connected clients), which is what makes it a
 * confirmation. */
static void confirm_reload(struct plugin_state *state)
{
    if (state->reload_topic == NULL) {
        return;
    }
    char token[ESCROW_BROKER_PLUGIN_RELOAD_TOKEN_MAX + 2] = {0};
    FILE *f = fopen(state->reload_token_path, "r");
    if (f != NULL) {
        if (fgets(token, sizeof(token), f) == NULL) {
            token[0] = '\0';
        }
        fclose(f);
    } else {
        mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "Warning: cannot read reload token file \"%s\": %s; confirming with an empty token",
                             state->reload_token_path, strerror(errno));
    }
    size_t length = strcspn(token, "\r\n");
    if (length > ESCROW_BROKER_PLUGIN_RELOAD_TOKEN_MAX) {
        length = ESCROW_BROKER_PLUGIN_RELOAD_TOKEN_MAX;
    }
    token[length] = '\0';
    int rc = mosquitto_broker_publish_copy(NULL, state->reload_topic, (int)length, token, 1, false, NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
        mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "Error: cannot publish the reload confirmation on \"%s\": %s",
                             state->reload_topic, mosquitto_strerror(rc));
        return;
    }
    mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "reload confirmed on \"%s\" with token \"%s\"", state->reload_topic, token);
}

/* Rule 4: SIGHUP. Returns MOSQ_ERR_PLUGIN_DEFER in every case: mosquitto
 * 2.0.11 stops at the first reload callback that returns anything else, and on
 * an error it also skips re-registering its own password_file and acl_file
 * checks, which would lock every client out. The ACL file and the revoked file
 * are independent: either failing keeps its own previous state only. */
static int on_reload(int event, void *event_data, void *userdata)
{
    struct plugin_state *state = userdata;
    struct load_error error;
    (void)event;
    (void)event_data;

    if (state->revoked_path != NULL) {
        load_revoked(state, "reload");
    }
    struct file_id id = file_id_of(state->acl_path);
    struct rule_set *fresh = rule_set_load(state->acl_path, &error);
    if (fresh == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             LOG_PREFIX "Error: cannot reload ACL file \"%s\": %s; keeping the previous rules",
                             state->acl_path, error.message);
        confirm_reload(state); /* the rest of the reload (passwords, certificates) still happens */
        return MOSQ_ERR_PLUGIN_DEFER;
    }
    state->acl_id = id;
    rule_set_free(state->rules);
    state->rules = fresh;
    log_loaded("reloaded", state);
    confirm_reload(state);
    return MOSQ_ERR_PLUGIN_DEFER;
}

/* ------------------------------------------------------------------------
 * Plugin entry points.
 * ------------------------------------------------------------------------ */

static void state_free(struct plugin_state *state)
{
    if (state == NULL) {
        return;
    }
    rule_set_free(state->rules);
    serial_set_free(state->revoked);
    for (size_t i = 0; i < state->kick_count; i++) {
        free(state->kicks[i].client_id);
    }
    free(state->kicks);
    free(state->acl_path);
    free(state->service_prefix);
    free(state->revoked_path);
    free(state->reload_topic);
    free(state->reload_token_path);
    free(state);
}

/* accounts/ACCOUNT/cmd/COMMAND, each segment non-empty: the operators' command topics. */
static bool is_command_topic(const char *topic)
{
    static const char prefix[] = "accounts/";
    if (topic == NULL || strncmp(topic, prefix, sizeof(prefix) - 1) != 0) {
        return false;
    }
    const char *account = topic + sizeof(prefix) - 1;
    const char *slash = strchr(account, '/');
    if (slash == NULL || slash == account || strncmp(slash, "/cmd/", 5) != 0) {
        return false;
    }
    const char *command = slash + 5;
    return *command != '\0' && strchr(command, '/') == NULL;
}

/* MOSQ_EVT_MESSAGE: stamps a command with its sender's authenticated username.
 * mosquitto_property_add_string_pair appends at the end of the list, so the
 * stamp follows any user property of the same name the client sent. */
static int on_message(int event, void *event_data, void *userdata)
{
    (void)event;
    (void)userdata;
    struct mosquitto_evt_message *message = event_data;
    if (!is_command_topic(message->topic)) {
        return MOSQ_ERR_SUCCESS;
    }
    const char *username = mosquitto_client_username(message->client);
    if (username == NULL) {
        return MOSQ_ERR_SUCCESS;
    }
    if (mosquitto_property_add_string_pair(&message->properties, MQTT_PROP_USER_PROPERTY,
                                           ESCROW_BROKER_PLUGIN_OPERATOR_PROPERTY, username) != MOSQ_ERR_SUCCESS) {
        mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "Error: cannot stamp a command from %s (out of memory); refused", username);
        return MOSQ_ERR_NOMEM;
    }
    return MOSQ_ERR_SUCCESS;
}

static void unregister_callbacks(mosquitto_plugin_id_t *identifier)
{
    mosquitto_callback_unregister(identifier, MOSQ_EVT_MESSAGE, on_message, NULL);
    mosquitto_callback_unregister(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
    mosquitto_callback_unregister(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
    mosquitto_callback_unregister(identifier, MOSQ_EVT_RELOAD, on_reload, NULL);
    mosquitto_callback_unregister(identifier, MOSQ_EVT_TICK, on_tick, NULL);
    mosquitto_callback_unregister(identifier, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
    for (int i = 0; i < supported_version_count; i++) {
        if (supported_versions[i] == 5) {
            return 5;
        }
    }
    return -1;
}

static int init_fail(struct plugin_state *state, const char *message)
{
    mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "Error: %s", message);
    state_free(state);
    return MOSQ_ERR_INVAL;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                          struct mosquitto_opt *options, int option_count)
{
    struct plugin_state *state = calloc(1, sizeof(*state));
    if (state == NULL) {
        return init_fail(NULL, "out of memory");
    }
    state->identifier = identifier;

    const char *acl_path = NULL;
    const char *revoked_path = NULL;
    const char *reload_topic = NULL;
    const char *reload_token_path = NULL;
    const char *service_prefix = ESCROW_BROKER_PLUGIN_DEFAULT_SERVICE_PREFIX;
    for (int i = 0; i < option_count; i++) {
        if (strcmp(options[i].key, ESCROW_BROKER_PLUGIN_OPT_ACL_FILE) == 0) {
            acl_path = options[i].value;
        } else if (strcmp(options[i].key, ESCROW_BROKER_PLUGIN_OPT_SERVICE_PREFIX) == 0) {
            service_prefix = options[i].value;
        } else if (strcmp(options[i].key, ESCROW_BROKER_PLUGIN_OPT_REVOKED_FILE) == 0) {
            revoked_path = options[i].value;
        } else if (strcmp(options[i].key, ESCROW_BROKER_PLUGIN_OPT_RELOAD_TOPIC) == 0) {
            reload_topic = options[i].value;
        } else if (strcmp(options[i].key, ESCROW_BROKER_PLUGIN_OPT_RELOAD_TOKEN_FILE) == 0) {
            reload_token_path = options[i].value;
        } else {
            mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "Warning: unknown option plugin_opt_%s ignored",
                                 options[i].key);
        }
    }
    if (acl_path == NULL || acl_path[0] == '\0') {
        return init_fail(state, "plugin_opt_acl_file is required (the broker's acl_file path)");
    }
    if (service_prefix == NULL || service_prefix[0] == '\0') {
        return init_fail(state, "plugin_opt_service_prefix must not be empty");
    }
    if (revoked_path != NULL && revoked_path[0] == '\0') {
        return init_fail(state, "plugin_opt_revoked_file must not be empty (leave it out for no revocation set)");
    }
    if ((reload_topic == NULL) != (reload_token_path == NULL) ||
        (reload_topic != NULL && (reload_topic[0] == '\0' || reload_token_path[0] == '\0'))) {
        return init_fail(state, "plugin_opt_reload_topic and plugin_opt_reload_token_file go together (both non-empty, or neither)");
    }
    if (reload_topic != NULL && (strpbrk(reload_topic, "+#") != NULL || reload_topic[0] == '$')) {
        return init_fail(state, "plugin_opt_reload_topic must be a plain topic name (no wildcards, not $...)");
    }
    if (reload_topic != NULL) {
        state->reload_topic = strdup(reload_topic);
        state->reload_token_path = strdup(reload_token_path);
        if (state->reload_topic == NULL || state->reload_token_path == NULL) {
            return init_fail(state, "out of memory");
        }
    }
    state->acl_path = strdup(acl_path);
    state->service_prefix = strdup(service_prefix);
    state->revoked_path = revoked_path != NULL ? strdup(revoked_path) : NULL;
    if (state->acl_path == NULL || state->service_prefix == NULL || (revoked_path != NULL && state->revoked_path == NULL)) {
        return init_fail(state, "out of memory");
    }
    state->service_prefix_length = strlen(state->service_prefix);

    struct load_error error;
    state->acl_id = file_id_of(state->acl_path);
    state->rules = rule_set_load(state->acl_path, &error);
    if (state->rules == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "Error: cannot load ACL file \"%s\": %s",
                             state->acl_path, error.message);
        state_free(state);
        return MOSQ_ERR_INVAL;
    }

    if (state->revoked_path != NULL && load_revoked(state, "load") != MOSQ_ERR_SUCCESS) {
        state_free(state);
        return MOSQ_ERR_INVAL;
    }

    /* TICK and DISCONNECT only serve revocation. Mosquitto 2.0.11 calls TICK
     * only with per_listener_settings false (the configuration escrowd writes). */
    if (mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, state) != MOSQ_ERR_SUCCESS ||
        mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, state) != MOSQ_ERR_SUCCESS ||
        mosquitto_callback_register(identifier, MOSQ_EVT_RELOAD, on_reload, NULL, state) != MOSQ_ERR_SUCCESS ||
        mosquitto_callback_register(identifier, MOSQ_EVT_MESSAGE, on_message, NULL, state) != MOSQ_ERR_SUCCESS ||
        (state->revoked_path != NULL &&
         (mosquitto_callback_register(identifier, MOSQ_EVT_TICK, on_tick, NULL, state) != MOSQ_ERR_SUCCESS ||
          mosquitto_callback_register(identifier, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, state) != MOSQ_ERR_SUCCESS))) {
        unregister_callbacks(identifier);
        return init_fail(state, "cannot register callbacks");
    }
    log_loaded("loaded", state);
    *userdata = state;
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
    struct plugin_state *state = userdata;
    (void)options;
    (void)option_count;

    if (state != NULL) {
        unregister_callbacks(state->identifier);
        state_free(state);
    }
    return MOSQ_ERR_SUCCESS;
}
