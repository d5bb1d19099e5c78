/*
 * test_signals.c — tenant signals: the first change after a quiet interval is signalled at once,
 * at most one signal per (tenant, table) per interval, the last change of a burst is always
 * signalled within one interval, one storm never delays another tenant, and the LSN tracker
 * cannot confirm a change before the signal covering it is handed to the producer.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "lsntrack.h"
#include "signals.h"
#include "unit.h"

typedef struct sent {
    int n;
    char tenant[64][16];
    uint64_t counts[64];
    int64_t at[64];
    size_t samples[64];
    bool storm[64];
    int64_t now;
    bw_lsntrack *track;
    int fail;
} sent;

static int capture(void *arg, const bw_signal *sig)
{
    sent *s = arg;
    if (s->fail)
        return 1;
    int i = s->n++;
    snprintf(s->tenant[i], sizeof(s->tenant[i]), "%.*s", (int) sig->tenant_len, sig->tenant);
    s->counts[i] = sig->inserts + sig->updates + sig->deletes;
    s->at[i] = s->now;
    s->samples[i] = sig->nsample_keys;
    s->storm[i] = sig->storm;
    /* the producer would take over the hold: add for the message, deliver it right away */
    bw_lsntrack_add(sig->hold);
    bw_lsntrack_delivered(s->track, sig->hold);
    return 0;
}

static bw_relation rel_orders = {.relid = 1, .schema = "public", .table = "orders"};
static bw_relation rel_items = {.relid = 2, .schema = "public", .table = "items"};

static void change(bw_signals *g, int64_t now, const char *tenant, const bw_relation *rel,
                   bw_txn_entry *e, uint64_t lsn)
{
    bw_xact x = {.xid = 1, .commit_lsn = lsn, .end_lsn = lsn + 1, .commit_time = 0};
    char key[32];
    int n = snprintf(key, sizeof(key), "{\"id\":%llu}", (unsigned long long) (lsn % 7));
    bw_signals_note(g, now, tenant, strlen(tenant), rel, BW_REC_UPDATE, key, (size_t) n, &x, e);
}

TEST(signals_first_at_once_then_one_per_interval_and_a_final_one)
{
    bw_lsntrack *t = bw_lsntrack_new(0);
    bw_signals *g = bw_signals_new(t, 1000, 3, 500);
    sent s = {.track = t};
    /* a storm: one change per ms for 3.5 s */
    for (int64_t now = 0; now < 3500; now++) {
        bw_txn_entry *e = bw_lsntrack_begin(t, (uint64_t) now + 10);
        change(g, now, "acme", &rel_orders, e, (uint64_t) now + 10);
        bw_lsntrack_commit(t, e);
        s.now = now;
        ASSERT_TRUE(bw_signals_emit_due(g, now, capture, &s) >= 0);
    }
    for (int64_t now = 3500; now < 6000; now++) {
        s.now = now;
        bw_signals_emit_due(g, now, capture, &s);
    }
    ASSERT_EQ(s.n, 5);     /* at 0, 1000, 2000, 3000, and the final one at 4000 */
    ASSERT_EQ(s.at[0], 0); /* the first goes at once */
    for (int i = 1; i < s.n; i++)
        ASSERT_GE(s.at[i] - s.at[i - 1], 1000); /* never more than one per interval */
    ASSERT_EQ(s.at[4], 4000); /* the last change (3499) is signalled within one interval */
    ASSERT_FALSE(s.storm[0]); /* one change since a quiet interval */
    ASSERT_TRUE(s.storm[1]);  /* 1000 changes/s, storm_rate 500 */
    ASSERT_TRUE(s.storm[3]);
    uint64_t total = 0;
    for (int i = 0; i < s.n; i++)
        total += s.counts[i];
    ASSERT_EQ(total, 3500); /* every change counted once */
    ASSERT_LE(s.samples[1], 3);
    ASSERT_EQ(bw_signals_tracked(g),
              0); /* quiet for an interval after its last signal: forgotten */
    ASSERT_EQ(bw_lsntrack_confirmed(t), 3509);
    bw_signals_free(g);
    bw_lsntrack_free(t);
}

TEST(signals_one_storm_does_not_delay_another_tenant)
{
    bw_lsntrack *t = bw_lsntrack_new(0);
    bw_signals *g = bw_signals_new(t, 1000, 5, 500);
    sent s = {.track = t};
    bw_txn_entry *e = bw_lsntrack_begin(t, 100);
    for (int64_t now = 0; now < 2500; now++) {
        change(g, now, "storm", &rel_orders, e, 50);
        if (now == 1700) /* a calm tenant's single change in the middle of the storm */
            change(g, now, "calm", &rel_orders, e, 60);
        s.now = now;
        bw_signals_emit_due(g, now, capture, &s);
    }
    int calm = -1;
    for (int i = 0; i < s.n; i++)
        if (strcmp(s.tenant[i], "calm") == 0)
            calm = i;
    ASSERT_GE(calm, 0);
    ASSERT_EQ(s.at[calm], 1700); /* at once: its own first change after a quiet interval */
    ASSERT_FALSE(s.storm[calm]);
    bw_lsntrack_commit(t, e);
    bw_signals_free(g);
    bw_lsntrack_free(t);
}

