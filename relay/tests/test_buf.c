/*
 * test_buf.c — the growable buffer and the aborting allocators (buf.c).
 */
#include "unit.h"

#include "buf.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static void check_terminated(const char *file, int line, const bw_buf *b)
{
    if (b->cap == 0)
        return;
    if (b->len >= b->cap)
        unit_fail(file, line, "len %zu is not below cap %zu", b->len, b->cap);
    if (b->data[b->len] != '\0')
        unit_fail(file, line, "data[len] is 0x%02x, not NUL", (unsigned char) b->data[b->len]);
}
#define CHECK_TERMINATED(b) check_terminated(__FILE__, __LINE__, b)

TEST(buf_init_free)
{
    bw_buf b;
    bw_buf_init(&b);
    ASSERT_NULL(b.data);
    ASSERT_EQ(b.len, 0);
    ASSERT_EQ(b.cap, 0);
    bw_buf_free(&b); /* freeing an empty buffer is fine */
    bw_buf_puts(&b, "x");
    bw_buf_free(&b);
    ASSERT_NULL(b.data);
    ASSERT_EQ(b.len, 0);
    ASSERT_EQ(b.cap, 0);
}

TEST(buf_append)
{
    bw_buf b;
    bw_buf_init(&b);
    bw_buf_append(&b, "ab", 2);
    bw_buf_putc(&b, 'c');
    bw_buf_puts(&b, "def");
    bw_buf_append(&b, "", 0);
    bw_buf_puts(&b, "");
    ASSERT_EQ(b.len, 6);
    ASSERT_STR_EQ(b.data, "abcdef");
    CHECK_TERMINATED(&b);
    /* bytes, NULs included */
    bw_buf_append(&b, "\0z", 2);
    ASSERT_EQ(b.len, 8);
    ASSERT_MEM_EQ(b.data, "abcdef\0z", 8);
    CHECK_TERMINATED(&b);
    bw_buf_free(&b);
}

TEST(buf_grows_and_keeps_content)
{
    bw_buf b;
    bw_buf_init(&b);
    for (int i = 0; i < 100000; i++)
        bw_buf_putc(&b, (char) ('a' + i % 26));
    ASSERT_EQ(b.len, 100000);
    ASSERT_GT(b.cap, b.len);
    for (int i = 0; i < 100000; i++)
        if (b.data[i] != (char) ('a' + i % 26))
            unit_fail(__FILE__, __LINE__, "byte %d is '%c'", i, b.data[i]);
    CHECK_TERMINATED(&b);

    /* one append far larger than the buffer */
    size_t big = 3 * b.cap + 7;
    char *chunk = malloc(big);
    memset(chunk, 'Z', big);
    bw_buf_append(&b, chunk, big);
    ASSERT_EQ(b.len, 100000 + big);
    ASSERT_EQ(b.data[100000 + big - 1], 'Z');
    ASSERT_EQ(b.data[99999], (char) ('a' + 99999 % 26));
    CHECK_TERMINATED(&b);
    free(chunk);
    bw_buf_free(&b);
}

TEST(buf_reserve)
{
    bw_buf b;
    bw_buf_init(&b);
    bw_buf_reserve(&b, 1000);
    ASSERT_EQ(b.len, 0);
    ASSERT_GE(b.cap, 1001); /* room for the bytes and the NUL */
    size_t cap = b.cap;
    char *data = b.data;
    /* what was reserved is used without moving */
    for (int i = 0; i < 1000; i++)
        bw_buf_putc(&b, 'x');
    ASSERT_EQ(b.cap, cap);
    ASSERT_PTR_EQ(b.data, data);
    CHECK_TERMINATED(&b);
    /* reserving what is there already changes nothing */
    bw_buf_reserve(&b, 0);
    ASSERT_EQ(b.cap, cap);
    ASSERT_EQ(b.len, 1000);
    bw_buf_free(&b);
}

TEST(buf_reset_keeps_capacity)
{
    bw_buf b;
    bw_buf_init(&b);
    bw_buf_reset(&b); /* on an empty buffer too */
    ASSERT_EQ(b.len, 0);
    bw_buf_puts(&b, "hello world");
    size_t cap = b.cap;
    bw_buf_reset(&b);
    ASSERT_EQ(b.len, 0);
    ASSERT_EQ(b.cap, cap);
    ASSERT_STR_EQ(b.data, "");
    bw_buf_puts(&b, "again");
    ASSERT_STR_EQ(b.data, "again");
    bw_buf_free(&b);
}

TEST(buf_printf)
{
    bw_buf b;
    bw_buf_init(&b);
    bw_buf_printf(&b, "%d-%s-%c", 42, "x", 'y');
    ASSERT_STR_EQ(b.data, "42-x-y");
    bw_buf_printf(&b, "|%05.1f|%" PRIu64, 3.14159, UINT64_MAX);
    ASSERT_STR_EQ(b.data, "42-x-y|003.1|18446744073709551615");
    bw_buf_printf(&b, "%s", "");
    ASSERT_EQ(b.len, strlen("42-x-y|003.1|18446744073709551615"));
    CHECK_TERMINATED(&b);

    /* longer than the first allocation */
    bw_buf_reset(&b);
    bw_buf_printf(&b, "%2000d", 7);
    ASSERT_EQ(b.len, 2000);
    ASSERT_EQ(b.data[1999], '7');
    ASSERT_EQ(b.data[0], ' ');
    CHECK_TERMINATED(&b);
    bw_buf_free(&b);
}

