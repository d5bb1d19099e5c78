/*
 * test_encode.c — encode.c against byte vectors built by hand from docs/protocol.md, with the
 * renderings the decoder's JSON gives for the same values (decoder/expected/types.out, and
 * PostgreSQL's own numeric_out, float8out, EncodeDateTime, EncodeInterval).
 */
#include "unit.h"

#include "encode.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- helpers -------------------------------------------------------------------------------- */

static char col_name[] = "c";

typedef struct rendered {
    int rc;
    char json[8192];
    char err[512];
} rendered;

/*
 * One value of type oid rendered by bw_json_value. The bytes are copied to a heap block of exactly
 * their length, so that AddressSanitizer catches any read past the end. The output buffer starts
 * with a marker, to check that the value is appended and that a failure takes back what it wrote.
 */
static rendered render(const char *file, int line, uint32_t oid, char kind, const void *data,
                       size_t len)
{
    rendered r;
    bw_buf out;
    bw_buf_init(&out);
    bw_buf_puts(&out, "<");
    uint8_t *copy = malloc(len > 0 ? len : 1);
    memcpy(copy, data, len);
    bw_column col = {0, kind == 't' ? 't' : 'b', col_name, oid, -1};
    bw_value v = {kind, len > 0 ? copy : NULL, (uint32_t) len};

    r.err[0] = '\0';
    r.rc = bw_json_value(&out, &col, &v, r.err, sizeof(r.err));
    if (out.data[0] != '<')
        unit_fail(file, line, "bw_json_value overwrote what the buffer held");
    if (r.rc < 0 && out.len != 1)
        unit_fail(file, line, "failed bw_json_value left \"%s\" in the buffer", out.data + 1);
    snprintf(r.json, sizeof(r.json), "%s", out.data + 1);
    free(copy);
    bw_buf_free(&out);
    return r;
}

static void expect_json(const char *file, int line, uint32_t oid, char kind, const void *data,
                        size_t len, const char *expected)
{
    rendered r = render(file, line, oid, kind, data, len);
    if (r.rc != 0)
        unit_fail(file, line, "type %u: expected %s, got error: %s", oid, expected, r.err);
    if (strcmp(r.json, expected) != 0)
        unit_fail_str(file, line, "rendered value", r.json, expected);
}

/* Expects an error whose message names the column and contains needle. */
static void expect_error(const char *file, int line, uint32_t oid, char kind, const void *data,
                         size_t len, const char *needle)
{
    rendered r = render(file, line, oid, kind, data, len);
    if (r.rc != -1)
        unit_fail(file, line, "type %u: expected an error with \"%s\", got %d: %s", oid, needle,
                  r.rc, r.json);
    if (strstr(r.err, "column \"c\"") == NULL || strstr(r.err, needle) == NULL)
        unit_fail(file, line, "error \"%s\" lacks column \"c\" or \"%s\"", r.err, needle);
}

#define EXPECT_B(oid, expected, ...)                                                               \
    do {                                                                                           \
        static const uint8_t bytes_[] = {__VA_ARGS__};                                             \
        expect_json(__FILE__, __LINE__, oid, 'b', bytes_, sizeof(bytes_), expected);               \
    } while (0)
#define EXPECT_B_ERR(oid, needle, ...)                                                             \
    do {                                                                                           \
        static const uint8_t bytes_[] = {__VA_ARGS__};                                             \
        expect_error(__FILE__, __LINE__, oid, 'b', bytes_, sizeof(bytes_), needle);                \
    } while (0)
#define EXPECT_T(oid, text, expected)                                                              \
    expect_json(__FILE__, __LINE__, oid, 't', text, sizeof(text) - 1, expected)

static size_t be(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t) (v >> (8 * (n - 1 - i)));
    return (size_t) n;
}

/* An integer-like value of n bytes, big-endian. */
static void expect_int(const char *file, int line, uint32_t oid, uint64_t v, int n,
                       const char *expected)
{
    uint8_t b[8];
    expect_json(file, line, oid, 'b', b, be(b, v, n), expected);
}
#define EXPECT_I16(oid, v, expected)                                                               \
    expect_int(__FILE__, __LINE__, oid, (uint16_t) (v), 2, expected)
#define EXPECT_I32(oid, v, expected)                                                               \
    expect_int(__FILE__, __LINE__, oid, (uint32_t) (v), 4, expected)
#define EXPECT_I64(oid, v, expected)                                                               \
    expect_int(__FILE__, __LINE__, oid, (uint64_t) (v), 8, expected)

static void expect_f8(const char *file, int line, double v, const char *expected)
{
    uint64_t bits;
    memcpy(&bits, &v, 8);
    expect_int(file, line, BW_OID_FLOAT8, bits, 8, expected);
}
static void expect_f4(const char *file, int line, float v, const char *expected)
{
    uint32_t bits;
    memcpy(&bits, &v, 4);
    expect_int(file, line, BW_OID_FLOAT4, bits, 4, expected);
}
#define EXPECT_F8(v, expected) expect_f8(__FILE__, __LINE__, v, expected)
#define EXPECT_F4(v, expected) expect_f4(__FILE__, __LINE__, v, expected)
#define EXPECT_F8_BITS(bits, expected)                                                             \
    expect_int(__FILE__, __LINE__, BW_OID_FLOAT8, bits, 8, expected)
#define EXPECT_F4_BITS(bits, expected)                                                             \
    expect_int(__FILE__, __LINE__, BW_OID_FLOAT4, bits, 4, expected)

/* numeric's send format: ndigits, weight, sign, dscale, then the base-10000 digits */
static size_t numeric_bytes(uint8_t *p, int16_t weight, uint16_t sign, uint16_t dscale, int ndigits,
                            const int *digits)
{
    size_t n = be(p, (uint16_t) ndigits, 2);
    n += be(p + n, (uint16_t) weight, 2);
    n += be(p + n, sign, 2);
    n += be(p + n, dscale, 2);
    for (int i = 0; i < ndigits; i++)
        n += be(p + n, (uint16_t) digits[i], 2);
    return n;
}
#define NUMERIC(weight, sign, dscale, ...)                                                         \
    do {                                                                                           \
        static const int digits_[] = {__VA_ARGS__};                                                \
        nlen = numeric_bytes(nbuf, weight, sign, dscale,                                           \
                             (int) (sizeof(digits_) / sizeof(int)) - 1, digits_ + 1);              \
    } while (0)
/* numeric is a JSON string: expected is given without the quotes. Digits are given after a
 * leading dummy 0, so that an empty list needs no special case. */
