/*
 * coalesce.c — row coalescing (see coalesce.h). A hash of key states and a heap of window ends.
 * Held messages stay as the encoder wrote them (JSON or Avro), so values keep their exact form;
 * what merging needs to know of the format comes from bw_merge_ops.
 */
#include "coalesce.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "deadline.h"

#define MAX_HEADERS 8

typedef struct key_state {
    char *topic;
    char *key;
    size_t keylen;
    bw_dnode timer; /* the end of the key's window */
    bool held;
    bool existed;      /* did consumers have the row before the first held change? */
    bw_record_type op; /* of the held message */
    char *value;       /* the held message */
    size_t valuelen;
    char *hnames[MAX_HEADERS];
    char *hvalues[MAX_HEADERS];
    size_t hlens[MAX_HEADERS];
    size_t nheaders;
    bw_txn_entry *hold; /* the earliest merged change's entry */
    struct key_state *next;
} key_state;

struct bw_coalescer {
    bw_lsntrack *track;
    bw_merge_ops ops;
    int64_t window_ms;
    int64_t max_held;
    int64_t held_bytes;  /* held messages */
    int64_t state_bytes; /* key states (windows), held or not: a storm over many keys has many */
    key_state **buckets;
    size_t nbuckets, n;
    bw_dheap timers;
};

static size_t hash_of(const char *topic, const char *key, size_t keylen)
{
    size_t h = 1469598103934665603u;
    for (const char *p = topic; *p; p++)
        h = (h ^ (unsigned char) *p) * 1099511628211u;
    for (size_t i = 0; i < keylen; i++)
        h = (h ^ (unsigned char) key[i]) * 1099511628211u;
    return h;
}

static int64_t state_size(const key_state *k)
{
    return (int64_t) (sizeof(*k) + strlen(k->topic) + 1 + k->keylen + 1);
}

static void drop_held(bw_coalescer *c, key_state *k)
{
    if (!k->held)
        return;
    c->held_bytes -= (int64_t) k->valuelen;
    free(k->value);
    k->value = NULL;
    for (size_t i = 0; i < k->nheaders; i++) {
        free(k->hnames[i]);
        free(k->hvalues[i]);
    }
    k->nheaders = 0;
    k->held = false;
}

static void state_free(bw_coalescer *c, key_state *k)
{
    drop_held(c, k);
    free(k->topic);
    free(k->key);
    free(k);
}

