/*
 * topics.h — the topics' settings: a topic is created through librdkafka's admin API before its
 * first message (topic.create, topic.partitions, topic.replication_factor, topic.cleanup_policy,
 * topic.retention_ms), and an existing one is checked once, with a warning when its cleanup
 * policy cannot support a replay from offset 0 (docs/relay.md, topic.create).
 *
 * It also remembers, per topic, whether the topic is compacted: Kafka refuses a message without
 * a key on a compacted topic, so the router sends such messages elsewhere (docs/relay.md,
 * topic.keyless).
 */
#ifndef BW_TOPICS_H
#define BW_TOPICS_H

#include <stdbool.h>

#include <librdkafka/rdkafka.h>

#include "config.h"

typedef struct bw_topics bw_topics;

/* rk: the producer's handle (admin requests go through it). */
bw_topics *bw_topics_new(const bw_config *cfg, rd_kafka_t *rk);
void bw_topics_free(bw_topics *t);

/*
 * A topic's first use in this process: created when missing and topic.create is on, else
 * checked; later calls only look up what the first one learnt. keyless_why is NULL for a topic
 * whose messages have keys: it is created with topic.cleanup_policy, and an existing one that is
 * not compacted gets a warning. Otherwise it says why its messages have none ("table public.log
 * has no key columns"): such a topic is created with cleanup.policy=delete (logged, with the
 * reason), and an existing one is not warned about.
 *
 * Returns true when the topic is compacted as far as the relay knows: it created it so, or the
 * broker described it so. A topic whose settings could not be learnt counts as not compacted.
 * Blocks for at most a few seconds on a first use. Never fails the relay: a broker that refuses
 * or does not answer is logged, and the producer goes on (the broker may create the topic itself).
 */
bool bw_topics_ensure(bw_topics *t, const char *topic, const char *keyless_why);

/*
 * A message without a key bound for the compacted topic went elsewhere: true the first time per
 * topic (the caller warns once), false afterwards.
 */
bool bw_topics_first_redirect(bw_topics *t, const char *topic);

#endif