#define EXPECT_NUMERIC(expected, weight, sign, dscale, ...)                                        \
    do {                                                                                           \
        NUMERIC(weight, sign, dscale, 0, ##__VA_ARGS__);                                           \
        expect_json(__FILE__, __LINE__, BW_OID_NUMERIC, 'b', nbuf, nlen, "\"" expected "\"");      \
    } while (0)

#define POS 0x0000
#define NEG 0x4000

static void expect_timetz(const char *file, int line, int64_t t, int32_t zone, const char *expected)
{
    uint8_t b[12];
    be(b, (uint64_t) t, 8);
    be(b + 8, (uint32_t) zone, 4);
    expect_json(file, line, BW_OID_TIMETZ, 'b', b, sizeof(b), expected);
}
#define EXPECT_TIMETZ(t, zone, expected) expect_timetz(__FILE__, __LINE__, t, zone, expected)

static void expect_interval(const char *file, int line, int64_t us, int32_t days, int32_t months,
                            const char *expected)
{
    uint8_t b[16];
    be(b, (uint64_t) us, 8);
    be(b + 8, (uint32_t) days, 4);
    be(b + 12, (uint32_t) months, 4);
    expect_json(file, line, BW_OID_INTERVAL, 'b', b, sizeof(b), expected);
}
#define EXPECT_INTERVAL(us, days, months, expected)                                                \
    expect_interval(__FILE__, __LINE__, us, days, months, expected)

#define USEC INT64_C(1000000)
#define HMS(h, m, s) (((int64_t) (h) *3600 + (m) *60 + (s)) * USEC)
#define DAY (INT64_C(86400) * USEC)

/* ---- fixed-width scalars -------------------------------------------------------------------- */

TEST(encode_bool)
{
    EXPECT_B(BW_OID_BOOL, "true", 1);
    EXPECT_B(BW_OID_BOOL, "false", 0);
    EXPECT_B_ERR(BW_OID_BOOL, "bool value 2, expected 0 or 1", 2);
}

TEST(encode_integers)
{
    EXPECT_I16(BW_OID_INT2, 0, "0");
    EXPECT_I16(BW_OID_INT2, -32768, "-32768");
    EXPECT_I16(BW_OID_INT2, 32767, "32767");
    EXPECT_I16(BW_OID_INT2, -1, "-1");
    EXPECT_I32(BW_OID_INT4, INT32_MIN, "-2147483648");
    EXPECT_I32(BW_OID_INT4, INT32_MAX, "2147483647");
    EXPECT_I32(BW_OID_INT4, 42, "42");
    EXPECT_I64(BW_OID_INT8, INT64_MIN, "-9223372036854775808");
    EXPECT_I64(BW_OID_INT8, INT64_MAX, "9223372036854775807");
    EXPECT_I64(BW_OID_INT8, 0, "0");
    EXPECT_I32(BW_OID_OID, 0, "0");
    EXPECT_I32(BW_OID_OID, UINT32_MAX, "4294967295");
    /* big-endian, byte by byte */
    EXPECT_B(BW_OID_INT4, "16909060", 0x01, 0x02, 0x03, 0x04);
    EXPECT_B(BW_OID_INT2, "-2", 0xff, 0xfe);
}

/* Every fixed-width type refuses every other length, reading nothing past the value. */
TEST(encode_fixed_width_lengths)
{
    static const struct {
        uint32_t oid;
        size_t len;
    } types[] = {
        {BW_OID_BOOL, 1},      {BW_OID_INT2, 2},    {BW_OID_INT4, 4},      {BW_OID_INT8, 8},
        {BW_OID_OID, 4},       {BW_OID_FLOAT4, 4},  {BW_OID_FLOAT8, 8},    {BW_OID_DATE, 4},
        {BW_OID_TIME, 8},      {BW_OID_TIMETZ, 12}, {BW_OID_TIMESTAMP, 8}, {BW_OID_TIMESTAMPTZ, 8},
        {BW_OID_INTERVAL, 16}, {BW_OID_UUID, 16},
    };
    uint8_t zeros[32] = {0};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        for (size_t len = 0; len <= types[i].len + 1; len++) {
            if (len == types[i].len)
                continue;
            char needle[64];
            snprintf(needle, sizeof(needle), "value of %zu bytes, expected %zu", len, types[i].len);
            expect_error(__FILE__, __LINE__, types[i].oid, 'b', zeros, len, needle);
        }
        /* the right length of zeros is a valid value of each */
        rendered r = render(__FILE__, __LINE__, types[i].oid, 'b', zeros, types[i].len);
        ASSERT_EQ(r.rc, 0);
    }
    expect_error(__FILE__, __LINE__, BW_OID_INT4, 'b', zeros, 3, "int4 value of 3 bytes");
    expect_error(__FILE__, __LINE__, BW_OID_TIMESTAMPTZ, 'b', zeros, 4,
                 "timestamptz value of 4 bytes");
}

/* ---- floats --------------------------------------------------------------------------------- */

TEST(encode_float8_shortest)
{
    EXPECT_F8(0.1, "0.1");
    EXPECT_F8(1.5, "1.5");
    EXPECT_F8(-1.5, "-1.5");
    EXPECT_F8(1e300, "1e+300");
    EXPECT_F8(0.0, "0");
    EXPECT_F8(-0.0, "-0");
    EXPECT_F8(1.0, "1");
    EXPECT_F8(100, "100");
    EXPECT_F8(0.3, "0.3");
    EXPECT_F8(0.1 + 0.2, "0.30000000000000004");
    EXPECT_F8(1.0 / 3, "0.3333333333333333");
    EXPECT_F8(2.0 / 3, "0.6666666666666666");
    EXPECT_F8(123.456, "123.456");
    EXPECT_F8(M_PI, "3.141592653589793");
    /* fixed point for decimal exponents -4..14, scientific outside */
    EXPECT_F8(0.0001, "0.0001");
    EXPECT_F8(0.00012345, "0.00012345");
    EXPECT_F8(0.00001, "1e-05");
    EXPECT_F8(1.5e-5, "1.5e-05");
    EXPECT_F8(123456789012345, "123456789012345");
    EXPECT_F8(100000000000000, "100000000000000");
    EXPECT_F8(1e15, "1e+15");
    EXPECT_F8(1234567890123456, "1.234567890123456e+15");
    EXPECT_F8(1e16, "1e+16");
    EXPECT_F8(-2.5e-100, "-2.5e-100");
    EXPECT_F8(9007199254740992.0, "9.007199254740992e+15");
    EXPECT_F8(9223372036854775808.0, "9.223372036854776e+18");
    /* the extremes */
    EXPECT_F8(DBL_MAX, "1.7976931348623157e+308");
    EXPECT_F8(-DBL_MAX, "-1.7976931348623157e+308");
    EXPECT_F8(DBL_MIN, "2.2250738585072014e-308");
    EXPECT_F8(DBL_EPSILON, "2.220446049250313e-16");
}

TEST(encode_float8_subnormal)
{
    EXPECT_F8_BITS(UINT64_C(0x0000000000000001), "5e-324"); /* the smallest */
    EXPECT_F8_BITS(UINT64_C(0x8000000000000001), "-5e-324");
    EXPECT_F8_BITS(UINT64_C(0x0000000000000002), "1e-323");
    EXPECT_F8_BITS(UINT64_C(0x000fffffffffffff), "2.225073858507201e-308"); /* the largest */
    EXPECT_F8_BITS(UINT64_C(0x0008000000000000), "1.1125369292536007e-308");
}

/*
 * PostgreSQL's Ryu never prints a decimal that lies exactly halfway to the neighbouring double,
 * though it would read back (round half to even): 3.602879701896398e+16 is such a midpoint.
 */
TEST(encode_float8_no_midpoints)
{
    EXPECT_F8_BITS(UINT64_C(0x4360000000000002), "3.6028797018963984e+16");
    EXPECT_F4_BITS(0x4c84277a, "6.9286864e+07");
    EXPECT_F4_BITS(0x4cab1e24, "8.9714976e+07");
}

TEST(encode_float8_special)
{
    EXPECT_F8(NAN, "\"NaN\"");
    EXPECT_F8(-NAN, "\"NaN\"");
    EXPECT_F8_BITS(UINT64_C(0x7ff0000000000123), "\"NaN\""); /* a payload */
    EXPECT_F8(INFINITY, "\"Infinity\"");
    EXPECT_F8(-INFINITY, "\"-Infinity\"");
    /* big-endian on the wire: 1.5 is 3f f8 00 .. */
    EXPECT_B(BW_OID_FLOAT8, "1.5", 0x3f, 0xf8, 0, 0, 0, 0, 0, 0);
}

