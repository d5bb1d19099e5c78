/*
 * avro_schema.h — the Avro schemas of a relation (docs/avro.md): the Kafka key (a record of the
 * key columns) and the Kafka value (an envelope around a record of all emitted columns), as
 * canonical JSON text for the schema registry, plus how each column's values are encoded.
 *
 * Decided once per relation record, never per change: the text depends only on the relation
 * (names, type oids, typmods, value formats) and the namespace.
 */
#ifndef BW_AVRO_SCHEMA_H
#define BW_AVRO_SCHEMA_H

#include "buf.h"
#include "proto.h"

/* How a column's values become Avro: the Avro type is fixed by the kind (see docs/avro.md). */
typedef enum bw_avro_kind {
    BW_AV_BOOLEAN,     /* bool → boolean */
    BW_AV_INT2,        /* int2 → int */
    BW_AV_INT4,        /* int4 → int */
    BW_AV_INT8,        /* int8 → long */
    BW_AV_OID,         /* oid → long */
    BW_AV_FLOAT4,      /* float4 → float */
    BW_AV_FLOAT8,      /* float8 → double */
    BW_AV_DATE,        /* date → int (date) */
    BW_AV_TIME,        /* time → long (time-micros) */
    BW_AV_TIMESTAMP,   /* timestamp → long (local-timestamp-micros) */
    BW_AV_TIMESTAMPTZ, /* timestamptz → long (timestamp-micros) */
    BW_AV_DECIMAL,     /* numeric(p,s) → bytes (decimal) */
    BW_AV_UUID,        /* uuid → string (uuid) */
    BW_AV_BYTES,       /* bytea → bytes */
    BW_AV_RENDERED,    /* a binary value rendered as the JSON format renders it, as a string */
    BW_AV_TEXT,        /* a text-format value, as it is */
} bw_avro_kind;

typedef struct bw_avro_col {
    bw_avro_kind kind;
    int precision, scale; /* BW_AV_DECIMAL */
} bw_avro_col;

/*
 * The envelope's fields, in this order: the op first (the coalescer renames it in place), then
 * unchanged_toast (so that a reader sees at once whether a message has unchanged columns).
 */
enum {
    BW_AVF_OP,
    BW_AVF_UNCHANGED_TOAST,
    BW_AVF_XID,
    BW_AVF_COMMIT_LSN,
    BW_AVF_COMMIT_TIME,
    BW_AVF_TENANT,
    BW_AVF_OLD,
    BW_AVF_NEW,
    BW_AVF_TRUNCATE,
    BW_AVF_KEY, /* only when the relation has key columns */
};

typedef struct bw_avro_plan {
    bw_avro_col *cols;  /* one per column of the relation */
    char *key_schema;   /* NULL when the relation has no key columns */
    char *value_schema; /* the envelope */
    char *fullname;     /* "<namespace>.<schema>.<table>" after name mapping: for messages */
} bw_avro_plan;

/*
 * Builds the plan of rel under namespace ns (a dotted Avro namespace, checked by the config).
 * Returns 0, or -1 with err naming the column when a binary-format type has no mapping.
 */
int bw_avro_plan_build(bw_avro_plan *p, const bw_relation *rel, const char *ns, char *err,
                       size_t errlen);
void bw_avro_plan_free(bw_avro_plan *p);

/*
 * The Avro name of a PostgreSQL identifier, reversibly: a name that is already a legal Avro name
 * ([A-Za-z_][A-Za-z0-9_]*) and has no "__" stays as it is; any other becomes "__" followed by the
 * name with each byte outside [A-Za-z0-9] written as "_" and two lower-case hex digits.
 */
void bw_avro_name(bw_buf *out, const char *name);
/* The inverse of bw_avro_name (for tests and tools). Returns -1 when s is not a mapped name. */
int bw_avro_name_decode(bw_buf *out, const char *s);

#endif
