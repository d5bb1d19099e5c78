/*
 * config.c — the relay's configuration: one table of keys, read from a file, the environment and
 * the command line, checked as it is read.
 *
 * The table `keys` below is the only list of keys. The file parser, the BREAKWATER_* environment
 * variables, the --key=value flags, --help, bw_config_decoder_options and the reload on SIGHUP all
 * walk it, and tests/relay/test_config_docs.py fails when a key in it is missing from
 * docs/relay.md or from breakwater-relay.conf.example. Adding a key is adding one entry here (and
 * a field in bw_config).
 *
 * Files are parsed with libinih: a small, well-kept parser that does one thing (sections, name =
 * value, comments) and has no surprises such as interpolation or type guessing; Debian ships it
 * (libinih-dev). We read through our own line reader so that every error, ours or inih's, carries
 * its line number.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"
#include "log.h"

typedef enum key_type { T_STRING, T_BOOL, T_INT, T_ENUM } key_type;

typedef int (*key_check)(const char *value, bw_buf *why);

typedef struct key_def {
    const char *name; /* dotted: section.name */
    key_type type;
    size_t offset;    /* of the field in bw_config: char * (string, enum), bool, int64_t */
    const char *def;  /* default, as text; NULL = not set */
    int64_t min, max; /* T_INT */
    const char *const *choices; /* T_ENUM: NULL-terminated */
    bool reloadable;            /* SIGHUP applies a new value */
    const char *help;           /* one line */
    const char *plugin_option;  /* decoder.*: the plugin's option name */
    key_check check;            /* further checks; NULL = none */
    bool secret;                /* redact the value in messages and dumps */
} key_def;

static int check_conninfo(const char *value, bw_buf *why);
static int check_slot_name(const char *value, bw_buf *why);
static int check_actions(const char *value, bw_buf *why);
static int check_topic_prefix(const char *value, bw_buf *why);
static int check_topic_template(const char *value, bw_buf *why);
static int check_keyless_topic(const char *value, bw_buf *why);
static int check_avro_namespace(const char *value, bw_buf *why);
static int check_not_zero(const char *value, bw_buf *why);
static int check_registry_url(const char *value, bw_buf *why);
static int check_compatibility(const char *value, bw_buf *why);
static int check_http_listen(const char *value, bw_buf *why);

static const char *const missing_tenant_choices[] = {"pass", "drop", "error", NULL};
static const char *const value_format_choices[] = {"json", "avro", NULL};
static const char *const cleanup_policy_choices[] = {"compact", "delete", "compact,delete", NULL};
static const char *const log_level_choices[] = {"debug", "info", "warn", "error", NULL};
static const char *const snapshot_mode_choices[] = {"initial", "never", "initial-only", NULL};

#define FIELD(f) offsetof(bw_config, f)