TEST(encode_float4_shortest)
{
    EXPECT_F4(1.1f, "1.1");
    EXPECT_F4(0.1f, "0.1");
    EXPECT_F4(-0.0f, "-0");
    EXPECT_F4(0.0f, "0");
    EXPECT_F4(3.4e38f, "3.4e+38");
    EXPECT_F4(FLT_MAX, "3.4028235e+38");
    EXPECT_F4(FLT_MIN, "1.1754944e-38");
    EXPECT_F4(100000.0f, "100000");
    EXPECT_F4(1000000.0f, "1e+06");
    EXPECT_F4(123456.0f, "123456");
    EXPECT_F4(1234567.0f, "1.234567e+06");
    EXPECT_F4(16777216.0f, "1.6777216e+07");
    EXPECT_F4(0.0001f, "0.0001");
    EXPECT_F4(0.00001f, "1e-05");
    EXPECT_F4(1.0f / 3, "0.33333334");
    EXPECT_F4_BITS(0x00000001, "1e-45"); /* subnormals */
    EXPECT_F4_BITS(0x007fffff, "1.1754942e-38");
    EXPECT_F4(NAN, "\"NaN\"");
    EXPECT_F4(INFINITY, "\"Infinity\"");
    EXPECT_F4(-INFINITY, "\"-Infinity\"");
    EXPECT_B(BW_OID_FLOAT4, "1.5", 0x3f, 0xc0, 0, 0);
}

/* ---- numeric -------------------------------------------------------------------------------- */

TEST(encode_numeric)
{
    uint8_t nbuf[64];
    size_t nlen;

    EXPECT_NUMERIC("0", 0, POS, 0);
    EXPECT_NUMERIC("0.00", 0, POS, 2);
    EXPECT_NUMERIC("0", 0, NEG, 0); /* -0 is 0 */
    EXPECT_NUMERIC("1.50", 0, POS, 2, 1, 5000);
    EXPECT_NUMERIC("-1.50", 0, NEG, 2, 1, 5000);
    EXPECT_NUMERIC("1", 0, POS, 0, 1);
    EXPECT_NUMERIC("9999", 0, POS, 0, 9999);
    EXPECT_NUMERIC("10000", 1, POS, 0, 1);
    EXPECT_NUMERIC("10000.0001", 1, POS, 4, 1, 0, 1);
    EXPECT_NUMERIC("-12345.678900", 1, NEG, 6, 1, 2345, 6789);
    EXPECT_NUMERIC("0.0001", -1, POS, 4, 1);
    EXPECT_NUMERIC("0.00010", -1, POS, 5, 1);
    EXPECT_NUMERIC("0.000000000000000000001", -6, POS, 21, 1000);
    EXPECT_NUMERIC("123456789012345678901234567890.123456789", 7, POS, 9, 12, 3456, 7890, 1234,
                   5678, 9012, 3456, 7890, 1234, 5678, 9000);
    /* the bytes numeric_send gives for 1.50 */
    EXPECT_B(BW_OID_NUMERIC, "\"1.50\"", 0, 2, 0, 0, 0, 0, 0, 2, 0, 1, 0x13, 0x88);
}

TEST(encode_numeric_special)
{
    uint8_t nbuf[64];
    size_t nlen;

    EXPECT_NUMERIC("NaN", 0, 0xC000, 0);
    EXPECT_NUMERIC("Infinity", 0, 0xD000, 32); /* numeric_send gives dscale 32 */
    EXPECT_NUMERIC("-Infinity", 0, 0xF000, 32);
}

TEST(encode_numeric_dscale)
{
    uint8_t nbuf[64];
    size_t nlen;

    /* zeros after the last digit group come from dscale */
    EXPECT_NUMERIC("2.500000", 0, POS, 6, 2, 5000);
    EXPECT_NUMERIC("7.0", 0, POS, 1, 7);
    /* digits beyond dscale are cut (numeric_recv truncates), and a value cut to zero loses its
     * sign */
    EXPECT_NUMERIC("1.23", 0, POS, 2, 1, 2345);
    EXPECT_NUMERIC("0.00", -1, NEG, 2, 10);
    EXPECT_NUMERIC("-0.01", -1, NEG, 2, 100);
    /* leading zero groups print nothing */
    EXPECT_NUMERIC("5", 1, POS, 0, 0, 5);
    EXPECT_NUMERIC("-5.5", 2, NEG, 1, 0, 0, 5, 5000);
}

TEST(encode_numeric_big_weights)
{
    uint8_t nbuf[64];
    size_t nlen;

    /* 1e100: one digit group of weight 25 */
    char expected[128];
    int k = snprintf(expected, sizeof(expected), "\"1");
    for (int i = 0; i < 100; i++)
        expected[k++] = '0';
    snprintf(expected + k, sizeof(expected) - (size_t) k, "\"");
    NUMERIC(25, POS, 0, 0, 1);
    expect_json(__FILE__, __LINE__, BW_OID_NUMERIC, 'b', nbuf, nlen, expected);

    /* the extremes of weight and dscale: output of 131072 digits, fraction of 16383 */
    NUMERIC(32767, NEG, 16383, 0, 1);
    bw_buf out;
    bw_buf_init(&out);
    char err[256];
    bw_column col = {0, 'b', col_name, BW_OID_NUMERIC, -1};
    bw_value v = {'b', nbuf, (uint32_t) nlen};
    ASSERT_OK(bw_json_value(&out, &col, &v, err, sizeof(err)));
    ASSERT_EQ(out.len, 1 + 1 + 1 + 32767 * 4 + 1 + 16383 + 1);
    ASSERT_MEM_EQ(out.data, "\"-1000", 6);
    ASSERT_MEM_EQ(out.data + out.len - 3, "00\"", 3);
    ASSERT_EQ(out.data[1 + 1 + 1 + 32767 * 4], '.');

    /* a digit far below dscale: all cut, no sign */
    bw_buf_reset(&out);
    NUMERIC(-32768, NEG, 3, 0, 1);
    v.len = (uint32_t) nlen;
    ASSERT_OK(bw_json_value(&out, &col, &v, err, sizeof(err)));
    ASSERT_STR_EQ(out.data, "\"0.000\"");
    bw_buf_free(&out);
}

TEST(encode_numeric_malformed)
{
    uint8_t nbuf[64];
    size_t nlen;

    EXPECT_B_ERR(BW_OID_NUMERIC, "numeric value of 7 bytes, expected at least 8", 0, 0, 0, 0, 0, 0,
                 0);
    expect_error(__FILE__, __LINE__, BW_OID_NUMERIC, 'b', "", 0, "numeric value of 0 bytes");
    /* ndigits says 2, one digit follows: never read the second */
    EXPECT_B_ERR(BW_OID_NUMERIC, "numeric value with 2 digits of 10 bytes, expected 12", 0, 2, 0, 0,
                 0, 0, 0, 0, 0, 1);
    /* and no trailing garbage either */
    EXPECT_B_ERR(BW_OID_NUMERIC, "with 0 digits of 9 bytes, expected 8", 0, 0, 0, 0, 0, 0, 0, 0, 0);
    EXPECT_B_ERR(BW_OID_NUMERIC, "numeric sign 0x1234", 0, 0, 0, 0, 0x12, 0x34, 0, 0);
    EXPECT_B_ERR(BW_OID_NUMERIC, "numeric sign 0x8000", 0, 0, 0, 0, 0x80, 0, 0, 0);
    EXPECT_B_ERR(BW_OID_NUMERIC, "numeric digit 10000 (#1) is not below 10000", 0, 2, 0, 0, 0, 0, 0,
                 0, 0, 1, 0x27, 0x10);
    EXPECT_B_ERR(BW_OID_NUMERIC, "numeric display scale 16384 is out of range", 0, 0, 0, 0, 0, 0,
                 0x40, 0);
    NUMERIC(0, POS, 0, 0, 65535);
    expect_error(__FILE__, __LINE__, BW_OID_NUMERIC, 'b', nbuf, nlen, "numeric digit 65535");
}

