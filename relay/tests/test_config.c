/*
 * test_config.c — the configuration: defaults, file < environment < flags, every kind of error
 * and its message, kafka.* passthrough, the decoder options, --help; and log.c: redaction and the
 * log line.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "unit.h"

/* ------------------------------------------------------------------------- helpers */

typedef struct fixture {
    char path[64];
    bw_config cfg;
    bw_buf err;
    bw_config_action action;
} fixture;

/* Writes text to a fresh temporary file; fx->path names it. */
static void write_conf(fixture *fx, const char *text)
{
    snprintf(fx->path, sizeof(fx->path), "/tmp/bw-test-conf-XXXXXX");
    int fd = mkstemp(fx->path);
    ASSERT_GE(fd, 0);
    size_t len = strlen(text);
    ASSERT_EQ(write(fd, text, len), (ssize_t) len);
    close(fd);
}

/* Loads with the file (if written), then env (NULL-terminated), then args (after argv[0]). */
static int load(fixture *fx, const char *const *env, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "breakwater-relay";
    if (fx->path[0] != '\0') {
        argv[argc++] = "-c";
        argv[argc++] = fx->path;
    }
    for (const char *const *a = args; a && *a; a++)
        argv[argc++] = (char *) *a;
    argv[argc] = NULL;
    bw_buf_init(&fx->err);
    return bw_config_load(&fx->cfg, argc, argv, (char **) env, &fx->action, &fx->err);
}

static void done(fixture *fx)
{
    bw_config_free(&fx->cfg);
    bw_buf_free(&fx->err);
    if (fx->path[0] != '\0')
        unlink(fx->path);
}

static const char *kafka(const bw_config *cfg, const char *key)
{
    for (size_t i = 0; i < cfg->nkafka; i++) {
        if (strcmp(cfg->kafka[i].key, key) == 0)
            return cfg->kafka[i].value;
    }
    return NULL;
}

