/*
 * producer.c — the Kafka producer (see producer.h), in the manner of librdkafka's
 * idempotent_producer example: delivery-report callback, poll on every loop turn, QUEUE_FULL
 * served by polling and retrying, fatal errors checked with rd_kafka_fatal_error, flush before
 * destroy.
 */
#include "producer.h"

#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

/* topics the producer has looked up (names), an open-addressing set */
typedef struct topic_set {
    char **names;
    size_t cap; /* power of two */
    size_t n;
} topic_set;

struct bw_producer {
    rd_kafka_t *rk;
    topic_set known;
    rd_kafka_queue_t *mainq;
    int event_pipe[2];
    bw_metrics *metrics;
    bw_lsntrack *track;
    char failure[512];
    bool failed;
};

/*
 * librdkafka properties the relay's guarantee depends on; a config that changes them is refused.
 * Each may be spelt in several ways (aliases, equivalent values).
 */
static const struct {
    const char *key;
    const char *value;   /* what the relay sets */
    const char *also[3]; /* other accepted values */
} required[] = {
    {"enable.idempotence", "true", {NULL}},
    {"acks", "all", {"-1", NULL}},
    {"request.required.acks", "all", {"-1", NULL}},
};

static bool accepted(size_t r, const char *value)
{
    if (strcmp(value, required[r].value) == 0)
        return true;
    for (size_t i = 0; required[r].also[i]; i++)
        if (strcmp(value, required[r].also[i]) == 0)
            return true;
    return false;
}

static void fail_once(bw_producer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail_once(bw_producer *p, const char *fmt, ...)
{
    va_list ap;
    if (p->failed)
        return;
    va_start(ap, fmt);
    vsnprintf(p->failure, sizeof(p->failure), fmt, ap);
    va_end(ap);
    p->failed = true;
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    bw_producer *p = opaque;
    bw_txn_entry *e = msg->_private;
    size_t bytes = msg->len + msg->key_len;

    (void) rk;
    atomic_fetch_sub(&p->metrics->inflight_bytes, (int_fast64_t) bytes);
    if (msg->err) {
        atomic_fetch_add(&p->metrics->delivery_errors, 1);
        fail_once(p, "Kafka did not accept a message for topic %s: %s",
                  rd_kafka_topic_name(msg->rkt), rd_kafka_err2str(msg->err));
        /* the entry stays pending for ever: nothing at or after it is ever confirmed */
        return;
    }
    atomic_store(&p->metrics->kafka_ok, 1);
    atomic_fetch_add(&p->metrics->messages_delivered, 1);
    atomic_fetch_add(&p->metrics->bytes_delivered, bytes);
    bw_lsntrack_delivered(p->track, e);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    bw_producer *p = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[256];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        fail_once(p, "fatal Kafka producer error: %s: %s", rd_kafka_err2name(orig), fatal);
        return;
    }
    /* librdkafka's log callback already reported it; only the state matters here */
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        atomic_store(&p->metrics->kafka_ok, 0);
        bw_warn("kafka: all brokers are down (%s): messages wait in the queue, nothing is "
                "confirmed until they are delivered",
                reason);
    }
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void) rk;
    /* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug */
    bw_log_level l = level <= 3   ? BW_LOG_ERROR
                     : level == 4 ? BW_LOG_WARN
                     : level <= 6 ? BW_LOG_INFO
                                  : BW_LOG_DEBUG;
    bw_log(l, "kafka %s: %s", fac, buf);
}

static int set(rd_kafka_conf_t *conf, const char *key, const char *value, char *err, size_t errlen)
{
    char errstr[256];
    if (rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka.%s=%s: %s", key, value, errstr);
        return -1;
    }
    return 0;
}

bw_producer *bw_producer_new(const bw_config *cfg, bw_metrics *m, bw_lsntrack *t, char *err,
                             size_t errlen)
{
    bw_producer *p = bw_xcalloc(1, sizeof(*p));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];

    p->metrics = m;
    p->track = t;
    p->event_pipe[0] = p->event_pipe[1] = -1;

    /* defaults tuned for low latency; every one can be overridden under kafka.* */
    if (set(conf, "client.id", "breakwater-relay", err, errlen) ||
        set(conf, "linger.ms", "1", err, errlen) ||
        set(conf, "message.timeout.ms", "120000", err, errlen))
        goto fail;
    for (size_t i = 0; i < cfg->nkafka; i++) {
        for (size_t r = 0; r < sizeof(required) / sizeof(required[0]); r++) {
            if (strcmp(cfg->kafka[i].key, required[r].key) == 0 &&
                !accepted(r, cfg->kafka[i].value)) {
                snprintf(err, errlen,
                         "kafka.%s=%s would let Kafka lose or reorder acknowledged changes: "
                         "breakwater-relay requires %s=%s",
                         cfg->kafka[i].key, cfg->kafka[i].value, required[r].key,
                         required[r].value);
                goto fail;
            }
        }
        if (set(conf, cfg->kafka[i].key, cfg->kafka[i].value, err, errlen))
            goto fail;
    }
    if (set(conf, "enable.idempotence", "true", err, errlen) ||
        set(conf, "acks", "all", err, errlen))
        goto fail;
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_opaque(conf, p);

    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (p->rk == NULL) {
        snprintf(err, errlen, "could not create the Kafka producer: %s", errstr);
        goto fail; /* conf still ours */
    }
    conf = NULL; /* owned by rk now */
    p->mainq = rd_kafka_queue_get_main(p->rk);
    if (pipe2(p->event_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(err, errlen, "could not create a pipe: %s", strerror(errno));
        goto fail;
    }
    rd_kafka_queue_io_event_enable(p->mainq, p->event_pipe[1], "1", 1);
    atomic_store(&m->kafka_ok, 1);
    return p;

fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    bw_producer_free(p);
    return NULL;
}