/* ---- dates and times ------------------------------------------------------------------------ */

TEST(encode_date)
{
    EXPECT_I32(BW_OID_DATE, 0, "\"2000-01-01\"");
    EXPECT_I32(BW_OID_DATE, -1, "\"1999-12-31\"");
    EXPECT_I32(BW_OID_DATE, 59, "\"2000-02-29\"");
    EXPECT_I32(BW_OID_DATE, 8825, "\"2024-02-29\"");
    EXPECT_I32(BW_OID_DATE, -10957, "\"1970-01-01\"");
    EXPECT_I32(BW_OID_DATE, -36466, "\"1900-02-28\""); /* 1900 is no leap year */
    EXPECT_I32(BW_OID_DATE, -36465, "\"1900-03-01\"");
    EXPECT_I32(BW_OID_DATE, INT32_MIN, "\"-infinity\"");
    EXPECT_I32(BW_OID_DATE, INT32_MAX, "\"infinity\"");
    /* around year 1: 1 BC (year 0) is a leap year */
    EXPECT_I32(BW_OID_DATE, -730119, "\"0001-01-01\"");
    EXPECT_I32(BW_OID_DATE, -730120, "\"0001-12-31 BC\"");
    EXPECT_I32(BW_OID_DATE, -730485, "\"0001-01-01 BC\"");
    EXPECT_I32(BW_OID_DATE, -730486, "\"0002-12-31 BC\"");
    /* PostgreSQL's range: Julian day 0 to 5874897-12-31 */
    EXPECT_I32(BW_OID_DATE, -2451545, "\"4714-11-24 BC\"");
    EXPECT_I32(BW_OID_DATE, 2145031948, "\"5874897-12-31\"");
    EXPECT_B_ERR(BW_OID_DATE, "date -2451546 (days from 2000-01-01) is out of range", 0xff, 0xda,
                 0x97, 0xa6);
    EXPECT_B_ERR(BW_OID_DATE, "date 2145031949", 0x7f, 0xda, 0x97, 0x0d);
}

TEST(encode_time)
{
    EXPECT_I64(BW_OID_TIME, 0, "\"00:00:00\"");
    EXPECT_I64(BW_OID_TIME, HMS(13, 14, 15) + 123456, "\"13:14:15.123456\"");
    EXPECT_I64(BW_OID_TIME, HMS(13, 14, 15) + 500000, "\"13:14:15.5\"");
    EXPECT_I64(BW_OID_TIME, HMS(13, 14, 15) + 50000, "\"13:14:15.05\"");
    EXPECT_I64(BW_OID_TIME, HMS(0, 0, 0) + 1, "\"00:00:00.000001\"");
    EXPECT_I64(BW_OID_TIME, HMS(23, 59, 59) + 999999, "\"23:59:59.999999\"");
    EXPECT_I64(BW_OID_TIME, DAY, "\"24:00:00\""); /* PostgreSQL allows 24:00:00 */
    EXPECT_B_ERR(BW_OID_TIME, "time of -1 microseconds is out of range", 0xff, 0xff, 0xff, 0xff,
                 0xff, 0xff, 0xff, 0xff);
    EXPECT_B_ERR(BW_OID_TIME, "time of 86400000001 microseconds", 0, 0, 0, 0x14, 0x1d, 0xd7, 0x60,
                 0x01);
}

TEST(encode_timetz)
{
    /* the zone is in seconds west of UTC; ISO 8601 writes east */
    EXPECT_TIMETZ(HMS(13, 14, 15), -19800, "\"13:14:15+05:30\"");
    EXPECT_TIMETZ(HMS(13, 14, 15), 19800, "\"13:14:15-05:30\"");
    EXPECT_TIMETZ(0, 0, "\"00:00:00+00:00\"");
    EXPECT_TIMETZ(HMS(12, 0, 0) + 100000, -3600, "\"12:00:00.1+01:00\"");
    EXPECT_TIMETZ(DAY, 57599, "\"24:00:00-15:59:59\"");
    EXPECT_TIMETZ(HMS(12, 0, 0), -57599, "\"12:00:00+15:59:59\"");
    EXPECT_TIMETZ(HMS(12, 0, 0), 30, "\"12:00:00-00:00:30\"");
    /* the bytes timetz_send gives for 13:14:15+05:30 */
    EXPECT_B(BW_OID_TIMETZ, "\"13:14:15+05:30\"", 0, 0, 0, 0x0b, 0x18, 0x75, 0x97, 0xc0, 0xff, 0xff,
             0xb2, 0xa8);
    EXPECT_B_ERR(BW_OID_TIMETZ, "timetz zone of 57600 seconds is out of range", 0, 0, 0, 0, 0, 0, 0,
                 0, 0, 0, 0xe1, 0x00);
    EXPECT_B_ERR(BW_OID_TIMETZ, "timetz zone of -57600", 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0x1f,
                 0x00);
    EXPECT_B_ERR(BW_OID_TIMETZ, "timetz of -1 microseconds", 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                 0xff, 0xff, 0, 0, 0, 0);
}

TEST(encode_timestamp)
{
    EXPECT_I64(BW_OID_TIMESTAMP, 0, "\"2000-01-01T00:00:00\"");
    EXPECT_I64(BW_OID_TIMESTAMP, 1, "\"2000-01-01T00:00:00.000001\"");
    EXPECT_I64(BW_OID_TIMESTAMP, -1, "\"1999-12-31T23:59:59.999999\"");
    EXPECT_I64(BW_OID_TIMESTAMP, -10957 * DAY, "\"1970-01-01T00:00:00\"");
    EXPECT_I64(BW_OID_TIMESTAMP, -10957 * DAY - 1, "\"1969-12-31T23:59:59.999999\"");
    EXPECT_I64(BW_OID_TIMESTAMP, INT64_C(762527655500000), "\"2024-02-29T13:14:15.5\"");
    EXPECT_I64(BW_OID_TIMESTAMP, INT64_MIN, "\"-infinity\"");
    EXPECT_I64(BW_OID_TIMESTAMP, INT64_MAX, "\"infinity\"");
    /* BC, and the ends of PostgreSQL's range */
    EXPECT_I64(BW_OID_TIMESTAMP, -730120 * DAY, "\"0001-12-31T00:00:00 BC\"");
    EXPECT_I64(BW_OID_TIMESTAMP, -730485 * DAY, "\"0001-01-01T00:00:00 BC\"");
    EXPECT_I64(BW_OID_TIMESTAMP, -730485 * DAY - 1, "\"0002-12-31T23:59:59.999999 BC\"");
    EXPECT_I64(BW_OID_TIMESTAMP, INT64_C(-211813488000000000), "\"4714-11-24T00:00:00 BC\"");
    EXPECT_I64(BW_OID_TIMESTAMP, INT64_C(9223371331200000000) - 1,
               "\"294276-12-31T23:59:59.999999\"");
    EXPECT_B_ERR(BW_OID_TIMESTAMP,
                 "timestamp of -211813488000000001 microseconds from 2000-01-01 is out of range",
                 0xfd, 0x0f, 0x7c, 0xc1, 0x41, 0x1f, 0x9f, 0xff);
    EXPECT_B_ERR(BW_OID_TIMESTAMP, "timestamp of 9223371331200000000 microseconds", 0x7f, 0xff,
                 0xff, 0x5b, 0xb3, 0xb2, 0xa0, 0x00);
    EXPECT_B_ERR(BW_OID_TIMESTAMP, "timestamp of 9223372036854775806 microseconds", 0x7f, 0xff,
                 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe);
}