/* Expects loading to fail with a message containing each of the NULL-terminated needles. */
static void expect_error(const char *conf, const char *const *env, const char *const *args,
                         const char *const *needles)
{
    fixture fx = {0};
    if (conf != NULL)
        write_conf(&fx, conf);
    ASSERT_EQ(load(&fx, env, args), -1);
    for (const char *const *n = needles; *n; n++)
        ASSERT_STR_CONTAINS(fx.err.data, *n);
    done(&fx);
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ------------------------------------------------------------------------- loading */

TEST(config_defaults)
{
    fixture fx = {0};
    ASSERT_OK(load(&fx, NULL, NULL));
    ASSERT_EQ(fx.action, BW_CONFIG_RUN);
    bw_config *c = &fx.cfg;
    ASSERT_STR_EQ(c->pg_conninfo, "dbname=postgres");
    ASSERT_STR_EQ(c->slot_name, "breakwater");
    ASSERT_TRUE(c->slot_create);
    ASSERT_NULL(c->decoder_tables);
    ASSERT_NULL(c->decoder_exclude_tables);
    ASSERT_NULL(c->decoder_tenant_column);
    ASSERT_NULL(c->decoder_tenant_columns);
    ASSERT_NULL(c->decoder_missing_tenant);
    ASSERT_NULL(c->decoder_exclude_columns);
    ASSERT_NULL(c->decoder_actions);
    ASSERT_NULL(c->decoder_message_prefixes);
    ASSERT_EQ(c->decoder_write_chunk_bytes, 65536);
    ASSERT_STR_EQ(c->topic_prefix, "breakwater");
    ASSERT_STR_EQ(c->topic_template, "{prefix}.{schema}.{table}");
    ASSERT_STR_EQ(c->value_format, "json");
    ASSERT_EQ(c->max_inflight_bytes, 67108864);
    ASSERT_EQ(c->status_interval_ms, 1000);
    ASSERT_EQ(c->reconnect_backoff_max_ms, 30000);
    ASSERT_EQ(c->stats_interval_ms, 60000);
    ASSERT_STR_EQ(c->http_listen, "127.0.0.1:9187");
    ASSERT_STR_EQ(c->log_level, "info");
    ASSERT_EQ(c->nkafka, 0);
    ASSERT_NULL(c->config_file);
    done(&fx);
}

TEST(config_file_sections_and_dotted_keys)
{
    fixture fx = {0};
    write_conf(&fx, "# a comment\n"
                    "; another\n"
                    "log.level = debug\n"
                    "\n"
                    "[pg]\n"
                    "conninfo = host=db1 port=5433 dbname=app password='se;cret'\n"
                    "[slot]\n"
                    "name=orders_slot\n"
                    "create = off\n"
                    "[decoder]\n"
                    "tables = public.*, billing.invoices\n"
                    "missing_tenant = DROP\n"
                    "write_chunk_bytes = 1\n"
                    "[relay]\n"
                    "max_inflight_bytes = 1048576\n"
                    "[http]\n"
                    "listen =\n"
                    "[kafka]\n"
                    "bootstrap.servers = k1:9092,k2:9092\n"
                    "compression.type = zstd\n");
    ASSERT_OK(load(&fx, NULL, NULL));
    bw_config *c = &fx.cfg;
    ASSERT_STR_EQ(c->log_level, "debug");
    /* no inline comments: ';' belongs to the value */
    ASSERT_STR_EQ(c->pg_conninfo, "host=db1 port=5433 dbname=app password='se;cret'");
    ASSERT_STR_EQ(c->slot_name, "orders_slot");
    ASSERT_FALSE(c->slot_create);
    ASSERT_STR_EQ(c->decoder_tables, "public.*, billing.invoices");
    ASSERT_STR_EQ(c->decoder_missing_tenant, "drop");
    ASSERT_EQ(c->decoder_write_chunk_bytes, 1);
    ASSERT_EQ(c->max_inflight_bytes, 1048576);
    ASSERT_STR_EQ(c->http_listen, "");
    ASSERT_EQ(c->nkafka, 2);
    ASSERT_STR_EQ(kafka(c, "bootstrap.servers"), "k1:9092,k2:9092");
    ASSERT_STR_EQ(kafka(c, "compression.type"), "zstd");
    ASSERT_STR_EQ(c->config_file, fx.path);
    done(&fx);
}

TEST(config_precedence_file_env_flags)
{
    fixture fx = {0};
    char line3[256];
    write_conf(&fx, "[pg]\n"
                    "conninfo = dbname=fromfile\n"
                    "[slot]\n"
                    "name = fromfile\n"
                    "[log]\n"
                    "level = warn\n"
                    "[relay]\n"
                    "status_interval_ms = 500\n"
                    "[kafka]\n"
                    "client.id = fromfile\n"
                    "linger.ms = 7\n");
    const char *const *env =
        L("HOME=/root", "BREAKWATER_SLOT_NAME=fromenv", "BREAKWATER_LOG_LEVEL=error",
          "BREAKWATER_KAFKA_CLIENT_ID=fromenv", "BREAKWATER_KAFKA_BOOTSTRAP_SERVERS=b:9092");
    ASSERT_OK(load(&fx, env, L("--log.level=debug", "--kafka.linger.ms=9")));
    bw_config *c = &fx.cfg;
    ASSERT_STR_EQ(c->pg_conninfo, "dbname=fromfile"); /* file only */
    ASSERT_STR_EQ(c->slot_name, "fromenv");           /* env over file */
    ASSERT_STR_EQ(c->log_level, "debug");             /* flag over env over file */
    ASSERT_EQ(c->status_interval_ms, 500);
    ASSERT_EQ(c->reconnect_backoff_max_ms, 30000); /* default */
    ASSERT_STR_EQ(kafka(c, "client.id"), "fromenv");
    ASSERT_STR_EQ(kafka(c, "linger.ms"), "9");
    ASSERT_STR_EQ(kafka(c, "bootstrap.servers"), "b:9092");
    ASSERT_EQ(c->nkafka, 3); /* replaced, not repeated */

    /* where each value came from, for --check-config */
    bw_buf dump;
    bw_buf_init(&dump);
    bw_config_dump(c, &dump);
    snprintf(line3, sizeof(line3), "conninfo = dbname=fromfile  # %s:2", fx.path);
    ASSERT_STR_CONTAINS(dump.data, line3);
    ASSERT_STR_CONTAINS(dump.data, "name = fromenv  # environment variable BREAKWATER_SLOT_NAME");
    ASSERT_STR_CONTAINS(dump.data, "level = debug  # flag --log.level");
    ASSERT_STR_CONTAINS(dump.data, "reconnect_backoff_max_ms = 30000  # default");
    ASSERT_STR_CONTAINS(dump.data, "linger.ms = 9  # flag --kafka.linger.ms");
    bw_buf_free(&dump);
    done(&fx);
}

TEST(config_file_from_environment_and_flag_forms)
{
    fixture fx = {0};
    char envcfg[96];
    write_conf(&fx, "[slot]\nname = named_by_env\n");
    snprintf(envcfg, sizeof(envcfg), "BREAKWATER_CONFIG=%s", fx.path);
    char path[64];
    snprintf(path, sizeof(path), "%s", fx.path);
    fx.path[0] = '\0'; /* not via -c */
    ASSERT_OK(load(&fx, L(envcfg), NULL));
    ASSERT_STR_EQ(fx.cfg.slot_name, "named_by_env");
    bw_config_free(&fx.cfg);
    bw_buf_free(&fx.err);

    /* --config=PATH and --config PATH; a bool flag alone means true */
    char flag[96];
    snprintf(flag, sizeof(flag), "--config=%s", path);
    ASSERT_OK(load(&fx, NULL, L(flag, "--slot.create=no", "--slot.create", "--check-config")));
    ASSERT_STR_EQ(fx.cfg.slot_name, "named_by_env");
    ASSERT_TRUE(fx.cfg.slot_create);
    ASSERT_EQ(fx.action, BW_CONFIG_CHECK);
    bw_config_free(&fx.cfg);
    bw_buf_free(&fx.err);

    ASSERT_OK(load(&fx, NULL, L("--config", path)));
    ASSERT_STR_EQ(fx.cfg.slot_name, "named_by_env");
    snprintf(fx.path, sizeof(fx.path), "%s", path);
    done(&fx);
}

TEST(config_empty_optional_values_are_unset)
{
    fixture fx = {0};
    write_conf(&fx, "[decoder]\ntables = public.*\nactions = insert\n");
    ASSERT_OK(load(&fx, L("BREAKWATER_DECODER_TABLES="), L("--decoder.actions=")));
    ASSERT_NULL(fx.cfg.decoder_tables);
    ASSERT_NULL(fx.cfg.decoder_actions);
    done(&fx);
}

TEST(config_long_lines)
{
    fixture fx = {0};
    /* inih's default limit is 200 bytes; a longer line must arrive whole */
    bw_buf text;
    bw_buf_init(&text);
    bw_buf_puts(&text, "[pg]\nconninfo = dbname=postgres application_name=");
    for (int i = 0; i < 500; i++)
        bw_buf_putc(&text, 'a' + i % 26);
    bw_buf_puts(&text, "\n[slot]\nname = after_the_long_line\n");
    write_conf(&fx, text.data);
    ASSERT_OK(load(&fx, NULL, NULL));
    ASSERT_EQ(strlen(fx.cfg.pg_conninfo), strlen("dbname=postgres application_name=") + 500);
    ASSERT_STR_EQ(fx.cfg.slot_name, "after_the_long_line");
    done(&fx);

    /* beyond the raised limit: an error, not a silent cut */
    fixture fx2 = {0};
    bw_buf_reset(&text);
    bw_buf_puts(&text, "# first\n[pg]\nconninfo = x");
    for (int i = 0; i < 1100 * 1024; i++)
        bw_buf_putc(&text, 'x');
    bw_buf_puts(&text, "\n");
    write_conf(&fx2, text.data);
    ASSERT_EQ(load(&fx2, NULL, NULL), -1);
    ASSERT_STR_CONTAINS(fx2.err.data, ":3: the line is longer than");
    done(&fx2);
    bw_buf_free(&text);
}

/* ------------------------------------------------------------------------- errors */

TEST(config_error_unknown_keys)
{
    fixture fx = {0};
    char want[256];
    write_conf(&fx, "[pg]\nconninfo = dbname=x\n\n[pg]\nconinfo = dbname=y\n");
    ASSERT_EQ(load(&fx, NULL, NULL), -1);
    snprintf(want, sizeof(want), "%s:5: unknown key \"pg.coninfo\"; did you mean pg.conninfo?",
             fx.path);
    ASSERT_STR_EQ(fx.err.data, want);
    done(&fx);

    /* outside its section, dashes for underscores, case */
    expect_error("conninfo = x\n", NULL, NULL, L(":1: unknown key \"conninfo\"", "pg.conninfo?"));
    expect_error("[relay]\nmax-inflight-bytes = 2000000\n", NULL, NULL,
                 L("did you mean relay.max_inflight_bytes?"));
    expect_error("[nothing]\nlike_this = 1\n", NULL, NULL,
                 L(":2: unknown key \"nothing.like_this\"; breakwater-relay --help lists"));
    expect_error(NULL, L("BREAKWATER_PG_CONINFO=x"), NULL,
                 L("environment variable BREAKWATER_PG_CONINFO: no such setting; did you mean "
                   "BREAKWATER_PG_CONNINFO?"));
    expect_error(NULL, L("BREAKWATER_NOTHING_LIKE_IT=1"), NULL,
                 L("BREAKWATER_NOTHING_LIKE_IT: no such setting", "BREAKWATER_KAFKA_<PROPERTY>"));
    expect_error(NULL, NULL, L("--slot.nmae=x"),
                 L("flag --slot.nmae: unknown key \"slot.nmae\"; did you mean --slot.name?"));
}

TEST(config_error_values)
{
    expect_error("[relay]\nstatus_interval_ms = 50\n", NULL, NULL,
                 L(":2: relay.status_interval_ms = \"50\": out of range; expected an integer from "
                   "100 to 60000"));
    expect_error(NULL, NULL, L("--relay.max_inflight_bytes=64MB"),
                 L("flag --relay.max_inflight_bytes: relay.max_inflight_bytes = \"64MB\": not an "
                   "integer; expected an integer of at least 1048576"));
    expect_error(NULL, NULL, L("--relay.stats_interval_ms=99999999999999999999999"),
                 L("out of range"));
    expect_error(NULL, L("BREAKWATER_SLOT_CREATE=maybe"), NULL,
                 L("environment variable BREAKWATER_SLOT_CREATE: slot.create = \"maybe\": not a "
                   "boolean; expected true or false (also yes/no, on/off, 1/0)"));
    expect_error(NULL, NULL, L("--log.level=verbose"),
                 L("flag --log.level: log.level = \"verbose\": unknown value; expected one of "
                   "debug, info, warn, error"));
    expect_error(NULL, NULL, L("--decoder.missing_tenant=ignore"),
                 L("expected one of pass, drop, error"));
    expect_error("[value]\nformat = avro\n", NULL, NULL,
                 L("value.format=avro (", ":2) needs schema_registry.url"));
    expect_error(NULL, NULL, L("--value.format=avro", "--schema_registry.url=localhost:8081"),
                 L("flag --schema_registry.url", "\"localhost:8081\" is not an http:// or "
                                                 "https:// URL"));
    expect_error(NULL, NULL, L("--avro.namespace=com.9x"),
                 L("flag --avro.namespace", "expected dot-separated Avro names"));
    expect_error(NULL, NULL, L("--avro.namespace=com-x"), L("'-' cannot be in an Avro namespace"));
    expect_error(NULL, NULL, L("--schema_registry.compatibility=backward"),
                 L("expected BACKWARD, BACKWARD_TRANSITIVE"));
    expect_error(NULL, NULL, L("--value.format=xml"), L("expected one of json, avro"));
    expect_error(NULL, NULL, L("--topic.template={prefix}.{tabel}"),
                 L("topic.template = \"{prefix}.{tabel}\": unknown placeholder {tabel}; the "
                   "placeholders are {prefix}, {schema}, {table} and {tenant}"));
    expect_error(NULL, NULL, L("--topic.template={prefix}.{schema"), L("\"{\" without \"}\""));
    expect_error(NULL, NULL, L("--topic.template=a}b"), L("\"}\" without \"{\""));
    expect_error(NULL, NULL, L("--topic.template=a b"), L("' ' cannot be in a Kafka topic name"));
    expect_error(NULL, NULL, L("--topic.template="), L("empty"));
    expect_error(NULL, NULL, L("--topic.prefix=a/b"), L("'/' cannot be in a Kafka topic name"));
    expect_error(NULL, NULL, L("--slot.name=Orders"), L("'O' is not allowed"));
    expect_error(NULL, NULL, L("--slot.name="), L("expected 1 to 63 characters"));
    expect_error(NULL, NULL, L("--decoder.actions=insert,upsert"), L("unknown action \"upsert\""));
    expect_error(NULL, NULL, L("--http.listen=localhost:9187"),
                 L("http.listen = \"localhost:9187\": the host must be an IP address"));
    expect_error(NULL, NULL, L("--http.listen=127.0.0.1"), L("no port"));
    expect_error(NULL, NULL, L("--http.listen=127.0.0.1:99999"), L("bad port \"99999\""));
    expect_error(NULL, NULL, L("--http.listen=::1:9187"), L("the host must be an IP address"));
    expect_error(NULL, NULL, L("--pg.conninfo=postgresql://u@h/db?replication=database"),
                 L("remove replication=..."));
}

TEST(config_accepts_listen_forms)
{
    const char *ok[] = {"--http.listen=[::1]:9187", "--http.listen=0.0.0.0:1",
                        "--http.listen=127.0.0.1:0", "--http.listen=[::]:65535", "--http.listen="};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        fixture fx = {0};
        ASSERT_OK(load(&fx, NULL, L(ok[i])));
        done(&fx);
    }
}

