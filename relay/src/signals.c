/*
 * signals.c — per-(tenant, table) change signals (see signals.h). A hash of states and a heap of
 * deadlines (deadline.c): each state is in the heap exactly once, at its signal deadline while
 * changes are pending, else at the end of its quiet interval, when it is forgotten. Memory is
 * bounded by the (tenant, table) pairs active within the last interval.
 */
#include "signals.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "encode.h"

typedef struct sig_state {
    char *tenant;
    size_t tenant_len;
    uint32_t relid;
    char *schema, *table;
    bool emitted_once;
    int64_t last_emit_ms;
    bool pending;
    int64_t since_ms; /* start of the span the pending counts cover: first change or last signal */
    bw_dnode timer;   /* its signal deadline while pending, else the end of its quiet interval */
    uint64_t inserts, updates, deletes;
    char **samples;
    size_t nsamples;
    uint64_t first_lsn, last_lsn;
    int64_t last_commit_time;
    bw_txn_entry *hold;
    struct sig_state *next; /* hash chain */
} sig_state;

struct bw_signals {
    bw_lsntrack *track;
    int64_t interval_ms;
    size_t max_samples;
    int64_t storm_rate;
    sig_state **buckets;
    size_t nbuckets; /* power of two */
    size_t n;
    bw_dheap timers;
};

static size_t hash_of(const char *tenant, size_t len, uint32_t relid)
{
    size_t h = 1469598103934665603u ^ relid;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char) tenant[i]) * 1099511628211u;
    return h;
}

/* ---- states ---- */

static void clear_samples(sig_state *st)
{
    for (size_t i = 0; i < st->nsamples; i++)
        free(st->samples[i]);
    st->nsamples = 0;
}

static void state_free(sig_state *st)
{
    clear_samples(st);
    free(st->samples);
    free(st->tenant);
    free(st->schema);
    free(st->table);
    free(st);
}

