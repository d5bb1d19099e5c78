/*
 * test_metrics.c — the Prometheus rendering (every metric, HELP/TYPE, the slot label, derived
 * values), the stats line, and the HTTP endpoint over a real socket.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "metrics.h"
#include "unit.h"

/* The names docs/relay.md promises, written out here rather than taken from metrics.c. */
static const char *const documented[] = {
    "breakwater_build_info",
    "breakwater_changes_in_total",
    "breakwater_transactions_in_total",
    "breakwater_stream_bytes_in_total",
    "breakwater_streamed_transactions_total",
    "breakwater_spool_bytes",
    "breakwater_snapshot_rows_total",
    "breakwater_snapshot_rows_estimate",
    "breakwater_snapshot_running",
    "breakwater_backfill_rows_total",
    "breakwater_backfills_running",
    "breakwater_backfill_rows_estimate",
    "breakwater_messages_produced_total",
    "breakwater_messages_delivered_total",
    "breakwater_bytes_delivered_total",
    "breakwater_delivery_errors_total",
    "breakwater_pg_reconnects_total",
    "breakwater_kafka_queue_depth",
    "breakwater_inflight_bytes",
    "breakwater_confirmed_lsn",
    "breakwater_server_wal_end_lsn",
    "breakwater_lag_bytes",
    "breakwater_lag_seconds",
    "breakwater_pg_connected",
    "breakwater_standby",
    "breakwater_kafka_ok",
    "breakwater_up",
    "breakwater_uptime_seconds",
};
#define NDOC (sizeof(documented) / sizeof(documented[0]))

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

TEST(metrics_render_has_every_metric)
{
    bw_metrics m;
    bw_buf out;
    char want[160];

    bw_metrics_init(&m);
    bw_buf_init(&out);
    bw_metrics_render(&m, "s1", &out);

    const char *names[64];
    size_t n = bw_metrics_names(names, 64);
    ASSERT_EQ(n, NDOC);
    for (size_t i = 0; i < NDOC; i++) {
        ASSERT_STR_EQ(names[i], documented[i]);
        snprintf(want, sizeof(want), "# HELP %s ", documented[i]);
        ASSERT_STR_CONTAINS(out.data, want);
        snprintf(want, sizeof(want), "# TYPE %s %s\n", documented[i],
                 strstr(documented[i], "_total") ? "counter" : "gauge");
        ASSERT_STR_CONTAINS(out.data, want);
        snprintf(want, sizeof(want), "\n%s{slot=\"s1\"", documented[i]);
        ASSERT_STR_CONTAINS(out.data, want);
    }
    /* every sample line carries the slot label */
    size_t samples = 0;
    for (char *line = out.data; *line; line = strchr(line, '\n') + 1) {
        if (line[0] != '#') {
            ASSERT_TRUE(strncmp(strchr(line, '{'), "{slot=\"s1\"", 10) == 0);
            samples++;
        }
    }
    ASSERT_EQ(samples, NDOC);
    ASSERT_EQ(out.data[out.len - 1], '\n');
    bw_buf_free(&out);
}