TEST(config_error_conninfo_hides_password)
{
    fixture fx = {0};
    ASSERT_EQ(load(&fx, NULL, L("--pg.conninfo=host=db password=hunter2 bogus=1")), -1);
    ASSERT_STR_CONTAINS(fx.err.data, "flag --pg.conninfo: pg.conninfo = \"host=db "
                                     "password=******** bogus=1\": libpq cannot parse it: ");
    ASSERT_STR_CONTAINS(fx.err.data, "bogus");
    ASSERT_TRUE(strstr(fx.err.data, "hunter2") == NULL);
    done(&fx);
}

TEST(config_error_file)
{
    fixture fx = {0};
    char want[256];
    write_conf(&fx, "[pg]\nconninfo = dbname=x\nthis line has no equals sign\n[slot]\nname = ok\n");
    ASSERT_EQ(load(&fx, NULL, NULL), -1);
    snprintf(want, sizeof(want), "%s:3: syntax error: expected \"[section]\"", fx.path);
    ASSERT_STR_CONTAINS(fx.err.data, want);
    done(&fx);

    /* the first error wins, whoever finds it */
    expect_error("[slot]\nname = BAD\nnot a setting\n", NULL, NULL, L(":2: slot.name = \"BAD\""));
    expect_error("[slot]\nname = a\n\n[slot]\nname = b\n", NULL, NULL,
                 L(":5: slot.name is set twice (first on line 2)"));
    expect_error("[kafka]\nlinger.ms = 1\nlinger.ms = 2\n", NULL, NULL,
                 L(":3: kafka.linger.ms is set twice (first on line 2)"));
    /* indented lines do not continue a value: they are lines of their own */
    expect_error("[pg]\nconninfo = dbname=a\n  host=b\n", NULL, NULL,
                 L(":3: unknown key \"pg.host\""));

    expect_error(NULL, NULL, L("-c", "/nonexistent/relay.conf"),
                 L("cannot open the configuration file \"/nonexistent/relay.conf\" (named by -c): "
                   "No such file or directory"));
    expect_error(NULL, L("BREAKWATER_CONFIG=/nonexistent/x.conf"), NULL,
                 L("(named by environment variable BREAKWATER_CONFIG)"));
}

