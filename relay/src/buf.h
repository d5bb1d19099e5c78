/*
 * buf.h — a growable byte buffer, the relay's one way to build strings and messages.
 *
 * Allocation failure aborts the process (bw_xmalloc): a relay that cannot allocate cannot make
 * progress safely, and unwinding every caller for it would add error paths that are never
 * exercised. Nothing is lost: the slot keeps every unconfirmed change.
 */
#ifndef BW_BUF_H
#define BW_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bw_buf {
    char *data; /* always NUL-terminated when cap > 0 */
    size_t len;
    size_t cap;
} bw_buf;

void *bw_xmalloc(size_t n);
void *bw_xcalloc(size_t n, size_t size);
void *bw_xrealloc(void *p, size_t n);
char *bw_xstrdup(const char *s);
char *bw_xstrndup(const char *s, size_t n);

void bw_buf_init(bw_buf *b);
void bw_buf_free(bw_buf *b);
void bw_buf_reset(bw_buf *b);
void bw_buf_reserve(bw_buf *b, size_t extra);
void bw_buf_append(bw_buf *b, const void *data, size_t len);
void bw_buf_putc(bw_buf *b, char c);
/* Decimal integers without printf (hot paths): at least min_digits digits, zero-filled; dst
 * holds 21 bytes (NUL-terminated); returns the length. */
size_t bw_fmt_u64(char *dst, uint64_t v, int min_digits);
size_t bw_fmt_i64(char *dst, int64_t v);
void bw_buf_put_i64(bw_buf *b, int64_t v);
void bw_buf_puts(bw_buf *b, const char *s);
void bw_buf_printf(bw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bw_buf_vprintf(bw_buf *b, const char *fmt, va_list ap);
/*
 * A JSON string literal from len bytes of UTF-8 (s may be NULL when len is 0), escaped as the
 * decoder's JSON does: quote, backslash, the short forms \b \f \n \r \t, \u00XX for other
 * control characters; bytes from 0x7f up pass through.
 */
void bw_buf_json_string(bw_buf *b, const char *s, size_t len);

#endif
