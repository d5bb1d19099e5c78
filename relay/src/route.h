/*
 * route.h — what a record becomes in Kafka: its topic (from topic.template), key, value and
 * headers. Holds the per-stream state a record needs: the current transaction and its tracker
 * entry.
 */
#ifndef BW_ROUTE_H
#define BW_ROUTE_H

#include "avro_encode.h"
#include "buf.h"
#include "coalesce.h"
#include "config.h"
#include "lsntrack.h"
#include "metrics.h"
#include "producer.h"
#include "proto.h"
#include "signals.h"
#include "spool.h"
#include "topics.h"

/*
 * What backfills (backfill.c) need to see of the stream; NULL members are skipped. Messages whose
 * prefix starts with "breakwater." are the relay's own: handed to control, never published.
 */
typedef struct bw_route_hooks {
    void *arg;
    /*
     * e: the message's tracker entry (its transaction's, or its own); confirmed: the position
     * whose confirmation means e is acknowledged (its transaction's end, or the message's).
     */
    int (*control)(void *arg, const bw_message *m, bw_txn_entry *e, uint64_t confirmed, char *err,
                   size_t errlen);
    void (*seen)(void *arg, const bw_change *c); /* a streamed change, once routed */
    void (*truncated)(void *arg, uint32_t relid);
    void (*committed)(void *arg, uint32_t xid);
} bw_route_hooks;

#define BW_RESERVED_PREFIX "breakwater."

typedef struct bw_router {
    const bw_config *cfg;
    bw_producer *producer;
    bw_lsntrack *track;
    bw_metrics *metrics;
    bw_signals *signals;     /* NULL when signals.enabled is false */
    bw_coalescer *coalescer; /* NULL when coalesce.tables is empty */
    bw_avro *avro;           /* NULL unless value.format is avro */
    bw_topics *topics;       /* creates and checks topics on their first use; NULL: none */
    bw_spools *spools;       /* streamed transactions; NULL when decoder.streaming is off */
    bw_replay *job;          /* a streamed transaction being sent, a step per loop turn */
    bw_route_hooks hooks;
    /*
     * Read ahead while a replay runs (bw_route_peek): the tracker entries of transactions read
     * but not routed yet, in stream order, taken when they are routed; and the state of the
     * reading side.
     */
    bw_txn_entry **early;
    size_t early_head, early_len, early_cap;
    bool peeked;   /* routing records whose signals were noted when they were read */
    bool in_block; /* reading inside a stream block */
    bw_xact peek_xact;
    bw_txn_entry *peek_entry;
    bw_buf peek_key;
    bw_xact xact;        /* the transaction being read */
    bw_txn_entry *entry; /* its tracker entry; NULL outside a transaction */
    bw_buf topic, key, value;
    bw_buf json_key;      /* a signal's sample key is JSON whatever the row format */
    bw_buf keyless_topic; /* topic.keyless, expanded (send_keyless_elsewhere) */
    char err[1024];       /* why bw_route_record failed */
} bw_router;

void bw_router_init(bw_router *r, const bw_config *cfg, bw_producer *p, bw_lsntrack *t,
                    bw_metrics *m);
void bw_router_free(bw_router *r);
/* bw_route_record's failure: distinct from the parser's -1 for a malformed chunk */
#define BW_ROUTE_FAILED 2

/* bw_record_cb: publishes what the record becomes. BW_ROUTE_FAILED on error (r->err says why). */
int bw_route_record(void *router, const bw_record *rec);
/*
 * A row a snapshot read (op "read"): same topic, key, headers and encoding as a streamed insert
 * of it; never coalesced, no tenant signal. x gives its position (the snapshot's) and entry the
 * tracker entry its messages ride on. BW_ROUTE_FAILED on error (r->err says why).
 */
int bw_route_read(bw_router *r, const bw_change *c, const bw_xact *x, bw_txn_entry *entry);

/* bw_coalesce_emit_cb: publishes a coalesced row change. */
int bw_route_coalesced(void *router, const char *topic, const char *key, size_t keylen,
                       const char *value, size_t valuelen, const bw_header *headers,
                       size_t nheaders, bw_txn_entry *entry);

/* bw_signal_emit_cb: publishes a tenant signal to signals.topic, keyed by tenant. */
int bw_route_signal(void *router, const bw_signal *sig);

/*
 * Sends the next part of the streamed transaction being replayed, if any. Returns 1 while more
 * remains, 0 when nothing does, BW_ROUTE_FAILED on error (r->err says why).
 */
int bw_route_step(bw_router *r);

/*
 * bw_record_cb for records read while a replay runs, before they are routed (in order, later,
 * with bw_route_record): their tenant signals are noted at once, so that one tenant's large
 * transaction does not delay another tenant's signals, and their tracker entries are made now,
 * so that confirmation keeps stream order.
 */
int bw_route_peek(void *router, const bw_record *rec);

/* The row topic of rel (without a tenant) made sure of now: created, or checked (topics.h). */
void bw_route_ensure_topic(bw_router *r, const bw_relation *rel);

/* bw_relation_free_cb: releases what the router kept in rel->user. */
void bw_route_relation_free(void *router, bw_relation *rel);

/* The stream broke mid-transaction: its entry must never confirm anything. */
void bw_router_abandon(bw_router *r);

/* Expands topic.template for a relation and tenant (NULL: none) into out, sanitised for Kafka. */
void bw_topic_name(bw_buf *out, const char *tmpl, const char *prefix, const bw_relation *rel,
                   const char *tenant, size_t tenant_len);

#endif