/* clang-format off */
static const key_def keys[] = {
    {.name = "pg.conninfo", .type = T_STRING, .offset = FIELD(pg_conninfo),
     .def = "dbname=postgres", .check = check_conninfo, .secret = true,
     .help = "libpq connection string (key=value pairs or a postgresql:// URI); the relay adds "
             "replication=database"},
    {.name = "slot.name", .type = T_STRING, .offset = FIELD(slot_name),
     .def = "breakwater", .check = check_slot_name,
     .help = "logical replication slot to stream: lower-case letters, digits and underscores"},
    {.name = "slot.create", .type = T_BOOL, .offset = FIELD(slot_create),
     .def = "true",
     .help = "create the slot (plugin breakwater) when it does not exist"},
    {.name = "decoder.tables", .type = T_STRING, .offset = FIELD(decoder_tables),
     .plugin_option = "tables",
     .help = "tables to send: schema.table patterns, comma-separated (not set: every table)"},
    {.name = "decoder.exclude_tables", .type = T_STRING, .offset = FIELD(decoder_exclude_tables),
     .plugin_option = "exclude-tables",
     .help = "tables to leave out: schema.table patterns, checked after decoder.tables"},
    {.name = "decoder.tenant_column", .type = T_STRING, .offset = FIELD(decoder_tenant_column),
     .plugin_option = "tenant-column",
     .help = "column that holds the tenant (not set: the plugin's default, tenant_id)"},
    {.name = "decoder.tenant_columns", .type = T_STRING, .offset = FIELD(decoder_tenant_columns),
     .plugin_option = "tenant-columns",
     .help = "per-table tenant columns: pattern=column rules, comma-separated; the first match "
             "wins"},
    {.name = "decoder.missing_tenant", .type = T_ENUM, .offset = FIELD(decoder_missing_tenant),
     .choices = missing_tenant_choices, .plugin_option = "missing-tenant",
     .help = "a change without a tenant is sent (pass), skipped (drop) or stops decoding "
             "(error); not set: pass"},
    {.name = "decoder.exclude_columns", .type = T_STRING, .offset = FIELD(decoder_exclude_columns),
     .plugin_option = "exclude-columns",
     .help = "columns to leave out: schema.table.column patterns (key columns are always sent)"},
    {.name = "decoder.actions", .type = T_STRING, .offset = FIELD(decoder_actions),
     .plugin_option = "actions", .check = check_actions,
     .help = "operations to send, comma-separated from insert, update, delete, truncate (not "
             "set: all four)"},
    {.name = "decoder.message_prefixes", .type = T_STRING,
     .offset = FIELD(decoder_message_prefixes),
     .plugin_option = "message-prefixes",
     .help = "prefixes of pg_logical_emit_message messages to send (not set: no messages)"},
    {.name = "decoder.write_chunk_bytes", .type = T_INT, .offset = FIELD(decoder_write_chunk_bytes),
     .def = "65536", .min = 1, .max = 268435456, .plugin_option = "write-chunk-bytes",
     .help = "size in bytes at which the plugin sends what it has written"},
    {.name = "decoder.streaming", .type = T_BOOL, .offset = FIELD(decoder_streaming),
     .def = "true", .plugin_option = "streaming",
     .help = "ask the plugin to stream large transactions while they run (spooled in relay.spool_dir until their commit), so that they never hold up the others"},
    {.name = "snapshot.mode", .type = T_ENUM, .offset = FIELD(snapshot_mode),
     .def = "initial", .choices = snapshot_mode_choices,
     .help = "initial: when the relay creates its slot, publish the selected tables' rows (op read) from the slot's exported snapshot, then stream; never: stream only; initial-only: publish the rows of a fresh snapshot and exit, without a slot"},
    {.name = "snapshot.chunk_rows", .type = T_INT, .offset = FIELD(snapshot_chunk_rows),
     .def = "10000", .min = 1, .max = 10000000,
     .help = "rows per snapshot chunk (read in key order); progress is saved after each chunk Kafka acknowledged, and a restart resumes after it"},
    {.name = "backfill.chunk_rows", .type = T_INT, .offset = FIELD(backfill_chunk_rows),
     .def = "2000", .min = 1, .max = 1000000,
     .help = "rows per backfill chunk, read between two watermarks; streaming waits at most for one chunk's read"},
    {.name = "topic.prefix", .type = T_STRING, .offset = FIELD(topic_prefix),
     .def = "breakwater", .check = check_topic_prefix,
     .help = "the {prefix} of topic.template"},
    {.name = "topic.template", .type = T_STRING, .offset = FIELD(topic_template),
     .def = "{prefix}.{schema}.{table}", .check = check_topic_template,
     .help = "topic of each change, from the placeholders {prefix} {schema} {table} {tenant}"},
    {.name = "topic.tombstones", .type = T_BOOL, .offset = FIELD(topic_tombstones),
     .def = "true",
     .help = "follow each delete with a tombstone (same key, null value), so that a compacted topic keeps exactly the live rows"},
    {.name = "topic.create", .type = T_BOOL, .offset = FIELD(topic_create),
     .def = "true",
     .help = "create a row topic that does not exist, with the settings below, before its first message; an existing one is checked (a warning when its cleanup.policy cannot support a replay)"},
    {.name = "topic.partitions", .type = T_INT, .offset = FIELD(topic_partitions),
     .def = "-1", .min = -1, .max = 100000, .check = check_not_zero,
     .help = "partitions of a topic the relay creates; -1: the broker's default"},
    {.name = "topic.replication_factor", .type = T_INT, .offset = FIELD(topic_replication_factor),
     .def = "-1", .min = -1, .max = 32767, .check = check_not_zero,
     .help = "replication factor of a topic the relay creates; -1: the broker's default"},
    {.name = "topic.cleanup_policy", .type = T_ENUM, .offset = FIELD(topic_cleanup_policy),
     .def = "compact", .choices = cleanup_policy_choices,
     .help = "cleanup.policy of a topic the relay creates: compact keeps each row's last version (with tombstones: exactly the live rows); the topic of a table without key columns gets delete, since a compacted topic refuses messages without a key"},
    {.name = "topic.retention_ms", .type = T_INT, .offset = FIELD(topic_retention_ms),
     .def = "-1", .min = -1, .max = INT64_MAX,
     .help = "retention.ms of a topic the relay creates (for cleanup_policy delete); -1: the broker's default"},
    {.name = "topic.keyless", .type = T_STRING, .offset = FIELD(topic_keyless),
     .def = "{prefix}.keyless", .check = check_keyless_topic,
     .help = "where a message without a key (a truncate, a row of a table without key columns, a keyless delete) goes instead of a compacted topic, which would refuse it: same value and headers, keyed by schema.table; created with cleanup.policy=delete ({prefix} allowed)"},
    {.name = "value.format", .type = T_ENUM, .offset = FIELD(value_format),
     .def = "json", .choices = value_format_choices,
     .help = "format of row messages: json, or avro (keys and values, Confluent wire format, "
             "schemas in schema_registry.url)"},
    {.name = "avro.namespace", .type = T_STRING, .offset = FIELD(avro_namespace),
     .def = "breakwater", .check = check_avro_namespace,
     .help = "namespace of the Avro records; a table's records are <namespace>.<schema>.<table>.Key, .Value and .Envelope"},
    {.name = "schema_registry.url", .type = T_STRING, .offset = FIELD(schema_registry_url),
     .check = check_registry_url,
     .help = "base URL of the schema registry's Confluent API (several: comma-separated, tried in turn); needed by value.format=avro"},
    {.name = "schema_registry.basic_auth_user_info", .type = T_STRING,
     .offset = FIELD(schema_registry_basic_auth), .secret = true,
     .help = "user:password for HTTP basic authentication (not set: none)"},
    {.name = "schema_registry.ssl_ca_location", .type = T_STRING,
     .offset = FIELD(schema_registry_ssl_ca_location),
     .help = "CA certificates (PEM file) to verify the registry's certificate (not set: the system's)"},
    {.name = "schema_registry.ssl_certificate_location", .type = T_STRING,
     .offset = FIELD(schema_registry_ssl_certificate_location),
     .help = "client certificate (PEM file) for mutual TLS"},
    {.name = "schema_registry.ssl_key_location", .type = T_STRING,
     .offset = FIELD(schema_registry_ssl_key_location),
     .help = "client private key (PEM file) for mutual TLS"},
    {.name = "schema_registry.ssl_key_password", .type = T_STRING,
     .offset = FIELD(schema_registry_ssl_key_password), .secret = true,
     .help = "password of the client private key"},
    {.name = "schema_registry.compatibility", .type = T_STRING,
     .offset = FIELD(schema_registry_compatibility), .check = check_compatibility,
     .help = "compatibility level set on each subject the relay creates (existing ones keep theirs): BACKWARD, FORWARD, FULL, their _TRANSITIVE forms or NONE; empty: leave the registry's"},
    {.name = "schema_registry.timeout_ms", .type = T_INT,
     .offset = FIELD(schema_registry_timeout_ms), .def = "10000", .min = 100, .max = 600000,
     .help = "time limit of one request to the registry"},
    {.name = "schema_registry.retry_max_ms", .type = T_INT,
     .offset = FIELD(schema_registry_retry_max_ms), .def = "30000", .min = 0, .max = 3600000,
     .help = "how long a failing registration is retried (unreachable, timeouts, 5xx) before the relay stops with an error"},
    {.name = "relay.max_inflight_bytes", .type = T_INT, .offset = FIELD(max_inflight_bytes),
     .def = "67108864", .min = 1048576, .max = INT64_MAX, .reloadable = true,
     .help = "stop reading from PostgreSQL while this many bytes await Kafka's acknowledgement"},
    {.name = "relay.status_interval_ms", .type = T_INT, .offset = FIELD(status_interval_ms),
     .def = "1000", .min = 100, .max = 60000, .reloadable = true,
     .help = "period of standby status updates (the confirmed position) to PostgreSQL"},
    {.name = "relay.reconnect_backoff_max_ms", .type = T_INT,
     .offset = FIELD(reconnect_backoff_max_ms),
     .def = "30000", .min = 100, .max = 600000, .reloadable = true,
     .help = "longest wait between attempts to reconnect to PostgreSQL (the wait doubles from "
             "100 ms)"},
    {.name = "relay.spool_dir", .type = T_STRING, .offset = FIELD(spool_dir),
     .help = "directory of the spool files of streamed transactions in progress (not set: $TMPDIR, else /tmp); files are unlinked at once"},
    {.name = "relay.state_dir", .type = T_STRING, .offset = FIELD(state_dir),
     .def = "/var/lib/breakwater",
     .help = "directory of the state file <slot>.snapshot.json, which lets an interrupted snapshot resume; created if missing"},
    {.name = "relay.stats_interval_ms", .type = T_INT, .offset = FIELD(stats_interval_ms),
     .def = "60000", .min = 0, .max = 86400000, .reloadable = true,
     .help = "period of the one-line \"stats:\" log summary; 0 turns it off"},
    {.name = "coalesce.tables", .type = T_STRING, .offset = FIELD(coalesce_tables),
     .help = "schema.table patterns ('*' wildcard, comma-separated) whose changes are coalesced per row key; empty: none"},
    {.name = "coalesce.window_ms", .type = T_INT, .offset = FIELD(coalesce_window_ms),
     .def = "1000", .min = 10, .max = 600000,
     .help = "after a key's first change, further changes within this window are merged and sent when it ends"},
    {.name = "coalesce.max_held_bytes", .type = T_INT, .offset = FIELD(coalesce_max_held_bytes),
     .def = "67108864", .min = 65536, .max = INT64_C(1099511627776),
     .help = "above this many bytes of held changes, everything held is sent early (never dropped)"},
    {.name = "signals.enabled", .type = T_BOOL, .offset = FIELD(signals_enabled),
     .def = "true",
     .help = "publish per-tenant change signals (counts per table, sample keys) to signals.topic"},
    {.name = "signals.topic", .type = T_STRING, .offset = FIELD(signals_topic),
     .def = "{prefix}.signals", .check = check_topic_template,
     .help = "topic of the tenant signals, keyed by tenant ({prefix} allowed)"},
    {.name = "signals.interval_ms", .type = T_INT, .offset = FIELD(signals_interval_ms),
     .def = "1000", .min = 10, .max = 3600000,
     .help = "at most one signal per tenant and table per interval; the first after a quiet interval goes at once"},
    {.name = "signals.storm_rate", .type = T_INT, .offset = FIELD(signals_storm_rate),
     .def = "1000", .min = 1, .max = 100000000,
     .help = "changes per second of a tenant's table above which its signals say \"storm\": true"},
    {.name = "signals.max_sample_keys", .type = T_INT, .offset = FIELD(signals_max_sample_keys),
     .def = "5", .min = 0, .max = 100,
     .help = "how many changed keys a signal lists as samples"},
    {.name = "http.listen", .type = T_STRING, .offset = FIELD(http_listen),
     .def = "127.0.0.1:9187", .check = check_http_listen,
     .help = "address of /metrics and /healthz: IPv4:port or [IPv6]:port; empty turns it off"},
    {.name = "log.level", .type = T_ENUM, .offset = FIELD(log_level),
     .def = "info", .choices = log_level_choices, .reloadable = true,
     .help = "least severe level logged"},
};
/* clang-format on */

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