TEST(metrics_render_values)
{
    bw_metrics m;
    bw_buf out;

    bw_metrics_init(&m);
    atomic_store(&m.changes_in, 5);
    atomic_store(&m.transactions_in, 2);
    atomic_store(&m.messages_produced, 5);
    atomic_store(&m.messages_delivered, 4);
    atomic_store(&m.bytes_delivered, 1234);
    atomic_store(&m.delivery_errors, 1);
    atomic_store(&m.pg_reconnects, 3);
    atomic_store(&m.stream_bytes_in, 999);
    atomic_store(&m.kafka_queue_depth, 7);
    atomic_store(&m.inflight_bytes, 300);
    atomic_store(&m.confirmed_lsn, 0x16B374D48ULL);
    atomic_store(&m.server_wal_end, 0x16B374D48ULL + 4096);
    atomic_store(&m.last_commit_time_us, now_us() - 2500000);
    atomic_store(&m.start_time_us, now_us() - 10000000);
    atomic_store(&m.pg_connected, 1);
    atomic_store(&m.kafka_ok, 1);

    bw_buf_init(&out);
    bw_metrics_render(&m, "s1", &out);
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_changes_in_total{slot=\"s1\"} 5\n");
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_messages_delivered_total{slot=\"s1\"} 4\n");
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_bytes_delivered_total{slot=\"s1\"} 1234\n");
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_kafka_queue_depth{slot=\"s1\"} 7\n");
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_confirmed_lsn{slot=\"s1\"} 6093753672\n");
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_server_wal_end_lsn{slot=\"s1\"} 6093757768\n");
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_lag_bytes{slot=\"s1\"} 4096\n");
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_lag_seconds{slot=\"s1\"} 2.5");
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_uptime_seconds{slot=\"s1\"} 10.");
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_up{slot=\"s1\"} 1\n");
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_build_info{slot=\"s1\",version=\"");

    bw_buf summary;
    bw_buf_init(&summary);
    bw_metrics_summary(&m, &summary);
    ASSERT_STR_CONTAINS(summary.data, "changes=5 transactions=2 stream_bytes=999 produced=5 "
                                      "delivered=4 delivered_bytes=1234 delivery_errors=1 "
                                      "pg_reconnects=3 queue=7 inflight_bytes=300 "
                                      "confirmed=1/6B374D48 wal_end=1/6B375D48 lag_bytes=4096 "
                                      "lag_seconds=2.5 pg=connected kafka=ok");
    bw_buf_free(&summary);

    /* caught up: the age of the last commit is not lag */
    atomic_store(&m.confirmed_lsn, 0x16B374D48ULL + 4096);
    bw_buf_reset(&out);
    bw_metrics_render(&m, "s1", &out);
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_lag_bytes{slot=\"s1\"} 0\n");
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_lag_seconds{slot=\"s1\"} 0.000\n");
    bw_buf_free(&out);
}

TEST(metrics_unknown_positions_mean_no_lag)
{
    bw_metrics m;
    bw_buf out;

    bw_metrics_init(&m);
    atomic_store(&m.server_wal_end, 1000); /* confirmed unknown */
    bw_buf_init(&out);
    bw_metrics_render(&m, "x", &out);
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_lag_bytes{slot=\"x\"} 0\n");
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_lag_seconds{slot=\"x\"} 0.000\n"); /* no commit */
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_up{slot=\"x\"} 0\n");
    bw_buf_free(&out);
}

TEST(metrics_label_escaping)
{
    bw_metrics m;
    bw_buf out;

    bw_metrics_init(&m);
    bw_buf_init(&out);
    bw_metrics_render(&m, "a\"b\\c\nd", &out);
    ASSERT_STR_CONTAINS(out.data, "\nbreakwater_up{slot=\"a\\\"b\\\\c\\nd\"} 0\n");
    bw_buf_free(&out);
}

TEST(metrics_health)
{
    bw_metrics m;
    bw_buf why;

    bw_metrics_init(&m);
    bw_buf_init(&why);
    ASSERT_FALSE(bw_metrics_healthy(&m, &why));
    ASSERT_STR_EQ(why.data, "postgresql not connected; kafka not ok");
    atomic_store(&m.pg_connected, 1);
    bw_buf_reset(&why);
    ASSERT_FALSE(bw_metrics_healthy(&m, &why));
    ASSERT_STR_EQ(why.data, "kafka not ok");
    atomic_store(&m.kafka_ok, 1);
    ASSERT_TRUE(bw_metrics_healthy(&m, NULL));
    bw_buf_free(&why);
}

/* ------------------------------------------------------------------------- HTTP */

/* One request over a fresh connection; returns the status, the whole response in out. */
static int http_request(int family, int port, const char *method, const char *path, bw_buf *out)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    memset(&sa, 0, sizeof(sa));
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *) &sa;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t) port);
        a->sin6_addr = in6addr_loopback;
        salen = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *) &sa;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t) port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        salen = sizeof(*a);
    }
    int fd = socket(family, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    ASSERT_OK(connect(fd, (struct sockaddr *) &sa, salen));
    char req[256];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n",
                     method, path, strcmp(method, "POST") == 0 ? "Content-Length: 0\r\n" : "");
    ASSERT_EQ(write(fd, req, (size_t) n), n);
    bw_buf_reset(out);
    char chunk[4096];
    ssize_t got;
    while ((got = read(fd, chunk, sizeof(chunk))) > 0)
        bw_buf_append(out, chunk, (size_t) got);
    close(fd);
    ASSERT_NOT_NULL(out->data);
    int status = 0;
    ASSERT_EQ(sscanf(out->data, "HTTP/1.1 %d", &status), 1);
    return status;
}

