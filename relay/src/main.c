/*
 * main.c — breakwater-relay: startup, the main loop and shutdown.
 *
 * One loop, two heartbeats: rd_kafka_poll on every turn (delivery reports move the confirmable
 * position), and a timer that sends standby status updates well before wal_sender_timeout.
 * Shutdown order is a contract: stop reading, flush Kafka, send final feedback for delivered
 * positions only, close PostgreSQL, destroy the producer, exit with a status that tells the
 * truth (0 only when everything read was acknowledged).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backfill.h"
#include "buf.h"
#include "clock.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "lsntrack.h"
#include "metrics.h"
#include "pgstream.h"
#include "producer.h"
#include "proto.h"
#include "registry.h"
#include "route.h"
#include "snapshot.h"
#include "statefile.h"
#include "tableread.h"

/* Set by signal handlers, acted on by the loop (the only other globals: see log.h). */
static volatile sig_atomic_t stop_signals = 0;
static volatile sig_atomic_t reload_requested = 0;

static void on_stop(int sig)
{
    (void) sig;
    stop_signals++;
}

static void on_hup(int sig)
{
    (void) sig;
    reload_requested = 1;
}

/* Between schema registry retries: delivery reports keep moving the confirmable position. */
static void wait_serving_kafka(void *arg, int ms);

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

typedef struct relay {
    bw_config cfg;
    bw_metrics metrics;
    bw_lsntrack *track;
    bw_producer *producer;
    bw_router router;
    bw_pgstream *pg;
    bw_parser *parser;
    bw_registry *registry; /* value.format avro */
    bw_snapshot *snapshot; /* snapshot.mode initial or initial-only */
    bw_backfills *backfills;
    char *message_prefixes; /* decoder.message_prefixes and the relay's own */
    /*
     * While a streamed transaction is replayed, chunks read are queued (in memory, up to
     * relay.max_inflight_bytes) and routed after it, in order; the peek parser reads them at
     * once for their tenant signals (bw_route_peek).
     */
    struct queued *queue_head, **queue_tail;
    int64_t queued_bytes;
    bw_parser *peek_parser;
    uint64_t received;  /* highest WAL position read from the stream */
    uint64_t last_sent; /* last flush position sent to PostgreSQL */
    int64_t last_feedback_ms;
    int64_t next_feedback_ms;
    int64_t next_stats_ms;
    int64_t next_probe_ms; /* Kafka reachability, while marked down */
    int64_t next_wal_ms;   /* reading the server's WAL position */
    const char *opt_names[BW_DECODER_MAX_OPTIONS + 2];
    const char *opt_values[BW_DECODER_MAX_OPTIONS + 2];
    size_t nopts;
    int argc; /* for SIGHUP's reload from the same sources */
    char **argv;
    char **envp;
} relay;

static void wait_serving_kafka(void *arg, int ms)
{
    relay *r = arg;
    for (int64_t until = bw_mono_ms() + ms; bw_mono_ms() < until && stop_signals == 0;)
        bw_producer_poll(r->producer, 50);
}

typedef struct queued {
    struct queued *next;
    size_t len;
    uint8_t data[];
} queued;

static void queue_push(relay *r, const uint8_t *data, size_t len)
{
    queued *q = bw_xmalloc(sizeof(*q) + len);
    q->next = NULL;
    q->len = len;
    memcpy(q->data, data, len);
    if (r->queue_head == NULL)
        r->queue_tail = &r->queue_head;
    *r->queue_tail = q;
    r->queue_tail = &q->next;
    r->queued_bytes += (int64_t) len;
}

static queued *queue_pop(relay *r)
{
    queued *q = r->queue_head;
    if (q) {
        r->queue_head = q->next;
        r->queued_bytes -= (int64_t) q->len;
    }
    return q;
}

/* Forgets what was read ahead (the stream broke: it comes again), and the peek parser. */
static void queue_clear(relay *r)
{
    for (queued *q; (q = queue_pop(r)) != NULL;)
        free(q);
    bw_parser_free(r->peek_parser);
    r->peek_parser = NULL;
}

static bool busy(const relay *r)
{
    return r->router.job != NULL || r->queue_head != NULL;
}

/*
 * Routes what waits: steps of the replay being sent, then the chunks read meanwhile, for up to
 * 20 ms, so that the loop keeps reading, polling Kafka and emitting signals.
 */
