/*
 * http.c — the operations endpoint: GET /metrics and GET /healthz on libmicrohttpd's own thread.
 *
 * We open the listening socket ourselves and hand it to libmicrohttpd: that way we bind exactly
 * the address configured (never a wildcard by accident), and a failure to bind reports the
 * system's own reason ("Address already in use") instead of a bare NULL from MHD_start_daemon.
 * The handler only reads the metrics struct (relaxed atomics); it takes no lock the main loop
 * could wait on.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

struct bw_http {
    struct MHD_Daemon *daemon;
    const bw_metrics *metrics;
    char *slot;
    char *backfills; /* the backfills' state file, served at /backfills; NULL: none */
    int port;
};

int bw_http_parse_listen(const char *addr, struct sockaddr_storage *sa, socklen_t *salen, char *err,
                         size_t errlen)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port_str;
    size_t hostlen;
    bool v6 = false;

    memset(sa, 0, sizeof(*sa));
    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');
        if (rb == NULL || rb[1] != ':') {
            snprintf(err, errlen,
                     "an IPv6 address must be in brackets and followed by a port, "
                     "e.g. [::1]:9187");
            return -1;
        }
        hostlen = (size_t) (rb - addr - 1);
        if (hostlen >= sizeof(host))
            goto bad_host;
        memcpy(host, addr + 1, hostlen);
        port_str = rb + 2;
        v6 = true;
    } else {
        const char *colon = strrchr(addr, ':');
        if (colon == NULL) {
            snprintf(err, errlen, "no port: expected host:port, e.g. 127.0.0.1:9187");
            return -1;
        }
        hostlen = (size_t) (colon - addr);
        if (hostlen >= sizeof(host) || memchr(addr, ':', hostlen) != NULL)
            goto bad_host;
        memcpy(host, addr, hostlen);
        port_str = colon + 1;
    }
    host[hostlen] = '\0';

    char *end;
    errno = 0;
    long port = strtol(port_str, &end, 10);
    if (port_str[0] < '0' || port_str[0] > '9' || *end != '\0' || errno != 0 || port < 0 ||
        port > 65535) {
        snprintf(err, errlen, "bad port \"%s\": expected a number from 0 to 65535", port_str);
        return -1;
    }

    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *) sa;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t) port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            goto bad_host;
        *salen = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *) sa;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t) port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            goto bad_host;
        *salen = sizeof(*a);
    }
    return 0;

bad_host:
    snprintf(err, errlen,
             "the host must be an IP address: an IPv4 one (127.0.0.1, 0.0.0.0) or an "
             "IPv6 one in brackets ([::1], [::])");
    return -1;
}

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned int status,
                               const char *content_type, bw_buf *body)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    /* MHD frees the body with free(); our buffers come from malloc/realloc */
    if (body->data == NULL)
        bw_buf_append(body, "", 0);
    resp = MHD_create_response_from_buffer(body->len, body->data, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        bw_buf_free(body);
        return MHD_NO;
    }
    bw_buf_init(body); /* now owned by resp */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    bw_http *h = cls;
    bw_buf body;
    static const char text[] = "text/plain; charset=utf-8";

    bw_buf_init(&body);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        bw_buf_puts(&body, "method not allowed: use GET\n");
        return respond(conn, MHD_HTTP_METHOD_NOT_ALLOWED, text, &body);
    }
    if (strcmp(url, "/metrics") == 0) {
        bw_metrics_render(h->metrics, h->slot, &body);
        return respond(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", &body);
    }
    if (strcmp(url, "/healthz") == 0) {
        if (bw_metrics_healthy(h->metrics, &body)) {
            bw_buf_puts(&body, "ok\n");
            return respond(conn, MHD_HTTP_OK, text, &body);
        }
        bw_buf_putc(&body, '\n');
        return respond(conn, MHD_HTTP_SERVICE_UNAVAILABLE, text, &body);
    }
    if (strcmp(url, "/backfills") == 0 && h->backfills) {
        /* the file the main loop replaces atomically: read whole, never half-written */
        FILE *f = fopen(h->backfills, "r");
        char chunk[4096];
        size_t n;
        if (f == NULL)
            bw_buf_puts(&body, "{\"version\":1,\"jobs\":[]}\n");
        while (f && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
            bw_buf_append(&body, chunk, n);
        if (f)
            fclose(f);
        return respond(conn, MHD_HTTP_OK, "application/json", &body);
    }
    bw_buf_puts(&body, "not found: try /metrics, /healthz or /backfills\n");
    return respond(conn, MHD_HTTP_NOT_FOUND, text, &body);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    bw_buf msg;

    if (BW_LOG_WARN < bw_log_min_level)
        return;
    bw_buf_init(&msg);
    bw_buf_vprintf(&msg, fmt, ap);
    bw_log_write(BW_LOG_WARN, "http: %s", msg.data ? msg.data : "");
    bw_buf_free(&msg);
}

bw_http *bw_http_start(const char *addr, const bw_metrics *m, const char *slot,
                       const char *backfills, char *err, size_t errlen)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    char why[256];
    int fd = -1;
    int one = 1;
    bw_http *h = NULL;

    if (bw_http_parse_listen(addr, &sa, &salen, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "http.listen \"%s\": %s", addr, why);
        return NULL;
    }
    fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "http.listen \"%s\": cannot create a socket: %s", addr,
                 strerror(errno));
        goto fail;
    }
    /* a restarted relay must not wait for the old connections' TIME_WAIT to end */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (sa.ss_family == AF_INET6) /* [::] means IPv6 only: say 0.0.0.0 for IPv4 */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *) &sa, salen) != 0) {
        snprintf(err, errlen, "http.listen \"%s\": cannot bind: %s", addr, strerror(errno));
        goto fail;
    }
    if (listen(fd, 16) != 0) {
        snprintf(err, errlen, "http.listen \"%s\": cannot listen: %s", addr, strerror(errno));
        goto fail;
    }
    salen = sizeof(sa);
    getsockname(fd, (struct sockaddr *) &sa, &salen);

    h = bw_xcalloc(1, sizeof(*h));
    h->metrics = m;
    h->slot = bw_xstrdup(slot ? slot : "");
    h->backfills = backfills ? bw_xstrdup(backfills) : NULL;
    h->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *) &sa)->sin6_port
                                             : ((struct sockaddr_in *) &sa)->sin_port);
    h->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, handle, h,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, /* first, or MHD says so on stderr */
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned int) 32,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 10, MHD_OPTION_END);
    if (h->daemon == NULL) {
        snprintf(err, errlen, "http.listen \"%s\": libmicrohttpd could not start", addr);
        goto fail;
    }
    return h;

fail:
    if (fd >= 0)
        close(fd);
    if (h != NULL) {
        free(h->slot);
        free(h->backfills);
        free(h);
    }
    return NULL;
}

int bw_http_port(const bw_http *h)
{
    return h->port;
}

void bw_http_stop(bw_http *h)
{
    if (h == NULL)
        return;
    MHD_stop_daemon(h->daemon); /* joins the thread and closes the listening socket */
    free(h->slot);
    free(h->backfills);
    free(h);
}