#define KAFKA_PREFIX "kafka."
#define ENV_PREFIX "BREAKWATER_"
#define MAX_LINE (1024 * 1024)

/* ---------------------------------------------------------------- field access and messages */

static char **str_field(bw_config *cfg, const key_def *k)
{
    return (char **) ((char *) cfg + k->offset);
}

static const char *const *cstr_field(const bw_config *cfg, const key_def *k)
{
    return (const char *const *) ((const char *) cfg + k->offset);
}

static const key_def *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    }
    return NULL;
}

static bool kafka_secret(const char *name)
{
    return strstr(name, "password") != NULL || strstr(name, "secret") != NULL ||
           strstr(name, "jaas") != NULL || strstr(name, "oauthbearer.config") != NULL ||
           strstr(name, ".pem") != NULL;
}

/* The value as it may appear in a message or a dump: secrets hidden. */
static void put_shown_value(bw_buf *out, const char *key, const char *value, bool secret)
{
    if (!secret) {
        bw_buf_puts(out, value);
    } else if (strcmp(key, "pg.conninfo") == 0) {
        char *r = bw_conninfo_redact(value);
        bw_buf_puts(out, r);
        free(r);
    } else {
        bw_buf_puts(out, "********");
    }
}

/* What a key accepts, as the end of an error message and in --help. */
static void put_accepted(bw_buf *out, const key_def *k)
{
    switch (k->type) {
    case T_BOOL:
        bw_buf_puts(out, "true or false (also yes/no, on/off, 1/0)");
        break;
    case T_INT:
        if (k->max == INT64_MAX)
            bw_buf_printf(out, "an integer of at least %lld", (long long) k->min);
        else
            bw_buf_printf(out, "an integer from %lld to %lld", (long long) k->min,
                          (long long) k->max);
        break;
    case T_ENUM:
        bw_buf_puts(out, "one of ");
        for (const char *const *c = k->choices; *c != NULL; c++)
            bw_buf_printf(out, "%s%s", c == k->choices ? "" : ", ", *c);
        break;
    case T_STRING:
        bw_buf_puts(out, "a string");
        break;
    }
}

/* "<source>: <key> = "<value>": <problem>" */
static void bad_value(bw_buf *err, const char *source, const key_def *k, const char *value,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void bad_value(bw_buf *err, const char *source, const key_def *k, const char *value,
                      const char *fmt, ...)
{
    va_list ap;

    bw_buf_reset(err);
    bw_buf_printf(err, "%s: %s = \"", source, k->name);
    put_shown_value(err, k->name, value, k->secret);
    bw_buf_puts(err, "\": ");
    va_start(ap, fmt);
    bw_buf_vprintf(err, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------- did you mean */

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t *row = bw_xmalloc((lb + 1) * sizeof(*row));

    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    size_t d = row[lb];
    free(row);
    return d;
}

/* lower case, '-' as '_': the slips that are not typos */
static char *normalize(const char *s)
{
    char *n = bw_xstrdup(s);
    for (char *p = n; *p != '\0'; p++)
        *p = *p == '-' ? '_' : (char) tolower((unsigned char) *p);
    return n;
}

static const char *last_part(const char *s)
{
    const char *dot = strrchr(s, '.');
    return dot ? dot + 1 : s;
}

/*
 * The candidate closest to an unknown name, or NULL when none is close: a few edits away, or the
 * same last part ("conninfo" written outside its [pg] section).
 */
static const char *closest(const char *name, const char *const *candidates, size_t n)
{
    char *want = normalize(name);
    const char *best = NULL;
    size_t best_d = 2 + strlen(want) / 8 + 1;

    for (size_t i = 0; i < n; i++) {
        char *cand = normalize(candidates[i]);
        size_t d = edit_distance(want, cand);
        if (d > 0 && strcmp(last_part(want), last_part(cand)) == 0 && d > 1)
            d = 1;
        if (d < best_d) {
            best_d = d;
            best = candidates[i];
        }
        free(cand);
    }
    free(want);
    return best;
}

static const char *closest_key(const char *name)
{
    const char *names[NKEYS];
    for (size_t i = 0; i < NKEYS; i++)
        names[i] = keys[i].name;
    return closest(name, names, NKEYS);
}

/* librdkafka's producer properties, from its own property table, for the did-you-mean hint. */
static const char *closest_kafka(const char *name, bw_buf *store)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    const char **names = NULL;
    size_t n = 0, cap = 0;
    const char *best = NULL;

    if (f == NULL)
        return NULL;
    rd_kafka_conf_properties_show(f);
    fclose(f);
    /* rows: "name | C/P | range | default | importance | description" */
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char *bar = strchr(line, '|');
        if (bar == NULL || line[0] == '-' || strncmp(line, "Property", 8) == 0)
            continue;
        if (strchr(bar + 1, 'P') == NULL && strchr(bar + 1, '*') == NULL)
            continue;
        char *end = bar;
        while (end > line && end[-1] == ' ')
            end--;
        *end = '\0';
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            names = bw_xrealloc(names, cap * sizeof(*names));
        }
        names[n++] = line;
    }
    best = closest(name, names, n);
    if (best != NULL) {
        bw_buf_puts(store, best);
        best = store->data;
    }
    free(names);
    free(text);
    return best;
}

/* ------------------------------------------------------------------------- setting values */