static void rehash(bw_signals *s)
{
    size_t n = s->nbuckets ? s->nbuckets * 2 : 256;
    sig_state **b = bw_xcalloc(n, sizeof(*b));
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (sig_state *st = s->buckets[i], *next; st; st = next) {
            next = st->next;
            size_t h = hash_of(st->tenant, st->tenant_len, st->relid) & (n - 1);
            st->next = b[h];
            b[h] = st;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

static sig_state *lookup(bw_signals *s, const char *tenant, size_t len, const bw_relation *rel)
{
    size_t h = hash_of(tenant, len, rel->relid) & (s->nbuckets - 1);
    for (sig_state *st = s->buckets[h]; st; st = st->next)
        if (st->relid == rel->relid && st->tenant_len == len &&
            memcmp(st->tenant, tenant, len) == 0)
            return st;
    if (s->n + 1 > s->nbuckets) {
        rehash(s);
        h = hash_of(tenant, len, rel->relid) & (s->nbuckets - 1);
    }
    sig_state *st = bw_xcalloc(1, sizeof(*st));
    st->tenant = bw_xstrndup(tenant, len);
    st->tenant_len = len;
    st->relid = rel->relid;
    st->samples = bw_xcalloc(s->max_samples ? s->max_samples : 1, sizeof(char *));
    st->timer.at = SIZE_MAX;
    st->next = s->buckets[h];
    s->buckets[h] = st;
    s->n++;
    return st;
}

static void forget(bw_signals *s, sig_state *st)
{
    size_t h = hash_of(st->tenant, st->tenant_len, st->relid) & (s->nbuckets - 1);
    for (sig_state **p = &s->buckets[h]; *p; p = &(*p)->next) {
        if (*p == st) {
            *p = st->next;
            break;
        }
    }
    s->n--;
    state_free(st);
}

bw_signals *bw_signals_new(bw_lsntrack *track, int64_t interval_ms, size_t max_sample_keys,
                           int64_t storm_rate)
{
    bw_signals *s = bw_xcalloc(1, sizeof(*s));
    s->storm_rate = storm_rate;
    s->track = track;
    s->interval_ms = interval_ms;
    s->max_samples = max_sample_keys;
    rehash(s);
    return s;
}

void bw_signals_free(bw_signals *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (sig_state *st = s->buckets[i], *next; st; st = next) {
            next = st->next;
            state_free(st);
        }
    }
    free(s->buckets);
    bw_dheap_free(&s->timers);
    free(s);
}

void bw_signals_note(bw_signals *s, int64_t now_ms, const char *tenant, size_t tenant_len,
                     const bw_relation *rel, bw_record_type type, const char *key, size_t keylen,
                     const bw_xact *x, bw_txn_entry *e)
{
    sig_state *st = lookup(s, tenant, tenant_len, rel);

    /* the relation may be replaced by DDL; the signal names what it was called at the change */
    if (st->schema == NULL || strcmp(st->schema, rel->schema) || strcmp(st->table, rel->table)) {
        free(st->schema);
        free(st->table);
        st->schema = bw_xstrdup(rel->schema);
        st->table = bw_xstrdup(rel->table);
    }
    if (!st->pending) {
        st->pending = true;
        st->first_lsn = x->commit_lsn;
        st->hold = e;
        bw_lsntrack_add(e); /* released once the signal is handed to the producer */
        bool quiet = !st->emitted_once || now_ms - st->last_emit_ms >= s->interval_ms;
        st->since_ms = quiet ? now_ms : st->last_emit_ms;
        bw_dheap_set(&s->timers, &st->timer, quiet ? now_ms : st->last_emit_ms + s->interval_ms);
    }
    if (type == BW_REC_INSERT)
        st->inserts++;
    else if (type == BW_REC_UPDATE)
        st->updates++;
    else
        st->deletes++;
    st->last_lsn = x->commit_lsn;
    st->last_commit_time = x->commit_time;
    if (key != NULL && st->nsamples < s->max_samples) {
        for (size_t i = 0; i < st->nsamples; i++)
            if (strlen(st->samples[i]) == keylen && memcmp(st->samples[i], key, keylen) == 0)
                return;
        st->samples[st->nsamples++] = bw_xstrndup(key, keylen);
    }
}

int bw_signals_emit_due(bw_signals *s, int64_t now_ms, bw_signal_emit_cb emit, void *arg)
{
    int n = 0;
    bw_dnode *top;
    while ((top = bw_dheap_top(&s->timers)) != NULL && top->deadline <= now_ms) {
        sig_state *st = (sig_state *) ((char *) top - offsetof(sig_state, timer));
        if (!st->pending) {
            /* quiet for a whole interval since its last signal: forget it */
            bw_dheap_remove(&s->timers, top);
            forget(s, st);
            continue;
        }
        uint64_t changes = st->inserts + st->updates + st->deletes;
        /* the rate over the span the counts cover, at least one interval long */
        int64_t span =
            now_ms - st->since_ms < s->interval_ms ? s->interval_ms : now_ms - st->since_ms;
        bool storm = now_ms != INT64_MAX &&
                     (double) changes * 1000.0 / (double) span > (double) s->storm_rate;
        bw_signal sig = {
            st->tenant,   st->tenant_len, st->schema,   st->table,
            st->inserts,  st->updates,    st->deletes,  (const char *const *) st->samples,
            st->nsamples, st->first_lsn,  st->last_lsn, st->last_commit_time,
            storm,        st->hold};
        if (emit(arg, &sig) != 0)
            return -1;
        bw_lsntrack_delivered(s->track, st->hold); /* the signal's message holds it now */
        st->hold = NULL;
        st->pending = false;
        st->inserts = st->updates = st->deletes = 0;
        clear_samples(st);
        st->emitted_once = true;
        st->last_emit_ms = now_ms;
        /* saturating: shutdown flushes with now_ms = INT64_MAX */
        bw_dheap_set(&s->timers, &st->timer,
                     now_ms > INT64_MAX - s->interval_ms ? INT64_MAX : now_ms + s->interval_ms);
        n++;
    }
    return n;
}

int64_t bw_signals_next_due(const bw_signals *s)
{
    /* the top is the earliest deadline, a signal's or an expiry's: waking for either is cheap */
    const bw_dnode *top = bw_dheap_top(&s->timers);
    return top ? top->deadline : INT64_MAX;
}

size_t bw_signals_tracked(const bw_signals *s)
{
    return s->n;
}

void bw_signal_json(bw_buf *out, const bw_signal *sig)
{
    char a[18], b[18];

    bw_buf_puts(out, "{\"tenant\":");
    bw_buf_json_string(out, sig->tenant, sig->tenant_len);
    bw_buf_puts(out, ",\"schema\":");
    bw_buf_json_string(out, sig->schema, strlen(sig->schema));
    bw_buf_puts(out, ",\"table\":");
    bw_buf_json_string(out, sig->table, strlen(sig->table));
    bw_buf_printf(out, ",\"counts\":{\"insert\":%llu,\"update\":%llu,\"delete\":%llu}",
                  (unsigned long long) sig->inserts, (unsigned long long) sig->updates,
                  (unsigned long long) sig->deletes);
    bw_buf_puts(out, ",\"sample_keys\":[");
    for (size_t i = 0; i < sig->nsample_keys; i++) {
        if (i > 0)
            bw_buf_putc(out, ',');
        bw_buf_puts(out, sig->sample_keys[i]);
    }
    bw_buf_printf(
        out, "],\"storm\":%s,\"first_lsn\":\"%s\",\"last_lsn\":\"%s\",\"last_commit_time\":",
        sig->storm ? "true" : "false", bw_lsn_str(sig->first_lsn, a), bw_lsn_str(sig->last_lsn, b));
    /* a commit time PostgreSQL gave cannot be out of its range; null if it ever were */
    if (bw_json_commit_time(out, sig->last_commit_time) < 0)
        bw_buf_puts(out, "null");
    bw_buf_putc(out, '}');
}
