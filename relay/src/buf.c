/*
 * buf.c — growable byte buffers and the aborting allocators (see buf.h for why they abort).
 */
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t n)
{
    fprintf(stderr, "breakwater-relay: out of memory allocating %zu bytes\n", n);
    abort();
}

void *bw_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *bw_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        oom(n * size);
    return p;
}

void *bw_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *bw_xstrdup(const char *s)
{
    return bw_xstrndup(s, strlen(s));
}

char *bw_xstrndup(const char *s, size_t n)
{
    char *p = bw_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void bw_buf_init(bw_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void bw_buf_free(bw_buf *b)
{
    free(b->data);
    bw_buf_init(b);
}

void bw_buf_reset(bw_buf *b)
{
    b->len = 0;
    if (b->cap > 0)
        b->data[0] = '\0';
}

void bw_buf_reserve(bw_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    b->data = bw_xrealloc(b->data, cap);
    b->cap = cap;
    b->data[b->len] = '\0'; /* buf.h promises a terminated string once memory exists */
}

void bw_buf_append(bw_buf *b, const void *data, size_t len)
{
    bw_buf_reserve(b, len);
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void bw_buf_putc(bw_buf *b, char c)
{
    bw_buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

void bw_buf_puts(bw_buf *b, const char *s)
{
    bw_buf_append(b, s, strlen(s));
}

void bw_buf_vprintf(bw_buf *b, const char *fmt, va_list ap)
{
    /* format once into the room there is; only a result that does not fit is formatted again */
    va_list copy;
    bw_buf_reserve(b, 64);
    size_t room = b->cap - b->len;
    va_copy(copy, ap);
    int n = vsnprintf(b->data + b->len, room, fmt, copy);
    va_end(copy);
    if (n < 0) {
        b->data[b->len] = '\0';
        return;
    }
    if ((size_t) n >= room) {
        bw_buf_reserve(b, (size_t) n);
        vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
    }
    b->len += (size_t) n;
}

size_t bw_fmt_u64(char *dst, uint64_t v, int min_digits)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char) ('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n < min_digits && n < (int) sizeof(tmp))
        tmp[n++] = '0';
    for (int i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    dst[n] = '\0';
    return (size_t) n;
}

size_t bw_fmt_i64(char *dst, int64_t v)
{
    if (v >= 0)
        return bw_fmt_u64(dst, (uint64_t) v, 1);
    dst[0] = '-';
    /* INT64_MIN's magnitude does not fit an int64_t: negate in unsigned arithmetic */
    return 1 + bw_fmt_u64(dst + 1, 0 - (uint64_t) v, 1);
}

void bw_buf_put_i64(bw_buf *b, int64_t v)
{
    bw_buf_reserve(b, 21);
    b->len += bw_fmt_i64(b->data + b->len, v);
}

void bw_buf_printf(bw_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bw_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void bw_buf_json_string(bw_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (len == 0) { /* s may then be NULL: no pointer arithmetic on it */
        bw_buf_append(b, "\"\"", 2);
        return;
    }
    const char *run = s;
    const char *end = s + len;

    bw_buf_reserve(b, len + 2);
    bw_buf_putc(b, '"');
    for (const char *p = s; p < end; p++) {
        unsigned char c = (unsigned char) *p;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        bw_buf_append(b, run, (size_t) (p - run));
        run = p + 1;
        switch (c) {
        case '"':
            bw_buf_puts(b, "\\\"");
            break;
        case '\\':
            bw_buf_puts(b, "\\\\");
            break;
        case '\n':
            bw_buf_puts(b, "\\n");
            break;
        case '\r':
            bw_buf_puts(b, "\\r");
            break;
        case '\t':
            bw_buf_puts(b, "\\t");
            break;
        case '\b':
            bw_buf_puts(b, "\\b");
            break;
        case '\f':
            bw_buf_puts(b, "\\f");
            break;
        default: {
            char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
            bw_buf_append(b, esc, 6);
        }
        }
    }
    bw_buf_append(b, run, (size_t) (end - run));
    bw_buf_putc(b, '"');
}