TEST(http_serves_metrics_and_health)
{
    bw_metrics m;
    char err[256];
    bw_buf resp;

    bw_metrics_init(&m);
    bw_buf_init(&resp);
    bw_http *h = bw_http_start("127.0.0.1:0", &m, "s1", NULL, err, sizeof(err));
    if (h == NULL)
        unit_fail(__FILE__, __LINE__, "bw_http_start: %s", err);
    int port = bw_http_port(h);
    ASSERT_GT(port, 0);

    ASSERT_EQ(http_request(AF_INET, port, "GET", "/metrics", &resp), 200);
    ASSERT_STR_CONTAINS(resp.data, "Content-Type: text/plain; version=0.0.4");
    ASSERT_STR_CONTAINS(resp.data, "\r\n\r\n# HELP breakwater_build_info");
    ASSERT_STR_CONTAINS(resp.data, "\nbreakwater_up{slot=\"s1\"} 0\n");

    ASSERT_EQ(http_request(AF_INET, port, "GET", "/healthz", &resp), 503);
    ASSERT_STR_CONTAINS(resp.data, "\r\n\r\npostgresql not connected; kafka not ok\n");
    atomic_store(&m.pg_connected, 1);
    atomic_store(&m.kafka_ok, 1);
    ASSERT_EQ(http_request(AF_INET, port, "GET", "/healthz", &resp), 200);
    ASSERT_STR_CONTAINS(resp.data, "\r\n\r\nok\n");

    ASSERT_EQ(http_request(AF_INET, port, "GET", "/", &resp), 404);
    ASSERT_EQ(http_request(AF_INET, port, "GET", "/metrics/x", &resp), 404);
    ASSERT_EQ(http_request(AF_INET, port, "POST", "/metrics", &resp), 405);
    ASSERT_STR_CONTAINS(resp.data, "Allow: GET, HEAD");
    ASSERT_EQ(http_request(AF_INET, port, "HEAD", "/metrics", &resp), 200);

    /* the port is taken: the system's reason */
    char taken[64];
    snprintf(taken, sizeof(taken), "127.0.0.1:%d", port);
    ASSERT_NULL(bw_http_start(taken, &m, "s1", NULL, err, sizeof(err)));
    ASSERT_STR_CONTAINS(err, "cannot bind: Address already in use");

    bw_http_stop(h);
    /* stopped: the socket is closed and the address free again */
    h = bw_http_start(taken, &m, "s1", NULL, err, sizeof(err));
    if (h == NULL)
        unit_fail(__FILE__, __LINE__, "restart on %s: %s", taken, err);
    bw_http_stop(h);
    bw_http_stop(NULL);
    bw_buf_free(&resp);
}

TEST(http_ipv6_loopback)
{
    bw_metrics m;
    char err[256];
    bw_buf resp;

    bw_metrics_init(&m);
    bw_http *h = bw_http_start("[::1]:0", &m, "s1", NULL, err, sizeof(err));
    if (h == NULL) {
        /* a host without IPv6: nothing to test */
        ASSERT_STR_CONTAINS(err, "cannot");
        return;
    }
    bw_buf_init(&resp);
    ASSERT_EQ(http_request(AF_INET6, bw_http_port(h), "GET", "/metrics", &resp), 200);
    bw_http_stop(h);
    bw_buf_free(&resp);
}

TEST(http_bad_listen)
{
    bw_metrics m;
    char err[256];

    bw_metrics_init(&m);
    ASSERT_NULL(bw_http_start("localhost:9187", &m, "s", NULL, err, sizeof(err)));
    ASSERT_STR_CONTAINS(err, "http.listen \"localhost:9187\": the host must be an IP address");
    ASSERT_NULL(bw_http_start("127.0.0.1:x", &m, "s", NULL, err, sizeof(err)));
    ASSERT_STR_CONTAINS(err, "bad port \"x\"");
    ASSERT_NULL(bw_http_start("[::1:9187", &m, "s", NULL, err, sizeof(err)));
    ASSERT_STR_CONTAINS(err, "in brackets");
    ASSERT_NULL(bw_http_start("192.0.2.1:9187", &m, "s", NULL, err, sizeof(err)));
    ASSERT_STR_CONTAINS(err, "cannot bind: Cannot assign requested address");
}