static bw_pg_status work(relay *r, char *err, size_t errlen)
{
    for (int64_t until = bw_mono_ms() + 20; busy(r) && bw_mono_ms() < until;) {
        if (r->router.job) {
            if (bw_route_step(&r->router) == BW_ROUTE_FAILED) {
                snprintf(err, errlen, "%s", r->router.err);
                return BW_PG_FATAL;
            }
            continue;
        }
        queued *q = queue_pop(r);
        r->router.peeked = true;
        int rc =
            bw_parse_chunk(r->parser, q->data, q->len, bw_route_record, &r->router, err, errlen);
        r->router.peeked = false;
        free(q);
        if (rc == BW_ROUTE_FAILED)
            snprintf(err, errlen, "%s", r->router.err);
        if (rc != 0)
            return BW_PG_FATAL;
    }
    if (!busy(r) && r->peek_parser) {
        bw_parser_free(r->peek_parser);
        r->peek_parser = NULL;
    }
    return BW_PG_OK;
}

static bw_pg_status send_feedback(relay *r, char *err, size_t errlen)
{
    uint64_t confirmed = bw_lsntrack_confirmed(r->track);
    bw_pg_status st = bw_pgstream_feedback(r->pg, r->received > confirmed ? r->received : confirmed,
                                           confirmed, err, errlen);
    if (st == BW_PG_OK) {
        if (confirmed != r->last_sent) {
            char a[18];
            bw_debug("confirmed %s to PostgreSQL", bw_lsn_str(confirmed, a));
        }
        r->last_sent = confirmed;
        atomic_store(&r->metrics.confirmed_lsn, confirmed);
    }
    r->last_feedback_ms = bw_mono_ms();
    r->next_feedback_ms = r->last_feedback_ms + r->cfg.status_interval_ms;
    return st;
}

static void log_stats(relay *r)
{
    bw_buf line;
    bw_buf_init(&line);
    bw_metrics_summary(&r->metrics, &line);
    bw_info("stats: %s", line.data);
    bw_buf_free(&line);
}

/*
 * SIGHUP: load the configuration again from the same sources and apply the reloadable keys
 * (log.level, relay.*); the loop reads those from cfg every time. Others need a restart.
 */
static void reload(relay *r)
{
    bw_config next;
    bw_config_action action;
    bw_buf err, notes;

    bw_buf_init(&err);
    bw_buf_init(&notes);
    memset(&next, 0, sizeof(next));
    if (bw_config_load(&next, r->argc, r->argv, r->envp, &action, &err) != 0) {
        bw_error("SIGHUP: configuration not reloaded: %s", err.data);
    } else {
        int applied = bw_config_reload(&r->cfg, &next, &notes);
        bw_log_parse_level(r->cfg.log_level, &bw_log_min_level);
        bw_info("SIGHUP: %d setting(s) applied%s%s", applied, notes.len ? ": " : "",
                notes.len ? notes.data : "");
    }
    bw_config_free(&next);
    bw_buf_free(&err);
    bw_buf_free(&notes);
}

/* Reads and handles what the stream has buffered, within the in-flight bound. */
static bw_pg_status drain_stream(relay *r, char *err, size_t errlen)
{
    for (int i = 0; i < 10000; i++) {
        if (atomic_load(&r->metrics.inflight_bytes) >= r->cfg.max_inflight_bytes ||
            r->queued_bytes >= r->cfg.max_inflight_bytes)
            return BW_PG_OK; /* backpressure: leave the rest in the socket */
        bw_pgmsg m;
        bw_pg_status st = bw_pgstream_next(r->pg, &m, err, errlen);
        if (st != BW_PG_OK)
            return st;
        if (m.type == BW_PGMSG_NONE)
            return BW_PG_OK;
        if (m.wal_end > r->received)
            r->received = m.wal_end;
        if (m.type == BW_PGMSG_KEEPALIVE) {
            bw_lsntrack_keepalive(r->track, m.wal_end);
            if (m.reply_requested && (st = send_feedback(r, err, errlen)) != BW_PG_OK)
                return st;
            continue;
        }
        atomic_fetch_add(&r->metrics.stream_bytes_in, m.len);
        if (busy(r)) { /* behind a replay: signals now, rows after it */
            if (r->peek_parser == NULL)
                r->peek_parser = bw_parser_copy(r->parser, NULL, NULL);
            if (bw_parse_chunk(r->peek_parser, m.data, m.len, bw_route_peek, &r->router, err,
                               errlen) != 0)
                return BW_PG_FATAL;
            queue_push(r, m.data, m.len);
            continue;
        }
        int rc = bw_parse_chunk(r->parser, m.data, m.len, bw_route_record, &r->router, err, errlen);
        if (rc == BW_ROUTE_FAILED) {
            snprintf(err, errlen, "%s", r->router.err);
            return BW_PG_FATAL;
        }
        if (rc != 0)
            return BW_PG_FATAL; /* malformed: the plugin and the relay disagree (err says where) */
        if (bw_producer_failure(r->producer))
            return BW_PG_OK; /* the loop stops on it */
    }
    return BW_PG_OK;
}

