/*
 * topics.c — creating and checking topics (topics.h), with librdkafka's admin API on the
 * producer's own handle and a private queue: the main loop's delivery reports are not touched.
 * Each topic is handled once per process; what was learnt of it is kept in a jansson object
 * keyed by topic name, as an integer of TOPIC_* bits (a string map without code of our own).
 */
#include "topics.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "log.h"

#define ADMIN_TIMEOUT_MS 5000

enum {
    TOPIC_COMPACTED = 1,  /* created or described with a compact cleanup.policy */
    TOPIC_REDIRECTED = 2, /* a message without a key for it went elsewhere (warned once) */
};

struct bw_topics {
    const bw_config *cfg;
    rd_kafka_t *rk;
    json_t *known; /* topic name -> TOPIC_* bits */
};

bw_topics *bw_topics_new(const bw_config *cfg, rd_kafka_t *rk)
{
    bw_topics *t = bw_xcalloc(1, sizeof(*t));
    t->cfg = cfg;
    t->rk = rk;
    t->known = json_object();
    return t;
}

void bw_topics_free(bw_topics *t)
{
    if (t == NULL)
        return;
    json_decref(t->known);
    free(t);
}

/* "compact" and "compact,delete" both compact, and both refuse messages without a key. */
static bool compacts(const char *policy)
{
    return strstr(policy, "compact") != NULL;
}

static rd_kafka_AdminOptions_t *options(bw_topics *t, rd_kafka_admin_op_t op)
{
    char errstr[256];
    rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(t->rk, op);
    rd_kafka_AdminOptions_set_request_timeout(o, ADMIN_TIMEOUT_MS, errstr, sizeof(errstr));
    return o;
}