static void vprintf_helper(bw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void vprintf_helper(bw_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bw_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

TEST(buf_vprintf)
{
    bw_buf b;
    bw_buf_init(&b);
    bw_buf_puts(&b, "a");
    vprintf_helper(&b, "%s=%u", "n", 5u);
    ASSERT_STR_EQ(b.data, "an=5");
    bw_buf_free(&b);
}

static void expect_json_string(const char *file, int line, const char *in, size_t len,
                               const char *expected)
{
    bw_buf b;
    bw_buf_init(&b);
    bw_buf_puts(&b, "<");
    bw_buf_json_string(&b, in, len);
    if (strcmp(b.data + 1, expected) != 0)
        unit_fail_str(file, line, "bw_buf_json_string", b.data + 1, expected);
    check_terminated(file, line, &b);
    bw_buf_free(&b);
}
#define EXPECT_JSON_STRING(lit, expected)                                                          \
    expect_json_string(__FILE__, __LINE__, lit, sizeof(lit) - 1, expected)

TEST(buf_json_string)
{
    EXPECT_JSON_STRING("", "\"\"");
    EXPECT_JSON_STRING("plain", "\"plain\"");
    EXPECT_JSON_STRING("a\"b", "\"a\\\"b\"");
    EXPECT_JSON_STRING("a\\b", "\"a\\\\b\"");
    EXPECT_JSON_STRING("\n\r\t", "\"\\n\\r\\t\"");
    EXPECT_JSON_STRING("\x01 \x1f", "\"\\u0001 \\u001f\"");
    EXPECT_JSON_STRING("nul\0end", "\"nul\\u0000end\"");
    /* DEL and UTF-8 pass through */
    EXPECT_JSON_STRING("\x7f", "\"\x7f\"");
    EXPECT_JSON_STRING("é 😀 日本", "\"é 😀 日本\"");
    /* escapes at both ends, and runs between them */
    EXPECT_JSON_STRING("\"x\"", "\"\\\"x\\\"\"");
    EXPECT_JSON_STRING("\\\\", "\"\\\\\\\\\"");
    /* only len bytes are read */
    expect_json_string(__FILE__, __LINE__, "abcdef", 3, "\"abc\"");
}

TEST(buf_json_string_long)
{
    /* longer than the first allocation, with escapes all along */
    size_t n = 5000;
    char *in = malloc(n);
    for (size_t i = 0; i < n; i++)
        in[i] = i % 2 ? '"' : 'a';
    bw_buf b;
    bw_buf_init(&b);
    bw_buf_json_string(&b, in, n);
    ASSERT_EQ(b.len, 2 + n / 2 + n);
    ASSERT_MEM_EQ(b.data, "\"a\\\"a\\\"", 7);
    ASSERT_MEM_EQ(b.data + b.len - 4, "a\\\"\"", 4);
    CHECK_TERMINATED(&b);
    free(in);
    bw_buf_free(&b);
}

TEST(buf_allocators)
{
    char *s = bw_xstrdup("hello");
    ASSERT_STR_EQ(s, "hello");
    free(s);
    s = bw_xstrndup("hello", 3);
    ASSERT_STR_EQ(s, "hel");
    free(s);
    s = bw_xstrndup("a\0b", 3); /* n bytes, NULs and all, then a NUL */
    ASSERT_MEM_EQ(s, "a\0b\0", 4);
    free(s);

    int *z = bw_xcalloc(100, sizeof(int));
    for (int i = 0; i < 100; i++)
        ASSERT_EQ(z[i], 0);
    free(z);

    /* zero-size requests still give a pointer that can be freed */
    void *p = bw_xmalloc(0);
    ASSERT_NOT_NULL(p);
    free(p);
    p = bw_xcalloc(0, 0);
    ASSERT_NOT_NULL(p);
    free(p);

    char *r = bw_xmalloc(4);
    memcpy(r, "abcd", 4);
    r = bw_xrealloc(r, 1 << 20);
    ASSERT_MEM_EQ(r, "abcd", 4);
    r = bw_xrealloc(r, 2);
    ASSERT_MEM_EQ(r, "ab", 2);
    free(r);
}

TEST(buf_integers_without_printf)
{
    char s[24];
    ASSERT_EQ(bw_fmt_i64(s, INT64_MIN), 20);
    ASSERT_STR_EQ(s, "-9223372036854775808");
    ASSERT_EQ(bw_fmt_i64(s, INT64_MAX), 19);
    ASSERT_STR_EQ(s, "9223372036854775807");
    bw_fmt_i64(s, 0);
    ASSERT_STR_EQ(s, "0");
    bw_fmt_u64(s, 7, 4);
    ASSERT_STR_EQ(s, "0007");
    bw_fmt_u64(s, 123456, 2);
    ASSERT_STR_EQ(s, "123456");
    bw_buf b;
    bw_buf_init(&b);
    bw_buf_puts(&b, "x=");
    bw_buf_put_i64(&b, -42);
    char tail[1001];
    memset(tail, 'a', 1000);
    tail[1000] = '\0';
    bw_buf_printf(&b, " %s!", tail); /* more than the room there is: formatted twice */
    ASSERT_EQ(b.len, 2 + 3 + 1 + 1000 + 1);
    ASSERT_EQ(b.data[b.len - 1], '!');
    ASSERT_EQ(b.data[b.len], '\0');
    ASSERT_EQ(memcmp(b.data, "x=-42 aaa", 9), 0);
    bw_buf_free(&b);
}
