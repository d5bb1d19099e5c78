/*
 * unit.c — the unit-test runner (see unit.h): each test in a forked child with a timeout, one
 * line per test, then "N passed, N failed".
 */
#include "unit.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define UNIT_TIMEOUT_SECS 10

/*
 * Standalone LeakSanitizer's exit status (its default exitcode). Under AddressSanitizer, leak and
 * other reports exit with 1, like a failed assertion; all print their report above the test's
 * line.
 */
#define UNIT_LSAN_EXIT 23

typedef struct unit_test {
    const char *name;
    unit_test_fn fn;
    const char *file;
    int line;
} unit_test;

/* Filled by the constructors of TEST(), before main runs: no allocation, nothing to free. */
#define UNIT_MAX_TESTS 2048
static unit_test tests[UNIT_MAX_TESTS];
static int ntests;

void unit_register(const char *name, unit_test_fn fn, const char *file, int line)
{
    if (ntests == UNIT_MAX_TESTS) {
        fprintf(stderr, "unit: more than %d tests: raise UNIT_MAX_TESTS in %s\n", UNIT_MAX_TESTS,
                __FILE__);
        exit(2);
    }
    tests[ntests++] = (unit_test){name, fn, file, line};
}

/*
 * A failed assertion ends the test with _exit: the test's allocations are still live, and a leak
 * report on top of the assertion's message would only hide it.
 */
static _Noreturn void fail_exit(void)
{
    fflush(stdout);
    fflush(stderr);
    _exit(1);
}

_Noreturn void unit_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fail_exit();
}

/* s quoted, with control characters, quotes and backslashes escaped; NULL as (null). */
static void print_quoted(const char *s, size_t len)
{
    if (s == NULL) {
        fputs("(null)", stderr);
        return;
    }
    fputc('"', stderr);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s[i];
        if (c == '"' || c == '\\')
            fprintf(stderr, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(stderr, "\\x%02x", c);
        else
            fputc(c, stderr);
    }
    fputc('"', stderr);
}

_Noreturn void unit_fail_str(const char *file, int line, const char *expr, const char *a,
                             const char *b)
{
    fprintf(stderr, "%s:%d: %s\n", file, line, expr);
    if (a != NULL && b != NULL) {
        size_t i = 0;
        while (a[i] != '\0' && a[i] == b[i])
            i++;
        fprintf(stderr, "  first difference at byte %zu\n", i);
    }
    fputs("  got:      ", stderr);
    print_quoted(a, a ? strlen(a) : 0);
    fputs("\n  expected: ", stderr);
    print_quoted(b, b ? strlen(b) : 0);
    fputc('\n', stderr);
    fail_exit();
}

_Noreturn void unit_fail_mem(const char *file, int line, const char *expr, const void *a,
                             const void *b, size_t n)
{
    const unsigned char *pa = a;
    const unsigned char *pb = b;
    size_t i = 0;
    while (i < n && pa[i] == pb[i])
        i++;
    size_t from = i >= 8 ? i - 8 : 0;
    size_t to = i + 8 < n ? i + 8 : n;

    fprintf(stderr, "%s:%d: %s\n  first difference at byte %zu of %zu\n", file, line, expr, i, n);
    fprintf(stderr, "  got      [%zu..%zu):", from, to);
    for (size_t k = from; k < to; k++)
        fprintf(stderr, " %02x", pa[k]);
    fprintf(stderr, "\n  expected [%zu..%zu):", from, to);
    for (size_t k = from; k < to; k++)
        fprintf(stderr, " %02x", pb[k]);
    fputc('\n', stderr);
    fail_exit();
}

static int compare_tests(const void *x, const void *y)
{
    const unit_test *a = x;
    const unit_test *b = y;
    int c = strcmp(a->file, b->file);
    if (c != 0)
        return c;
    return (a->line > b->line) - (a->line < b->line);
}

static bool selected(const unit_test *t, int nfilters, char **filters)
{
    if (nfilters == 0)
        return true;
    for (int i = 0; i < nfilters; i++)
        if (strstr(t->name, filters[i]) != NULL)
            return true;
    return false;
}

#define NSEC_PER_SEC INT64_C(1000000000)

