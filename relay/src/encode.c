/*
 * encode.c — a change as JSON for Kafka (encode.h): the decoder's JSON format (decoder/bw_json.c)
 * rebuilt from the values of the binary protocol, byte for byte what the decoder writes for the
 * same values.
 *
 * 'b' values arrive in PostgreSQL's binary send format and are rendered here the way the decoder
 * has PostgreSQL render them: numeric as numeric_out does, floats in float8out's shortest
 * round-trip form, dates and times as EncodeDateTime with XSD dates, intervals in ISO 8601. The
 * bytes come from the network: every length is checked before a byte is read, and a value that
 * PostgreSQL could not have sent is an error, not a guess.
 */
#include "encode.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PostgreSQL's time constants (datatype/timestamp.h) */
#define USECS_PER_SEC INT64_C(1000000)
#define USECS_PER_MINUTE INT64_C(60000000)
#define USECS_PER_HOUR INT64_C(3600000000)
#define USECS_PER_DAY INT64_C(86400000000)
#define POSTGRES_EPOCH_JDATE 2451545 /* Julian day of 2000-01-01 */
/* Microseconds between the Unix epoch and PostgreSQL's (2000-01-01): commit times are Unix. */
#define UNIX_TO_PG_EPOCH_USECS (INT64_C(10957) * USECS_PER_DAY)
/* The valid ranges: from Julian day 0 (4714-11-24 BC) to 294277-01-01 for timestamps, to
 * 5874898-01-01 for dates (exclusive). */
#define MIN_TIMESTAMP INT64_C(-211813488000000000)
#define END_TIMESTAMP INT64_C(9223371331200000000)
#define MIN_DATE (-POSTGRES_EPOCH_JDATE)
#define END_DATE (2147483494 - POSTGRES_EPOCH_JDATE)
/* timetz zones are below 16 hours either way (TZDISP_LIMIT) */
#define TZDISP_LIMIT (16 * 3600)

/* numeric's send format (utils/adt/numeric.c) */
#define NUMERIC_POS 0x0000
#define NUMERIC_NEG 0x4000
#define NUMERIC_NAN 0xC000
#define NUMERIC_PINF 0xD000
#define NUMERIC_NINF 0xF000
#define NUMERIC_DSCALE_MASK 0x3FFF
#define NBASE 10000

/* Where the output goes and whom an error names. */
typedef struct enc {
    bw_buf *out;
    const bw_relation *rel; /* NULL from bw_json_value */
    char *err;
    size_t errlen;
} enc;