TEST(config_error_command_line)
{
    expect_error(NULL, NULL, L("--pg.conninfo"),
                 L("flag --pg.conninfo: no value; write "
                   "--pg.conninfo=VALUE"));
    expect_error(NULL, NULL, L("--kafka.acks"), L("no value"));
    expect_error(NULL, NULL, L("stray"), L("unexpected argument \"stray\""));
    expect_error(NULL, NULL, L("-x"), L("unexpected argument \"-x\""));
    expect_error(NULL, NULL, L("-c"), L("flag -c: no path"));
}

TEST(config_kafka_passthrough)
{
    fixture fx = {0};
    write_conf(&fx, "[kafka]\n"
                    "security.protocol = SASL_SSL\n"
                    "sasl.mechanism = SCRAM-SHA-512\n"
                    "sasl.username = relay\n"
                    "sasl.password = s3cret\n");
    ASSERT_OK(load(&fx, L("BREAKWATER_KAFKA_SSL_CA_LOCATION=/etc/ssl/ca.pem"),
                   L("--kafka.compression.type=lz4", "--kafka.acks=all")));
    bw_config *c = &fx.cfg;
    ASSERT_STR_EQ(kafka(c, "security.protocol"), "SASL_SSL");
    ASSERT_STR_EQ(kafka(c, "sasl.password"), "s3cret");
    ASSERT_STR_EQ(kafka(c, "ssl.ca.location"), "/etc/ssl/ca.pem");
    ASSERT_STR_EQ(kafka(c, "compression.type"), "lz4");
    ASSERT_STR_EQ(kafka(c, "acks"), "all");
    char where[128];
    snprintf(where, sizeof(where), "%s:2", fx.path);
    ASSERT_STR_EQ(c->kafka[0].source, where);

    bw_buf dump;
    bw_buf_init(&dump);
    bw_config_dump(c, &dump);
    ASSERT_STR_CONTAINS(dump.data, "sasl.password = ********");
    ASSERT_TRUE(strstr(dump.data, "s3cret") == NULL);
    bw_buf_free(&dump);
    done(&fx);

    expect_error(NULL, NULL, L("--kafka.bootstrap.server=b:9092"),
                 L("flag --kafka.bootstrap.server: unknown key \"kafka.bootstrap.server\": "
                   "librdkafka has no property \"bootstrap.server\"; did you mean "
                   "kafka.bootstrap.servers?"));
    expect_error("[kafka]\ncompression.type = zip\n", NULL, NULL,
                 L(":2: kafka.compression.type = \"zip\": librdkafka: Invalid value \"zip\""));
    expect_error(NULL, L("BREAKWATER_KAFKA_=1"), NULL, L("names no librdkafka property"));
}

