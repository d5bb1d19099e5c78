/*
 * avro_encode.h — changes as Avro messages in the Confluent wire format (a zero byte, the schema
 * id as 4 bytes big-endian, the Avro binary body), with schemas registered under the topic's
 * subjects (TopicNameStrategy: <topic>-key, <topic>-value). docs/avro.md describes the result.
 */
#ifndef BW_AVRO_ENCODE_H
#define BW_AVRO_ENCODE_H

#include "buf.h"
#include "coalesce.h"
#include "proto.h"
#include "registry.h"

typedef struct bw_avro bw_avro;
typedef struct bw_avro_rel bw_avro_rel; /* one relation record's schemas, values and ids */

/* The encoder; reg stays the caller's. ns is avro.namespace. */
bw_avro *bw_avro_new(bw_registry *reg, const char *ns);
void bw_avro_free(bw_avro *a);

/* Plans a relation's schemas (no registry call yet). NULL with err set when a type cannot be. */
bw_avro_rel *bw_avro_rel_new(bw_avro *a, const bw_relation *rel, char *err, size_t errlen);
void bw_avro_rel_free(bw_avro_rel *ar);

/*
 * Makes the relation's key and value schemas known under topic's subjects (registry calls on
 * first use of a topic and after each relation change). Returns 0, or -1 with err naming the
 * table, the subject, what changed (columns added, dropped or retyped against the subject's
 * latest version) and the registry's message.
 */
int bw_avro_use_topic(bw_avro *a, bw_avro_rel *ar, const bw_relation *rel, const char *topic,
                      char *err, size_t errlen);

/* The Kafka key (the Key record), or 1 when the change has no key. -1 on error (err set). */
int bw_avro_key(bw_avro *a, bw_avro_rel *ar, bw_buf *out, const bw_change *c, char *err,
                size_t errlen);
/* The Kafka value of an insert, update or delete (the Envelope). 0 or -1 (err set). */
int bw_avro_change(bw_avro *a, bw_avro_rel *ar, bw_buf *out, bw_record_type type, const bw_xact *x,
                   const bw_change *c, char *err, size_t errlen);
/* The Kafka value of a truncate of the relation. 0 or -1 (err set). */
int bw_avro_truncate(bw_avro *a, bw_avro_rel *ar, bw_buf *out, const bw_xact *x, uint8_t options,
                     char *err, size_t errlen);

/* The coalescer's view of these messages. */
bw_merge_ops bw_avro_merge_ops(bw_avro *a);

#endif
