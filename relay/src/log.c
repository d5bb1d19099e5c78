/*
 * log.c — leveled logging to stderr and the conninfo redaction that keeps passwords out of it.
 *
 * Each event is formatted into one buffer and written with one write(2), so lines from the main
 * loop, librdkafka's threads and the HTTP thread never interleave.
 */
#include "log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"

bw_log_level bw_log_min_level = BW_LOG_INFO;

static char log_context[128];

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void bw_log_set_context(const char *context)
{
    snprintf(log_context, sizeof(log_context), "%s", context ? context : "");
}

const char *bw_log_level_name(bw_log_level level)
{
    if ((int) level < 0 || (int) level > BW_LOG_ERROR)
        return "?";
    return level_names[level];
}

int bw_log_parse_level(const char *s, bw_log_level *out)
{
    for (int i = BW_LOG_DEBUG; i <= BW_LOG_ERROR; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (bw_log_level) i;
            return 0;
        }
    }
    return -1;
}

void bw_log_format_time(char *out, size_t outlen)
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, outlen - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

void bw_log_write(bw_log_level level, const char *fmt, ...)
{
    static const char *const upper[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    char when[40];
    bw_buf line;
    va_list ap;

    bw_log_format_time(when, sizeof(when));
    bw_buf_init(&line);
    bw_buf_printf(&line, "%s %-5s ", when,
                  (int) level >= 0 && level <= BW_LOG_ERROR ? upper[level] : "?");
    if (log_context[0] != '\0')
        bw_buf_printf(&line, "[%s] ", log_context);
    size_t msg_start = line.len;
    va_start(ap, fmt);
    bw_buf_vprintf(&line, fmt, ap);
    va_end(ap);

    /*
     * One line per event: library messages (PQerrorMessage) end in a newline and may carry
     * DETAIL lines; trim the end and fold the rest into the line.
     */
    while (line.len > msg_start && isspace((unsigned char) line.data[line.len - 1]))
        line.len--;
    for (size_t i = msg_start; i < line.len; i++) {
        if (line.data[i] == '\n' || line.data[i] == '\r')
            line.data[i] = ' ';
    }
    line.data[line.len] = '\0';
    bw_buf_putc(&line, '\n');

    const char *p = line.data;
    size_t left = line.len;
    while (left > 0) {
        ssize_t n = write(STDERR_FILENO, p, left);
        if (n <= 0)
            break; /* nowhere left to report it */
        p += n;
        left -= (size_t) n;
    }
    bw_buf_free(&line);
}

/* libpq keys whose values are secrets */
static bool secret_key(const char *key, size_t len)
{
    return (len == 8 && strncmp(key, "password", 8) == 0) ||
           (len == 11 && strncmp(key, "sslpassword", 11) == 0);
}

#define REDACTED "********"

/*
 * The URI form: postgresql://[user[:password]@][hosts][/dbname][?key=value&...]. Like libpq, the
 * user info ends at the first '@' before any '/'.
 */
static void redact_uri(bw_buf *out, const char *s, size_t scheme_len)
{
    const char *p = s + scheme_len;
    const char *auth_end = p + strcspn(p, "@/?");

    bw_buf_append(out, s, scheme_len);
    if (*auth_end == '@') {
        const char *colon = memchr(p, ':', (size_t) (auth_end - p));
        if (colon != NULL) {
            bw_buf_append(out, p, (size_t) (colon - p) + 1);
            bw_buf_puts(out, REDACTED);
        } else {
            bw_buf_append(out, p, (size_t) (auth_end - p));
        }
        p = auth_end;
    }
    const char *query = strchr(p, '?');
    if (query == NULL) {
        bw_buf_puts(out, p);
        return;
    }
    bw_buf_append(out, p, (size_t) (query - p) + 1);
    p = query + 1;
    while (*p != '\0') {
        size_t plen = strcspn(p, "&");
        const char *eq = memchr(p, '=', plen);
        if (eq != NULL && secret_key(p, (size_t) (eq - p))) {
            bw_buf_append(out, p, (size_t) (eq - p) + 1);
            bw_buf_puts(out, REDACTED);
        } else {
            bw_buf_append(out, p, plen);
        }
        p += plen;
        if (*p == '&')
            bw_buf_putc(out, *p++);
    }
}

/*
 * The key=value form, as libpq reads it: keys and values separated by whitespace, optional
 * whitespace around '=', values bare (backslash escapes the next character) or single-quoted
 * (backslash escapes inside). Everything is copied verbatim except the secret values.
 */
static void redact_keyvalue(bw_buf *out, const char *s)
{
    const char *p = s;

    while (*p != '\0') {
        const char *ws = p;
        while (isspace((unsigned char) *p))
            p++;
        bw_buf_append(out, ws, (size_t) (p - ws));
        if (*p == '\0')
            break;

        const char *key = p;
        while (*p != '\0' && *p != '=' && !isspace((unsigned char) *p))
            p++;
        size_t keylen = (size_t) (p - key);
        while (isspace((unsigned char) *p))
            p++;
        if (*p != '=') {
            /* not key=value: libpq will reject it; copy the key and go on */
            bw_buf_append(out, key, (size_t) (p - key));
            continue;
        }
        p++;
        while (isspace((unsigned char) *p))
            p++;
        bw_buf_append(out, key, (size_t) (p - key));

        const char *val = p;
        if (*p == '\'') {
            p++;
            while (*p != '\0' && *p != '\'') {
                if (*p == '\\' && p[1] != '\0')
                    p++;
                p++;
            }
            if (*p == '\'')
                p++;
        } else {
            while (*p != '\0' && !isspace((unsigned char) *p)) {
                if (*p == '\\' && p[1] != '\0')
                    p++;
                p++;
            }
        }
        if (secret_key(key, keylen))
            bw_buf_puts(out, REDACTED);
        else
            bw_buf_append(out, val, (size_t) (p - val));
    }
}

char *bw_conninfo_redact(const char *conninfo)
{
    bw_buf out;

    if (conninfo == NULL)
        return bw_xstrdup("");
    bw_buf_init(&out);
    bw_buf_append(&out, "", 0); /* a terminated "" even when nothing is appended */
    if (strncmp(conninfo, "postgresql://", 13) == 0)
        redact_uri(&out, conninfo, 13);
    else if (strncmp(conninfo, "postgres://", 11) == 0)
        redact_uri(&out, conninfo, 11);
    else
        redact_keyvalue(&out, conninfo);
    return out.data;
}
