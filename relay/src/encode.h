/*
 * encode.h — a change as a Kafka message in JSON: the key and the value.
 *
 * The value has the same shape and the same value rendering as the decoder's own JSON format
 * (docs/decoder.md): op, schema, table, tenant, xid, commit_lsn, commit_time, key, keyless, old,
 * new, unchanged_toast; integers as numbers, numeric as an exact string, floats in shortest
 * round-trip form (NaN/Infinity as strings), timestamps ISO 8601 in UTC, bytea as hex, json/jsonb
 * embedded, everything in 't' format as a string.
 */
#ifndef BW_ENCODE_H
#define BW_ENCODE_H

#include "buf.h"
#include "proto.h"

/*
 * Appends the JSON form of one value of column col. kind 'n' gives null; kind 'u' must not be
 * passed. Returns 0, or -1 with a message in err naming the column and type when the bytes are
 * malformed for the type or the type oid has no 'b' decoding (a type we cannot encode).
 */
int bw_json_value(bw_buf *out, const bw_column *col, const bw_value *v, char *err, size_t errlen);

/*
 * The Kafka key: {"col":value,...} over the key columns, from the old key/row when the change has
 * one, else from the new row. Returns 1 (out untouched) for a change without key (no key columns,
 * or a keyless delete), 0 on success, -1 on error (err set).
 */
int bw_json_key(bw_buf *out, const bw_change *c, char *err, size_t errlen);

/*
 * A commit time (microseconds since the Unix epoch) as a JSON string, rendered as every
 * commit_time is (the decoder's form: UTC, trailing zeros of the fraction left out). Returns -1
 * when it is outside PostgreSQL's range (out untouched then).
 */
int bw_json_commit_time(bw_buf *out, int64_t unix_us);

/* The Kafka value of an insert, update or delete. Returns 0 or -1 (err set). */
int bw_json_change(bw_buf *out, bw_record_type type, const bw_xact *x, const bw_change *c,
                   char *err, size_t errlen);

#endif