typedef struct loader {
    bw_config *cfg;
    bw_buf *err;
    rd_kafka_conf_t *kconf; /* scratch: kafka.* values are checked by librdkafka itself */
    /* the file being read */
    FILE *file;
    const char *path;
    int line;
    bool at_line_start;
    size_t line_len;
    bool line_too_long;
    int error_line; /* line of the first error raised by the handler, 0 = none */
    struct seen {
        char *key;
        int line;
    } * seen;
    size_t nseen;
} loader;

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static void set_origin(bw_config *cfg, const key_def *k, const char *source)
{
    size_t i = (size_t) (k - keys);
    free(cfg->origins[i]);
    cfg->origins[i] = bw_xstrdup(source);
}

/* Checks value for key k and stores it. Returns 0, or -1 with err set. */
static int set_key(bw_config *cfg, const key_def *k, const char *value, const char *source,
                   bw_buf *err)
{
    bw_buf why;
    int ret = -1;

    bw_buf_init(&why);
    switch (k->type) {
    case T_BOOL: {
        bool b;
        if (parse_bool(value, &b) != 0) {
            bad_value(err, source, k, value, "not a boolean; expected ");
            put_accepted(err, k);
            goto done;
        }
        *(bool *) ((char *) cfg + k->offset) = b;
        break;
    }
    case T_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (end == value || *end != '\0' || isspace((unsigned char) value[0])) {
            bad_value(err, source, k, value, "not an integer; expected ");
            put_accepted(err, k);
            goto done;
        }
        if (errno == ERANGE || v < k->min || v > k->max) {
            bad_value(err, source, k, value, "out of range; expected ");
            put_accepted(err, k);
            goto done;
        }
        *(int64_t *) ((char *) cfg + k->offset) = v;
        break;
    }
    case T_ENUM:
    case T_STRING: {
        const char *store = value;
        if (k->def == NULL && value[0] == '\0') {
            /* an optional key set to "": not set, so the plugin's default applies */
            store = NULL;
        } else if (k->type == T_ENUM) {
            store = NULL;
            for (const char *const *c = k->choices; *c != NULL; c++) {
                if (strcasecmp(value, *c) == 0)
                    store = *c;
            }
            if (store == NULL) {
                bad_value(err, source, k, value, "unknown value; expected ");
                put_accepted(err, k);
                goto done;
            }
        }
        if (store != NULL && k->check != NULL && k->check(store, &why) != 0) {
            bad_value(err, source, k, value, "%s", why.data);
            goto done;
        }
        char **field = str_field(cfg, k);
        free(*field);
        *field = store ? bw_xstrdup(store) : NULL;
        break;
    }
    }
    set_origin(cfg, k, source);
    ret = 0;
done:
    bw_buf_free(&why);
    return ret;
}

/* kafka.<name>: checked against librdkafka's own table, then stored (a later source replaces). */
static int set_kafka(loader *ld, const char *name, const char *value, const char *source)
{
    bw_config *cfg = ld->cfg;
    char errstr[512] = "";
    bw_buf hint;

    if (name[0] == '\0') {
        bw_buf_reset(ld->err);
        bw_buf_printf(ld->err,
                      "%s: \"kafka.\" names no librdkafka property; write "
                      "kafka.<property>, e.g. kafka.bootstrap.servers",
                      source);
        return -1;
    }
    rd_kafka_conf_res_t res = rd_kafka_conf_set(ld->kconf, name, value, errstr, sizeof(errstr));
    if (res == RD_KAFKA_CONF_UNKNOWN) {
        bw_buf_init(&hint);
        const char *near = closest_kafka(name, &hint);
        bw_buf_reset(ld->err);
        bw_buf_printf(ld->err, "%s: unknown key \"kafka.%s\": librdkafka has no property \"%s\"",
                      source, name, name);
        if (near != NULL)
            bw_buf_printf(ld->err, "; did you mean kafka.%s?", near);
        bw_buf_free(&hint);
        return -1;
    }
    if (res != RD_KAFKA_CONF_OK) {
        bw_buf_reset(ld->err);
        bw_buf_printf(ld->err, "%s: kafka.%s = \"", source, name);
        put_shown_value(ld->err, name, value, kafka_secret(name));
        bw_buf_printf(ld->err, "\": librdkafka: %s", errstr);
        return -1;
    }
    for (size_t i = 0; i < cfg->nkafka; i++) {
        if (strcmp(cfg->kafka[i].key, name) == 0) {
            free(cfg->kafka[i].value);
            free(cfg->kafka[i].source);
            cfg->kafka[i].value = bw_xstrdup(value);
            cfg->kafka[i].source = bw_xstrdup(source);
            return 0;
        }
    }
    cfg->kafka = bw_xrealloc(cfg->kafka, (cfg->nkafka + 1) * sizeof(*cfg->kafka));
    cfg->kafka[cfg->nkafka].key = bw_xstrdup(name);
    cfg->kafka[cfg->nkafka].value = bw_xstrdup(value);
    cfg->kafka[cfg->nkafka].source = bw_xstrdup(source);
    cfg->nkafka++;
    return 0;
}

/* key is a full dotted name; spelled is how the user wrote it, for the unknown-key message. */
static int set_any(loader *ld, const char *key, const char *value, const char *source,
                   const char *spelled_prefix)
{
    if (strncmp(key, KAFKA_PREFIX, strlen(KAFKA_PREFIX)) == 0)
        return set_kafka(ld, key + strlen(KAFKA_PREFIX), value, source);

    const key_def *k = find_key(key);
    if (k != NULL)
        return set_key(ld->cfg, k, value, source, ld->err);

    const char *near = closest_key(key);
    bw_buf_reset(ld->err);
    bw_buf_printf(ld->err, "%s: unknown key \"%s\"", source, key);
    if (near != NULL)
        bw_buf_printf(ld->err, "; did you mean %s%s?", spelled_prefix, near);
    else
        bw_buf_puts(ld->err, "; breakwater-relay --help lists the keys");
    return -1;
}

/* ------------------------------------------------------------------------- the file */

/* fgets for inih, counting lines so that the handler knows where it is. */
static char *read_line(char *str, int num, void *stream)
{
    loader *ld = stream;
    FILE *f = ld->file;

    if (fgets(str, num, f) == NULL)
        return NULL;
    if (ld->at_line_start) {
        ld->line++;
        ld->line_len = 0;
    }
    size_t n = strlen(str);
    ld->line_len += n;
    ld->at_line_start = n > 0 && str[n - 1] == '\n';
    if (!ld->at_line_start && ld->line_len >= MAX_LINE - 3 && !feof(f)) {
        ld->line_too_long = true;
        return NULL;
    }
    return str;
}

