/*
 * config.h — the relay's configuration: one table of keys (name, type, default, bounds,
 * reloadable, help) feeding the INI file parser (libinih), --key=value flags, BREAKWATER_*
 * environment variables, --help and docs/relay.md. Precedence: defaults < file < environment <
 * flags. Keys under kafka.* pass through to librdkafka unchanged.
 */
#ifndef BW_CONFIG_H
#define BW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef struct bw_kv {
    char *key; /* without the "kafka." prefix, e.g. "bootstrap.servers" */
    char *value;
    char *source; /* where it was set: "relay.conf:12", "environment variable ...", "flag --..." */
} bw_kv;

typedef struct bw_config {
    /* [pg] */
    char *pg_conninfo; /* pg.conninfo */
    /* [slot] */
    char *slot_name;  /* slot.name */
    bool slot_create; /* slot.create */
    /* [decoder]: passed to the plugin as its options; NULL = not given */
    char *decoder_tables;
    char *decoder_exclude_tables;
    char *decoder_tenant_column;
    char *decoder_tenant_columns;
    char *decoder_missing_tenant;
    char *decoder_exclude_columns;
    char *decoder_actions;
    char *decoder_message_prefixes;
    int64_t decoder_write_chunk_bytes;
    bool decoder_streaming; /* streaming=on: large transactions arrive while in progress */
    /* [snapshot] */
    char *snapshot_mode; /* snapshot.mode: initial, never, initial-only */
    int64_t snapshot_chunk_rows;
    /* [backfill] */
    int64_t backfill_chunk_rows;
    /* [topic] */
    char *topic_prefix;       /* topic.prefix */
    char *topic_template;     /* topic.template: {prefix} {schema} {table} {tenant} */
    bool topic_tombstones;    /* topic.tombstones: a null-valued message after each delete */
    bool topic_create;        /* topic.create: row topics created through the admin API */
    int64_t topic_partitions; /* -1: the broker's default */
    int64_t topic_replication_factor; /* -1: the broker's default */
    char *topic_cleanup_policy;       /* compact, delete or compact,delete */
    int64_t topic_retention_ms;       /* -1: the broker's default */
    char *topic_keyless; /* topic.keyless: messages without a key bound for a compacted topic */
    /* [value] */
    char *value_format; /* value.format: json or avro */
    /* [avro], [schema_registry]: used when value.format is avro */
    char *avro_namespace;
    char *schema_registry_url; /* one or more base URLs, comma-separated */
    char *schema_registry_basic_auth;
    char *schema_registry_ssl_ca_location;
    char *schema_registry_ssl_certificate_location;
    char *schema_registry_ssl_key_location;
    char *schema_registry_ssl_key_password;
    char *schema_registry_compatibility; /* "" = leave the registry's setting */
    int64_t schema_registry_timeout_ms;
    int64_t schema_registry_retry_max_ms;
    /* [relay] */
    int64_t max_inflight_bytes; /* relay.max_inflight_bytes: stop reading above this */
    int64_t status_interval_ms; /* relay.status_interval_ms: standby status update period */
    int64_t reconnect_backoff_max_ms;
    int64_t stats_interval_ms; /* relay.stats_interval_ms: the "stats:" log line; 0 = off */
    char *spool_dir;           /* relay.spool_dir: NULL = $TMPDIR or /tmp */
    char *state_dir;           /* relay.state_dir: the snapshot state file */
    /* [coalesce] */
    char *coalesce_tables;
    int64_t coalesce_window_ms;
    int64_t coalesce_max_held_bytes;
    /* [signals] */
    bool signals_enabled;
    char *signals_topic;
    int64_t signals_interval_ms;
    int64_t signals_max_sample_keys;
    int64_t signals_storm_rate;
    /* [http] */
    char *http_listen; /* http.listen: "" = off */
    /* [log] */
    char *log_level; /* log.level */
    /* [kafka] passthrough, in the order first set; already accepted by rd_kafka_conf_set */
    bw_kv *kafka;
    size_t nkafka;

    char *config_file; /* the file read, NULL when none */
    char **origins;    /* per key of the table, in its order: "default", "FILE:LINE", ... */
    char decoder_write_chunk_bytes_text[24]; /* as text, for bw_config_decoder_options */
} bw_config;

typedef enum bw_config_action {
    BW_CONFIG_RUN,
    BW_CONFIG_HELP,    /* --help printed */
    BW_CONFIG_VERSION, /* --version printed */
    BW_CONFIG_CHECK,   /* --check-config: loaded and valid, exit 0 */
} bw_config_action;

/*
 * Loads defaults, then the file named by --config=PATH (or -c PATH; or BREAKWATER_CONFIG), then
 * BREAKWATER_* environment variables from envp, then --key=value flags. Returns 0 with *action
 * set, or -1 with a message in err that names the key, the bad value, where it came from (file
 * and line, environment variable, or flag) and what is accepted. --help and --version are
 * printed here (to stdout) and win over anything else on the command line; for them cfg is left
 * zeroed. On error cfg is freed (zeroed); bw_config_free on it is harmless.
 *
 * Unknown keys are errors (with a did-you-mean hint), in the file, as flags and as BREAKWATER_*
 * variables; kafka.* values are checked with rd_kafka_conf_set on a scratch configuration, so a
 * misspelt librdkafka property fails here too. A key set twice in the file is an error.
 */
int bw_config_load(bw_config *cfg, int argc, char **argv, char **envp, bw_config_action *action,
                   bw_buf *err);
void bw_config_free(bw_config *cfg);

/*
 * The decoder options as (name, value) pairs for START_REPLICATION: format=binary first, then
 * each decoder.* key that is set, under the plugin's option name (tables, exclude-tables,
 * tenant-column, tenant-columns, missing-tenant, exclude-columns, actions, message-prefixes,
 * write-chunk-bytes, streaming; the last two always, since they have a value). Fills at most max
 * pairs and returns how many there are. Values point into cfg.
 */
#define BW_DECODER_MAX_OPTIONS 11
size_t bw_config_decoder_options(const bw_config *cfg, const char *names[], const char *values[],
                                 size_t max);

/* Prints --help (every key with its default and help) to stdout. */
void bw_config_print_help(void);

/* The configuration in effect as INI text, each value followed by where it came from; the
 * password in pg.conninfo and secret kafka.* values hidden. For --check-config and debugging. */
void bw_config_dump(const bw_config *cfg, bw_buf *out);

/*
 * SIGHUP: next is a fresh bw_config_load with the same argc/argv/envp. Copies the keys marked
 * reloadable (log.level, relay.*) from next into cfg, and appends to notes one "key: old -> new"
 * per change applied and one "key changed but takes effect only on restart" per other change
 * (values of those not shown: they may be secret). Returns the number of changes applied. The
 * main loop must read the reloadable fields from cfg each time it uses them.
 */
int bw_config_reload(bw_config *cfg, const bw_config *next, bw_buf *notes);

#define BW_RELAY_VERSION "0.1.0"

#endif