TEST(encode_timestamptz)
{
    EXPECT_I64(BW_OID_TIMESTAMPTZ, INT64_C(762507855500000), "\"2024-02-29T07:44:15.5+00:00\"");
    EXPECT_I64(BW_OID_TIMESTAMPTZ, 0, "\"2000-01-01T00:00:00+00:00\"");
    EXPECT_I64(BW_OID_TIMESTAMPTZ, -10957 * DAY, "\"1970-01-01T00:00:00+00:00\"");
    EXPECT_I64(BW_OID_TIMESTAMPTZ, INT64_MIN, "\"-infinity\"");
    EXPECT_I64(BW_OID_TIMESTAMPTZ, INT64_MAX, "\"infinity\"");
    EXPECT_I64(BW_OID_TIMESTAMPTZ, INT64_C(9223371331200000000) - 1,
               "\"294276-12-31T23:59:59.999999+00:00\"");
    /* the bytes timestamptz_send gives for 0001-01-01 00:00:00+00 BC */
    EXPECT_B(BW_OID_TIMESTAMPTZ, "\"0001-01-01T00:00:00+00:00 BC\"", 0xff, 0x1f, 0xc6, 0x3d, 0x1b,
             0xb1, 0x20, 0x00);
    EXPECT_B_ERR(BW_OID_TIMESTAMPTZ, "timestamptz of", 0x80, 0, 0, 0, 0, 0, 0, 1);
}

TEST(encode_interval)
{
    EXPECT_INTERVAL(HMS(4, 5, 6) + 700000, 3, 14, "\"P1Y2M3DT4H5M6.7S\"");
    /* every part keeps its own sign */
    EXPECT_INTERVAL(-(HMS(4, 5, 6) + 700000), 3, -14, "\"P-1Y-2M3DT-4H-5M-6.7S\"");
    EXPECT_INTERVAL(0, 0, 0, "\"PT0S\"");
    EXPECT_INTERVAL(1, 0, 0, "\"PT0.000001S\"");
    EXPECT_INTERVAL(-1, 0, 0, "\"PT-0.000001S\"");
    EXPECT_INTERVAL(-500000, 0, 0, "\"PT-0.5S\"");
    EXPECT_INTERVAL(-HMS(0, 0, 1) - 500000, 0, 0, "\"PT-1.5S\"");
    EXPECT_INTERVAL(HMS(0, 1, 0), 0, 0, "\"PT1M\"");
    EXPECT_INTERVAL(HMS(0, 0, 59) + 999999, 0, 0, "\"PT59.999999S\"");
    EXPECT_INTERVAL(HMS(25, 0, 0), 0, 0, "\"PT25H\""); /* time never folds into days */
    EXPECT_INTERVAL(-HMS(0, 0, 1), 1, 0, "\"P1DT-1S\"");
    EXPECT_INTERVAL(0, 0, 13, "\"P1Y1M\"");
    EXPECT_INTERVAL(0, 0, -13, "\"P-1Y-1M\"");
    EXPECT_INTERVAL(0, 0, 12, "\"P1Y\"");
    EXPECT_INTERVAL(0, 45, 0, "\"P45D\""); /* nor days into months */
    /* the extremes of each field */
    EXPECT_INTERVAL(INT64_MIN, INT32_MIN, INT32_MIN,
                    "\"P-178956970Y-8M-2147483648DT-2562047788H-54.775808S\"");
    EXPECT_INTERVAL(INT64_MAX, INT32_MAX, INT32_MAX,
                    "\"P178956970Y7M2147483647DT2562047788H54.775807S\"");
    /* the bytes interval_send gives for '1 year 2 months 3 days 04:05:06.7' */
    EXPECT_B(BW_OID_INTERVAL, "\"P1Y2M3DT4H5M6.7S\"", 0, 0, 0, 0x03, 0x6c, 0x96, 0x6e, 0xe0, 0, 0,
             0, 3, 0, 0, 0, 0x0e);
}

/* ---- uuid, bytea ---------------------------------------------------------------------------- */

TEST(encode_uuid)
{
    EXPECT_B(BW_OID_UUID, "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"", 0xa0, 0xee, 0xbc, 0x99, 0x9c,
             0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11);
    EXPECT_B(BW_OID_UUID, "\"00000000-0000-0000-0000-000000000000\"", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
             0, 0, 0, 0, 0, 0);
    EXPECT_B(BW_OID_UUID, "\"ffffffff-ffff-ffff-ffff-ffffffffffff\"", 0xff, 0xff, 0xff, 0xff, 0xff,
             0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    EXPECT_B_ERR(BW_OID_UUID, "uuid value of 15 bytes, expected 16", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                 0, 0, 0, 0, 0);
}

TEST(encode_bytea)
{
    EXPECT_B(BW_OID_BYTEA, "\"deadbeef00\"", 0xde, 0xad, 0xbe, 0xef, 0x00);
    EXPECT_B(BW_OID_BYTEA, "\"000fa0ff\"", 0x00, 0x0f, 0xa0, 0xff);
    expect_json(__FILE__, __LINE__, BW_OID_BYTEA, 'b', "", 0, "\"\"");

    /* a large one: two hex digits a byte, nothing else */
    size_t n = 100000;
    uint8_t *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t) i;
    bw_buf out;
    bw_buf_init(&out);
    char err[128];
    bw_column col = {0, 'b', col_name, BW_OID_BYTEA, -1};
    bw_value v = {'b', data, (uint32_t) n};
    ASSERT_OK(bw_json_value(&out, &col, &v, err, sizeof(err)));
    ASSERT_EQ(out.len, 2 * n + 2);
    ASSERT_MEM_EQ(out.data, "\"000102", 7);
    ASSERT_MEM_EQ(out.data + 2 * 254 + 1, "feff00", 6);
    ASSERT_MEM_EQ(out.data + out.len - 5, "9e9f\"", 5);
    ASSERT_EQ(out.data[out.len], '\0');
    bw_buf_free(&out);
    free(data);
}

/* ---- text values, kinds, errors ------------------------------------------------------------- */

TEST(encode_text_values)
{
    EXPECT_T(BW_OID_TEXT, "plain", "\"plain\"");
    EXPECT_T(BW_OID_TEXT, "", "\"\"");
    EXPECT_T(BW_OID_VARCHAR, "quote \" backslash \\ newline \n tab \t cr \r",
             "\"quote \\\" backslash \\\\ newline \\n tab \\t cr \\r\"");
    /* the decoder's escapes: \b and \f short, other controls as \u00XX, DEL and UTF-8 as is */
    EXPECT_T(BW_OID_TEXT, "bs \b ff \f bell \x07 esc \x1b us \x1f del \x7f",
             "\"bs \\b ff \\f bell \\u0007 esc \\u001b us \\u001f del \x7f\"");
    EXPECT_T(BW_OID_TEXT, "unicode é 😀 日本", "\"unicode é 😀 日本\"");
    EXPECT_T(BW_OID_TEXT, "nul \0 inside", "\"nul \\u0000 inside\"");
    EXPECT_T(BW_OID_BPCHAR, "ab ", "\"ab \"");
    EXPECT_T(BW_OID_NAME, "nm", "\"nm\"");
    /* any type in text format is a string: an array, an enum, even an int4 */
    EXPECT_T(BW_OID_INT4, "42", "\"42\"");
    EXPECT_T(1007, "{1,NULL,3}", "\"{1,NULL,3}\"");
    EXPECT_T(1185, "{\"2024-01-01 00:00:00+00\"}", "\"{\\\"2024-01-01 00:00:00+00\\\"}\"");
}