/* ------------------------------------------------------------------------- users of the config */

TEST(config_decoder_options_order)
{
    fixture fx = {0};
    const char *names[BW_DECODER_MAX_OPTIONS], *values[BW_DECODER_MAX_OPTIONS];

    ASSERT_OK(load(&fx, NULL, NULL));
    size_t n = bw_config_decoder_options(&fx.cfg, names, values, BW_DECODER_MAX_OPTIONS);
    ASSERT_EQ(n, 3);
    ASSERT_STR_EQ(names[0], "format");
    ASSERT_STR_EQ(values[0], "binary");
    ASSERT_STR_EQ(names[1], "write-chunk-bytes");
    ASSERT_STR_EQ(values[1], "65536");
    ASSERT_STR_EQ(names[2], "streaming");
    ASSERT_STR_EQ(values[2], "on");
    done(&fx);

    /* set in an order unlike the table's: the output follows the table */
    ASSERT_OK(load(&fx, NULL,
                   L("--decoder.write_chunk_bytes=4096", "--decoder.message_prefixes=audit*",
                     "--decoder.actions=insert,delete", "--decoder.exclude_columns=*.*.secret",
                     "--decoder.missing_tenant=error", "--decoder.tenant_columns=public.t*=org",
                     "--decoder.tenant_column=org_id", "--decoder.exclude_tables=public.tmp*",
                     "--decoder.tables=public.*", "--decoder.streaming=false")));
    static const char *const want[][2] = {
        {"format", "binary"},
        {"tables", "public.*"},
        {"exclude-tables", "public.tmp*"},
        {"tenant-column", "org_id"},
        {"tenant-columns", "public.t*=org"},
        {"missing-tenant", "error"},
        {"exclude-columns", "*.*.secret"},
        {"actions", "insert,delete"},
        {"message-prefixes", "audit*"},
        {"write-chunk-bytes", "4096"},
        {"streaming", "off"},
    };
    n = bw_config_decoder_options(&fx.cfg, names, values, BW_DECODER_MAX_OPTIONS);
    ASSERT_EQ(n, 11);
    for (size_t i = 0; i < n; i++) {
        ASSERT_STR_EQ(names[i], want[i][0]);
        ASSERT_STR_EQ(values[i], want[i][1]);
    }
    /* too small an array: filled to max, the full count returned */
    ASSERT_EQ(bw_config_decoder_options(&fx.cfg, names, values, 3), 11);
    ASSERT_STR_EQ(names[2], "exclude-tables");
    done(&fx);
}

