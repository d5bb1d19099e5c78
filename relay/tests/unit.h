/*
 * unit.h — the relay's unit-test framework, in the spirit of libuv's test/task.h.
 *
 *     #include "unit.h"
 *
 *     TEST(buf_grows)
 *     {
 *         ASSERT_EQ(b.len, 3);
 *         ASSERT_STR_EQ(b.data, "abc");
 *     }
 *
 * TEST registers the test at load time (a constructor), so a test file needs no list. The runner
 * (unit.c) runs every test in a forked child with a timeout, so a crash, a hang or a leak fails
 * that test alone. A failed assertion prints file:line and both values, then ends the child at
 * once. Under AddressSanitizer, a test that returns normally ends the child with exit(), so
 * LeakSanitizer checks it: a test that leaks fails.
 *
 *     tests/run_unit            every test
 *     tests/run_unit NAME...    tests whose name contains one of the NAMEs
 *     tests/run_unit --list     the names, without running them
 *
 * The exit status is 0 when every test that ran passed, and 1 when one failed or none ran.
 *
 * UNIT_NOFORK=1 runs the tests in the runner's own process (for a debugger); the first failure
 * then ends the run.
 */
#ifndef BW_UNIT_H
#define BW_UNIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef void (*unit_test_fn)(void);

void unit_register(const char *name, unit_test_fn fn, const char *file, int line);

/* Reports a failed assertion at file:line and ends the test. */
_Noreturn void unit_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
_Noreturn void unit_fail_str(const char *file, int line, const char *expr, const char *a,
                             const char *b);
_Noreturn void unit_fail_mem(const char *file, int line, const char *expr, const void *a,
                             const void *b, size_t n);

#define TEST(name)                                                                                 \
    static void unit_test_##name(void);                                                            \
    __attribute__((constructor)) static void unit_register_##name(void)                            \
    {                                                                                              \
        unit_register(#name, unit_test_##name, __FILE__, __LINE__);                                \
    }                                                                                              \
    static void unit_test_##name(void)

/* Integer comparisons: both sides are compared (and printed) as intmax_t, so an unsigned value
 * above INTMAX_MAX orders as negative (equality is still exact). */
#define UNIT_CMP(a, op, b, what)                                                                   \
    do {                                                                                           \
        intmax_t unit_a_ = (intmax_t) (a);                                                         \
        intmax_t unit_b_ = (intmax_t) (b);                                                         \
        if (!(unit_a_ op unit_b_))                                                                 \
            unit_fail(__FILE__, __LINE__, "%s(%s, %s): %jd (0x%jx) vs %jd (0x%jx)", what, #a, #b,  \
                      unit_a_, (uintmax_t) unit_a_, unit_b_, (uintmax_t) unit_b_);                 \
    } while (0)

#define ASSERT_EQ(a, b) UNIT_CMP(a, ==, b, "ASSERT_EQ")
#define ASSERT_NE(a, b) UNIT_CMP(a, !=, b, "ASSERT_NE")
#define ASSERT_LT(a, b) UNIT_CMP(a, <, b, "ASSERT_LT")
#define ASSERT_LE(a, b) UNIT_CMP(a, <=, b, "ASSERT_LE")
#define ASSERT_GT(a, b) UNIT_CMP(a, >, b, "ASSERT_GT")
#define ASSERT_GE(a, b) UNIT_CMP(a, >=, b, "ASSERT_GE")
#define ASSERT_OK(a) UNIT_CMP(a, ==, 0, "ASSERT_OK")

#define ASSERT_TRUE(cond)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            unit_fail(__FILE__, __LINE__, "ASSERT_TRUE(%s): false", #cond);                        \
    } while (0)
#define ASSERT_FALSE(cond)                                                                         \
    do {                                                                                           \
        if (cond)                                                                                  \
            unit_fail(__FILE__, __LINE__, "ASSERT_FALSE(%s): true", #cond);                        \
    } while (0)
#define ASSERT(cond) ASSERT_TRUE(cond)

#define ASSERT_NULL(p)                                                                             \
    do {                                                                                           \
        const void *unit_p_ = (p);                                                                 \
        if (unit_p_ != NULL)                                                                       \
            unit_fail(__FILE__, __LINE__, "ASSERT_NULL(%s): %p", #p, unit_p_);                     \
    } while (0)
#define ASSERT_NOT_NULL(p)                                                                         \
    do {                                                                                           \
        if ((p) == NULL)                                                                           \
            unit_fail(__FILE__, __LINE__, "ASSERT_NOT_NULL(%s): NULL", #p);                        \
    } while (0)
#define ASSERT_PTR_EQ(a, b)                                                                        \
    do {                                                                                           \
        const void *unit_a_ = (a);                                                                 \
        const void *unit_b_ = (b);                                                                 \
        if (unit_a_ != unit_b_)                                                                    \
            unit_fail(__FILE__, __LINE__, "ASSERT_PTR_EQ(%s, %s): %p vs %p", #a, #b, unit_a_,      \
                      unit_b_);                                                                    \
    } while (0)

/* NUL-terminated strings; NULL is allowed and equals only NULL. */
#define ASSERT_STR_EQ(a, b)                                                                        \
    do {                                                                                           \
        const char *unit_a_ = (a);                                                                 \
        const char *unit_b_ = (b);                                                                 \
        if (unit_a_ == NULL || unit_b_ == NULL ? unit_a_ != unit_b_ : strcmp(unit_a_, unit_b_))    \
            unit_fail_str(__FILE__, __LINE__, "ASSERT_STR_EQ(" #a ", " #b ")", unit_a_, unit_b_);  \
    } while (0)
#define ASSERT_STR_NE(a, b)                                                                        \
    do {                                                                                           \
        const char *unit_a_ = (a);                                                                 \
        const char *unit_b_ = (b);                                                                 \
        if (unit_a_ == NULL || unit_b_ == NULL ? unit_a_ == unit_b_ : !strcmp(unit_a_, unit_b_))   \
            unit_fail(__FILE__, __LINE__, "ASSERT_STR_NE(%s, %s): both \"%s\"", #a, #b,            \
                      unit_a_ ? unit_a_ : "(null)");                                               \
    } while (0)
/* haystack contains needle */
#define ASSERT_STR_CONTAINS(haystack, needle)                                                      \
    do {                                                                                           \
        const char *unit_h_ = (haystack);                                                          \
        const char *unit_n_ = (needle);                                                            \
        if (unit_h_ == NULL || strstr(unit_h_, unit_n_) == NULL)                                   \
            unit_fail(__FILE__, __LINE__, "ASSERT_STR_CONTAINS(%s, %s): \"%s\" lacks \"%s\"",      \
                      #haystack, #needle, unit_h_ ? unit_h_ : "(null)", unit_n_);                  \
    } while (0)

/* n bytes at a and b; a failure shows where they first differ. */
#define ASSERT_MEM_EQ(a, b, n)                                                                     \
    do {                                                                                           \
        const void *unit_a_ = (a);                                                                 \
        const void *unit_b_ = (b);                                                                 \
        size_t unit_n_ = (size_t) (n);                                                             \
        if (unit_n_ > 0 && memcmp(unit_a_, unit_b_, unit_n_) != 0)                                 \
            unit_fail_mem(__FILE__, __LINE__, "ASSERT_MEM_EQ(" #a ", " #b ", " #n ")", unit_a_,    \
                          unit_b_, unit_n_);                                                       \
    } while (0)

#endif