/* The topic's cleanup.policy as the broker describes it, into out: 0, or -1 (logged) if unknown. */
static int describe_policy(bw_topics *t, const char *topic, char *out, size_t outlen)
{
    rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
    rd_kafka_queue_t *q = rd_kafka_queue_new(t->rk);
    rd_kafka_AdminOptions_t *o = options(t, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    const rd_kafka_DescribeConfigs_result_t *result = NULL;
    const rd_kafka_ConfigResource_t **rs = NULL;
    const rd_kafka_ConfigEntry_t **entries = NULL;
    size_t nres = 0, nconf = 0;
    const char *why = "no answer";
    int rc = -1;

    rd_kafka_DescribeConfigs(t->rk, &res, 1, o, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, ADMIN_TIMEOUT_MS + 1000);
    if (ev && rd_kafka_event_error(ev)) {
        why = rd_kafka_event_error_string(ev);
        goto done;
    }
    if (ev == NULL || (result = rd_kafka_event_DescribeConfigs_result(ev)) == NULL)
        goto done;
    rs = rd_kafka_DescribeConfigs_result_resources(result, &nres);
    if (nres > 0 && rd_kafka_ConfigResource_error(rs[0])) {
        why = rd_kafka_ConfigResource_error_string(rs[0]);
        if (why == NULL)
            why = rd_kafka_err2str(rd_kafka_ConfigResource_error(rs[0]));
        goto done;
    }
    why = "no cleanup.policy in the broker's answer";
    entries = nres > 0 ? rd_kafka_ConfigResource_configs(rs[0], &nconf) : NULL;
    for (size_t i = 0; entries && i < nconf && rc < 0; i++) {
        const char *name = rd_kafka_ConfigEntry_name(entries[i]);
        const char *value = rd_kafka_ConfigEntry_value(entries[i]);
        if (name && value && strcmp(name, "cleanup.policy") == 0) {
            snprintf(out, outlen, "%s", value);
            rc = 0;
        }
    }
done:
    if (rc < 0) /* before the event goes: why may point into it */
        bw_warn("topic %s: its settings could not be read (%s); it counts as not compacted", topic,
                why);
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_queue_destroy(q);
    rd_kafka_ConfigResource_destroy(res);
    return rc;
}

/*
 * An existing topic: is it compacted? A topic of keyed rows that is not gets a warning; one of
 * rows without a key does not, since compaction could not keep those anyway.
 */
static bool check(bw_topics *t, const char *topic, const char *keyless_why)
{
    char policy[64];
    if (describe_policy(t, topic, policy, sizeof(policy)) < 0)
        return false;
    if (compacts(policy))
        return true;
    if (keyless_why == NULL)
        bw_warn("topic %s has cleanup.policy=%s: once its old segments are deleted, a "
                "consumer reading it from offset 0 no longer finds every live row; set "
                "cleanup.policy=compact on it (deletes are followed by tombstones, see "
                "topic.tombstones) to let consumers rebuild the table from the topic",
                topic, policy);
    return false;
}

/* Creates the topic with policy; returns NO_ERROR, TOPIC_ALREADY_EXISTS, or another (logged). */
static rd_kafka_resp_err_t create(bw_topics *t, const char *topic, const char *policy)
{
    char errstr[512], ms[24];
    rd_kafka_NewTopic_t *nt =
        rd_kafka_NewTopic_new(topic, (int) t->cfg->topic_partitions,
                              (int) t->cfg->topic_replication_factor, errstr, sizeof(errstr));
    if (nt == NULL) {
        bw_warn("topic %s cannot be created: %s", topic, errstr);
        return RD_KAFKA_RESP_ERR__INVALID_ARG;
    }
    snprintf(ms, sizeof(ms), "%" PRId64, t->cfg->topic_retention_ms);
    rd_kafka_resp_err_t err = rd_kafka_NewTopic_set_config(nt, "cleanup.policy", policy);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR && t->cfg->topic_retention_ms >= 0)
        err = rd_kafka_NewTopic_set_config(nt, "retention.ms", ms);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        bw_warn("topic %s cannot be created: its settings were refused (%s)", topic,
                rd_kafka_err2str(err));
        rd_kafka_NewTopic_destroy(nt);
        return err;
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(t->rk);
    rd_kafka_AdminOptions_t *o = options(t, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_CreateTopics(t->rk, &nt, 1, o, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, ADMIN_TIMEOUT_MS + 1000);
    const rd_kafka_CreateTopics_result_t *result =
        ev ? rd_kafka_event_CreateTopics_result(ev) : NULL;
    size_t n = 0;
    const rd_kafka_topic_result_t **tr =
        result ? rd_kafka_CreateTopics_result_topics(result, &n) : NULL;
    err = ev == NULL ? RD_KAFKA_RESP_ERR__TIMED_OUT
          : n == 0   ? rd_kafka_event_error(ev)
                     : rd_kafka_topic_result_error(tr[0]);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
        bw_info("created topic %s (partitions %" PRId64 ", replication factor %" PRId64
                ", cleanup.policy=%s; -1: the broker's default)",
                topic, t->cfg->topic_partitions, t->cfg->topic_replication_factor, policy);
    else if (err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
        bw_warn("topic %s could not be created (%s); the broker may create it on first use, "
                "with its own defaults",
                topic,
                n > 0 && rd_kafka_topic_result_error_string(tr[0])
                    ? rd_kafka_topic_result_error_string(tr[0])
                    : rd_kafka_err2str(err));
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    return err;
}

/*
 * topic.create: the topic is created, compacted only when its messages have keys, since Kafka
 * refuses a message without a key on a compacted topic (and the relay would stop on it).
 */
static bool create_or_check(bw_topics *t, const char *topic, const char *keyless_why)
{
    const char *policy = t->cfg->topic_cleanup_policy;
    if (keyless_why && compacts(policy))
        policy = "delete";
    rd_kafka_resp_err_t err = create(t, topic, policy);
    if (err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
        return check(t, topic, keyless_why);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        return false; /* unknown: whatever the broker makes of it on first use */
    if (policy != t->cfg->topic_cleanup_policy)
        bw_info("topic %s has cleanup.policy=delete, not %s (topic.cleanup_policy): %s, and a "
                "compacted topic refuses messages without a key",
                topic, t->cfg->topic_cleanup_policy, keyless_why);
    return compacts(policy);
}

bool bw_topics_ensure(bw_topics *t, const char *topic, const char *keyless_why)
{
    json_t *known = json_object_get(t->known, topic);
    if (known)
        return (json_integer_value(known) & TOPIC_COMPACTED) != 0;
    bool compacted = t->cfg->topic_create ? create_or_check(t, topic, keyless_why)
                                          : check(t, topic, keyless_why);
    json_object_set_new(t->known, topic, json_integer(compacted ? TOPIC_COMPACTED : 0));
    return compacted;
}

bool bw_topics_first_redirect(bw_topics *t, const char *topic)
{
    json_t *known = json_object_get(t->known, topic);
    json_int_t bits = known ? json_integer_value(known) : 0;
    if (bits & TOPIC_REDIRECTED)
        return false;
    json_object_set_new(t->known, topic, json_integer(bits | TOPIC_REDIRECTED));
    return true;
}