/* Runs fn with stdout going to a file; returns what it wrote (free it). */
static char *capture_stdout(fixture *fx, const char *const *args, int *rc)
{
    char path[] = "/tmp/bw-test-out-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    fflush(stdout);
    int saved = dup(1);
    dup2(fd, 1);
    *rc = load(fx, NULL, args);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *text = bw_xmalloc((size_t) len + 1);
    ASSERT_EQ(pread(fd, text, (size_t) len, 0), len);
    text[len] = '\0';
    close(fd);
    unlink(path);
    return text;
}

TEST(config_help_lists_every_key)
{
    fixture fx = {0};
    int rc;
    /* --help wins over a bad argument next to it */
    char *text = capture_stdout(&fx, L("--bogus", "--help"), &rc);
    ASSERT_OK(rc);
    ASSERT_EQ(fx.action, BW_CONFIG_HELP);
    static const char *const keys[] = {
        "pg.conninfo",
        "slot.name",
        "slot.create",
        "decoder.tables",
        "decoder.exclude_tables",
        "decoder.tenant_column",
        "decoder.tenant_columns",
        "decoder.missing_tenant",
        "decoder.exclude_columns",
        "decoder.actions",
        "decoder.message_prefixes",
        "decoder.write_chunk_bytes",
        "topic.prefix",
        "topic.template",
        "value.format",
        "relay.max_inflight_bytes",
        "relay.status_interval_ms",
        "relay.reconnect_backoff_max_ms",
        "relay.stats_interval_ms",
        "http.listen",
        "log.level",
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char flag[64];
        snprintf(flag, sizeof(flag), "\n  --%s=", keys[i]);
        ASSERT_STR_CONTAINS(text, flag);
    }
    ASSERT_STR_CONTAINS(text, "--relay.status_interval_ms=INTEGER (100..60000)  default: 1000  "
                              "[reload]");
    ASSERT_STR_CONTAINS(text, "--log.level=debug|info|warn|error  default: info  [reload]");
    ASSERT_STR_CONTAINS(text, "--decoder.tables=STRING  default: not set\n");
    ASSERT_STR_CONTAINS(text, "--kafka.PROPERTY=VALUE");
    free(text);
    done(&fx);

    fixture fv = {0};
    text = capture_stdout(&fv, L("--version"), &rc);
    ASSERT_OK(rc);
    ASSERT_EQ(fv.action, BW_CONFIG_VERSION);
    ASSERT_STR_EQ(text, "breakwater-relay " BW_RELAY_VERSION "\n");
    free(text);
    done(&fv);
}

