/*
 * producer.h — the Kafka side: an idempotent librdkafka producer (acks=all) whose delivery
 * reports drive the LSN tracker. A message carries its transaction's tracker entry; only a
 * successful delivery report counts it as acknowledged. A permanent delivery failure or a fatal
 * producer error latches: the relay stops without confirming.
 */
#ifndef BW_PRODUCER_H
#define BW_PRODUCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "lsntrack.h"
#include "metrics.h"

typedef struct bw_producer bw_producer;

typedef struct bw_header {
    const char *name;
    const char *value; /* NULL: header present without value */
    size_t len;
} bw_header;

bw_producer *bw_producer_new(const bw_config *cfg, bw_metrics *m, bw_lsntrack *t, char *err,
                             size_t errlen);
/* A descriptor that becomes readable when librdkafka has events (delivery reports) to serve. */
int bw_producer_event_fd(const bw_producer *p);
/* Serves delivery reports and errors; drains the event descriptor. */
void bw_producer_poll(bw_producer *p, int timeout_ms);
/*
 * Hands one message to librdkafka (copied). Waits, serving delivery reports, while the local
 * queue is full. Returns 0, or -1 with err set (the message was not accepted).
 */
int bw_producer_send(bw_producer *p, const char *topic, const void *key, size_t keylen,
                     const void *value, size_t valuelen, const bw_header *headers, size_t nheaders,
                     bw_txn_entry *entry, char *err, size_t errlen);
/*
 * While Kafka is marked unreachable, asks a broker for metadata (waiting at most timeout_ms) and
 * marks it reachable again on an answer: on an idle database no delivery would tell.
 */
void bw_producer_probe(bw_producer *p, int timeout_ms);
/* Non-NULL once a delivery failed for good or the producer hit a fatal error. */
const char *bw_producer_failure(const bw_producer *p);
/* Waits up to timeout_ms for every message to be acknowledged; returns messages left. */
int bw_producer_flush(bw_producer *p, int timeout_ms);
int bw_producer_outq_len(const bw_producer *p);
/* The librdkafka handle, for admin requests (topics.c). */
rd_kafka_t *bw_producer_handle(bw_producer *p);
void bw_producer_free(bw_producer *p);

#endif