static void rehash(bw_coalescer *c)
{
    size_t n = c->nbuckets ? c->nbuckets * 2 : 1024;
    key_state **b = bw_xcalloc(n, sizeof(*b));
    for (size_t i = 0; i < c->nbuckets; i++) {
        for (key_state *k = c->buckets[i], *next; k; k = next) {
            next = k->next;
            size_t h = hash_of(k->topic, k->key, k->keylen) & (n - 1);
            k->next = b[h];
            b[h] = k;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

static key_state *find(bw_coalescer *c, const char *topic, const char *key, size_t keylen)
{
    size_t h = hash_of(topic, key, keylen) & (c->nbuckets - 1);
    for (key_state *k = c->buckets[h]; k; k = k->next)
        if (k->keylen == keylen && memcmp(k->key, key, keylen) == 0 && strcmp(k->topic, topic) == 0)
            return k;
    return NULL;
}

static key_state *add(bw_coalescer *c, const char *topic, const char *key, size_t keylen)
{
    if (c->n + 1 > c->nbuckets)
        rehash(c);
    size_t h = hash_of(topic, key, keylen) & (c->nbuckets - 1);
    key_state *k = bw_xcalloc(1, sizeof(*k));
    k->topic = bw_xstrdup(topic);
    k->key = bw_xstrndup(key, keylen);
    k->keylen = keylen;
    k->timer.at = SIZE_MAX;
    k->next = c->buckets[h];
    c->buckets[h] = k;
    c->n++;
    c->state_bytes += state_size(k);
    return k;
}

static void forget(bw_coalescer *c, key_state *k)
{
    size_t h = hash_of(k->topic, k->key, k->keylen) & (c->nbuckets - 1);
    for (key_state **p = &c->buckets[h]; *p; p = &(*p)->next) {
        if (*p == k) {
            *p = k->next;
            break;
        }
    }
    if (k->timer.at != SIZE_MAX)
        bw_dheap_remove(&c->timers, &k->timer);
    c->n--;
    c->state_bytes -= state_size(k);
    state_free(c, k);
}

bw_coalescer *bw_coalescer_new(bw_lsntrack *track, int64_t window_ms, int64_t max_held_bytes,
                               const bw_merge_ops *ops)
{
    bw_coalescer *c = bw_xcalloc(1, sizeof(*c));
    c->track = track;
    c->ops = *ops;
    c->window_ms = window_ms;
    c->max_held = max_held_bytes;
    rehash(c);
    return c;
}

void bw_coalescer_free(bw_coalescer *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nbuckets; i++) {
        for (key_state *k = c->buckets[i], *next; k; k = next) {
            next = k->next;
            state_free(c, k);
        }
    }
    free(c->buckets);
    bw_dheap_free(&c->timers);
    free(c);
}

static int emit_held(bw_coalescer *c, key_state *k, bw_coalesce_emit_cb emit, void *arg)
{
    bw_header h[MAX_HEADERS];
    for (size_t i = 0; i < k->nheaders; i++)
        h[i] = (bw_header){k->hnames[i], k->hvalues[i], k->hlens[i]};
    if (emit(arg, k->topic, k->key, k->keylen, k->value, k->valuelen, h, k->nheaders, k->hold))
        return -1;
    bw_lsntrack_delivered(c->track, k->hold); /* the message holds it now */
    k->hold = NULL;
    drop_held(c, k);
    return 0;
}

static void hold(bw_coalescer *c, key_state *k, bw_record_type op, char *value, size_t valuelen,
                 const bw_header *headers, size_t nheaders, bw_txn_entry *entry)
{
    bw_txn_entry *earliest = k->held ? k->hold : entry;
    if (!k->held)
        bw_lsntrack_add(entry); /* released when the merged message is handed over */
    drop_held(c, k);
    k->held = true;
    k->op = op;
    k->value = value;
    k->valuelen = valuelen;
    k->hold = earliest;
    c->held_bytes += (int64_t) valuelen;
    for (size_t i = 0; i < nheaders && i < MAX_HEADERS; i++) {
        bool is_op = strcmp(headers[i].name, "op") == 0;
        const char *v = is_op ? bw_record_op(op) : headers[i].value;
        size_t len = is_op ? strlen(v) : headers[i].len;
        k->hnames[i] = bw_xstrdup(headers[i].name);
        k->hvalues[i] = v ? bw_xstrndup(v, len) : NULL;
        k->hlens[i] = len;
        k->nheaders++;
    }
}

/*
 * Over the memory bound: publish everything held and forget every window. Forgetting a window
 * only means the key's next change counts as calm and is published at once: nothing is lost.
 */
static int shed(bw_coalescer *c, bw_coalesce_emit_cb emit, void *arg)
{
    for (size_t i = 0; i < c->nbuckets; i++) {
        for (key_state *k = c->buckets[i], *next; k; k = next) {
            next = k->next;
            if (k->held && emit_held(c, k, emit, arg))
                return -1;
            forget(c, k);
        }
    }
    return 0;
}

int bw_coalesce_offer(bw_coalescer *c, int64_t now_ms, bw_record_type op, const char *topic,
                      const char *key, size_t keylen, const char *value, size_t valuelen,
                      const bw_header *headers, size_t nheaders, bw_txn_entry *entry,
                      bw_coalesce_emit_cb emit, void *arg)
{
    key_state *k = find(c, topic, key, keylen);

    if (k == NULL || k->timer.deadline <= now_ms) {
        /* calm, or the window already over: publish now (after anything still held), new window */
        if (k && k->held && emit_held(c, k, emit, arg))
            return -1;
        if (k == NULL) {
            if (c->held_bytes + c->state_bytes > c->max_held && shed(c, emit, arg) < 0)
                return -1;
            k = add(c, topic, key, keylen);
        }
        bw_dheap_set(&c->timers, &k->timer, now_ms + c->window_ms);
        return 0;
    }
    if (!k->held) {
        /* the first held change tells whether consumers have the row: only an insert says no */
        k->existed = op != BW_REC_INSERT;
        hold(c, k, op, bw_xstrndup(value, valuelen), valuelen, headers, nheaders, entry);
        return 1;
    }
    /*
     * Merge with the held change, last writer wins. The net effect is relative to what consumers
     * saw before the first held change: a row that existed and ends deleted is a delete, one that
     * did not and ends deleted is nothing, one that ends present is an update if it existed, else
     * an insert.
     */
    if (op == BW_REC_DELETE && !k->existed) {
        /* the row came and went inside the window: nobody needs to hear of it */
        bw_lsntrack_delivered(c->track, k->hold);
        k->hold = NULL;
        drop_held(c, k); /* a later change in the window starts a new chain */
        return 1;
    }
    bw_record_type merged = op == BW_REC_DELETE ? BW_REC_DELETE
                            : k->existed        ? BW_REC_UPDATE
                                                : BW_REC_INSERT;
    size_t len = valuelen;
    char *next = NULL;
    if (op != BW_REC_DELETE && c->ops.has_unchanged(c->ops.arg, value, valuelen)) {
        bool apart = false;
        next = c->ops.merge_unchanged(c->ops.arg, k->value, k->valuelen, value, valuelen, &len,
                                      &apart);
        if (apart) {
            /*
             * The two cannot be merged (their schemas differ): the held change goes out, so
             * consumers have the row, and this one starts a new chain as it is.
             */
            if (emit_held(c, k, emit, arg))
                return -1;
            k->existed = true;
            hold(c, k, op, bw_xstrndup(value, valuelen), valuelen, headers, nheaders, entry);
            return 1;
        }
    }
    if (next == NULL)
        next = bw_xstrndup(value, valuelen);
    char *final = c->ops.set_op(c->ops.arg, next, len, op, merged, &len);
    if (final == NULL)
        final = next;
    else
        free(next);
    hold(c, k, merged, final, len, headers, nheaders, entry);
    if (c->held_bytes + c->state_bytes > c->max_held && shed(c, emit, arg) < 0)
        return -1;
    return 1;
}

int bw_coalesce_flush_key(bw_coalescer *c, const char *topic, const char *key, size_t keylen,
                          bw_coalesce_emit_cb emit, void *arg)
{
    key_state *k = find(c, topic, key, keylen);
    if (k && k->held)
        return emit_held(c, k, emit, arg);
    return 0;
}

int bw_coalesce_emit_due(bw_coalescer *c, int64_t now_ms, bw_coalesce_emit_cb emit, void *arg)
{
    int n = 0;
    bool flush_all = c->held_bytes + c->state_bytes > c->max_held || now_ms == INT64_MAX;

    if (flush_all) {
        /* over the memory bound (or stopping): publish everything held, keep the windows */
        for (size_t i = 0; i < c->nbuckets; i++) {
            for (key_state *k = c->buckets[i]; k; k = k->next) {
                if (k->held) {
                    if (emit_held(c, k, emit, arg))
                        return -1;
                    n++;
                }
            }
        }
    }
    bw_dnode *top;
    while ((top = bw_dheap_top(&c->timers)) != NULL && top->deadline <= now_ms) {
        key_state *k = (key_state *) ((char *) top - offsetof(key_state, timer));
        if (!k->held) {
            forget(c, k); /* a whole window without change: calm again */
            continue;
        }
        if (emit_held(c, k, emit, arg))
            return -1;
        bw_dheap_set(&c->timers, &k->timer,
                     now_ms > INT64_MAX - c->window_ms ? INT64_MAX : now_ms + c->window_ms);
        n++;
    }
    return n;
}

int64_t bw_coalesce_next_due(const bw_coalescer *c)
{
    const bw_dnode *top = bw_dheap_top(&c->timers);
    return top ? top->deadline : INT64_MAX;
}

int64_t bw_coalesce_held_bytes(const bw_coalescer *c)
{
    return c->held_bytes;
}

size_t bw_coalesce_keys(const bw_coalescer *c)
{
    return c->n;
}
