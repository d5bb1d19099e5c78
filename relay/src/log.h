/*
 * log.h — leveled logging to stderr, one line per event: time, level, context, message.
 * The level is checked before any formatting. Never log a password: bw_conninfo_redact.
 *
 *     2025-01-31T09:15:02.117Z INFO  [slot=breakwater] connected to PostgreSQL
 *
 * Time is UTC, ISO 8601 with milliseconds. Messages are folded onto one line (trailing newlines
 * of library messages removed, inner ones turned into spaces) and written with a single write(2),
 * so threads never interleave within a line.
 */
#ifndef BW_LOG_H
#define BW_LOG_H

#include <stddef.h>

typedef enum bw_log_level { BW_LOG_DEBUG, BW_LOG_INFO, BW_LOG_WARN, BW_LOG_ERROR } bw_log_level;

extern bw_log_level bw_log_min_level; /* the one global: set once from the config, read by all */

void bw_log_write(bw_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int bw_log_parse_level(const char *s, bw_log_level *out); /* 0 ok, -1 unknown */
const char *bw_log_level_name(bw_log_level level);        /* "debug", "info", "warn", "error" */
/* The bracketed context of every line ("slot=breakwater"); "" or NULL for none. Set it before
 * other threads log. */
void bw_log_set_context(const char *context);
/* The current time as the log writes it: "2025-01-31T09:15:02.117Z" (outlen >= 32). */
void bw_log_format_time(char *out, size_t outlen);

#define bw_log(level, ...)                                                                         \
    do {                                                                                           \
        if ((level) >= bw_log_min_level)                                                           \
            bw_log_write((level), __VA_ARGS__);                                                    \
    } while (0)
#define bw_debug(...) bw_log(BW_LOG_DEBUG, __VA_ARGS__)
#define bw_info(...) bw_log(BW_LOG_INFO, __VA_ARGS__)
#define bw_warn(...) bw_log(BW_LOG_WARN, __VA_ARGS__)
#define bw_error(...) bw_log(BW_LOG_ERROR, __VA_ARGS__)

/* A copy of a libpq conninfo (key=value or URI) with any password replaced by "********". */
char *bw_conninfo_redact(const char *conninfo);

#endif