/* Streams until stopped or the connection breaks. */
static bw_pg_status stream(relay *r, char *err, size_t errlen)
{
    bw_pg_status st = BW_PG_OK;
    r->next_feedback_ms = 0;
    while (stop_signals == 0) {
        bw_producer_poll(r->producer, 0);
        if (bw_producer_failure(r->producer))
            return BW_PG_FATAL;
        if (reload_requested) {
            reload_requested = 0;
            reload(r);
        }
        int64_t now = bw_mono_ms();
        /* on the timer, and promptly (at most every 10 ms) when the confirmable position moved */
        if (now >= r->next_feedback_ms ||
            (bw_lsntrack_confirmed(r->track) != r->last_sent && now - r->last_feedback_ms >= 10))
            if ((st = send_feedback(r, err, errlen)) != BW_PG_OK)
                return st;
        /* lag is measured against the server's WAL position, not what the walsender sent */
        if (now >= r->next_wal_ms) {
            uint64_t lsn;
            if (bw_pgstream_server_lsn(r->pg, r->cfg.pg_conninfo, &lsn) == 0)
                atomic_store(&r->metrics.server_wal_end, lsn);
            r->next_wal_ms = now + 5000;
        }
        if (now >= r->next_probe_ms) {
            bw_producer_probe(r->producer, 200);
            r->next_probe_ms = now + 2000;
        }
        if (r->cfg.stats_interval_ms > 0 && now >= r->next_stats_ms) {
            if (r->next_stats_ms > 0)
                log_stats(r);
            r->next_stats_ms = now + r->cfg.stats_interval_ms;
        }
        if (bw_backfills_step(r->backfills, err, errlen) < 0)
            return BW_PG_FATAL;
        if ((st = drain_stream(r, err, errlen)) != BW_PG_OK)
            return st;
        if ((st = work(r, err, errlen)) != BW_PG_OK)
            return st;
        if (r->router.coalescer && bw_coalesce_emit_due(r->router.coalescer, bw_mono_ms(),
                                                        bw_route_coalesced, &r->router) < 0) {
            snprintf(err, errlen, "%s", r->router.err);
            return BW_PG_FATAL;
        }
        if (r->router.signals &&
            bw_signals_emit_due(r->router.signals, bw_mono_ms(), bw_route_signal, &r->router) < 0) {
            snprintf(err, errlen, "%s", r->router.err);
            return BW_PG_FATAL;
        }

        bool backpressure = atomic_load(&r->metrics.inflight_bytes) >= r->cfg.max_inflight_bytes ||
                            r->queued_bytes >= r->cfg.max_inflight_bytes;
        struct pollfd fds[2] = {
            {bw_pgstream_socket(r->pg), backpressure ? 0 : POLLIN, 0},
            {bw_producer_event_fd(r->producer), POLLIN, 0},
        };
        int64_t wake = r->next_feedback_ms;
        if (r->router.signals && bw_signals_next_due(r->router.signals) < wake)
            wake = bw_signals_next_due(r->router.signals);
        if (r->router.coalescer && bw_coalesce_next_due(r->router.coalescer) < wake)
            wake = bw_coalesce_next_due(r->router.coalescer);
        int64_t wait = busy(r) ? 0 : wake - bw_mono_ms();
        if (wait < 0)
            wait = 0;
        if (wait > 100)
            wait = 100;
        if (poll(fds, 2, (int) wait) < 0 && errno != EINTR) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return BW_PG_FATAL;
        }
        if (fds[0].revents & (POLLIN | POLLERR | POLLHUP))
            if ((st = bw_pgstream_consume(r->pg, err, errlen)) != BW_PG_OK)
                return st;
    }
    return BW_PG_OK;
}

/*
 * At startup, the row topics of the tables the options select are created or checked, so that a
 * topic that cannot support a replay is reported now, not at its table's first change. Only when
 * topic names do not depend on the tenant (they cannot be known before the rows). Never fatal.
 */
