/*
 * metrics.c — the counters rendered for Prometheus (/metrics) and for the periodic "stats:" line.
 *
 * One table lists every metric: its name, type, help and how to read it from the struct, so the
 * exposition and the docs' list (docs/relay.md, "Metrics") have one source to be checked against.
 */
#include "metrics.h"

#include <inttypes.h>
#include <stdbool.h>
#include <string.h>

#include "clock.h"
#include "config.h"

#define LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)

void bw_metrics_init(bw_metrics *m)
{
    atomic_init(&m->changes_in, 0);
    atomic_init(&m->transactions_in, 0);
    atomic_init(&m->messages_produced, 0);
    atomic_init(&m->messages_delivered, 0);
    atomic_init(&m->bytes_delivered, 0);
    atomic_init(&m->delivery_errors, 0);
    atomic_init(&m->pg_reconnects, 0);
    atomic_init(&m->stream_bytes_in, 0);
    atomic_init(&m->streamed_transactions, 0);
    atomic_init(&m->spool_bytes, 0);
    atomic_init(&m->snapshot_rows, 0);
    atomic_init(&m->snapshot_rows_estimate, 0);
    atomic_init(&m->snapshot_running, 0);
    atomic_init(&m->backfill_rows, 0);
    atomic_init(&m->backfills_running, 0);
    atomic_init(&m->backfill_rows_estimate, 0);
    atomic_init(&m->kafka_queue_depth, 0);
    atomic_init(&m->inflight_bytes, 0);
    atomic_init(&m->confirmed_lsn, 0);
    atomic_init(&m->server_wal_end, 0);
    atomic_init(&m->last_commit_time_us, 0);
    atomic_init(&m->start_time_us, bw_wall_us());
    atomic_init(&m->pg_connected, 0);
    atomic_init(&m->standby, 0);
    atomic_init(&m->kafka_ok, 0);
}

/* One reading of every field, so derived values (lag) agree with the raw ones they come from. */
typedef struct snapshot {
    uint64_t changes_in, transactions_in, messages_produced, messages_delivered, bytes_delivered;
    uint64_t delivery_errors, pg_reconnects, stream_bytes_in, streamed_transactions;
    uint64_t snapshot_rows, backfill_rows;
    int64_t kafka_queue_depth, inflight_bytes, spool_bytes, snapshot_rows_estimate;
    int64_t backfills_running, backfill_rows_estimate;
    int snapshot_running;
    uint64_t confirmed_lsn, server_wal_end;
    uint64_t lag_bytes;
    double lag_seconds, uptime_seconds;
    int pg_connected, standby, kafka_ok, up;
} snapshot;

static void take(const bw_metrics *cm, snapshot *s)
{
    /* C11 atomic_load takes a non-const pointer; reading does not modify */
    bw_metrics *m = (bw_metrics *) cm;
    int64_t now = bw_wall_us();

    s->changes_in = LOAD(m->changes_in);
    s->transactions_in = LOAD(m->transactions_in);
    s->messages_produced = LOAD(m->messages_produced);
    s->messages_delivered = LOAD(m->messages_delivered);
    s->bytes_delivered = LOAD(m->bytes_delivered);
    s->delivery_errors = LOAD(m->delivery_errors);
    s->pg_reconnects = LOAD(m->pg_reconnects);
    s->stream_bytes_in = LOAD(m->stream_bytes_in);
    s->streamed_transactions = LOAD(m->streamed_transactions);
    s->spool_bytes = LOAD(m->spool_bytes);
    s->snapshot_rows = LOAD(m->snapshot_rows);
    s->snapshot_rows_estimate = LOAD(m->snapshot_rows_estimate);
    s->snapshot_running = LOAD(m->snapshot_running) ? 1 : 0;
    s->backfill_rows = LOAD(m->backfill_rows);
    s->backfills_running = LOAD(m->backfills_running);
    s->backfill_rows_estimate = LOAD(m->backfill_rows_estimate);
    s->kafka_queue_depth = LOAD(m->kafka_queue_depth);
    s->inflight_bytes = LOAD(m->inflight_bytes);
    s->confirmed_lsn = LOAD(m->confirmed_lsn);
    s->server_wal_end = LOAD(m->server_wal_end);
    s->pg_connected = LOAD(m->pg_connected) ? 1 : 0;
    s->standby = LOAD(m->standby) ? 1 : 0;
    s->kafka_ok = LOAD(m->kafka_ok) ? 1 : 0;
    s->up = (s->pg_connected || s->standby || s->snapshot_running) && s->kafka_ok;

    /* unknown (0) on either side: no lag to report rather than a meaningless one */
    s->lag_bytes = 0;
    if (s->server_wal_end != 0 && s->confirmed_lsn != 0 && s->server_wal_end > s->confirmed_lsn)
        s->lag_bytes = s->server_wal_end - s->confirmed_lsn;

    /*
     * Age of the last commit read. It is 0 before the first commit, and also once everything the
     * server has is confirmed: an idle database is not a lagging relay.
     */
    int64_t commit = LOAD(m->last_commit_time_us);
    s->lag_seconds = 0;
    bool caught_up = s->server_wal_end != 0 && s->confirmed_lsn >= s->server_wal_end;
    if (commit > 0 && now > commit && !caught_up)
        s->lag_seconds = (double) (now - commit) / 1e6;

    int64_t start = LOAD(m->start_time_us);
    s->uptime_seconds = start > 0 && now > start ? (double) (now - start) / 1e6 : 0;
}

