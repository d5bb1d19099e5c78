/*
 * metrics.h — the relay's counters and gauges, in one struct owned by the main loop. The HTTP
 * thread only reads them; every field is a relaxed atomic so reads need no lock.
 */
#ifndef BW_METRICS_H
#define BW_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef struct bw_metrics {
    atomic_uint_fast64_t changes_in;         /* insert/update/delete records read */
    atomic_uint_fast64_t transactions_in;    /* commit records read */
    atomic_uint_fast64_t messages_produced;  /* handed to librdkafka */
    atomic_uint_fast64_t messages_delivered; /* acknowledged by Kafka */
    atomic_uint_fast64_t bytes_delivered;    /* key + value bytes acknowledged */
    atomic_uint_fast64_t delivery_errors;
    atomic_uint_fast64_t pg_reconnects;
    atomic_uint_fast64_t stream_bytes_in;       /* XLogData payload bytes */
    atomic_uint_fast64_t streamed_transactions; /* stream commits replayed */
    atomic_int_fast64_t spool_bytes;            /* in spool files of in-progress transactions */
    atomic_uint_fast64_t snapshot_rows;         /* rows a snapshot read and handed to Kafka */
    atomic_int_fast64_t snapshot_rows_estimate; /* the running snapshot's total, estimated */
    atomic_int snapshot_running;                /* 0/1 */
    atomic_uint_fast64_t backfill_rows;         /* rows backfills handed to Kafka */
    atomic_int_fast64_t backfills_running;      /* queued or running */
    atomic_int_fast64_t backfill_rows_estimate; /* their rows in all, estimated */
    atomic_int_fast64_t kafka_queue_depth;      /* rd_kafka_outq_len */
    atomic_int_fast64_t inflight_bytes;         /* produced, not yet acknowledged */
    atomic_uint_fast64_t confirmed_lsn;         /* last flush position sent to PostgreSQL */
    atomic_uint_fast64_t server_wal_end;        /* latest WAL end the server reported */
    atomic_int_fast64_t last_commit_time_us;    /* commit time of the last transaction read */
    atomic_int_fast64_t start_time_us;
    atomic_int pg_connected; /* 0/1 */
    atomic_int standby;      /* 0/1: waiting for another relay to release the slot */
    atomic_int kafka_ok;     /* 0/1: no fatal error, brokers reachable */
} bw_metrics;

void bw_metrics_init(bw_metrics *m);
/*
 * Prometheus text exposition of every field (names breakwater_*, with HELP and TYPE lines), each
 * with a slot="..." label. Derived: breakwater_lag_bytes = server_wal_end - confirmed_lsn (0 when
 * either is unknown); breakwater_lag_seconds = now - last_commit_time (0 before the first commit
 * and when everything up to the server's WAL end is confirmed); breakwater_up = pg_connected &&
 * kafka_ok, the same test as /healthz.
 */
void bw_metrics_render(const bw_metrics *m, const char *slot, bw_buf *out);
/* One-line summary for the periodic "stats:" log line. */
void bw_metrics_summary(const bw_metrics *m, bw_buf *out);
/*
 * The health test of /healthz and breakwater_up: true when PostgreSQL is connected and Kafka ok;
 * otherwise false, with the reason ("postgresql not connected", ...) appended to reason if given.
 */
bool bw_metrics_healthy(const bw_metrics *m, bw_buf *reason);
/* The names of every metric render writes, in order; returns how many (names[] filled to max). */
size_t bw_metrics_names(const char *names[], size_t max);

#endif