static int on_entry(void *user, const char *section, const char *name, const char *value)
{
    loader *ld = user;
    bw_buf key, source;
    int ok = 0;

    if (ld->error_line != 0)
        return 1; /* report the first error only */
    bw_buf_init(&key);
    bw_buf_init(&source);
    if (section[0] != '\0')
        bw_buf_printf(&key, "%s.", section);
    bw_buf_puts(&key, name);
    bw_buf_printf(&source, "%s:%d", ld->path, ld->line);

    for (size_t i = 0; i < ld->nseen; i++) {
        if (strcmp(ld->seen[i].key, key.data) == 0) {
            bw_buf_reset(ld->err);
            bw_buf_printf(ld->err, "%s: %s is set twice (first on line %d); remove one",
                          source.data, key.data, ld->seen[i].line);
            goto done;
        }
    }
    ld->seen = bw_xrealloc(ld->seen, (ld->nseen + 1) * sizeof(*ld->seen));
    ld->seen[ld->nseen].key = bw_xstrdup(key.data);
    ld->seen[ld->nseen].line = ld->line;
    ld->nseen++;

    if (set_any(ld, key.data, value, source.data, "") == 0)
        ok = 1;
done:
    if (!ok)
        ld->error_line = ld->line;
    bw_buf_free(&key);
    bw_buf_free(&source);
    return ok;
}

static int load_file(loader *ld, const char *path, const char *named_by)
{
    FILE *f = fopen(path, "r");
    int ret = -1;

    if (f == NULL) {
        bw_buf_reset(ld->err);
        bw_buf_printf(ld->err, "cannot open the configuration file \"%s\" (named by %s): %s", path,
                      named_by, strerror(errno));
        return -1;
    }
    /*
     * Debian's libinih exposes its build options as variables. Lift the 200-byte line limit (a
     * conninfo or a JAAS line can be longer, and inih would cut it silently), and turn off what
     * would surprise: indented lines continuing the previous value, and ';' starting a comment
     * in the middle of a value (passwords may contain one). Comments are whole lines.
     */
    ini_use_stack = false;
    ini_allow_realloc = true;
    ini_max_line = MAX_LINE;
    ini_allow_multiline = false;
    ini_allow_inline_comments = false;

    ld->file = f;
    ld->path = path;
    ld->line = 0;
    ld->at_line_start = true;
    ld->line_too_long = false;
    ld->error_line = 0;
    int r = ini_parse_stream(read_line, ld, on_entry, ld);
    ld->file = NULL;

    if (ld->line_too_long) {
        bw_buf_reset(ld->err);
        bw_buf_printf(ld->err, "%s:%d: the line is longer than %d bytes", path, ld->line,
                      MAX_LINE - 3);
    } else if (ferror(f)) {
        bw_buf_reset(ld->err);
        bw_buf_printf(ld->err, "cannot read the configuration file \"%s\": %s", path,
                      strerror(errno));
    } else if (r > 0 && (ld->error_line == 0 || r < ld->error_line)) {
        /* inih's own complaint: a line that is neither a section, name = value, nor comment */
        bw_buf_reset(ld->err);
        bw_buf_printf(ld->err,
                      "%s:%d: syntax error: expected \"[section]\", \"name = value\" or a comment "
                      "(# or ; at the start of the line)",
                      path, r);
    } else if (r == -2) {
        bw_buf_reset(ld->err);
        bw_buf_printf(ld->err, "%s: out of memory while parsing", path);
    } else if (r == 0 && ld->error_line == 0) {
        ret = 0;
    }
    fclose(f);
    for (size_t i = 0; i < ld->nseen; i++)
        free(ld->seen[i].key);
    free(ld->seen);
    ld->seen = NULL;
    ld->nseen = 0;
    return ret;
}

/* ------------------------------------------------------------------------- environment */

static void env_name(bw_buf *out, const char *key)
{
    bw_buf_puts(out, ENV_PREFIX);
    for (const char *p = key; *p != '\0'; p++)
        bw_buf_putc(out, *p == '.' ? '_' : (char) toupper((unsigned char) *p));
}

static int load_env(loader *ld, char **envp)
{
    size_t plen = strlen(ENV_PREFIX);
    bw_buf name, source, key;
    int ret = 0;

    if (envp == NULL)
        return 0;
    bw_buf_init(&name);
    bw_buf_init(&source);
    bw_buf_init(&key);
    for (char **e = envp; *e != NULL && ret == 0; e++) {
        const char *eq = strchr(*e, '=');
        if (eq == NULL || strncmp(*e, ENV_PREFIX, plen) != 0)
            continue;
        bw_buf_reset(&name);
        bw_buf_append(&name, *e, (size_t) (eq - *e));
        const char *value = eq + 1;
        const char *rest = name.data + plen;
        if (strcmp(rest, "CONFIG") == 0)
            continue; /* the file, read already */
        bw_buf_reset(&source);
        bw_buf_printf(&source, "environment variable %s", name.data);

        if (strncmp(rest, "KAFKA_", 6) == 0) {
            /* librdkafka's names use dots, never underscores: map them all back */
            bw_buf_reset(&key);
            for (const char *p = rest + 6; *p != '\0'; p++)
                bw_buf_putc(&key, *p == '_' ? '.' : (char) tolower((unsigned char) *p));
            if (key.data == NULL)
                bw_buf_append(&key, "", 0); /* "" rather than NULL */
            ret = set_kafka(ld, key.data, value, source.data);
            continue;
        }
        const key_def *k = NULL;
        for (size_t i = 0; i < NKEYS && k == NULL; i++) {
            bw_buf_reset(&key);
            env_name(&key, keys[i].name);
            if (strcmp(key.data, name.data) == 0)
                k = &keys[i];
        }
        if (k != NULL) {
            ret = set_key(ld->cfg, k, value, source.data, ld->err);
            continue;
        }
        const char *names[NKEYS];
        bw_buf all[NKEYS];
        for (size_t i = 0; i < NKEYS; i++) {
            bw_buf_init(&all[i]);
            env_name(&all[i], keys[i].name);
            names[i] = all[i].data;
        }
        const char *near = closest(name.data, names, NKEYS);
        bw_buf_reset(ld->err);
        bw_buf_printf(ld->err, "%s: no such setting", source.data);
        if (near != NULL)
            bw_buf_printf(ld->err, "; did you mean %s?", near);
        else
            bw_buf_puts(ld->err, "; the variables are BREAKWATER_CONFIG, BREAKWATER_<KEY> for "
                                 "each key in --help, and BREAKWATER_KAFKA_<PROPERTY>");
        for (size_t i = 0; i < NKEYS; i++)
            bw_buf_free(&all[i]);
        ret = -1;
    }
    bw_buf_free(&name);
    bw_buf_free(&source);
    bw_buf_free(&key);
    return ret;
}

/* ------------------------------------------------------------------------- the command line */

static int load_flags(loader *ld, int argc, char **argv)
{
    bw_buf key, source;
    int ret = 0;

    bw_buf_init(&key);
    bw_buf_init(&source);
    for (int i = 1; i < argc && ret == 0; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            i++; /* the path, read already */
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0 || strcmp(a, "--check-config") == 0)
            continue;
        /* load() has refused anything else not starting with "--" */
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        bw_buf_reset(&key);
        bw_buf_append(&key, name, eq ? (size_t) (eq - name) : strlen(name));
        if (key.data == NULL)
            bw_buf_append(&key, "", 0); /* "" rather than NULL */
        bw_buf_reset(&source);
        bw_buf_printf(&source, "flag --%s", key.data);
        const char *value = eq ? eq + 1 : NULL;
        if (value == NULL) {
            const key_def *k = find_key(key.data);
            if (k != NULL && k->type == T_BOOL) {
                value = "true"; /* --slot.create alone */
            } else if (k != NULL || strncmp(key.data, KAFKA_PREFIX, 6) == 0) {
                bw_buf_reset(ld->err);
                bw_buf_printf(ld->err, "%s: no value; write --%s=VALUE", source.data, key.data);
                ret = -1;
                continue;
            } else {
                value = "";
            }
        }
        ret = set_any(ld, key.data, value, source.data, "--");
    }
    bw_buf_free(&key);
    bw_buf_free(&source);
    return ret;
}