bool bw_metrics_healthy(const bw_metrics *cm, bw_buf *reason)
{
    bw_metrics *m = (bw_metrics *) cm;
    /* a standby waiting for the slot, or a snapshot before streaming, is doing its job */
    bool pg = LOAD(m->pg_connected) != 0 || LOAD(m->standby) != 0 || LOAD(m->snapshot_running) != 0;
    bool kafka = LOAD(m->kafka_ok) != 0;

    if (reason != NULL) {
        if (!pg)
            bw_buf_puts(reason, "postgresql not connected");
        if (!kafka)
            bw_buf_printf(reason, "%skafka not ok", pg ? "" : "; ");
    }
    return pg && kafka;
}

typedef enum { U64, I64, INT, F64 } kind;

typedef struct metric {
    const char *name;
    const char *type; /* counter | gauge */
    const char *help;
    kind kind;
    size_t offset; /* into snapshot */
} metric;

#define M(name, type, kind, field, help)                                                           \
    {                                                                                              \
        name, type, help, kind, offsetof(snapshot, field)                                          \
    }

/* clang-format off */
static const metric metrics[] = {
    M("breakwater_changes_in_total", "counter", U64, changes_in,
      "Insert, update and delete records read from the slot."),
    M("breakwater_transactions_in_total", "counter", U64, transactions_in,
      "Commit records read from the slot."),
    M("breakwater_stream_bytes_in_total", "counter", U64, stream_bytes_in,
      "Bytes of XLogData payload read from PostgreSQL."),
    M("breakwater_streamed_transactions_total", "counter", U64, streamed_transactions,
      "Large transactions that arrived streamed while in progress (decoder.streaming), at their commit."),
    M("breakwater_spool_bytes", "gauge", I64, spool_bytes,
      "Bytes in the spool files of streamed transactions still in progress."),
    M("breakwater_snapshot_rows_total", "counter", U64, snapshot_rows,
      "Rows read by snapshots (op read) and handed to Kafka."),
    M("breakwater_snapshot_rows_estimate", "gauge", I64, snapshot_rows_estimate,
      "Rows the running snapshot is expected to read in all (from the planner's statistics); 0 when none runs."),
    M("breakwater_snapshot_running", "gauge", INT, snapshot_running,
      "1 while a snapshot runs (before streaming starts)."),
    M("breakwater_backfill_rows_total", "counter", U64, backfill_rows,
      "Rows backfills read and handed to Kafka (op read)."),
    M("breakwater_backfills_running", "gauge", I64, backfills_running,
      "Backfills queued or running."),
    M("breakwater_backfill_rows_estimate", "gauge", I64, backfill_rows_estimate,
      "Rows the queued and running backfills are expected to send in all (the planner's estimate)."),
    M("breakwater_messages_produced_total", "counter", U64, messages_produced,
      "Messages handed to librdkafka."),
    M("breakwater_messages_delivered_total", "counter", U64, messages_delivered,
      "Messages acknowledged by Kafka."),
    M("breakwater_bytes_delivered_total", "counter", U64, bytes_delivered,
      "Key and value bytes of the messages acknowledged by Kafka."),
    M("breakwater_delivery_errors_total", "counter", U64, delivery_errors,
      "Messages whose delivery report was an error."),
    M("breakwater_pg_reconnects_total", "counter", U64, pg_reconnects,
      "Reconnections to PostgreSQL after a lost or failed connection."),
    M("breakwater_kafka_queue_depth", "gauge", I64, kafka_queue_depth,
      "Messages and requests waiting in librdkafka (rd_kafka_outq_len)."),
    M("breakwater_inflight_bytes", "gauge", I64, inflight_bytes,
      "Bytes produced but not yet acknowledged by Kafka."),
    M("breakwater_confirmed_lsn", "gauge", U64, confirmed_lsn,
      "Last flush position confirmed to PostgreSQL, as a number (0 = none yet)."),
    M("breakwater_server_wal_end_lsn", "gauge", U64, server_wal_end,
      "Latest WAL end the server reported, as a number (0 = not known yet)."),
    M("breakwater_lag_bytes", "gauge", U64, lag_bytes,
      "Server WAL end minus the confirmed position (0 while either is unknown)."),
    M("breakwater_lag_seconds", "gauge", F64, lag_seconds,
      "Age of the last commit read (0 before the first, and when all WAL is confirmed)."),
    M("breakwater_pg_connected", "gauge", INT, pg_connected,
      "1 when streaming from PostgreSQL, else 0."),
    M("breakwater_standby", "gauge", INT, standby,
      "1 while waiting as a standby for another relay to release the slot, else 0."),
    M("breakwater_kafka_ok", "gauge", INT, kafka_ok,
      "1 when the producer has no fatal error and reaches the brokers, else 0."),
    M("breakwater_up", "gauge", INT, up,
      "1 when /healthz answers 200 (PostgreSQL connected and Kafka ok), else 0."),
    M("breakwater_uptime_seconds", "gauge", F64, uptime_seconds,
      "Seconds since the relay started."),
};
/* clang-format on */