static int fail(const enc *e, const bw_column *col, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets err to "column "c" of table "s.t": <message>" and returns -1. */
static int fail(const enc *e, const bw_column *col, const char *fmt, ...)
{
    if (e->err == NULL || e->errlen == 0)
        return -1;
    int n;
    if (col != NULL && e->rel != NULL)
        n = snprintf(e->err, e->errlen, "column \"%s\" of table \"%s.%s\": ", col->name,
                     e->rel->schema, e->rel->table);
    else if (col != NULL)
        n = snprintf(e->err, e->errlen, "column \"%s\": ", col->name);
    else if (e->rel != NULL)
        n = snprintf(e->err, e->errlen, "table \"%s.%s\": ", e->rel->schema, e->rel->table);
    else
        n = 0;
    if (n >= 0 && (size_t) n < e->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->err + n, e->errlen - (size_t) n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static const char *type_name(uint32_t oid)
{
    switch (oid) {
    case BW_OID_BOOL:
        return "bool";
    case BW_OID_INT2:
        return "int2";
    case BW_OID_INT4:
        return "int4";
    case BW_OID_INT8:
        return "int8";
    case BW_OID_OID:
        return "oid";
    case BW_OID_FLOAT4:
        return "float4";
    case BW_OID_FLOAT8:
        return "float8";
    case BW_OID_NUMERIC:
        return "numeric";
    case BW_OID_DATE:
        return "date";
    case BW_OID_TIME:
        return "time";
    case BW_OID_TIMETZ:
        return "timetz";
    case BW_OID_TIMESTAMP:
        return "timestamp";
    case BW_OID_TIMESTAMPTZ:
        return "timestamptz";
    case BW_OID_INTERVAL:
        return "interval";
    case BW_OID_UUID:
        return "uuid";
    case BW_OID_BYTEA:
        return "bytea";
    default:
        return "?";
    }
}

static void put_cstring(bw_buf *out, const char *s)
{
    bw_buf_json_string(out, s, strlen(s));
}

/* Takes back what a failed call appended: callers never see half a value. */
static void truncate_to(bw_buf *out, size_t len)
{
    out->len = len;
    if (out->cap > 0)
        out->data[len] = '\0';
}

/* ---- floats --------------------------------------------------------------------------------- */

/* A decimal: n significant digits (no point) and the power of ten of the first one. */
typedef struct decimal {
    char d[32];
    int n;
    int exp;
} decimal;

/* r as "<digits>e<exp>": an integer mantissa, so that no decimal point (and no locale) is
 * involved; s holds 48 bytes. */
static void mantissa_exp(char *s, const decimal *r)
{
    memcpy(s, r->d, (size_t) r->n);
    char *w = s + r->n;
    int e = r->exp - r->n + 1;
    *w++ = 'e';
    if (e < 0) {
        *w++ = '-';
        e = -e;
    }
    char rev[8];
    int k = 0;
    do {
        rev[k++] = (char) ('0' + e % 10);
        e /= 10;
    } while (e > 0);
    while (k > 0)
        *w++ = rev[--k];
    *w = '\0';
}

/*
 * 0 when r reads back as exactly v (as a float4 when single), else the side of v it lies on:
 * <0 below, >0 above.
 */
static int compare_back(const decimal *r, double v, bool single)
{
    char s[48];
    mantissa_exp(s, r);
    if (single) {
        float back = strtof(s, NULL);
        return back == (float) v ? 0 : back < (float) v ? -1 : 1;
    }
    double back = strtod(s, NULL);
    return back == v ? 0 : back < v ? -1 : 1;
}

/* The next decimal of r's length above (dir > 0) or below r. */
static void step(decimal *r, int dir)
{
    int i = r->n - 1;
    if (dir > 0) {
        while (i >= 0 && r->d[i] == '9')
            r->d[i--] = '0';
        if (i >= 0)
            r->d[i]++;
        else {
            r->d[0] = '1'; /* 9.99e4 + 0.01e4 = 1.00e5 */
            r->exp++;
        }
    } else {
        while (r->d[i] == '0') /* the first digit is never 0 */
            r->d[i--] = '9';
        r->d[i]--;
        if (r->d[0] == '0') { /* 1.00e5 - 0.01e5 is 9.99e4 at this length: the grid is finer */
            memset(r->d, '9', (size_t) r->n);
            r->exp--;
        }
    }
}

/* Exact decimal arithmetic, enough to tell whether a short decimal is a rounding boundary. */
#define EXACT_FRAC 16 /* fractional digits kept: boundaries above 2^40 (float4 2^12) need 14 */
#define EXACT_LEN 400 /* 1.8e308 has 309 integer digits */

/* x (a double, exactly) times 10^EXACT_FRAC as a decimal integer, without leading zeros. */
static void exact_scaled(char *s, double x)
{
    char t[EXACT_LEN];
    snprintf(t, sizeof(t), "%.*f", EXACT_FRAC, x);
    int n = 0;
    for (const char *c = t; *c != '\0'; c++)
        if ((*c >= '1' && *c <= '9') || (*c == '0' && n > 0))
            s[n++] = *c;
    s[n] = '\0';
}

/* a + b, decimal integers without leading zeros */
static void exact_add(char *sum, const char *a, const char *b)
{
    char t[EXACT_LEN + 1];
    int i = (int) strlen(a) - 1, j = (int) strlen(b) - 1, k = EXACT_LEN, carry = 0;
    t[k] = '\0';
    while (i >= 0 || j >= 0 || carry) {
        int d = carry + (i >= 0 ? a[i--] - '0' : 0) + (j >= 0 ? b[j--] - '0' : 0);
        t[--k] = (char) ('0' + d % 10);
        carry = d / 10;
    }
    strcpy(sum, t + k);
}

/*
 * Whether r is exactly halfway between v and a neighbouring float: >0 the one above, <0 below.
 * PostgreSQL's Ryu never prints such a decimal (it would rely on the reader rounding half to even),
 * although it reads back as v when v's mantissa is even. A boundary with at most 17 significant
 * digits (9 for float4) lies at 2^40 (2^12) or above and is a multiple of 2^-14 there; below, none
 * is that short.
 */
static int on_boundary(const decimal *r, double v, bool single)
{
    if (v < (single ? 0x1p12 : 0x1p40))
        return 0;
    int zeros = r->exp - r->n + 1 + EXACT_FRAC;
    if (zeros < 0)
        return 0;    /* finer than any boundary */
    double up, down; /* half the gaps to the neighbours: exact, powers of two */
    if (single) {
        float next = nextafterf((float) v, INFINITY);
        up = isinf(next) ? 0x1p103 : ((double) next - v) / 2;
        down = (v - (double) nextafterf((float) v, 0)) / 2;
    } else {
        double next = nextafter(v, INFINITY);
        up = isinf(next) ? 0x1p970 : (next - v) / 2;
        down = (v - nextafter(v, 0)) / 2;
    }

    /*
     * A cheap filter first: r can be a boundary only if it reads as one in long double (both
     * sides round the same exact value), which the exact test below then confirms or refutes.
     */
    char s[48];
    mantissa_exp(s, r);
    long double back = strtold(s, NULL);
    int side = back == (long double) v + up ? 1 : back == (long double) v - down ? -1 : 0;
    if (side == 0)
        return 0;

    char d[EXACT_LEN], x[EXACT_LEN], h[EXACT_LEN], sum[EXACT_LEN + 1];
    memcpy(d, r->d, (size_t) r->n);
    memset(d + r->n, '0', (size_t) zeros);
    d[r->n + zeros] = '\0';
    exact_scaled(x, v);
    exact_scaled(h, side > 0 ? up : down);
    if (side > 0) {
        exact_add(sum, x, h); /* v + up == r */
        return strcmp(sum, d) == 0 ? 1 : 0;
    }
    exact_add(sum, d, h); /* r + down == v */
    return strcmp(sum, x) == 0 ? -1 : 0;
}

/* r reads back as v and is no rounding boundary; else side tells on which side of v r lies */
static bool inside(const decimal *r, double v, bool single, int *side)
{
    *side = compare_back(r, v, single);
    if (*side == 0)
        *side = on_boundary(r, v, single);
    return *side == 0;
}

/* v's digits: more than any length we try, so that rounding them mostly rounds v itself. */
#define LONG_DIGITS 26

/* Parses printf's %e output ("d.ddde+XX", the point in the locale's form) into r. */
static void parse_e(decimal *r, const char *s)
{
    r->n = 0;
    for (; *s != 'e'; s++)
        if (*s >= '0' && *s <= '9')
            r->d[r->n++] = *s;
    r->exp = atoi(s + 1);
}

/*
 * r = v correctly rounded to p digits, from v's first LONG_DIGITS digits (themselves rounded).
 * Only a "5" followed by nothing but zeros leaves the direction open (an exact tie rounds to
 * even, and what the long digits cut off decides the rest): then printf rounds v itself.
 */
static void round_to(decimal *r, const decimal *lng, double v, int p)
{
    const char *rest = lng->d + p;
    bool up = *rest > '5';
    if (*rest == '5') {
        up = false;
        for (const char *c = rest + 1; c < lng->d + lng->n; c++)
            if (*c != '0')
                up = true;
        if (!up) {
            char s[48];
            snprintf(s, sizeof(s), "%.*e", p - 1, v);
            parse_e(r, s);
            return;
        }
    }
    memcpy(r->d, lng->d, (size_t) p);
    r->n = p;
    r->exp = lng->exp;
    if (up)
        step(r, 1);
}

/*
 * Whether a decimal of p significant digits lies strictly inside v's rounding interval (v > 0,
 * finite); if so, r is the one closest to v. Only the two p-digit neighbours of v can: the
 * correctly rounded one and the one on v's other side, which matters where the interval is
 * lopsided (a power of two has a closer neighbour below than above) or where the rounded one is
 * a boundary.
 */
static bool shortest_at(decimal *r, const decimal *lng, double v, int p, bool single)
{
    round_to(r, lng, v, p);
    int side;
    if (inside(r, v, single, &side))
        return true;
    step(r, side < 0 ? 1 : -1);
    return inside(r, v, single, &side);
}

/*
 * The shortest decimal strictly inside v's rounding interval, and of those the closest to v: what
 * PostgreSQL's Ryu (float8out and float4out with extra_float_digits > 0) prints. A length that
 * works stays working for longer ones, so the shortest is found by bisection; 17 digits (9 for
 * float4) always work.
 */
static void shortest(decimal *best, double v, bool single)
{
    char s[48];
    decimal lng;
    snprintf(s, sizeof(s), "%.*e", LONG_DIGITS - 1, v);
    parse_e(&lng, s);

    int lo = 1, hi = single ? 9 : 17;
    round_to(best, &lng, v, hi); /* what bisection always replaces; never left undefined */
    while (lo <= hi) {
        int p = lo + (hi - lo) / 2;
        decimal r;
        if (shortest_at(&r, &lng, v, p, single)) {
            *best = r;
            hi = p - 1;
        } else
            lo = p + 1;
    }
    while (best->n > 1 && best->d[best->n - 1] == '0')
        best->n--;
}

/*
 * As float8out/float4out print the shortest form: fixed point for decimal exponents from -4 up to
 * 14 (float4: 5), else d.ddde+XX with at least two exponent digits; NaN and infinities as JSON
 * strings, as the decoder writes them.
 */
static void put_float(bw_buf *out, double v, bool single)
{
    if (isnan(v)) {
        bw_buf_puts(out, "\"NaN\"");
        return;
    }
    if (isinf(v)) {
        bw_buf_puts(out, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }

    char s[48];
    int k = 0;
    if (signbit(v)) {
        s[k++] = '-';
        v = -v;
    }
    if (v == 0) {
        s[k++] = '0';
        bw_buf_append(out, s, (size_t) k);
        return;
    }

    decimal r;
    shortest(&r, v, single);
    int e = r.exp;
    if (e >= -4 && e < (single ? 6 : 15)) {
        if (e < 0) {
            s[k++] = '0';
            s[k++] = '.';
            for (int i = -1; i > e; i--)
                s[k++] = '0';
            memcpy(s + k, r.d, (size_t) r.n);
            k += r.n;
        } else if (r.n <= e + 1) {
            memcpy(s + k, r.d, (size_t) r.n);
            k += r.n;
            for (int i = r.n; i <= e; i++)
                s[k++] = '0';
        } else {
            memcpy(s + k, r.d, (size_t) e + 1);
            k += e + 1;
            s[k++] = '.';
            memcpy(s + k, r.d + e + 1, (size_t) (r.n - e - 1));
            k += r.n - e - 1;
        }
    } else {
        s[k++] = r.d[0];
        if (r.n > 1) {
            s[k++] = '.';
            memcpy(s + k, r.d + 1, (size_t) r.n - 1);
            k += r.n - 1;
        }
        k += snprintf(s + k, sizeof(s) - (size_t) k, "e%c%02d", e < 0 ? '-' : '+', abs(e));
    }
    bw_buf_append(out, s, (size_t) k);
}

/* ---- numeric -------------------------------------------------------------------------------- */

/*
 * numeric's send format rendered as numeric_out does: every integer digit without leading zeros,
 * then exactly dscale fractional digits (so 1.50 keeps its zero; digits beyond dscale, which
 * numeric_recv would truncate, are cut). A value that truncates to zero has no sign.
 */
static int put_numeric(const enc *e, const bw_column *col, const uint8_t *p, uint32_t len)
{
    if (len < 8)
        return fail(e, col, "numeric value of %" PRIu32 " bytes, expected at least 8", len);
    uint16_t ndigits = bw_rd16(p);
    int16_t weight = (int16_t) bw_rd16(p + 2);
    uint16_t sign = bw_rd16(p + 4);
    uint16_t dscale = bw_rd16(p + 6);
    const uint8_t *digits = p + 8;

    if (len != 8 + 2 * (uint32_t) ndigits)
        return fail(e, col, "numeric value with %u digits of %" PRIu32 " bytes, expected %" PRIu32,
                    ndigits, len, 8 + 2 * (uint32_t) ndigits);
    switch (sign) {
    case NUMERIC_NAN:
        bw_buf_puts(e->out, "\"NaN\"");
        return 0;
    case NUMERIC_PINF:
        bw_buf_puts(e->out, "\"Infinity\"");
        return 0;
    case NUMERIC_NINF:
        bw_buf_puts(e->out, "\"-Infinity\"");
        return 0;
    case NUMERIC_POS:
    case NUMERIC_NEG:
        break;
    default:
        return fail(e, col, "numeric sign 0x%04x is none of 0x0000, 0x4000, 0xC000, 0xD000, 0xF000",
                    sign);
    }
    if ((dscale & NUMERIC_DSCALE_MASK) != dscale)
        return fail(e, col, "numeric display scale %u is out of range", dscale);
    for (unsigned i = 0; i < ndigits; i++) {
        unsigned d = bw_rd16(digits + 2 * i);
        if (d >= NBASE)
            return fail(e, col, "numeric digit %u (#%u) is not below %d", d, i, NBASE);
    }

    /* quotes, sign, integer digits (at least "0"), point, fraction */
    size_t intdigits = weight >= 0 ? ((size_t) weight + 1) * 4 : 1;
    bw_buf *out = e->out;
    bw_buf_reserve(out, 4 + intdigits + 1 + dscale);
    char *start = out->data + out->len;
    char *w = start;
    bool nonzero = false;

    *w++ = '"';
    char *sign_at = w;
    if (weight < 0)
        *w++ = '0';
    else {
        for (int d = 0; d <= weight; d++) {
            unsigned g = d < ndigits ? bw_rd16(digits + 2 * d) : 0;
            if (!nonzero) { /* leading zeros: none, even across digit groups */
                if (g == 0)
                    continue;
                nonzero = true;
                w += sprintf(w, "%u", g);
            } else {
                w[0] = (char) ('0' + g / 1000);
                w[1] = (char) ('0' + g / 100 % 10);
                w[2] = (char) ('0' + g / 10 % 10);
                w[3] = (char) ('0' + g % 10);
                w += 4;
            }
        }
        if (!nonzero)
            *w++ = '0';
    }
    if (dscale > 0) {
        *w++ = '.';
        int d = weight + 1;
        for (unsigned i = 0; i < dscale; i += 4, d++) {
            unsigned g = d >= 0 && d < ndigits ? bw_rd16(digits + 2 * d) : 0;
            char four[4] = {(char) ('0' + g / 1000), (char) ('0' + g / 100 % 10),
                            (char) ('0' + g / 10 % 10), (char) ('0' + g % 10)};
            unsigned take = dscale - i < 4 ? dscale - i : 4;
            for (unsigned k = 0; k < take; k++) {
                nonzero |= four[k] != '0';
                *w++ = four[k];
            }
        }
    }
    *w++ = '"';
    if (sign == NUMERIC_NEG && nonzero) {
        memmove(sign_at + 1, sign_at, (size_t) (w - sign_at));
        *sign_at = '-';
        w++;
    }
    out->len += (size_t) (w - start);
    out->data[out->len] = '\0';
    return 0;
}

/* ---- dates and times ------------------------------------------------------------------------ */

/* The proleptic Gregorian date of a day counted from 2000-01-01; years astronomical (0 = 1 BC). */
static void civil_date(int64_t days, int64_t *year, int *month, int *day)
{
    /* count from 0000-03-01, so that a leap day ends its year, in 400-year eras */
    int64_t z = days + 730425;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;                                      /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                                    /* March = 0 */
    *day = (int) (doy - (153 * mp + 2) / 5 + 1);
    *month = (int) (mp < 10 ? mp + 3 : mp - 9);
    *year = yoe + era * 400 + (*month <= 2);
}

/* "YYYY-MM-DD", the year at least four digits and counted from 1 BC backwards (" BC" is added by
 * the caller, at the end). */
static char *put_ymd(char *w, int64_t year, int month, int day)
{
    w += bw_fmt_u64(w, (uint64_t) (year > 0 ? year : 1 - year), 4);
    *w++ = '-';
    w += bw_fmt_u64(w, (uint64_t) month, 2);
    *w++ = '-';
    return w + bw_fmt_u64(w, (uint64_t) day, 2);
}

/* Seconds, two digits when zero-filled; a fraction only when there is one, without trailing
 * zeros. The signs of sec and usec are dropped (the caller writes one). */
static char *put_seconds(char *w, int sec, int usec, bool fill)
{
    w += bw_fmt_u64(w, (uint64_t) abs(sec), fill ? 2 : 1);
    if (usec != 0) {
        int v = abs(usec);
        int n = 6;
        while (v % 10 == 0) {
            v /= 10;
            n--;
        }
        *w++ = '.';
        w += bw_fmt_u64(w, (uint64_t) v, n);
    }
    return w;
}

/* A zone in seconds west of UTC, as ISO 8601 east: +hh:mm, or +hh:mm:ss for odd seconds. */
static char *put_zone(char *w, int zone)
{
    int a = abs(zone);
    char sign = zone <= 0 ? '+' : '-';
    *w++ = sign;
    w += bw_fmt_u64(w, (uint64_t) (a / 3600), 2);
    *w++ = ':';
    w += bw_fmt_u64(w, (uint64_t) (a / 60 % 60), 2);
    if (a % 60 != 0) {
        *w++ = ':';
        w += bw_fmt_u64(w, (uint64_t) (a % 60), 2);
    }
    return w;
}

/* "hh:mm:ss[.f]" of a time of day in [0, 24h]. */
static char *put_hms(char *w, int64_t t)
{
    int hour = (int) (t / USECS_PER_HOUR);
    t -= hour * USECS_PER_HOUR;
    int min = (int) (t / USECS_PER_MINUTE);
    t -= min * USECS_PER_MINUTE;
    int sec = (int) (t / USECS_PER_SEC);
    t -= sec * USECS_PER_SEC;
    w += bw_fmt_u64(w, (uint64_t) hour, 2);
    *w++ = ':';
    w += bw_fmt_u64(w, (uint64_t) min, 2);
    *w++ = ':';
    return put_seconds(w, sec, (int) t, true);
}

static void put_quoted(bw_buf *out, const char *s, size_t len)
{
    bw_buf_reserve(out, len + 2);
    bw_buf_putc(out, '"');
    bw_buf_append(out, s, len);
    bw_buf_putc(out, '"');
}

/*
 * A timestamp (microseconds since 2000-01-01) as EncodeDateTime writes it with XSD dates:
 * 2024-02-29T07:44:15.5, with +00:00 for timestamptz (the decoder renders in UTC), " BC" last.
 * Returns -1 outside PostgreSQL's range.
 */
static int put_timestamp(bw_buf *out, int64_t ts, bool with_tz)
{
    if (ts == INT64_MIN) {
        bw_buf_puts(out, "\"-infinity\"");
        return 0;
    }
    if (ts == INT64_MAX) {
        bw_buf_puts(out, "\"infinity\"");
        return 0;
    }
    if (ts < MIN_TIMESTAMP || ts >= END_TIMESTAMP)
        return -1;

    int64_t days = ts / USECS_PER_DAY;
    int64_t t = ts % USECS_PER_DAY;
    if (t < 0) {
        t += USECS_PER_DAY;
        days--;
    }
    int64_t year;
    int month, day;
    civil_date(days, &year, &month, &day);

    char s[64];
    char *w = put_ymd(s, year, month, day);
    *w++ = 'T';
    w = put_hms(w, t);
    if (with_tz)
        w = put_zone(w, 0);
    if (year <= 0)
        w += sprintf(w, " BC");
    put_quoted(out, s, (size_t) (w - s));
    return 0;
}

static int put_date(const enc *e, const bw_column *col, int32_t d)
{
    if (d == INT32_MIN) {
        bw_buf_puts(e->out, "\"-infinity\"");
        return 0;
    }
    if (d == INT32_MAX) {
        bw_buf_puts(e->out, "\"infinity\"");
        return 0;
    }
    if (d < MIN_DATE || d >= END_DATE)
        return fail(e, col, "date %" PRId32 " (days from 2000-01-01) is out of range", d);
    int64_t year;
    int month, day;
    civil_date(d, &year, &month, &day);
    char s[32];
    char *w = put_ymd(s, year, month, day);
    if (year <= 0)
        w += sprintf(w, " BC");
    put_quoted(e->out, s, (size_t) (w - s));
    return 0;
}

static int put_time(const enc *e, const bw_column *col, int64_t t, bool has_zone, int32_t zone)
{
    if (t < 0 || t > USECS_PER_DAY)
        return fail(e, col, "%s of %" PRId64 " microseconds is out of range",
                    type_name(col->type_oid), t);
    if (has_zone && (zone <= -TZDISP_LIMIT || zone >= TZDISP_LIMIT))
        return fail(e, col, "timetz zone of %" PRId32 " seconds is out of range", zone);
    char s[48];
    char *w = put_hms(s, t);
    if (has_zone)
        w = put_zone(w, zone);
    put_quoted(e->out, s, (size_t) (w - s));
    return 0;
}

static char *put_part(char *w, int64_t v, char unit)
{
    if (v == 0)
        return w;
    return w + sprintf(w, "%" PRId64 "%c", v, unit);
}

/*
 * An interval as EncodeInterval writes it with IntervalStyle iso_8601: P1Y2M3DT4H5M6.7S, every
 * part with its own sign (P-1Y-2M3DT-4H-5M-6.7S), PT0S for zero. Months fold into years, days
 * and time do not.
 */
static void put_interval(bw_buf *out, int64_t time, int32_t day, int32_t month)
{
    int year = month / 12;
    int mon = month % 12;
    int64_t hour = time / USECS_PER_HOUR;
    time -= hour * USECS_PER_HOUR;
    int min = (int) (time / USECS_PER_MINUTE);
    time -= min * USECS_PER_MINUTE;
    int sec = (int) (time / USECS_PER_SEC);
    int usec = (int) (time - sec * USECS_PER_SEC);

    char s[128];
    char *w = s;
    if (year == 0 && mon == 0 && day == 0 && hour == 0 && min == 0 && sec == 0 && usec == 0)
        w += sprintf(w, "PT0S");
    else {
        *w++ = 'P';
        w = put_part(w, year, 'Y');
        w = put_part(w, mon, 'M');
        w = put_part(w, day, 'D');
        if (hour != 0 || min != 0 || sec != 0 || usec != 0)
            *w++ = 'T';
        w = put_part(w, hour, 'H');
        w = put_part(w, min, 'M');
        if (sec != 0 || usec != 0) {
            if (sec < 0 || usec < 0)
                *w++ = '-';
            w = put_seconds(w, sec, usec, false);
            *w++ = 'S';
        }
    }
    put_quoted(out, s, (size_t) (w - s));
}

/* ---- values --------------------------------------------------------------------------------- */

static int want_len(const enc *e, const bw_column *col, uint32_t len, uint32_t want)
{
    if (len == want)
        return 0;
    return fail(e, col, "%s value of %" PRIu32 " bytes, expected %" PRIu32,
                type_name(col->type_oid), len, want);
}

static int put_binary(const enc *e, const bw_column *col, const uint8_t *p, uint32_t len)
{
    static const char hex[] = "0123456789abcdef";
    bw_buf *out = e->out;

    switch (col->type_oid) {
    case BW_OID_BOOL:
        if (want_len(e, col, len, 1) < 0)
            return -1;
        if (p[0] > 1)
            return fail(e, col, "bool value %u, expected 0 or 1", p[0]);
        bw_buf_puts(out, p[0] ? "true" : "false");
        return 0;
    case BW_OID_INT2:
        if (want_len(e, col, len, 2) < 0)
            return -1;
        bw_buf_put_i64(out, (int16_t) bw_rd16(p));
        return 0;
    case BW_OID_INT4:
        if (want_len(e, col, len, 4) < 0)
            return -1;
        bw_buf_put_i64(out, (int32_t) bw_rd32(p));
        return 0;
    case BW_OID_INT8:
        if (want_len(e, col, len, 8) < 0)
            return -1;
        bw_buf_put_i64(out, (int64_t) bw_rd64(p));
        return 0;
    case BW_OID_OID:
        if (want_len(e, col, len, 4) < 0)
            return -1;
        bw_buf_put_i64(out, (int64_t) bw_rd32(p));
        return 0;
    case BW_OID_FLOAT4: {
        if (want_len(e, col, len, 4) < 0)
            return -1;
        uint32_t bits = bw_rd32(p);
        float f;
        memcpy(&f, &bits, sizeof(f));
        put_float(out, f, true);
        return 0;
    }
    case BW_OID_FLOAT8: {
        if (want_len(e, col, len, 8) < 0)
            return -1;
        uint64_t bits = bw_rd64(p);
        double d;
        memcpy(&d, &bits, sizeof(d));
        put_float(out, d, false);
        return 0;
    }
    case BW_OID_NUMERIC:
        return put_numeric(e, col, p, len);
    case BW_OID_DATE:
        if (want_len(e, col, len, 4) < 0)
            return -1;
        return put_date(e, col, (int32_t) bw_rd32(p));
    case BW_OID_TIME:
        if (want_len(e, col, len, 8) < 0)
            return -1;
        return put_time(e, col, (int64_t) bw_rd64(p), false, 0);
    case BW_OID_TIMETZ:
        if (want_len(e, col, len, 12) < 0)
            return -1;
        return put_time(e, col, (int64_t) bw_rd64(p), true, (int32_t) bw_rd32(p + 8));
    case BW_OID_TIMESTAMP:
    case BW_OID_TIMESTAMPTZ: {
        if (want_len(e, col, len, 8) < 0)
            return -1;
        int64_t ts = (int64_t) bw_rd64(p);
        if (put_timestamp(out, ts, col->type_oid == BW_OID_TIMESTAMPTZ) < 0)
            return fail(e, col, "%s of %" PRId64 " microseconds from 2000-01-01 is out of range",
                        type_name(col->type_oid), ts);
        return 0;
    }
    case BW_OID_INTERVAL:
        if (want_len(e, col, len, 16) < 0)
            return -1;
        put_interval(out, (int64_t) bw_rd64(p), (int32_t) bw_rd32(p + 8),
                     (int32_t) bw_rd32(p + 12));
        return 0;
    case BW_OID_UUID: {
        if (want_len(e, col, len, 16) < 0)
            return -1;
        char s[38];
        char *w = s;
        *w++ = '"';
        for (int i = 0; i < 16; i++) {
            if (i == 4 || i == 6 || i == 8 || i == 10)
                *w++ = '-';
            *w++ = hex[p[i] >> 4];
            *w++ = hex[p[i] & 15];
        }
        *w++ = '"';
        bw_buf_append(out, s, (size_t) (w - s));
        return 0;
    }
    case BW_OID_BYTEA: {
        bw_buf_reserve(out, 2 * (size_t) len + 2);
        char *w = out->data + out->len;
        *w++ = '"';
        for (uint32_t i = 0; i < len; i++) {
            *w++ = hex[p[i] >> 4];
            *w++ = hex[p[i] & 15];
        }
        *w++ = '"';
        out->len += 2 * (size_t) len + 2;
        out->data[out->len] = '\0';
        return 0;
    }
    default:
        return fail(e, col,
                    "type oid %" PRIu32 " arrives in binary format, which the relay cannot "
                    "decode; use value-encoding=auto (the default), which sends such types as "
                    "text",
                    col->type_oid);
    }
}

static int put_value(const enc *e, const bw_column *col, const bw_value *v)
{
    switch (v->kind) {
    case 'n':
        bw_buf_puts(e->out, "null");
        return 0;
    case 't':
        /* json and jsonb are embedded: PostgreSQL validated them on input */
        if (col->type_oid == BW_OID_JSON || col->type_oid == BW_OID_JSONB) {
            if (v->len == 0)
                return fail(e, col, "empty %s value",
                            col->type_oid == BW_OID_JSON ? "json" : "jsonb");
            bw_buf_append(e->out, v->data, v->len);
        } else
            bw_buf_json_string(e->out, (const char *) v->data, v->len);
        return 0;
    case 'b':
        return put_binary(e, col, v->data, v->len);
    case 'u':
        return fail(e, col, "an unchanged TOAST value ('u') has no JSON form");
    default:
        return fail(e, col, "value kind 0x%02x is none of 'n', 'u', 'b', 't'",
                    (unsigned char) v->kind);
    }
}

int bw_json_value(bw_buf *out, const bw_column *col, const bw_value *v, char *err, size_t errlen)
{
    enc e = {out, NULL, err, errlen};
    size_t start = out->len;
    if (put_value(&e, col, v) == 0)
        return 0;
    truncate_to(out, start);
    return -1;
}

/* ---- rows and changes ----------------------------------------------------------------------- */

typedef enum row_kind {
    ROW_ALL,      /* every column of a full tuple (O, new) */
    ROW_KEYS_OF,  /* the key columns of a full tuple */
    ROW_KEY_TUPLE /* a K tuple: the key columns' values only, in order */
} row_kind;

/* {"col":value,...}; unchanged TOASTed values are left out (the caller names those of new). */
static int put_row(const enc *e, const bw_value *vals, row_kind kind)
{
    const bw_relation *rel = e->rel;
    int n = kind == ROW_ALL ? rel->ncolumns : rel->nkeys;
    bool first = true;

    bw_buf_putc(e->out, '{');
    for (int i = 0; i < n; i++) {
        const bw_column *col = &rel->columns[kind == ROW_ALL ? i : rel->keys[i]];
        const bw_value *v = &vals[kind == ROW_KEYS_OF ? rel->keys[i] : i];
        if (v->kind == 'u')
            continue;
        if (!first)
            bw_buf_putc(e->out, ',');
        first = false;
        put_cstring(e->out, col->name);
        bw_buf_putc(e->out, ':');
        if (put_value(e, col, v) < 0)
            return -1;
    }
    bw_buf_putc(e->out, '}');
    return 0;
}

/* The change's tuples fit its relation (bw_change_check), so that put_row stays in bounds. */
static int check_shape(const enc *e, const bw_change *c, bool need_new)
{
    return bw_change_check(c, need_new, e->err, e->errlen);
}

/* The key object, or 1 when the change has none (nothing written). */
static int put_key(const enc *e, const bw_change *c)
{
    bool key_tuple;
    const bw_value *src = bw_change_key_source(c, &key_tuple);
    if (src == NULL)
        return 1;
    return put_row(e, src, key_tuple ? ROW_KEY_TUPLE : ROW_KEYS_OF);
}

int bw_json_key(bw_buf *out, const bw_change *c, char *err, size_t errlen)
{
    enc e = {out, c->rel, err, errlen};
    size_t start = out->len;
    /* new is needed only when the key comes from it */
    if (check_shape(&e, c, c->old_kind == 'X' && c->nnew > 0) < 0)
        return -1;
    int rc = put_key(&e, c);
    if (rc < 0)
        truncate_to(out, start);
    return rc;
}

static void put_lsn(bw_buf *out, uint64_t lsn)
{
    bw_buf_printf(out, "\"%" PRIX32 "/%" PRIX32 "\"", (uint32_t) (lsn >> 32), (uint32_t) lsn);
}

int bw_json_commit_time(bw_buf *out, int64_t unix_us)
{
    size_t len = out->len;
    /* commit times are Unix microseconds; overflow would mean garbage, not a time */
    if (unix_us < INT64_MIN + UNIX_TO_PG_EPOCH_USECS ||
        put_timestamp(out, unix_us - UNIX_TO_PG_EPOCH_USECS, true) < 0) {
        out->len = len;
        if (out->cap > 0)
            out->data[len] = '\0';
        return -1;
    }
    return 0;
}

int bw_json_change(bw_buf *out, bw_record_type type, const bw_xact *x, const bw_change *c,
                   char *err, size_t errlen)
{
    enc e = {out, c->rel, err, errlen};
    size_t start = out->len;
    const char *op;

    switch (type) {
    case BW_REC_INSERT:
        op = "insert";
        break;
    case BW_REC_UPDATE:
        op = "update";
        break;
    case BW_REC_DELETE:
        op = "delete";
        break;
    case BW_REC_READ:
        op = "read";
        break;
    default:
        return fail(&e, NULL, "record type %d is not an insert, update, delete or read",
                    (int) type);
    }
    bool has_new = type != BW_REC_DELETE;
    if (check_shape(&e, c, has_new) < 0)
        return -1;

    /* the decoder's fields in its order, less "lsn": the protocol carries no per-change LSN */
    bw_buf_printf(out, "{\"op\":\"%s\",\"xid\":%" PRIu32 ",\"commit_lsn\":", op, x->xid);
    put_lsn(out, x->commit_lsn);
    bw_buf_puts(out, ",\"commit_time\":");
    if (bw_json_commit_time(out, x->commit_time) < 0) {
        fail(&e, NULL, "commit time of %" PRId64 " microseconds from 1970-01-01 is out of range",
             x->commit_time);
        goto fail;
    }
    bw_buf_puts(out, ",\"schema\":");
    put_cstring(out, c->rel->schema);
    bw_buf_puts(out, ",\"table\":");
    put_cstring(out, c->rel->table);

    bw_buf_puts(out, ",\"tenant\":");
    if (c->tenant.kind == 't')
        bw_buf_json_string(out, (const char *) c->tenant.data, c->tenant.len);
    else if (c->tenant.kind == 'n')
        bw_buf_puts(out, "null");
    else {
        fail(&e, NULL, "tenant of kind 0x%02x, expected 't' or 'n'",
             (unsigned char) c->tenant.kind);
        goto fail;
    }

    /* the old key when the change has one, else the key columns of the new row */
    bw_buf_puts(out, ",\"key\":");
    int rc = put_key(&e, c);
    if (rc < 0)
        goto fail;
    if (rc == 1)
        bw_buf_puts(out, "null");
    if (type == BW_REC_DELETE && c->old_kind == 'X')
        bw_buf_puts(out, ",\"keyless\":true");
    if (c->old_kind == 'O') {
        bw_buf_puts(out, ",\"old\":");
        if (put_row(&e, c->old, ROW_ALL) < 0)
            goto fail;
    }
    if (has_new) {
        bw_buf_puts(out, ",\"new\":");
        if (put_row(&e, c->new_, ROW_ALL) < 0)
            goto fail;
        bool first = true;
        for (int i = 0; i < c->rel->ncolumns; i++) {
            if (c->new_[i].kind != 'u')
                continue;
            bw_buf_puts(out, first ? ",\"unchanged_toast\":[" : ",");
            first = false;
            put_cstring(out, c->rel->columns[i].name);
        }
        if (!first)
            bw_buf_putc(out, ']');
    }
    bw_buf_putc(out, '}');
    return 0;

fail:
    truncate_to(out, start);
    return -1;
}