/* ------------------------------------------------------------------------- checks */

static int check_conninfo(const char *value, bw_buf *why)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(value, &errmsg);

    if (opts == NULL) {
        if (errmsg != NULL) {
            size_t n = strlen(errmsg);
            while (n > 0 && isspace((unsigned char) errmsg[n - 1]))
                errmsg[--n] = '\0';
            bw_buf_printf(why, "libpq cannot parse it: %s", errmsg);
            PQfreemem(errmsg);
        } else {
            bw_buf_puts(why, "libpq cannot parse it (out of memory)");
        }
        return -1;
    }
    int ret = 0;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "replication") == 0 && o->val != NULL) {
            bw_buf_puts(why, "remove replication=...: the relay connects with "
                             "replication=database itself");
            ret = -1;
        }
    }
    PQconninfoFree(opts);
    return ret;
}

static int check_slot_name(const char *value, bw_buf *why)
{
    size_t n = strlen(value);

    if (n == 0 || n > 63) {
        bw_buf_puts(why, "expected 1 to 63 characters");
        return -1;
    }
    for (const char *p = value; *p != '\0'; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) {
            bw_buf_printf(why,
                          "'%c' is not allowed; PostgreSQL slot names have lower-case letters, "
                          "digits and underscores only",
                          *p);
            return -1;
        }
    }
    return 0;
}

static int check_actions(const char *value, bw_buf *why)
{
    static const char *const actions[] = {"insert", "update", "delete", "truncate"};
    const char *p = value;

    for (;;) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, ", ");
        bool ok = false;
        for (size_t i = 0; i < 4; i++) {
            if (n == strlen(actions[i]) && strncmp(p, actions[i], n) == 0)
                ok = true;
        }
        if (!ok) {
            bw_buf_printf(why,
                          "unknown action \"%.*s\"; expected a comma-separated list of "
                          "insert, update, delete, truncate",
                          (int) n, p);
            return -1;
        }
        p += n;
        while (*p == ' ')
            p++;
        if (*p == '\0')
            return 0;
        p++; /* ',' */
    }
}

/* Kafka topic names: ASCII letters, digits, '.', '_' and '-'. */
static bool topic_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

static int check_topic_prefix(const char *value, bw_buf *why)
{
    for (const char *p = value; *p != '\0'; p++) {
        if (!topic_char(*p)) {
            bw_buf_printf(why,
                          "'%c' cannot be in a Kafka topic name; use letters, digits, '.', "
                          "'_' and '-'",
                          *p);
            return -1;
        }
    }
    return 0;
}

/*
 * A topic name with placeholders: the first nallowed of {prefix}, {schema}, {table}, {tenant}
 * (every topic knows its prefix; only a row topic has a table and a tenant).
 */
static int check_template(const char *value, bw_buf *why, size_t nallowed, const char *accepted)
{
    static const char *const placeholders[] = {"{prefix}", "{schema}", "{table}", "{tenant}"};
    const char *p = value;

    if (*p == '\0') {
        bw_buf_printf(why,
                      "empty; write a topic name or a pattern such as {prefix}.{schema}.{table}");
        return -1;
    }
    while (*p != '\0') {
        if (*p == '{') {
            size_t n = strcspn(p, "}");
            if (p[n] != '}') {
                bw_buf_printf(why, "\"{\" without \"}\"; %s", accepted);
                return -1;
            }
            bool ok = false;
            for (size_t i = 0; i < nallowed; i++) {
                if (n + 1 == strlen(placeholders[i]) && strncmp(p, placeholders[i], n + 1) == 0)
                    ok = true;
            }
            if (!ok) {
                bw_buf_printf(why, "unknown placeholder %.*s; %s", (int) n + 1, p, accepted);
                return -1;
            }
            p += n + 1;
        } else if (*p == '}') {
            bw_buf_printf(why, "\"}\" without \"{\"; %s", accepted);
            return -1;
        } else if (!topic_char(*p)) {
            bw_buf_printf(why,
                          "'%c' cannot be in a Kafka topic name; outside placeholders use "
                          "letters, digits, '.', '_' and '-'",
                          *p);
            return -1;
        } else {
            p++;
        }
    }
    return 0;
}

static int check_topic_template(const char *value, bw_buf *why)
{
    return check_template(value, why, 4,
                          "the placeholders are {prefix}, {schema}, {table} and {tenant}");
}

/* One topic for the messages of every table: no {schema}, {table} or {tenant} to fill in. */
static int check_keyless_topic(const char *value, bw_buf *why)
{
    return check_template(value, why, 1, "the only placeholder is {prefix}");
}

static int check_not_zero(const char *value, bw_buf *why)
{
    if (strcmp(value, "0") == 0) {
        bw_buf_puts(why, "0 is not a count; use a positive number, or -1 for the broker's default");
        return -1;
    }
    return 0;
}

/* A dotted Avro namespace: each part [A-Za-z_][A-Za-z0-9_]* */
static int check_avro_namespace(const char *value, bw_buf *why)
{
    bool start = true;
    for (const char *p = value;; p++) {
        char c = *p;
        bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (start && !letter) {
            bw_buf_puts(why, "expected dot-separated Avro names, each a letter or '_' followed by "
                             "letters, digits or '_' (e.g. breakwater or com.example.cdc)");
            return -1;
        }
        if (c == '\0')
            return 0;
        start = c == '.';
        if (!start && !letter && !(c >= '0' && c <= '9')) {
            bw_buf_printf(why,
                          "'%c' cannot be in an Avro namespace; use letters, digits, '_' "
                          "and '.' between names",
                          c);
            return -1;
        }
    }
}

static int check_registry_url(const char *value, bw_buf *why)
{
    for (const char *p = value; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ", ");
        if (n == 0)
            break;
        if (strncmp(p, "http://", 7) != 0 && strncmp(p, "https://", 8) != 0) {
            bw_buf_printf(why, "\"%.*s\" is not an http:// or https:// URL", (int) n, p);
            return -1;
        }
        p += n;
    }
    return 0;
}

static int check_compatibility(const char *value, bw_buf *why)
{
    static const char *const levels[] = {"",
                                         "BACKWARD",
                                         "BACKWARD_TRANSITIVE",
                                         "FORWARD",
                                         "FORWARD_TRANSITIVE",
                                         "FULL",
                                         "FULL_TRANSITIVE",
                                         "NONE",
                                         NULL};
    for (int i = 0; levels[i]; i++)
        if (strcmp(value, levels[i]) == 0)
            return 0;
    bw_buf_puts(why, "expected BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, "
                     "FULL_TRANSITIVE, NONE, or empty to leave the registry's level");
    return -1;
}

