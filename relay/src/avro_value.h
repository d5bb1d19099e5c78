/*
 * avro_value.h — one PostgreSQL value (as the binary protocol carries it) into an avro-c value
 * of the type its column's plan chose (avro_schema.h).
 */
#ifndef BW_AVRO_VALUE_H
#define BW_AVRO_VALUE_H

#include <avro.h>

#include "avro_schema.h"
#include "buf.h"
#include "proto.h"

/*
 * Sets v (of the column's non-null Avro type) from val (kind 'b' or 't'). scratch is working
 * space. Returns 0, or -1 with err naming the column, the table and what cannot be encoded (a
 * value outside Avro's range, a numeric NaN for a decimal, malformed bytes).
 */
int bw_avro_set(avro_value_t *v, const bw_avro_col *ac, const bw_relation *rel,
                const bw_column *col, const bw_value *val, bw_buf *scratch, char *err,
                size_t errlen);

/*
 * numeric's send format as the two's-complement big-endian unscaled integer of an Avro decimal
 * with the given scale, into out. Returns 0, or -1 with why set (NaN, infinities, digits beyond
 * the scale, malformed input).
 */
int bw_avro_decimal(bw_buf *out, const uint8_t *p, uint32_t len, int scale, char *why,
                    size_t whylen);

#endif