int bw_producer_event_fd(const bw_producer *p)
{
    return p->event_pipe[0];
}

void bw_producer_poll(bw_producer *p, int timeout_ms)
{
    char drain[64];
    while (read(p->event_pipe[0], drain, sizeof(drain)) > 0)
        ;
    rd_kafka_poll(p->rk, timeout_ms);
    atomic_store(&p->metrics->kafka_queue_depth, rd_kafka_outq_len(p->rk));
}

static size_t hash_name(const char *s)
{
    size_t h = 1469598103934665603u;
    for (; *s; s++)
        h = (h ^ (unsigned char) *s) * 1099511628211u;
    return h;
}

static char **slot_of(topic_set *t, const char *name)
{
    size_t i = hash_name(name) & (t->cap - 1);
    while (t->names[i] && strcmp(t->names[i], name) != 0)
        i = (i + 1) & (t->cap - 1);
    return &t->names[i];
}

/* Is name in the set? Adds it when it is not. */
static bool topic_seen(topic_set *t, const char *name)
{
    if (t->n * 2 >= t->cap) {
        topic_set bigger = {bw_xcalloc(t->cap ? t->cap * 2 : 64, sizeof(char *)),
                            t->cap ? t->cap * 2 : 64, t->n};
        for (size_t i = 0; i < t->cap; i++)
            if (t->names[i])
                *slot_of(&bigger, t->names[i]) = t->names[i];
        free(t->names);
        *t = bigger;
    }
    char **slot = slot_of(t, name);
    if (*slot)
        return true;
    *slot = bw_xstrdup(name);
    t->n++;
    return false;
}

/*
 * librdkafka 2.0 looks up a topic first named in a produce call only on its periodic topic scan
 * (every second), so the first message of every new table waited up to a second. Asking for the
 * topic's metadata once, when the relay first uses it, costs one round trip instead.
 */
static void warm_topic(bw_producer *p, const char *topic)
{
    if (topic_seen(&p->known, topic))
        return;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(p->rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (rkt == NULL)
        return;
    rd_kafka_resp_err_t err = rd_kafka_metadata(p->rk, 0, rkt, &md, 2000);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_metadata_destroy(md);
    else
        bw_debug("kafka: metadata of topic %s: %s", topic, rd_kafka_err2str(err));
    rd_kafka_topic_destroy(rkt);
}

int bw_producer_send(bw_producer *p, const char *topic, const void *key, size_t keylen,
                     const void *value, size_t valuelen, const bw_header *headers, size_t nheaders,
                     bw_txn_entry *entry, char *err, size_t errlen)
{
    warm_topic(p, topic);
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(nheaders);
    for (size_t i = 0; i < nheaders; i++)
        rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value,
                            headers[i].value ? (ssize_t) headers[i].len : 0);
    for (;;) {
        rd_kafka_resp_err_t rc = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(key, keylen), RD_KAFKA_V_VALUE((void *) value, valuelen),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(entry), RD_KAFKA_V_END);
        if (rc == RD_KAFKA_RESP_ERR_NO_ERROR)
            break;
        if (rc == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(p->rk, 100); /* serve delivery reports to make room */
            continue;
        }
        rd_kafka_headers_destroy(hdrs); /* not taken over on failure */
        snprintf(err, errlen, "could not queue a message for topic %s: %s", topic,
                 rd_kafka_err2str(rc));
        return -1;
    }
    bw_lsntrack_add(entry);
    atomic_fetch_add(&p->metrics->messages_produced, 1);
    atomic_fetch_add(&p->metrics->inflight_bytes, (int_fast64_t) (keylen + valuelen));
    return 0;
}

void bw_producer_probe(bw_producer *p, int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    if (atomic_load(&p->metrics->kafka_ok) || p->failed)
        return;
    if (rd_kafka_metadata(p->rk, 0, NULL, &md, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (md->broker_cnt > 0) {
            atomic_store(&p->metrics->kafka_ok, 1);
            bw_info("kafka: brokers reachable again");
        }
        rd_kafka_metadata_destroy(md);
    }
}

const char *bw_producer_failure(const bw_producer *p)
{
    return p->failed ? p->failure : NULL;
}

int bw_producer_flush(bw_producer *p, int timeout_ms)
{
    rd_kafka_flush(p->rk, timeout_ms);
    return rd_kafka_outq_len(p->rk);
}

int bw_producer_outq_len(const bw_producer *p)
{
    return rd_kafka_outq_len(p->rk);
}

void bw_producer_free(bw_producer *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->known.cap; i++)
        free(p->known.names[i]);
    free(p->known.names);
    if (p->mainq)
        rd_kafka_queue_destroy(p->mainq);
    if (p->rk)
        rd_kafka_destroy(p->rk);
    for (int i = 0; i < 2; i++)
        if (p->event_pipe[i] >= 0)
            close(p->event_pipe[i]);
    free(p);
}

rd_kafka_t *bw_producer_handle(bw_producer *p)
{
    return p->rk;
}
