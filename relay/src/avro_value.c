/*
 * avro_value.c — PostgreSQL values into avro-c values (avro_value.h).
 *
 * Binary values are PostgreSQL's send formats (docs/protocol.md): lengths are checked before a
 * byte is read, since they come from the network. Epochs differ (PostgreSQL counts from
 * 2000-01-01, Avro from 1970-01-01); PostgreSQL's infinities keep their sentinel values
 * (INT32/INT64 minimum and maximum), which no finite date or time can take.
 */
#include "avro_value.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "encode.h"

#define UNIX_TO_PG_EPOCH_DAYS 10957
#define UNIX_TO_PG_EPOCH_USECS (INT64_C(10957) * INT64_C(86400000000))

#define NUMERIC_POS 0x0000
#define NUMERIC_NEG 0x4000
#define NUMERIC_NAN 0xC000
#define NUMERIC_PINF 0xD000
#define NUMERIC_NINF 0xF000
#define NBASE 10000

int bw_avro_decimal(bw_buf *out, const uint8_t *p, uint32_t len, int scale, char *why,
                    size_t whylen)
{
    if (len < 8 || len != 8 + 2 * (uint32_t) bw_rd16(p)) {
        snprintf(why, whylen, "malformed numeric value of %" PRIu32 " bytes", len);
        return -1;
    }
    int ndigits = bw_rd16(p), weight = (int16_t) bw_rd16(p + 2);
    uint16_t sign = bw_rd16(p + 4);
    const uint8_t *digits = p + 8;

    if (sign == NUMERIC_NAN || sign == NUMERIC_PINF || sign == NUMERIC_NINF) {
        snprintf(why, whylen, "%s has no Avro decimal form",
                 sign == NUMERIC_NAN    ? "NaN"
                 : sign == NUMERIC_PINF ? "Infinity"
                                        : "-Infinity");
        return -1;
    }
    if (sign != NUMERIC_POS && sign != NUMERIC_NEG) {
        snprintf(why, whylen, "numeric sign 0x%04x is not valid", sign);
        return -1;
    }
    for (int i = 0; i < ndigits; i++) {
        if (bw_rd16(digits + 2 * i) >= NBASE) {
            snprintf(why, whylen, "numeric digit %u is not below %d", bw_rd16(digits + 2 * i),
                     NBASE);
            return -1;
        }
    }
    /* the unscaled value's decimal digits: integer groups, then scale fraction digits */
    bw_buf dec;
    bw_buf_init(&dec);
    for (int e = weight; e >= 0; e--) {
        int i = weight - e;
        unsigned g = i < ndigits ? bw_rd16(digits + 2 * i) : 0;
        bw_buf_printf(&dec, "%04u", g);
    }
    int taken = 0;
    bool beyond = false;
    for (int f = 1; weight + f < ndigits || taken < scale; f++) {
        int i = weight + f;
        unsigned g = i >= 0 && i < ndigits ? bw_rd16(digits + 2 * i) : 0;
        char four[12];
        snprintf(four, sizeof(four), "%04u", g);
        for (int k = 0; k < 4; k++, taken++) {
            if (taken < scale)
                bw_buf_putc(&dec, four[k]);
            else if (four[k] != '0')
                beyond = true;
        }
    }
    if (beyond) {
        bw_buf_free(&dec);
        snprintf(why, whylen, "the value has digits beyond the scale of %d", scale);
        return -1;
    }
    /* decimal digits → little-endian base-256 magnitude */
    size_t cap = dec.len / 2 + 2, n = 1;
    uint8_t *mag = bw_xcalloc(cap, 1);
    for (size_t d = 0; d < dec.len; d++) {
        unsigned carry = (unsigned) (dec.data[d] - '0');
        for (size_t b = 0; b < n; b++) {
            unsigned v = mag[b] * 10u + carry;
            mag[b] = (uint8_t) v;
            carry = v >> 8;
        }
        if (carry)
            mag[n++] = (uint8_t) carry;
    }
    bw_buf_free(&dec);
    bool zero = true;
    for (size_t b = 0; b < n && zero; b++)
        zero = mag[b] == 0;
    bool neg = sign == NUMERIC_NEG && !zero;
    mag[n++] = 0; /* room for the sign bit */
    if (neg) {    /* two's complement */
        unsigned carry = 1;
        for (size_t b = 0; b < n; b++) {
            unsigned v = (uint8_t) ~mag[b] + carry;
            mag[b] = (uint8_t) v;
            carry = v >> 8;
        }
    }
    /* shortest form: drop leading bytes that only repeat the sign */
    uint8_t fill = neg ? 0xff : 0x00;
    while (n > 1 && mag[n - 1] == fill && ((mag[n - 2] & 0x80) != 0) == neg)
        n--;
    bw_buf_reset(out);
    bw_buf_reserve(out, n);
    for (size_t b = n; b-- > 0;)
        out->data[out->len++] = (char) mag[b];
    free(mag);
    return 0;
}

static int fail(char *err, size_t errlen, const bw_relation *rel, const bw_column *col,
                const char *what)
{
    snprintf(err, errlen, "column \"%s\" of table \"%s.%s\": %s", col->name, rel->schema,
             rel->table, what);
    return -1;
}

static int want(char *err, size_t errlen, const bw_relation *rel, const bw_column *col,
                uint32_t len, uint32_t n)
{
    if (len == n)
        return 0;
    char what[96];
    snprintf(what, sizeof(what),
             "value of %" PRIu32 " bytes for type oid %" PRIu32 ", expected %" PRIu32, len,
             col->type_oid, n);
    return fail(err, errlen, rel, col, what);
}