TEST(encode_json_embedded)
{
    EXPECT_T(BW_OID_JSON, "{\"k\": [1, 2.50, \"x\"], \"n\": null}",
             "{\"k\": [1, 2.50, \"x\"], \"n\": null}");
    EXPECT_T(BW_OID_JSONB, "{\"k\": [1, 2.50, \"x\"], \"n\": null}",
             "{\"k\": [1, 2.50, \"x\"], \"n\": null}");
    EXPECT_T(BW_OID_JSON, "42", "42");
    EXPECT_T(BW_OID_JSONB, "\"s\"", "\"s\"");
    expect_error(__FILE__, __LINE__, BW_OID_JSON, 't', "", 0, "empty json value");
}

TEST(encode_null_and_kinds)
{
    expect_json(__FILE__, __LINE__, BW_OID_INT4, 'n', "", 0, "null");
    expect_json(__FILE__, __LINE__, 16472, 'n', "", 0, "null");
    expect_error(__FILE__, __LINE__, BW_OID_TEXT, 'u', "", 0, "unchanged TOAST value");
    expect_error(__FILE__, __LINE__, BW_OID_TEXT, 'x', "", 0, "value kind 0x78");
}

TEST(encode_unsupported_binary_type)
{
    /* value-encoding=send: a type outside the protocol's table, say text or a domain */
    rendered r = render(__FILE__, __LINE__, 16472, 'b', "\x00\x00\x00\x07", 4);
    ASSERT_EQ(r.rc, -1);
    ASSERT_STR_CONTAINS(r.err, "column \"c\"");
    ASSERT_STR_CONTAINS(r.err, "type oid 16472");
    ASSERT_STR_CONTAINS(r.err, "value-encoding=auto");
    r = render(__FILE__, __LINE__, BW_OID_TEXT, 'b', "abc", 3);
    ASSERT_EQ(r.rc, -1);
    ASSERT_STR_CONTAINS(r.err, "type oid 25");
    r = render(__FILE__, __LINE__, BW_OID_JSONB, 'b', "\x01{}", 3);
    ASSERT_EQ(r.rc, -1);
    ASSERT_STR_CONTAINS(r.err, "type oid 3802");
}

TEST(encode_value_appends)
{
    bw_buf out;
    bw_buf_init(&out);
    char err[64];
    uint8_t one[4] = {0, 0, 0, 1};
    bw_column col = {0, 'b', col_name, BW_OID_INT4, -1};
    bw_value v = {'b', one, 4};
    ASSERT_OK(bw_json_value(&out, &col, &v, err, sizeof(err)));
    bw_buf_putc(&out, ',');
    ASSERT_OK(bw_json_value(&out, &col, &v, err, sizeof(err)));
    ASSERT_STR_EQ(out.data, "1,1");
    bw_buf_free(&out);
}

TEST(encode_error_buffer)
{
    bw_buf out;
    bw_buf_init(&out);
    uint8_t three[3] = {0};
    bw_column col = {0, 'b', col_name, BW_OID_INT4, -1};
    bw_value v = {'b', three, 3};
    /* no error buffer at all, or a tiny one: still -1, still terminated */
    ASSERT_EQ(bw_json_value(&out, &col, &v, NULL, 0), -1);
    char tiny[8];
    memset(tiny, 'x', sizeof(tiny));
    ASSERT_EQ(bw_json_value(&out, &col, &v, tiny, sizeof(tiny)), -1);
    ASSERT_STR_EQ(tiny, "column ");
    ASSERT_EQ(out.len, 0);
    bw_buf_free(&out);
}

/* ---- keys and changes ----------------------------------------------------------------------- */

/* public.orders (a text, id int4 key, tenant_id text tenant, price numeric, big text, doc jsonb,
 * code text key): key columns not contiguous, in relation order */
static bw_column order_cols[] = {
    {0, 't', "a", BW_OID_TEXT, -1},
    {BW_COL_KEY, 'b', "id", BW_OID_INT4, -1},
    {BW_COL_TENANT, 't', "tenant_id", BW_OID_TEXT, -1},
    {0, 'b', "price", BW_OID_NUMERIC, 7},
    {0, 't', "big", BW_OID_TEXT, -1},
    {0, 't', "doc", BW_OID_JSONB, -1},
    {BW_COL_KEY, 't', "code", BW_OID_TEXT, -1},
};
static uint16_t order_keys[] = {1, 6};
static bw_relation orders = {
    .relid = 16384,
    .generation = 1,
    .schema = "public",
    .table = "orders",
    .replident = 'd',
    .tenant_column = "tenant_id",
    .ncolumns = 7,
    .columns = order_cols,
    .nkeys = 2,
    .keys = order_keys,
};

static const uint8_t i4_1[] = {0, 0, 0, 1};
static const uint8_t i4_2[] = {0, 0, 0, 2};
static const uint8_t num_1_50[] = {0, 2, 0, 0, 0, 0, 0, 2, 0, 1, 0x13, 0x88};
static const uint8_t num_bad[] = {0, 2, 0, 0};
static const uint8_t i4_bad[] = {0, 0, 1};

#define VB(arr)                                                                                    \
    {                                                                                              \
        'b', arr, sizeof(arr)                                                                      \
    }
#define VT(str)                                                                                    \
    {                                                                                              \
        't', (const uint8_t *) str, sizeof(str) - 1                                                \
    }
#define VN                                                                                         \
    {                                                                                              \
        'n', NULL, 0                                                                               \
    }
#define VU                                                                                         \
    {                                                                                              \
        'u', NULL, 0                                                                               \
    }

/* 2024-02-29T07:44:15.5Z in Unix microseconds, at 16/B374D848 */
static const bw_xact xact = {730, UINT64_C(0x16B374D848), UINT64_C(0x16B374D878),
                             INT64_C(1709192655500000)};
#define HEADER(op)                                                                                 \
    "{\"op\":\"" op "\",\"xid\":730,\"commit_lsn\":\"16/B374D848\","                               \
    "\"commit_time\":\"2024-02-29T07:44:15.5+00:00\",\"schema\":\"public\",\"table\":\"orders\""

static void expect_change(const char *file, int line, bw_record_type type, const bw_change *c,
                          const char *expected, const char *expected_key)
{
    bw_buf out;
    bw_buf_init(&out);
    char err[256] = "";
    if (bw_json_change(&out, type, &xact, c, err, sizeof(err)) != 0)
        unit_fail(file, line, "bw_json_change failed: %s", err);
    if (strcmp(out.data, expected) != 0)
        unit_fail_str(file, line, "bw_json_change", out.data, expected);

    bw_buf_reset(&out);
    bw_buf_puts(&out, "<");
    int rc = bw_json_key(&out, c, err, sizeof(err));
    if (rc < 0)
        unit_fail(file, line, "bw_json_key failed: %s", err);
    if (expected_key == NULL) {
        if (rc != 1 || strcmp(out.data, "<") != 0)
            unit_fail(file, line, "bw_json_key: expected no key (1), got %d: %s", rc, out.data);
    } else {
        if (rc != 0)
            unit_fail(file, line, "bw_json_key returned %d", rc);
        if (strcmp(out.data + 1, expected_key) != 0)
            unit_fail_str(file, line, "bw_json_key", out.data + 1, expected_key);
    }
    bw_buf_free(&out);
}

TEST(change_insert)
{
    bw_value row[] = {VN, VB(i4_1), VT("acme"), VB(num_1_50), VT("x"), VT("{\"a\": 1}"), VT("c1")};
    bw_change c = {&orders, VT("acme"), 'X', 0, NULL, 7, row};
    expect_change(__FILE__, __LINE__, BW_REC_INSERT, &c,
                  HEADER("insert") ",\"tenant\":\"acme\",\"key\":{\"id\":1,\"code\":\"c1\"},"
                                   "\"new\":{\"a\":null,\"id\":1,\"tenant_id\":\"acme\",\"price\":"
                                   "\"1.50\",\"big\":\"x\",\"doc\":{\"a\": 1},\"code\":\"c1\"}}",
                  "{\"id\":1,\"code\":\"c1\"}");
}