static int check_http_listen(const char *value, bw_buf *why)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    char msg[256];

    if (value[0] == '\0')
        return 0; /* off */
    if (bw_http_parse_listen(value, &sa, &salen, msg, sizeof(msg)) != 0) {
        bw_buf_printf(why, "%s; or \"\" to turn the endpoint off", msg);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------- load */

static void finish(bw_config *cfg)
{
    snprintf(cfg->decoder_write_chunk_bytes_text, sizeof(cfg->decoder_write_chunk_bytes_text),
             "%lld", (long long) cfg->decoder_write_chunk_bytes);
}

/* Keys that are valid alone but not together. */
static int cross_check(const bw_config *cfg, bw_buf *err)
{
    if (strcmp(cfg->value_format, "avro") == 0 &&
        (cfg->schema_registry_url == NULL || cfg->schema_registry_url[0] == '\0')) {
        const key_def *k = find_key("value.format");
        bw_buf_reset(err);
        bw_buf_printf(err,
                      "value.format=avro (%s) needs schema_registry.url: the base URL of a schema "
                      "registry's Confluent API, e.g. http://localhost:8081 (Apicurio: "
                      "http://HOST:PORT/apis/ccompat/v7)",
                      cfg->origins[k - keys]);
        return -1;
    }
    return 0;
}

static void init_defaults(bw_config *cfg)
{
    bw_buf err;

    memset(cfg, 0, sizeof(*cfg));
    cfg->origins = bw_xcalloc(NKEYS, sizeof(*cfg->origins));
    bw_buf_init(&err);
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].def != NULL && set_key(cfg, &keys[i], keys[i].def, "default", &err) != 0) {
            /* a default the table itself rejects: a bug caught by the first test run */
            fprintf(stderr, "breakwater-relay: bad default: %s\n", err.data);
            abort();
        }
        if (keys[i].def == NULL)
            set_origin(cfg, &keys[i], "default");
    }
    bw_buf_free(&err);
}

static int load(bw_config *cfg, int argc, char **argv, char **envp, bool *check, bw_buf *err)
{
    loader ld = {.cfg = cfg, .err = err};
    const char *path = NULL;
    const char *named_by = NULL;
    int ret = -1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) {
                bw_buf_reset(err);
                bw_buf_printf(err, "flag %s: no path; write %s PATH or --config=PATH", a, a);
                goto done;
            }
            path = argv[++i];
            named_by = a[1] == 'c' ? "-c" : "--config";
        } else if (strncmp(a, "--config=", 9) == 0) {
            path = a + 9;
            named_by = "--config";
        } else if (strcmp(a, "--check-config") == 0) {
            *check = true;
        } else if (strncmp(a, "--", 2) != 0 || a[2] == '\0' || a[2] == '=') {
            bw_buf_reset(err);
            bw_buf_printf(err, "unexpected argument \"%s\"; settings are --KEY=VALUE, see --help",
                          a);
            goto done;
        }
    }
    if (path == NULL && envp != NULL) {
        for (char **e = envp; *e != NULL; e++) {
            if (strncmp(*e, ENV_PREFIX "CONFIG=", strlen(ENV_PREFIX "CONFIG=")) == 0) {
                path = *e + strlen(ENV_PREFIX "CONFIG=");
                named_by = "environment variable " ENV_PREFIX "CONFIG";
            }
        }
    }
    if (path != NULL && path[0] == '\0') {
        bw_buf_reset(err);
        bw_buf_printf(err, "%s: an empty path", named_by);
        goto done;
    }

    ld.kconf = rd_kafka_conf_new();
    if (path != NULL) {
        cfg->config_file = bw_xstrdup(path);
        if (load_file(&ld, path, named_by) != 0)
            goto done;
    }
    if (load_env(&ld, envp) != 0 || load_flags(&ld, argc, argv) != 0 || cross_check(cfg, err))
        goto done;
    finish(cfg);
    ret = 0;
done:
    if (ld.kconf != NULL)
        rd_kafka_conf_destroy(ld.kconf);
    return ret;
}

int bw_config_load(bw_config *cfg, int argc, char **argv, char **envp, bw_config_action *action,
                   bw_buf *err)
{
    bool check = false;

    *action = BW_CONFIG_RUN;
    memset(cfg, 0, sizeof(*cfg));
    /* --help and --version answer whatever else is on the line */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            bw_config_print_help();
            *action = BW_CONFIG_HELP;
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("breakwater-relay %s\n", BW_RELAY_VERSION);
            *action = BW_CONFIG_VERSION;
            return 0;
        }
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0)
            i++; /* a path, whatever it looks like */
    }

    init_defaults(cfg);
    if (load(cfg, argc, argv, envp, &check, err) != 0) {
        bw_config_free(cfg);
        return -1;
    }
    if (check)
        *action = BW_CONFIG_CHECK;
    return 0;
}

void bw_config_free(bw_config *cfg)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].type == T_STRING || keys[i].type == T_ENUM)
            free(*str_field(cfg, &keys[i]));
        if (cfg->origins != NULL)
            free(cfg->origins[i]);
    }
    free(cfg->origins);
    for (size_t i = 0; i < cfg->nkafka; i++) {
        free(cfg->kafka[i].key);
        free(cfg->kafka[i].value);
        free(cfg->kafka[i].source);
    }
    free(cfg->kafka);
    free(cfg->config_file);
    memset(cfg, 0, sizeof(*cfg));
}

/* ------------------------------------------------------------------------- users of the table */

size_t bw_config_decoder_options(const bw_config *cfg, const char *names[], const char *values[],
                                 size_t max)
{
    size_t n = 0;

#define ADD(name, value)                                                                           \
    do {                                                                                           \
        if (n < max) {                                                                             \
            names[n] = (name);                                                                     \
            values[n] = (value);                                                                   \
        }                                                                                          \
        n++;                                                                                       \
    } while (0)

    ADD("format", "binary");
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        if (k->plugin_option == NULL)
            continue;
        if (k->type == T_INT)
            ADD(k->plugin_option, cfg->decoder_write_chunk_bytes_text);
        else if (k->type == T_BOOL)
            ADD(k->plugin_option, *(const bool *) ((const char *) cfg + k->offset) ? "on" : "off");
        else if (*cstr_field(cfg, k) != NULL)
            ADD(k->plugin_option, *cstr_field(cfg, k));
    }
#undef ADD
    return n;
}

static void print_wrapped(FILE *out, const char *text, int indent, int width)
{
    const char *p = text;
    while (*p != '\0') {
        int avail = width - indent;
        size_t len = strlen(p);
        size_t take = len;
        if ((int) len > avail) {
            take = (size_t) avail;
            while (take > 0 && p[take] != ' ')
                take--;
            if (take == 0)
                take = (size_t) avail;
        }
        fprintf(out, "%*s%.*s\n", indent, "", (int) take, p);
        p += take;
        while (*p == ' ')
            p++;
    }
}

