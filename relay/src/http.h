/*
 * http.h — the operations endpoint (libmicrohttpd, its own thread): GET /metrics (Prometheus
 * text), GET /healthz (200 "ok" when PostgreSQL is connected and Kafka healthy, else 503 with
 * the reason) and GET /backfills (the backfills' state file, JSON; `breakwater-relay backfill
 * --status` reads it).
 */
#ifndef BW_HTTP_H
#define BW_HTTP_H

#include <stddef.h>
#include <sys/socket.h>

#include "metrics.h"

typedef struct bw_http bw_http;

/*
 * listen is "host:port" ("127.0.0.1:9187", "[::1]:9187"); only that address is bound. Port 0
 * picks a free port (see bw_http_port). Returns NULL with err set when it cannot listen.
 * Requests other than GET/HEAD get 405, other paths 404. backfills: the file served at
 * /backfills (NULL: that path is 404 too).
 */
bw_http *bw_http_start(const char *listen, const bw_metrics *m, const char *slot,
                       const char *backfills, char *err, size_t errlen);
/* The port actually bound (differs from the configured one only when that was 0). */
int bw_http_port(const bw_http *h);
/* Stops the thread and closes the socket; NULL is a no-op. */
void bw_http_stop(bw_http *h);

/*
 * Parses "host:port": host an IPv4 address or an IPv6 one in brackets, port 0 to 65535. Host
 * names are refused so that what is bound is exactly what was written. Returns 0, or -1 with the
 * reason in err. config.c uses it to check http.listen when the configuration is loaded.
 */
int bw_http_parse_listen(const char *listen, struct sockaddr_storage *sa, socklen_t *salen,
                         char *err, size_t errlen);

#endif