/* avro-c copies strings up to a terminating NUL it must find: give it one. */
static int set_string(avro_value_t *v, bw_buf *scratch, const void *data, size_t len)
{
    bw_buf_reset(scratch);
    bw_buf_append(scratch, data, len);
    return avro_value_set_string_len(v, scratch->data, len + 1);
}

int bw_avro_set(avro_value_t *v, const bw_avro_col *ac, const bw_relation *rel,
                const bw_column *col, const bw_value *val, bw_buf *scratch, char *err,
                size_t errlen)
{
    const uint8_t *p = val->data;
    uint32_t len = val->len;
    int rc;

    if (val->kind == 't')
        return set_string(v, scratch, p, len) == 0 ? 0
                                                   : fail(err, errlen, rel, col, avro_strerror());
    if (val->kind != 'b')
        return fail(err, errlen, rel, col, "value is neither binary nor text");
    switch (ac->kind) {
    case BW_AV_BOOLEAN:
        if (want(err, errlen, rel, col, len, 1) < 0)
            return -1;
        rc = avro_value_set_boolean(v, p[0] != 0);
        break;
    case BW_AV_INT2:
        if (want(err, errlen, rel, col, len, 2) < 0)
            return -1;
        rc = avro_value_set_int(v, (int16_t) bw_rd16(p));
        break;
    case BW_AV_INT4:
        if (want(err, errlen, rel, col, len, 4) < 0)
            return -1;
        rc = avro_value_set_int(v, (int32_t) bw_rd32(p));
        break;
    case BW_AV_INT8:
        if (want(err, errlen, rel, col, len, 8) < 0)
            return -1;
        rc = avro_value_set_long(v, (int64_t) bw_rd64(p));
        break;
    case BW_AV_OID:
        if (want(err, errlen, rel, col, len, 4) < 0)
            return -1;
        rc = avro_value_set_long(v, bw_rd32(p));
        break;
    case BW_AV_FLOAT4: {
        if (want(err, errlen, rel, col, len, 4) < 0)
            return -1;
        uint32_t bits = bw_rd32(p);
        float f;
        memcpy(&f, &bits, sizeof(f));
        rc = avro_value_set_float(v, f);
        break;
    }
    case BW_AV_FLOAT8: {
        if (want(err, errlen, rel, col, len, 8) < 0)
            return -1;
        uint64_t bits = bw_rd64(p);
        double d;
        memcpy(&d, &bits, sizeof(d));
        rc = avro_value_set_double(v, d);
        break;
    }
    case BW_AV_DATE: {
        if (want(err, errlen, rel, col, len, 4) < 0)
            return -1;
        int32_t d = (int32_t) bw_rd32(p);
        if (d != INT32_MIN && d != INT32_MAX) { /* not -infinity / infinity */
            if (d > INT32_MAX - UNIX_TO_PG_EPOCH_DAYS)
                return fail(err, errlen, rel, col, "date beyond Avro's int range");
            d += UNIX_TO_PG_EPOCH_DAYS;
        }
        rc = avro_value_set_int(v, d);
        break;
    }
    case BW_AV_TIME:
        if (want(err, errlen, rel, col, len, 8) < 0)
            return -1;
        rc = avro_value_set_long(v, (int64_t) bw_rd64(p));
        break;
    case BW_AV_TIMESTAMP:
    case BW_AV_TIMESTAMPTZ: {
        if (want(err, errlen, rel, col, len, 8) < 0)
            return -1;
        int64_t ts = (int64_t) bw_rd64(p);
        if (ts != INT64_MIN && ts != INT64_MAX) {
            if (ts > INT64_MAX - UNIX_TO_PG_EPOCH_USECS - 1)
                return fail(err, errlen, rel, col,
                            "timestamp beyond Avro's range (microseconds since 1970 in a long)");
            ts += UNIX_TO_PG_EPOCH_USECS;
        }
        rc = avro_value_set_long(v, ts);
        break;
    }
    case BW_AV_DECIMAL: {
        char why[128];
        if (bw_avro_decimal(scratch, p, len, ac->scale, why, sizeof(why)) < 0) {
            char what[256];
            snprintf(what, sizeof(what),
                     "%s (numeric(%d,%d) is an Avro decimal; a column that must hold NaN "
                     "can be declared numeric without precision, sent as a string)",
                     why, ac->precision, ac->scale);
            return fail(err, errlen, rel, col, what);
        }
        rc = avro_value_set_bytes(v, scratch->data, scratch->len);
        break;
    }
    case BW_AV_UUID: {
        static const char hex[] = "0123456789abcdef";
        if (want(err, errlen, rel, col, len, 16) < 0)
            return -1;
        char s[37], *w = s;
        for (int i = 0; i < 16; i++) {
            if (i == 4 || i == 6 || i == 8 || i == 10)
                *w++ = '-';
            *w++ = hex[p[i] >> 4];
            *w++ = hex[p[i] & 15];
        }
        *w = '\0';
        rc = avro_value_set_string_len(v, s, sizeof(s));
        break;
    }
    case BW_AV_BYTES:
        rc = avro_value_set_bytes(v, (void *) p, len);
        break;
    case BW_AV_RENDERED:
    case BW_AV_TEXT: {
        /* the JSON format's rendering, a JSON string without escapes for these types */
        bw_buf_reset(scratch);
        if (bw_json_value(scratch, col, val, err, errlen) < 0)
            return -1;
        const char *s = scratch->data;
        size_t n = scratch->len;
        if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
            scratch->data[n - 1] = '\0';
            rc = avro_value_set_string_len(v, s + 1, n - 1);
        } else
            rc = avro_value_set_string_len(v, s, n + 1);
        break;
    }
    default:
        return fail(err, errlen, rel, col, "no Avro encoding planned");
    }
    return rc == 0 ? 0 : fail(err, errlen, rel, col, avro_strerror());
}