static int64_t ns_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t) (now.tv_sec - start->tv_sec) * NSEC_PER_SEC + (now.tv_nsec - start->tv_nsec);
}

/* SIGCHLD is blocked and collected with sigtimedwait; the handler only makes it deliverable. */
static void on_sigchld(int sig)
{
    (void) sig;
}

/*
 * Runs one test in a child. Returns true when it passed; otherwise why is set to the reason.
 */
static bool run_forked(const unit_test *t, const sigset_t *old_mask, char *why, size_t whylen)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, whylen, "fork failed: %s", strerror(errno));
        return false;
    }
    if (pid == 0) {
        signal(SIGCHLD, SIG_DFL); /* the test's own children are the test's business */
        sigprocmask(SIG_SETMASK, old_mask, NULL);
        t->fn();
        fflush(stdout);
        exit(0); /* exit(), not _exit(): LeakSanitizer checks the child at exit */
    }

    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int status = 0;
    bool timed_out = false;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            snprintf(why, whylen, "waitpid failed: %s", strerror(errno));
            return false;
        }
        int64_t left = UNIT_TIMEOUT_SECS * NSEC_PER_SEC - ns_since(&start);
        if (left <= 0) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            timed_out = true;
            break;
        }
        struct timespec wait = {(time_t) (left / NSEC_PER_SEC), (long) (left % NSEC_PER_SEC)};
        sigtimedwait(&chld, NULL, &wait); /* a SIGCHLD, or the timeout: waitpid tells which */
    }

    if (timed_out)
        snprintf(why, whylen, "timed out after %d s (killed)", UNIT_TIMEOUT_SECS);
    else if (WIFSIGNALED(status))
        snprintf(why, whylen, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else if (WIFEXITED(status) && WEXITSTATUS(status) == UNIT_LSAN_EXIT)
        snprintf(why, whylen, "exit status %d (LeakSanitizer: leaks, see above)",
                 WEXITSTATUS(status));
    else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        snprintf(why, whylen, "exit status %d", WEXITSTATUS(status));
    else
        return true;
    return false;
}

int main(int argc, char **argv)
{
    bool list = false;
    int nfilters = 0;
    char **filters = argv + 1;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list") == 0)
            list = true;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: %s [--list] [NAME...]\n"
                   "Runs the unit tests whose name contains one of the NAMEs (all without NAME),\n"
                   "each in a child process with a %d s timeout. UNIT_NOFORK=1 runs them in this\n"
                   "process.\n",
                   argv[0], UNIT_TIMEOUT_SECS);
            return 0;
        } else
            filters[nfilters++] = argv[i];
    }
    qsort(tests, (size_t) ntests, sizeof(tests[0]), compare_tests);

    if (list) {
        for (int i = 0; i < ntests; i++)
            if (selected(&tests[i], nfilters, filters))
                printf("%s\n", tests[i].name);
        return 0;
    }

    const char *nofork_env = getenv("UNIT_NOFORK");
    bool nofork = nofork_env != NULL && *nofork_env != '\0' && strcmp(nofork_env, "0") != 0;

    sigset_t chld, old_mask;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigchld;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    sigprocmask(SIG_BLOCK, &chld, &old_mask);

    int passed = 0, failed = 0;
    for (int i = 0; i < ntests; i++) {
        const unit_test *t = &tests[i];
        if (!selected(t, nfilters, filters))
            continue;
        char why[256] = "";
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        bool ok;
        if (nofork) {
            t->fn(); /* a failure ends the run */
            ok = true;
        } else
            ok = run_forked(t, &old_mask, why, sizeof(why));
        if (ok) {
            passed++;
            printf("ok   %s (%" PRId64 " ms)\n", t->name, ns_since(&start) / 1000000);
        } else {
            failed++;
            printf("FAIL %s: %s [%s:%d]\n", t->name, why, t->file, t->line);
        }
        fflush(stdout);
    }

    if (passed + failed == 0 && nfilters > 0) {
        fprintf(stderr, "unit: no test name contains");
        for (int i = 0; i < nfilters; i++)
            fprintf(stderr, " \"%s\"", filters[i]);
        fprintf(stderr, " (--list shows them)\n");
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
