/*
 * coalesce.h — row coalescing for event storms: per row key, last writer wins within a window.
 *
 * A key's first change in a calm period is published at once (no added delay when calm); further
 * changes to that key within the window are merged into one held message, published when the
 * window ends (then a new window starts while changes keep coming). Last writer wins, relative to
 * what consumers saw before the first held change: a row that existed and ends deleted gives a
 * delete, one that did not and ends deleted gives nothing, one that ends present gives an update
 * if it existed, else an insert (insert+update → insert, update+update → update, update+delete →
 * delete, insert+delete → nothing, delete+insert → update). A later change marking a column as
 * unchanged TOAST takes that column from the held change. Memory is bounded by max_held_bytes
 * over held messages and key windows together: at the bound everything held is published early
 * and the windows are forgotten (the keys' next changes count as calm). Nothing is dropped.
 *
 * The LSN rule holds: a held message keeps the tracker entry of its earliest change pending until
 * it is handed to the producer (whose delivery report then counts) or merged away.
 */
#ifndef BW_COALESCE_H
#define BW_COALESCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lsntrack.h"
#include "producer.h"
#include "proto.h"

typedef struct bw_coalescer bw_coalescer;

/*
 * What merging needs to know of the message format (merge_json.c for JSON, avro_encode.c for
 * Avro). Values are the encoder's bytes; every returned value is malloc'd.
 */
typedef struct bw_merge_ops {
    /* The value with its operation changed from `from` to `to`; NULL to keep it as it is. */
    char *(*set_op)(void *arg, const char *value, size_t len, bw_record_type from,
                    bw_record_type to, size_t *outlen);
    /* Does the value mark columns of its new row as unchanged TOAST? */
    bool (*has_unchanged)(void *arg, const char *value, size_t len);
    /*
     * next with its unchanged columns taken from held (which has them or marks them itself);
     * NULL to keep next as it is. Sets *apart when the two cannot be merged (then the held
     * change is published first).
     */
    char *(*merge_unchanged)(void *arg, const char *held, size_t heldlen, const char *next,
                             size_t nextlen, size_t *outlen, bool *apart);
    void *arg;
} bw_merge_ops;

/* The JSON format's (encode.h) */
extern const bw_merge_ops bw_json_merge_ops;

/* Publishes one message; returns 0, or non-zero when the producer refused it. */
typedef int (*bw_coalesce_emit_cb)(void *arg, const char *topic, const char *key, size_t keylen,
                                   const char *value, size_t valuelen, const bw_header *headers,
                                   size_t nheaders, bw_txn_entry *entry);

bw_coalescer *bw_coalescer_new(bw_lsntrack *track, int64_t window_ms, int64_t max_held_bytes,
                               const bw_merge_ops *ops);
void bw_coalescer_free(bw_coalescer *c);

/*
 * Offers a change to a coalesced table. Returns 0 when the caller must publish it now (calm: the
 * key's window starts), 1 when it was held or merged, -1 when an earlier held change for the same
 * key had to be published first and the callback failed.
 */
int bw_coalesce_offer(bw_coalescer *c, int64_t now_ms, bw_record_type op, const char *topic,
                      const char *key, size_t keylen, const char *value, size_t valuelen,
                      const bw_header *headers, size_t nheaders, bw_txn_entry *entry,
                      bw_coalesce_emit_cb emit, void *arg);

/* Publishes the held change of a key now, if any (before a change that must not be merged). */
int bw_coalesce_flush_key(bw_coalescer *c, const char *topic, const char *key, size_t keylen,
                          bw_coalesce_emit_cb emit, void *arg);

/* Publishes held changes whose window ended by now_ms (all of them when over the memory bound;
 * now_ms = INT64_MAX flushes everything). Returns how many, or -1 when the callback failed. */
int bw_coalesce_emit_due(bw_coalescer *c, int64_t now_ms, bw_coalesce_emit_cb emit, void *arg);

int64_t bw_coalesce_next_due(const bw_coalescer *c);
int64_t bw_coalesce_held_bytes(const bw_coalescer *c);
size_t bw_coalesce_keys(const bw_coalescer *c);

#endif