static void prepare_topics(relay *r)
{
    char err[1024];
    bw_table *tables = NULL;
    size_t n = 0;
    if (strstr(r->cfg.topic_template, "{tenant}") != NULL)
        return;
    /* a check, not a dependency: an unreachable server must not hold the start up for long */
    const char *keys[] = {"dbname", "fallback_application_name", "connect_timeout", NULL};
    const char *vals[] = {r->cfg.pg_conninfo, "breakwater-relay topics", "10", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    bw_selection *sel = bw_selection_new(&r->cfg, err, sizeof(err));
    if (PQstatus(conn) != CONNECTION_OK || sel == NULL ||
        bw_tables_plan(conn, sel, NULL, NULL, NULL, &tables, &n, err, sizeof(err)) < 0)
        bw_warn("row topics not checked at startup (they are on first use): %s",
                PQstatus(conn) != CONNECTION_OK ? PQerrorMessage(conn) : err);
    /* each takes a round trip to the broker: a startup that selects every table stays short */
    size_t checked = n < 100 ? n : 100;
    for (size_t i = 0; i < checked && stop_signals == 0; i++)
        bw_route_ensure_topic(&r->router, &tables[i].rel);
    if (n > checked)
        bw_info("row topics of %zu tables checked at startup; the other %zu on first use", checked,
                n - checked);
    bw_tables_free(&r->router, tables, n);
    bw_selection_free(sel);
    PQfinish(conn);
}

static int shutdown_relay(relay *r, int status)
{
    char err[512];
    bw_info("stopping: waiting for Kafka to acknowledge %d queued messages",
            bw_producer_outq_len(r->producer));
    /* held changes and pending signals go out now, so that the final confirmation covers them */
    if (r->router.coalescer &&
        bw_coalesce_emit_due(r->router.coalescer, INT64_MAX, bw_route_coalesced, &r->router) < 0)
        bw_error("%s", r->router.err);
    if (r->router.signals &&
        bw_signals_emit_due(r->router.signals, INT64_MAX, bw_route_signal, &r->router) < 0)
        bw_error("%s", r->router.err);
    /* flush in steps so that a second SIGTERM/SIGINT exits at once */
    int left = bw_producer_outq_len(r->producer);
    for (int64_t until = bw_mono_ms() + 30000;
         left > 0 && bw_mono_ms() < until && stop_signals < 2;)
        left = bw_producer_flush(r->producer, 100);
    bw_producer_poll(r->producer, 0);
    if (bw_pgstream_socket(r->pg) >= 0) {
        if (send_feedback(r, err, sizeof(err)) != BW_PG_OK)
            bw_warn("%s", err);
    }
    char lsn[18];
    bw_info("confirmed %s to PostgreSQL", bw_lsn_str(bw_lsntrack_confirmed(r->track), lsn));
    if (left > 0) {
        bw_error("%d messages were not acknowledged by Kafka; they were not confirmed and will be "
                 "sent again on restart",
                 left);
        status = 1;
    }
    if (bw_producer_failure(r->producer))
        status = 1;
    return status;
}

int main(int argc, char **argv, char **envp)
{
    relay r;
    bw_buf cfgerr;
    bw_config_action action;
    char err[1024] = "";
    int status = 0;
    bool waiting_logged = false;
    bw_http *http = NULL;
    char *bf_path = NULL;
    bool ever_connected = false;
    int64_t backoff = 100;

    memset(&r, 0, sizeof(r));
    if (bw_backfill_command(argc, argv))
        return bw_backfill_cli(argc, argv, envp);
    bw_buf_init(&cfgerr);
    if (bw_config_load(&r.cfg, argc, argv, envp, &action, &cfgerr) != 0) {
        fprintf(stderr, "breakwater-relay: %s\n", cfgerr.data);
        bw_buf_free(&cfgerr);
        bw_config_free(&r.cfg);
        return 2;
    }
    bw_buf_free(&cfgerr);
    if (action != BW_CONFIG_RUN) {
        if (action == BW_CONFIG_CHECK) {
            bw_buf dump;
            bw_buf_init(&dump);
            bw_config_dump(&r.cfg, &dump);
            printf("%sconfiguration OK\n", dump.data);
            bw_buf_free(&dump);
        }
        bw_config_free(&r.cfg);
        return 0;
    }
    bw_log_parse_level(r.cfg.log_level, &bw_log_min_level);
    install_signals();
    bw_metrics_init(&r.metrics);
    atomic_store(&r.metrics.start_time_us, bw_wall_us());

    char *redacted = bw_conninfo_redact(r.cfg.pg_conninfo);
    bw_info("breakwater-relay %s starting: slot \"%s\" on %s", BW_RELAY_VERSION, r.cfg.slot_name,
            redacted);
    free(redacted);

    r.track = bw_lsntrack_new(0);
    r.producer = bw_producer_new(&r.cfg, &r.metrics, r.track, err, sizeof(err));
    if (r.producer == NULL) {
        bw_error("%s", err);
        status = 2;
        goto out;
    }
    bf_path = bw_state_path(r.cfg.state_dir, r.cfg.slot_name, "backfills");
    if (r.cfg.http_listen[0] != '\0') {
        http = bw_http_start(r.cfg.http_listen, &r.metrics, r.cfg.slot_name, bf_path, err,
                             sizeof(err));
        if (http == NULL) {
            bw_error("%s", err);
            status = 2;
            goto out;
        }
    }
    bw_router_init(&r.router, &r.cfg, r.producer, r.track, &r.metrics);
    bw_merge_ops merge = bw_json_merge_ops;
    if (strcmp(r.cfg.value_format, "avro") == 0) {
        r.registry = bw_registry_new(&r.cfg, wait_serving_kafka, &r, err, sizeof(err));
        if (r.registry == NULL) {
            bw_error("%s", err);
            status = 2;
            goto out;
        }
        r.router.avro = bw_avro_new(r.registry, r.cfg.avro_namespace);
        merge = bw_avro_merge_ops(r.router.avro);
    }
    if (r.cfg.coalesce_tables != NULL && r.cfg.coalesce_tables[0] != '\0')
        r.router.coalescer = bw_coalescer_new(r.track, r.cfg.coalesce_window_ms,
                                              r.cfg.coalesce_max_held_bytes, &merge);
    if (r.cfg.decoder_streaming)
        r.router.spools = bw_spools_new(r.cfg.spool_dir);
    r.router.topics = bw_topics_new(&r.cfg, bw_producer_handle(r.producer));
    if (r.cfg.signals_enabled)
        r.router.signals =
            bw_signals_new(r.track, r.cfg.signals_interval_ms,
                           (size_t) r.cfg.signals_max_sample_keys, r.cfg.signals_storm_rate);
    r.backfills = bw_backfills_new(&r.cfg, &r.router, err, sizeof(err));
    if (r.backfills == NULL) {
        bw_error("%s", err);
        status = 2;
        goto out;
    }
    bw_backfills_attach(r.backfills, &r.router);
    r.nopts = bw_config_decoder_options(&r.cfg, r.opt_names, r.opt_values, BW_DECODER_MAX_OPTIONS);
    /* the relay's own messages (backfill requests, watermarks) come through the slot too */
    size_t mp = 0;
    while (mp < r.nopts && strcmp(r.opt_names[mp], "message-prefixes") != 0)
        mp++;
    r.message_prefixes = bw_xstrdup(BW_RESERVED_PREFIX "*");
    if (mp < r.nopts) {
        bw_buf both;
        bw_buf_init(&both);
        bw_buf_printf(&both, "%s,%s", r.opt_values[mp], r.message_prefixes);
        free(r.message_prefixes);
        r.message_prefixes = both.data;
    }
    r.opt_names[mp] = "message-prefixes";
    r.opt_values[mp] = r.message_prefixes;
    if (mp == r.nopts)
        r.nopts++;
    /* the plugin refuses at START_REPLICATION a protocol it does not speak */
    r.opt_names[r.nopts] = "protocol-version";
    r.opt_values[r.nopts++] = "1";
    r.argc = argc;
    r.argv = argv;
    r.envp = envp;
    r.pg = bw_pgstream_new();

    prepare_topics(&r);
    bw_slot_hooks hooks = {0};
    if (strcmp(r.cfg.snapshot_mode, "never") != 0) {
        r.snapshot = bw_snapshot_new(&r.cfg, &r.router, &stop_signals, err, sizeof(err));
        if (r.snapshot == NULL) {
            bw_error("%s", err);
            status = 2;
            goto stop;
        }
        hooks = (bw_slot_hooks){r.snapshot, bw_snapshot_creating, bw_snapshot_created,
                                bw_snapshot_found};
        if (strcmp(r.cfg.snapshot_mode, "initial") == 0)
            bw_snapshot_resume_as(r.snapshot, r.backfills);
    }
    if (strcmp(r.cfg.snapshot_mode, "initial-only") == 0) {
        /* no slot, no stream: the tables' rows, then exit once Kafka has them all */
        int rc = bw_snapshot_only(r.snapshot, err, sizeof(err));
        if (rc < 0)
            bw_error("%s", err);
        if (rc != 0) /* an error, or stopped before the end: not a finished load */
            status = 1;
        goto stop;
    }

    while (stop_signals == 0) {
        bw_pgstream_opts o = {
            r.cfg.pg_conninfo, r.cfg.slot_name, r.cfg.slot_create,         r.opt_names,
            r.opt_values,      r.nopts,         r.snapshot ? &hooks : NULL};
        uint64_t confirmed = 0;
        bw_pg_status st = bw_pgstream_start(r.pg, &o, &confirmed, err, sizeof(err));
        if (stop_signals != 0 && st != BW_PG_OK)
            break; /* stopped during a snapshot: it resumes on restart */
        atomic_store(&r.metrics.standby, st == BW_PG_BUSY);
        if (st == BW_PG_OK) {
            char lsn[18];
            ever_connected = true;
            waiting_logged = false;
            backoff = 100;
            atomic_store(&r.metrics.pg_connected, 1);
            /* a fresh session: relation records are sent again by the plugin */
            bw_parser_free(r.parser);
            r.parser = bw_parser_new(bw_route_relation_free, &r.router);
            bw_lsntrack_keepalive(r.track, confirmed);
            if (confirmed > r.received)
                r.received = confirmed;
            bw_info("streaming slot \"%s\" from %s", r.cfg.slot_name, bw_lsn_str(confirmed, lsn));
            st = stream(&r, err, sizeof(err));
            atomic_store(&r.metrics.pg_connected, 0);
            if (st == BW_PG_OK)
                break; /* stop requested */
        }
        const char *failure = bw_producer_failure(r.producer);
        if (failure) {
            bw_error("%s: stopping without confirming it", failure);
            status = 1;
            break;
        }
        if (st == BW_PG_FATAL || (!ever_connected && st == BW_PG_RETRY)) {
            bw_error("%s", err);
            status = st == BW_PG_FATAL && ever_connected ? 1 : 2;
            break;
        }
        if (st == BW_PG_BUSY) {
            /* a standby has reached PostgreSQL: later outages are retried, not fatal */
            ever_connected = true;
            if (!waiting_logged)
                bw_info("%s: waiting to take over (standby)", err);
            else
                bw_debug("%s: still waiting", err);
            waiting_logged = true;
        } else {
            bw_warn("%s: reconnecting in %" PRId64 " ms", err, backoff);
            atomic_fetch_add(&r.metrics.pg_reconnects, 1);
        }
        bw_router_abandon(&r.router);
        bw_backfills_reset(r.backfills);
        queue_clear(&r);
        bw_pgstream_close(r.pg);
        /* wait, serving delivery reports, until the backoff passes or a stop is asked */
        wait_serving_kafka(&r, (int) (st == BW_PG_BUSY && backoff < 1000 ? 1000 : backoff));
        if (st != BW_PG_BUSY && backoff < r.cfg.reconnect_backoff_max_ms)
            backoff = backoff * 2 > r.cfg.reconnect_backoff_max_ms ? r.cfg.reconnect_backoff_max_ms
                                                                   : backoff * 2;
    }
stop:
    status = shutdown_relay(&r, status);
    bw_signals_free(r.router.signals);
    bw_coalescer_free(r.router.coalescer);

out:
    bw_router_abandon(&r.router); /* a replay or read-ahead cut short by the stop */
    queue_clear(&r);
    bw_pgstream_free(r.pg);
    bw_parser_free(r.parser); /* before the router: it releases the router's per-relation state */
    bw_avro_free(r.router.avro);
    bw_spools_free(r.router.spools);
    bw_topics_free(r.router.topics);
    bw_registry_free(r.registry);
    bw_snapshot_free(r.snapshot); /* before the router: it releases its relations' state there */
    bw_backfills_free(r.backfills);
    free(r.message_prefixes);
    free(bf_path);
    bw_router_free(&r.router);
    if (http)
        bw_http_stop(http);
    bw_producer_free(r.producer);
    bw_lsntrack_free(r.track);
    bw_config_free(&r.cfg);
    bw_info("exit %d", status);
    return status;
}