void bw_config_print_help(void)
{
    FILE *out = stdout;
    bw_buf line;

    bw_buf_init(&line);
    fprintf(
        out,
        "breakwater-relay %s: streams a PostgreSQL logical replication slot (plugin "
        "breakwater) into Kafka.\n"
        "\n"
        "Usage: breakwater-relay [-c PATH] [--KEY=VALUE ...] [--check-config]\n"
        "       breakwater-relay [-c PATH] backfill --table=SCHEMA.TABLE [--tenant=T] "
        "[--where=SQL]\n"
        "       breakwater-relay [-c PATH] backfill --status\n"
        "       breakwater-relay --help | --version\n"
        "\n"
        "  -c, --config=PATH   read settings from PATH, an INI file (\"[pg]\" then "
        "\"conninfo = ...\");\n"
        "                      or set BREAKWATER_CONFIG=PATH\n"
        "      --check-config  load and check the configuration, then exit (0 when valid)\n"
        "  -h, --help          print this help and exit\n"
        "      --version       print the version and exit\n"
        "\n"
        "Every key can be set in the file (section.name: \"[pg]\" then \"conninfo = ...\"), in\n"
        "the environment (BREAKWATER_ and the key upper-cased, dots as underscores:\n"
        "BREAKWATER_PG_CONNINFO) or as a flag (--pg.conninfo=...). Later sources win:\n"
        "defaults < file < environment < flags. Keys marked [reload] take a new value on SIGHUP.\n"
        "\n"
        "Keys:\n",
        BW_RELAY_VERSION);
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        bw_buf_reset(&line);
        bw_buf_printf(&line, "  --%s=", k->name);
        switch (k->type) {
        case T_STRING:
            bw_buf_puts(&line, "STRING");
            break;
        case T_BOOL:
            bw_buf_puts(&line, "BOOL");
            break;
        case T_INT:
            if (k->max == INT64_MAX)
                bw_buf_printf(&line, "INTEGER (>= %lld)", (long long) k->min);
            else
                bw_buf_printf(&line, "INTEGER (%lld..%lld)", (long long) k->min,
                              (long long) k->max);
            break;
        case T_ENUM:
            for (const char *const *c = k->choices; *c != NULL; c++)
                bw_buf_printf(&line, "%s%s", c == k->choices ? "" : "|", *c);
            break;
        }
        if (k->def == NULL)
            bw_buf_puts(&line, "  default: not set");
        else if (k->def[0] == '\0')
            bw_buf_puts(&line, "  default: \"\"");
        else
            bw_buf_printf(&line, "  default: %s", k->def);
        if (k->reloadable)
            bw_buf_puts(&line, "  [reload]");
        fprintf(out, "%s\n", line.data);
        print_wrapped(out, k->help, 6, 100);
    }
    fprintf(
        out,
        "  --kafka.PROPERTY=VALUE\n"
        "      any librdkafka producer property, passed through (kafka.bootstrap.servers,\n"
        "      kafka.security.protocol, kafka.compression.type, ...); in the environment\n"
        "      BREAKWATER_KAFKA_BOOTSTRAP_SERVERS and so on\n"
        "\n"
        "Documentation: docs/relay.md. Example configuration: breakwater-relay.conf.example.\n");
    bw_buf_free(&line);
}

void bw_config_dump(const bw_config *cfg, bw_buf *out)
{
    const char *section = "";
    size_t seclen = 0;

    bw_buf_puts(out, "# the configuration in effect; secrets hidden\n");
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        const char *dot = strchr(k->name, '.');
        size_t len = (size_t) (dot - k->name);
        if (len != seclen || strncmp(section, k->name, len) != 0) {
            bw_buf_printf(out, "%s[%.*s]\n", i ? "\n" : "", (int) len, k->name);
            section = k->name;
            seclen = len;
        }
        const char *origin = cfg->origins && cfg->origins[i] ? cfg->origins[i] : "default";
        switch (k->type) {
        case T_BOOL:
            bw_buf_printf(out, "%s = %s", dot + 1,
                          *(const bool *) ((const char *) cfg + k->offset) ? "true" : "false");
            break;
        case T_INT:
            bw_buf_printf(out, "%s = %lld", dot + 1,
                          (long long) *(const int64_t *) ((const char *) cfg + k->offset));
            break;
        default: {
            const char *v = *cstr_field(cfg, k);
            if (v == NULL) {
                bw_buf_printf(out, "#%s =", dot + 1);
            } else {
                bw_buf_printf(out, "%s = ", dot + 1);
                put_shown_value(out, k->name, v, k->secret);
            }
        }
        }
        bw_buf_printf(out, "  # %s\n", origin);
    }
    if (cfg->nkafka > 0)
        bw_buf_puts(out, "\n[kafka]\n");
    for (size_t i = 0; i < cfg->nkafka; i++) {
        bw_buf_printf(out, "%s = ", cfg->kafka[i].key);
        put_shown_value(out, cfg->kafka[i].key, cfg->kafka[i].value,
                        kafka_secret(cfg->kafka[i].key));
        bw_buf_printf(out, "  # %s\n", cfg->kafka[i].source);
    }
}

int bw_config_reload(bw_config *cfg, const bw_config *next, bw_buf *notes)
{
    int applied = 0;

    for (size_t i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        bw_buf was, now;
        bw_buf_init(&was);
        bw_buf_init(&now);
        switch (k->type) {
        case T_BOOL:
            bw_buf_puts(&was, *(bool *) ((char *) cfg + k->offset) ? "true" : "false");
            bw_buf_puts(&now, *(const bool *) ((const char *) next + k->offset) ? "true" : "false");
            break;
        case T_INT:
            bw_buf_printf(&was, "%lld", (long long) *(int64_t *) ((char *) cfg + k->offset));
            bw_buf_printf(&now, "%lld",
                          (long long) *(const int64_t *) ((const char *) next + k->offset));
            break;
        default: {
            const char *a = *str_field(cfg, k), *b = *cstr_field(next, k);
            bw_buf_puts(&was, a ? a : "(not set)");
            bw_buf_puts(&now, b ? b : "(not set)");
        }
        }
        if (strcmp(was.data, now.data) != 0) {
            if (notes->len > 0)
                bw_buf_puts(notes, "; ");
            if (k->reloadable) {
                if (k->type == T_INT)
                    memcpy((char *) cfg + k->offset, (const char *) next + k->offset,
                           sizeof(int64_t));
                else if (k->type == T_BOOL)
                    memcpy((char *) cfg + k->offset, (const char *) next + k->offset, sizeof(bool));
                else {
                    const char *b = *cstr_field(next, k);
                    free(*str_field(cfg, k));
                    *str_field(cfg, k) = b ? bw_xstrdup(b) : NULL;
                }
                set_origin(cfg, k, next->origins[i]);
                bw_buf_printf(notes, "%s: %s -> %s", k->name, was.data, now.data);
                applied++;
            } else {
                bw_buf_printf(notes, "%s changed but takes effect only on restart", k->name);
            }
        }
        bw_buf_free(&was);
        bw_buf_free(&now);
    }
    bool kafka_same = cfg->nkafka == next->nkafka;
    for (size_t i = 0; kafka_same && i < cfg->nkafka; i++) {
        kafka_same = strcmp(cfg->kafka[i].key, next->kafka[i].key) == 0 &&
                     strcmp(cfg->kafka[i].value, next->kafka[i].value) == 0;
    }
    if (!kafka_same)
        bw_buf_printf(notes, "%skafka.* changed but takes effect only on restart",
                      notes->len > 0 ? "; " : "");
    finish(cfg);
    return applied;
}
