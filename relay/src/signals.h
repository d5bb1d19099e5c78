/*
 * signals.h — per-tenant change signals for socket tiers: "tenant T's table X changed, refetch".
 *
 * Changes are counted per (tenant, table). A (tenant, table) gets at most one signal per
 * interval: the first change after a quiet interval is signalled at once; later ones are counted
 * and signalled when the interval since the last signal ends, so the last change of a burst is
 * always followed by a signal within one interval. A storm on one (tenant, table) costs a counter
 * update per change and never delays another's signal (each has its own deadline).
 *
 * The LSN rule holds: a (tenant, table) with changes not yet signalled keeps the tracker entry
 * of its earliest such change pending, so nothing after it is confirmed before the signal that
 * covers it is acknowledged.
 */
#ifndef BW_SIGNALS_H
#define BW_SIGNALS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "deadline.h"
#include "lsntrack.h"
#include "proto.h"

typedef struct bw_signals bw_signals;

/* What a due signal says; valid during the emit callback only. */
typedef struct bw_signal {
    const char *tenant;
    size_t tenant_len;
    const char *schema;
    const char *table;
    uint64_t inserts, updates, deletes;
    const char *const *sample_keys; /* JSON texts of up to max_sample_keys changed keys */
    size_t nsample_keys;
    uint64_t first_lsn, last_lsn; /* commit LSNs of the first and last change covered */
    int64_t last_commit_time;     /* µs since the Unix epoch */
    bool storm;         /* changes per second since the previous signal above storm_rate */
    bw_txn_entry *hold; /* entry to hand to the producer with the signal */
} bw_signal;

/* Publishes one signal; returns 0 or non-zero on failure (the signal stays pending). */
typedef int (*bw_signal_emit_cb)(void *arg, const bw_signal *sig);

/* storm_rate: changes per second of a (tenant, table) above which its signals say storm. */
bw_signals *bw_signals_new(bw_lsntrack *track, int64_t interval_ms, size_t max_sample_keys,
                           int64_t storm_rate);
void bw_signals_free(bw_signals *s);

/*
 * Counts one change of rel for tenant (len bytes) at now_ms: type is BW_REC_INSERT/UPDATE/DELETE,
 * key the change's JSON key (NULL for none), e its transaction's tracker entry.
 */
void bw_signals_note(bw_signals *s, int64_t now_ms, const char *tenant, size_t tenant_len,
                     const bw_relation *rel, bw_record_type type, const char *key, size_t keylen,
                     const bw_xact *x, bw_txn_entry *e);

/* Emits every signal due at now_ms, oldest deadline first. Returns the number emitted, or -1
 * when the callback failed (remaining signals stay pending). */
int bw_signals_emit_due(bw_signals *s, int64_t now_ms, bw_signal_emit_cb emit, void *arg);

/* The earliest deadline (a signal's, or a state's expiry), or INT64_MAX when there is none. */
int64_t bw_signals_next_due(const bw_signals *s);

/* (tenant, table) pairs with state kept (pending or within their interval), for tests/metrics. */
size_t bw_signals_tracked(const bw_signals *s);

/* The JSON value of a signal. */
void bw_signal_json(bw_buf *out, const bw_signal *sig);

#endif