TEST(change_update_key_changed)
{
    /* K: the old key's values only, in key order; the key comes from them */
    bw_value old[] = {VB(i4_1), VT("c1")};
    bw_value row[] = {VN, VB(i4_2), VT("acme"), VN, VT("x"), VN, VT("c2")};
    bw_change c = {&orders, VT("acme"), 'K', 2, old, 7, row};
    expect_change(__FILE__, __LINE__, BW_REC_UPDATE, &c,
                  HEADER("update") ",\"tenant\":\"acme\",\"key\":{\"id\":1,\"code\":\"c1\"},"
                                   "\"new\":{\"a\":null,\"id\":2,\"tenant_id\":\"acme\",\"price\":"
                                   "null,\"big\":\"x\",\"doc\":null,\"code\":\"c2\"}}",
                  "{\"id\":1,\"code\":\"c1\"}");
}

TEST(change_update_full_old_row)
{
    /* O: the whole old row; the key is its key columns */
    bw_value old[] = {VT("o"), VB(i4_1), VT("acme"), VB(num_1_50), VT("x"), VN, VT("c1")};
    bw_value row[] = {VT("n"), VB(i4_1), VT("acme"), VB(num_1_50), VT("y"), VN, VT("c1")};
    bw_change c = {&orders, VT("acme"), 'O', 7, old, 7, row};
    expect_change(__FILE__, __LINE__, BW_REC_UPDATE, &c,
                  HEADER("update") ",\"tenant\":\"acme\",\"key\":{\"id\":1,\"code\":\"c1\"},"
                                   "\"old\":{\"a\":\"o\",\"id\":1,\"tenant_id\":\"acme\",\"price\":"
                                   "\"1.50\",\"big\":\"x\",\"doc\":null,\"code\":\"c1\"},"
                                   "\"new\":{\"a\":\"n\",\"id\":1,\"tenant_id\":\"acme\",\"price\":"
                                   "\"1.50\",\"big\":\"y\",\"doc\":null,\"code\":\"c1\"}}",
                  "{\"id\":1,\"code\":\"c1\"}");
}

TEST(change_update_unchanged_toast)
{
    /* X: the key from the new row; unchanged TOASTed columns left out of new and named */
    bw_value row[] = {VU, VB(i4_1), VT("acme"), VN, VU, VT("[]"), VT("c1")};
    bw_change c = {&orders, VT("acme"), 'X', 0, NULL, 7, row};
    expect_change(
        __FILE__, __LINE__, BW_REC_UPDATE, &c,
        HEADER("update") ",\"tenant\":\"acme\",\"key\":{\"id\":1,\"code\":\"c1\"},"
                         "\"new\":{\"id\":1,\"tenant_id\":\"acme\",\"price\":null,"
                         "\"doc\":[],\"code\":\"c1\"},\"unchanged_toast\":[\"a\",\"big\"]}",
        "{\"id\":1,\"code\":\"c1\"}");

    /* with FULL, an unchanged value in the old row is left out too, but not named */
    bw_value old[] = {VT("o"), VB(i4_1), VT("acme"), VN, VU, VN, VT("c1")};
    bw_value row2[] = {VT("n"), VB(i4_1), VT("acme"), VN, VU, VN, VT("c1")};
    bw_change c2 = {&orders, VT("acme"), 'O', 7, old, 7, row2};
    expect_change(
        __FILE__, __LINE__, BW_REC_UPDATE, &c2,
        HEADER("update") ",\"tenant\":\"acme\",\"key\":{\"id\":1,\"code\":\"c1\"},"
                         "\"old\":{\"a\":\"o\",\"id\":1,\"tenant_id\":\"acme\",\"price\":"
                         "null,\"doc\":null,\"code\":\"c1\"},"
                         "\"new\":{\"a\":\"n\",\"id\":1,\"tenant_id\":\"acme\",\"price\":"
                         "null,\"doc\":null,\"code\":\"c1\"},\"unchanged_toast\":[\"big\"]}",
        "{\"id\":1,\"code\":\"c1\"}");
}

TEST(change_delete)
{
    bw_value key[] = {VB(i4_2), VT("c2")};
    bw_change k = {&orders, VN, 'K', 2, key, 0, NULL};
    expect_change(__FILE__, __LINE__, BW_REC_DELETE, &k,
                  HEADER("delete") ",\"tenant\":null,\"key\":{\"id\":2,\"code\":\"c2\"}}",
                  "{\"id\":2,\"code\":\"c2\"}");

    bw_value old[] = {VN, VB(i4_2), VT("acme"), VN, VT("x"), VN, VT("c2")};
    bw_change o = {&orders, VT("acme"), 'O', 7, old, 0, NULL};
    expect_change(__FILE__, __LINE__, BW_REC_DELETE, &o,
                  HEADER("delete") ",\"tenant\":\"acme\",\"key\":{\"id\":2,\"code\":\"c2\"},"
                                   "\"old\":{\"a\":null,\"id\":2,\"tenant_id\":\"acme\",\"price\":"
                                   "null,\"big\":\"x\",\"doc\":null,\"code\":\"c2\"}}",
                  "{\"id\":2,\"code\":\"c2\"}");

    /* X: keyless (REPLICA IDENTITY NOTHING): no key, even though the table has key columns */
    bw_change x = {&orders, VN, 'X', 0, NULL, 0, NULL};
    expect_change(__FILE__, __LINE__, BW_REC_DELETE, &x,
                  HEADER("delete") ",\"tenant\":null,\"key\":null,\"keyless\":true}", NULL);
}

TEST(change_table_without_key)
{
    bw_column cols[] = {{BW_COL_TENANT, 't', "tenant_id", BW_OID_TEXT, -1},
                        {0, 'b', "v", BW_OID_FLOAT8, -1}};
    bw_relation rel = {.relid = 1,
                       .generation = 1,
                       .schema = "s",
                       .table = "t",
                       .replident = 'd',
                       .tenant_column = "tenant_id",
                       .ncolumns = 2,
                       .columns = cols,
                       .nkeys = 0,
                       .keys = NULL};
    static const uint8_t f8[] = {0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a}; /* 0.1 */
    bw_value row[] = {VT("t"), VB(f8)};
    bw_change c = {&rel, VT("t"), 'X', 0, NULL, 2, row};
    const char *head = "{\"op\":\"insert\",\"xid\":730,\"commit_lsn\":\"16/B374D848\","
                       "\"commit_time\":\"2024-02-29T07:44:15.5+00:00\",\"schema\":\"s\","
                       "\"table\":\"t\",\"tenant\":\"t\",\"key\":null,";
    char expected[512];
    snprintf(expected, sizeof(expected), "%s\"new\":{\"tenant_id\":\"t\",\"v\":0.1}}", head);
    expect_change(__FILE__, __LINE__, BW_REC_INSERT, &c, expected, NULL);

    bw_change d = {&rel, VN, 'X', 0, NULL, 0, NULL};
    snprintf(expected, sizeof(expected),
             "{\"op\":\"delete\",\"xid\":730,\"commit_lsn\":\"16/B374D848\","
             "\"commit_time\":\"2024-02-29T07:44:15.5+00:00\",\"schema\":\"s\",\"table\":\"t\","
             "\"tenant\":null,\"key\":null,\"keyless\":true}");
    expect_change(__FILE__, __LINE__, BW_REC_DELETE, &d, expected, NULL);
}