TEST(signals_tables_are_separate)
{
    bw_lsntrack *t = bw_lsntrack_new(0);
    bw_signals *g = bw_signals_new(t, 1000, 5, 500);
    sent s = {.track = t};
    bw_txn_entry *e = bw_lsntrack_begin(t, 100);
    change(g, 0, "acme", &rel_orders, e, 10);
    change(g, 0, "acme", &rel_items, e, 10);
    bw_signals_emit_due(g, 0, capture, &s);
    ASSERT_EQ(s.n, 2);
    bw_lsntrack_commit(t, e);
    bw_signals_free(g);
    bw_lsntrack_free(t);
}

TEST(signals_hold_the_confirmable_position)
{
    bw_lsntrack *t = bw_lsntrack_new(0);
    bw_signals *g = bw_signals_new(t, 1000, 5, 500);
    sent s = {.track = t};
    bw_txn_entry *e1 = bw_lsntrack_begin(t, 100);
    change(g, 0, "acme", &rel_orders, e1, 90);
    s.now = 0;
    bw_signals_emit_due(g, 0, capture, &s); /* the first signal goes at once */
    bw_lsntrack_commit(t, e1);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 100);
    bw_txn_entry *e2 = bw_lsntrack_begin(t, 200);
    change(g, 10, "acme", &rel_orders, e2, 190); /* within the interval: held */
    bw_lsntrack_commit(t, e2);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 100); /* held back by the pending signal */
    s.fail = 1;
    ASSERT_EQ(bw_signals_emit_due(g, 1000, capture, &s), -1); /* the producer refused it */
    ASSERT_EQ(bw_lsntrack_confirmed(t), 100);
    s.fail = 0;
    s.now = 1001;
    ASSERT_EQ(bw_signals_emit_due(g, 1001, capture, &s), 1);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 200);
    bw_signals_free(g);
    bw_lsntrack_free(t);
}

TEST(signals_shutdown_flush_emits_everything_pending)
{
    bw_lsntrack *t = bw_lsntrack_new(0);
    bw_signals *g = bw_signals_new(t, 60000, 5, 500);
    sent s = {.track = t};
    bw_txn_entry *e = bw_lsntrack_begin(t, 100);
    change(g, 0, "a", &rel_orders, e, 1);
    bw_signals_emit_due(g, 0, capture, &s);
    change(g, 5, "a", &rel_orders, e, 2);
    change(g, 5, "b", &rel_items, e, 2);
    bw_lsntrack_commit(t, e);
    /* "a" is held until its interval ends, "b" was due but not yet emitted: both go now */
    ASSERT_EQ(bw_signals_emit_due(g, INT64_MAX, capture, &s), 2);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 100);
    bw_signals_free(g);
    bw_lsntrack_free(t);
}

TEST(signal_json)
{
    const char *samples[] = {"{\"id\":1}", "{\"id\":2}"};
    bw_signal sig = {.tenant = "acme",
                     .tenant_len = 4,
                     .schema = "public",
                     .table = "orders",
                     .inserts = 1,
                     .updates = 2,
                     .deletes = 3,
                     .sample_keys = samples,
                     .nsample_keys = 2,
                     .first_lsn = 0x10,
                     .last_lsn = 0x20,
                     .last_commit_time = 1700000000123456LL,
                     .storm = false,
                     .hold = NULL};
    bw_buf b;
    bw_buf_init(&b);
    bw_signal_json(&b, &sig);
    ASSERT_STR_EQ(
        b.data, "{\"tenant\":\"acme\",\"schema\":\"public\",\"table\":\"orders\","
                "\"counts\":{\"insert\":1,\"update\":2,\"delete\":3},"
                "\"sample_keys\":[{\"id\":1},{\"id\":2}],\"storm\":false,\"first_lsn\":\"0/10\","
                "\"last_lsn\":\"0/20\",\"last_commit_time\":\"2023-11-14T22:13:20.123456+00:00\"}");
    bw_buf_free(&b);
}

TEST(signal_json_commit_time_as_change_values_render_it)
{
    bw_signal sig = {.tenant = "a",
                     .tenant_len = 1,
                     .schema = "s",
                     .table = "t",
                     .last_commit_time = 1700000000500000LL};
    bw_buf b;
    bw_buf_init(&b);
    bw_signal_json(&b, &sig);
    /* the decoder's form: trailing zeros of the fraction left out */
    ASSERT_STR_CONTAINS(b.data, "\"last_commit_time\":\"2023-11-14T22:13:20.5+00:00\"}");
    bw_buf_free(&b);
}