TEST(config_reload_applies_only_reloadable_keys)
{
    fixture a = {0}, b = {0};
    ASSERT_OK(load(&a, NULL, L("--log.level=info", "--pg.conninfo=dbname=one")));
    ASSERT_OK(load(&b, NULL,
                   L("--log.level=debug", "--pg.conninfo=dbname=two", "--relay.stats_interval_ms=0",
                     "--kafka.linger.ms=5")));
    bw_buf notes;
    bw_buf_init(&notes);
    ASSERT_EQ(bw_config_reload(&a.cfg, &b.cfg, &notes), 2);
    ASSERT_STR_EQ(a.cfg.log_level, "debug");
    ASSERT_EQ(a.cfg.stats_interval_ms, 0);
    ASSERT_STR_EQ(a.cfg.pg_conninfo, "dbname=one");
    ASSERT_STR_EQ(notes.data, "pg.conninfo changed but takes effect only on restart; "
                              "relay.stats_interval_ms: 60000 -> 0; log.level: info -> debug; "
                              "kafka.* changed but takes effect only on restart");
    bw_buf_free(&notes);
    done(&a);
    done(&b);
}

/* ------------------------------------------------------------------------- log.c */

TEST(log_redacts_conninfo)
{
    static const char *const cases[][2] = {
        {"host=db password=hunter2 dbname=app", "host=db password=******** dbname=app"},
        {"password = 'p w' user=x", "password = ******** user=x"},
        {"password='a \\' b' user=x", "password=******** user=x"},
        {"password=a\\ b user=x", "password=******** user=x"},
        {"  host=db   sslpassword=k  ", "  host=db   sslpassword=********  "},
        {"dbname=postgres", "dbname=postgres"},
        {"password='unterminated", "password=********"},
        {"", ""},
        {"postgresql://u:secret@db:5432/app", "postgresql://u:********@db:5432/app"},
        {"postgres://u@db/app", "postgres://u@db/app"},
        {"postgresql://db/app?user=u&password=p&sslmode=require",
         "postgresql://db/app?user=u&password=********&sslmode=require"},
        {"postgresql://u:p%40ss@h1,h2/app", "postgresql://u:********@h1,h2/app"},
        {"postgresql:///app", "postgresql:///app"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *r = bw_conninfo_redact(cases[i][0]);
        ASSERT_STR_EQ(r, cases[i][1]);
        free(r);
    }
    char *r = bw_conninfo_redact(NULL);
    ASSERT_STR_EQ(r, "");
    free(r);
}

TEST(log_levels_parse)
{
    bw_log_level l;
    ASSERT_OK(bw_log_parse_level("debug", &l));
    ASSERT_EQ(l, BW_LOG_DEBUG);
    ASSERT_OK(bw_log_parse_level("WARN", &l));
    ASSERT_EQ(l, BW_LOG_WARN);
    ASSERT_EQ(bw_log_parse_level("verbose", &l), -1);
    ASSERT_STR_EQ(bw_log_level_name(BW_LOG_ERROR), "error");
}

static int evaluated;
static int side_effect(void)
{
    return ++evaluated;
}

TEST(log_line_format)
{
    char path[] = "/tmp/bw-test-log-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    int saved = dup(2);
    dup2(fd, 2);

    bw_log_min_level = BW_LOG_INFO;
    bw_debug("not shown %d", side_effect());
    bw_log_set_context("slot=s1");
    bw_info("connected to %s", "db");
    bw_log_set_context(NULL);
    bw_error("libpq says: %s", "FATAL:  no\nDETAIL:  because\n");

    dup2(saved, 2);
    close(saved);
    ASSERT_EQ(evaluated, 0); /* the level is checked before the arguments are evaluated */
    char text[512];
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    close(fd);
    unlink(path);
    ASSERT_GT(n, 0);
    text[n] = '\0';
    /* 2025-01-31T09:15:02.117Z INFO  [slot=s1] connected to db */
    char *second = strchr(text, '\n');
    ASSERT_NOT_NULL(second);
    ASSERT_EQ(second - text, 24 + 1 + 6 + 10 + 15);
    ASSERT_TRUE(text[4] == '-' && text[7] == '-' && text[10] == 'T' && text[13] == ':' &&
                text[19] == '.' && text[23] == 'Z');
    ASSERT_MEM_EQ(text + 24, " INFO  [slot=s1] connected to db\n", 33);
    ASSERT_STR_CONTAINS(second + 1, "Z ERROR libpq says: FATAL:  no DETAIL:  because\n");
    ASSERT_EQ(strchr(second + 1, '\n') - text, n - 1); /* two lines, no more */
}