#define NMETRICS (sizeof(metrics) / sizeof(metrics[0]))

static void put_label_value(bw_buf *out, const char *v)
{
    for (; *v != '\0'; v++) {
        if (*v == '\\' || *v == '"')
            bw_buf_putc(out, '\\');
        if (*v == '\n') {
            bw_buf_puts(out, "\\n");
            continue;
        }
        bw_buf_putc(out, *v);
    }
}

static void put_value(bw_buf *out, const metric *mt, const snapshot *s)
{
    const char *p = (const char *) s + mt->offset;
    switch (mt->kind) {
    case U64: {
        uint64_t v;
        memcpy(&v, p, sizeof(v));
        bw_buf_printf(out, "%" PRIu64, v);
        break;
    }
    case I64: {
        int64_t v;
        memcpy(&v, p, sizeof(v));
        bw_buf_printf(out, "%" PRId64, v);
        break;
    }
    case INT: {
        int v;
        memcpy(&v, p, sizeof(v));
        bw_buf_printf(out, "%d", v);
        break;
    }
    case F64: {
        double v;
        memcpy(&v, p, sizeof(v));
        bw_buf_printf(out, "%.3f", v);
        break;
    }
    }
}

void bw_metrics_render(const bw_metrics *m, const char *slot, bw_buf *out)
{
    snapshot s;

    take(m, &s);
    bw_buf_printf(out, "# HELP breakwater_build_info The relay's version; always 1.\n");
    bw_buf_printf(out, "# TYPE breakwater_build_info gauge\n");
    bw_buf_printf(out, "breakwater_build_info{slot=\"");
    put_label_value(out, slot ? slot : "");
    bw_buf_printf(out, "\",version=\"%s\"} 1\n", BW_RELAY_VERSION);
    for (size_t i = 0; i < NMETRICS; i++) {
        const metric *mt = &metrics[i];
        bw_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s{slot=\"", mt->name, mt->help, mt->name,
                      mt->type, mt->name);
        put_label_value(out, slot ? slot : "");
        bw_buf_puts(out, "\"} ");
        put_value(out, mt, &s);
        bw_buf_putc(out, '\n');
    }
}

size_t bw_metrics_names(const char *names[], size_t max)
{
    size_t n = 0;
    if (n < max)
        names[n] = "breakwater_build_info";
    n++;
    for (size_t i = 0; i < NMETRICS; i++, n++) {
        if (n < max)
            names[n] = metrics[i].name;
    }
    return n;
}

void bw_metrics_summary(const bw_metrics *m, bw_buf *out)
{
    snapshot s;

    take(m, &s);
    bw_buf_printf(out,
                  "changes=%" PRIu64 " transactions=%" PRIu64 " stream_bytes=%" PRIu64
                  " produced=%" PRIu64 " delivered=%" PRIu64 " delivered_bytes=%" PRIu64
                  " delivery_errors=%" PRIu64 " pg_reconnects=%" PRIu64 " queue=%" PRId64
                  " inflight_bytes=%" PRId64 " confirmed=%X/%X wal_end=%X/%X lag_bytes=%" PRIu64
                  " lag_seconds=%.1f pg=%s kafka=%s",
                  s.changes_in, s.transactions_in, s.stream_bytes_in, s.messages_produced,
                  s.messages_delivered, s.bytes_delivered, s.delivery_errors, s.pg_reconnects,
                  s.kafka_queue_depth, s.inflight_bytes, (unsigned) (s.confirmed_lsn >> 32),
                  (unsigned) s.confirmed_lsn, (unsigned) (s.server_wal_end >> 32),
                  (unsigned) s.server_wal_end, s.lag_bytes, s.lag_seconds,
                  s.pg_connected ? "connected" : "disconnected", s.kafka_ok ? "ok" : "failing");
}