TEST(change_names_escaped)
{
    bw_column cols[] = {{BW_COL_KEY, 'b', "k\xc3\xa9\\y", BW_OID_INT4, -1},
                        {0, 't', "a\"b", BW_OID_TEXT, -1}};
    uint16_t keys[] = {0};
    bw_relation rel = {.relid = 1,
                       .generation = 1,
                       .schema = "sch\"ema",
                       .table = "W\xc3\xa9ird \"tbl\"",
                       .replident = 'd',
                       .tenant_column = "",
                       .ncolumns = 2,
                       .columns = cols,
                       .nkeys = 1,
                       .keys = keys};
    bw_value row[] = {VB(i4_1), VT("line\nbreak")};
    bw_change c = {&rel, VT("ten\"ant"), 'X', 0, NULL, 2, row};
    expect_change(
        __FILE__, __LINE__, BW_REC_INSERT, &c,
        "{\"op\":\"insert\",\"xid\":730,\"commit_lsn\":\"16/B374D848\",\"commit_time\":"
        "\"2024-02-29T07:44:15.5+00:00\",\"schema\":\"sch\\\"ema\",\"table\":"
        "\"W\xc3\xa9ird \\\"tbl\\\"\",\"tenant\":\"ten\\\"ant\",\"key\":{\"k\xc3\xa9\\\\y\":"
        "1},\"new\":{\"k\xc3\xa9\\\\y\":1,\"a\\\"b\":\"line\\nbreak\"}}",
        "{\"k\xc3\xa9\\\\y\":1}");
}

TEST(change_xact_fields)
{
    bw_value row[] = {VN, VB(i4_1), VN, VN, VN, VN, VT("c")};
    bw_change c = {&orders, VN, 'X', 0, NULL, 7, row};
    bw_xact x = {UINT32_MAX, 0, 0, 0}; /* the Unix epoch, LSN 0/0 */
    bw_buf out;
    bw_buf_init(&out);
    char err[256];
    ASSERT_OK(bw_json_change(&out, BW_REC_INSERT, &x, &c, err, sizeof(err)));
    ASSERT_MEM_EQ(out.data,
                  "{\"op\":\"insert\",\"xid\":4294967295,\"commit_lsn\":\"0/0\",\"commit_time\":"
                  "\"1970-01-01T00:00:00+00:00\",",
                  93);
    bw_buf_reset(&out);
    x.commit_lsn = UINT64_MAX;
    x.commit_time = -1; /* a microsecond before the Unix epoch */
    ASSERT_OK(bw_json_change(&out, BW_REC_INSERT, &x, &c, err, sizeof(err)));
    ASSERT_STR_CONTAINS(out.data, "\"commit_lsn\":\"FFFFFFFF/FFFFFFFF\"");
    ASSERT_STR_CONTAINS(out.data, "\"commit_time\":\"1969-12-31T23:59:59.999999+00:00\"");
    /* no per-change lsn: the protocol carries none */
    ASSERT_TRUE(strstr(out.data, "\"lsn\"") == NULL);

    bw_buf_reset(&out);
    x.commit_time = INT64_MIN;
    ASSERT_EQ(bw_json_change(&out, BW_REC_INSERT, &x, &c, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "commit time of -9223372036854775808 microseconds");
    ASSERT_EQ(out.len, 0);
    /* PostgreSQL's first microsecond, and the one before */
    x.commit_time = INT64_C(-211813488000000000) + INT64_C(946684800000000);
    ASSERT_OK(bw_json_change(&out, BW_REC_INSERT, &x, &c, err, sizeof(err)));
    ASSERT_STR_CONTAINS(out.data, "\"commit_time\":\"4714-11-24T00:00:00+00:00 BC\"");
    bw_buf_reset(&out);
    x.commit_time--;
    ASSERT_EQ(bw_json_change(&out, BW_REC_INSERT, &x, &c, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "out of range");
    /* the last Unix microsecond is within PostgreSQL's range */
    x.commit_time = INT64_MAX;
    ASSERT_OK(bw_json_change(&out, BW_REC_INSERT, &x, &c, err, sizeof(err)));
    ASSERT_STR_CONTAINS(out.data, "\"commit_time\":\"294247-01-10T04:00:54.775807+00:00\"");
    bw_buf_free(&out);
}

/* A failed change or key takes back everything it wrote and names the table and column. */
TEST(change_errors)
{
    bw_buf out;
    bw_buf_init(&out);
    char err[256];
    bw_buf_puts(&out, "keep");

    bw_value bad_row[] = {VN, VB(i4_1), VT("acme"), VB(num_bad), VT("x"), VN, VT("c1")};
    bw_change bad = {&orders, VT("acme"), 'X', 0, NULL, 7, bad_row};
    ASSERT_EQ(bw_json_change(&out, BW_REC_INSERT, &xact, &bad, err, sizeof(err)), -1);
    ASSERT_STR_EQ(out.data, "keep");
    ASSERT_STR_EQ(err, "column \"price\" of table \"public.orders\": numeric value of 4 bytes, "
                       "expected at least 8");

    /* a malformed key value: the key fails as well */
    bw_value bad_key[] = {VB(i4_bad), VT("c1")};
    bw_change bk = {&orders, VN, 'K', 2, bad_key, 0, NULL};
    ASSERT_EQ(bw_json_key(&out, &bk, err, sizeof(err)), -1);
    ASSERT_STR_EQ(err, "column \"id\" of table \"public.orders\": int4 value of 3 bytes, "
                       "expected 4");
    ASSERT_STR_EQ(out.data, "keep");

    /* tuples that do not fit the relation are refused before anything is read */
    bw_value short_row[] = {VN, VB(i4_1)};
    bw_change s = {&orders, VN, 'X', 0, NULL, 2, short_row};
    ASSERT_EQ(bw_json_change(&out, BW_REC_INSERT, &xact, &s, err, sizeof(err)), -1);
    ASSERT_STR_EQ(err, "table \"public.orders\": new row of 2 values for 7 columns");
    ASSERT_EQ(bw_json_key(&out, &s, err, sizeof(err)), -1);
    bw_change k1 = {&orders, VN, 'K', 1, bad_key, 0, NULL};
    ASSERT_EQ(bw_json_change(&out, BW_REC_DELETE, &xact, &k1, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "old key of 1 values for 2 key columns");
    ASSERT_EQ(bw_json_key(&out, &k1, err, sizeof(err)), -1);
    bw_change o2 = {&orders, VN, 'O', 2, bad_key, 0, NULL};
    ASSERT_EQ(bw_json_change(&out, BW_REC_DELETE, &xact, &o2, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "old row of 2 values for 7 columns");
    bw_change q = {&orders, VN, 'Q', 0, NULL, 0, NULL};
    ASSERT_EQ(bw_json_change(&out, BW_REC_DELETE, &xact, &q, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "old kind 0x51");

    /* a tenant must be text or null; only changes are changes */
    bw_value row[] = {VN, VB(i4_1), VN, VN, VN, VN, VT("c")};
    bw_change t = {&orders, VB(i4_1), 'X', 0, NULL, 7, row};
    ASSERT_EQ(bw_json_change(&out, BW_REC_INSERT, &xact, &t, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "tenant of kind 0x62");
    t.tenant.kind = 'n';
    ASSERT_EQ(bw_json_change(&out, BW_REC_TRUNCATE, &xact, &t, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "is not an insert, update, delete or read");
    ASSERT_STR_EQ(out.data, "keep");

    /* a key index outside the columns */
    uint16_t wild[] = {1, 7};
    bw_relation broken = orders;
    broken.keys = wild;
    t.rel = &broken;
    ASSERT_EQ(bw_json_change(&out, BW_REC_INSERT, &xact, &t, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "key #1 is column #7 of 7");
    ASSERT_STR_EQ(out.data, "keep");
    bw_buf_free(&out);
}
