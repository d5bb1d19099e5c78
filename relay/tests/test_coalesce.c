/*
 * test_coalesce.c — row coalescing: calm changes go at once, a storm on one key gives one message
 * per window with the latest values, insert+delete vanishes, unchanged TOAST columns are taken
 * from the held change, the memory bound flushes early, and held changes hold the LSN.
 */
#include <stdio.h>
#include <stdlib.h>

#include "coalesce.h"
#include "lsntrack.h"
#include "unit.h"

typedef struct out {
    int n;
    char value[16][512];
    char op[16][16];
    bw_lsntrack *track;
} out;

static int capture(void *arg, const char *topic, const char *key, size_t keylen, const char *value,
                   size_t valuelen, const bw_header *h, size_t nh, bw_txn_entry *e)
{
    out *o = arg;
    snprintf(o->value[o->n], sizeof(o->value[0]), "%.*s", (int) valuelen, value);
    for (size_t i = 0; i < nh; i++)
        if (strcmp(h[i].name, "op") == 0)
            snprintf(o->op[o->n], sizeof(o->op[0]), "%.*s", (int) h[i].len, h[i].value);
    o->n++;
    bw_lsntrack_add(e); /* the producer's share, acknowledged at once */
    bw_lsntrack_delivered(o->track, e);
    return 0;
}

static int offer(bw_coalescer *c, out *o, int64_t now, bw_record_type op, const char *value,
                 bw_txn_entry *e)
{
    const char *opname = op == BW_REC_INSERT ? "insert" : op == BW_REC_UPDATE ? "update" : "delete";
    bw_header h[1] = {{"op", opname, strlen(opname)}};
    int rc = bw_coalesce_offer(c, now, op, "t", "{\"id\":1}", 8, value, strlen(value), h, 1, e,
                               capture, o);
    if (rc == 0) /* calm: the caller publishes it now, as the router does */
        capture(o, "t", "{\"id\":1}", 8, value, strlen(value), h, 1, e);
    return rc;
}

TEST(coalesce_calm_goes_at_once_storm_merges_per_window)
{
    bw_lsntrack *t = bw_lsntrack_new(0);
    bw_coalescer *c = bw_coalescer_new(t, 100, 1 << 20, &bw_json_merge_ops);
    out o = {.track = t};
    bw_txn_entry *e = bw_lsntrack_begin(t, 1000);
    ASSERT_EQ(offer(c, &o, 0, BW_REC_UPDATE, "{\"op\":\"update\",\"new\":{\"v\":0}}", e), 0);
    for (int i = 1; i <= 50; i++) {
        char v[64];
        snprintf(v, sizeof(v), "{\"op\":\"update\",\"new\":{\"v\":%d}}", i);
        ASSERT_EQ(offer(c, &o, i, BW_REC_UPDATE, v, e), 1);
    }
    ASSERT_EQ(o.n, 1); /* the first went at once */
    ASSERT_EQ(bw_coalesce_emit_due(c, 99, capture, &o), 0);
    ASSERT_EQ(bw_coalesce_emit_due(c, 100, capture, &o), 1);
    ASSERT_EQ(o.n, 2); /* 51 changes, 2 messages */
    ASSERT_STR_EQ(o.value[1], "{\"op\":\"update\",\"new\":{\"v\":50}}");
    ASSERT_EQ(bw_coalesce_emit_due(c, 200, capture, &o), 0); /* a window without change */
    ASSERT_EQ(bw_coalesce_keys(c), 0);                       /* calm again: forgotten */
    ASSERT_EQ(offer(c, &o, 300, BW_REC_UPDATE, "{\"op\":\"update\",\"new\":{\"v\":51}}", e), 0);
    bw_lsntrack_commit(t, e);
    bw_coalescer_free(c);
    bw_lsntrack_free(t);
}

TEST(coalesce_merge_rules)
{
    bw_lsntrack *t = bw_lsntrack_new(0);
    bw_coalescer *c = bw_coalescer_new(t, 100, 1 << 20, &bw_json_merge_ops);
    out o = {.track = t};
    bw_txn_entry *e = bw_lsntrack_begin(t, 1000);
    offer(c, &o, 0, BW_REC_DELETE, "{\"op\":\"delete\"}", e); /* calm: at once */
    offer(c, &o, 1, BW_REC_INSERT, "{\"op\":\"insert\",\"new\":{\"v\":1}}", e);
    offer(c, &o, 2, BW_REC_UPDATE, "{\"op\":\"update\",\"new\":{\"v\":2}}", e);
    bw_coalesce_emit_due(c, 100, capture, &o);
    ASSERT_STR_EQ(o.op[0], "delete");                                   /* calm: at once */
    ASSERT_STR_EQ(o.value[1], "{\"op\":\"insert\",\"new\":{\"v\":2}}"); /* insert+update: insert */
    ASSERT_STR_EQ(o.op[1], "insert");
    offer(c, &o, 150, BW_REC_UPDATE, "{\"op\":\"update\",\"new\":{\"v\":3}}", e);
    offer(c, &o, 160, BW_REC_DELETE, "{\"op\":\"delete\"}", e);
    bw_coalesce_emit_due(c, 200, capture, &o);
    ASSERT_STR_EQ(o.op[2], "delete"); /* update+delete: delete */
    offer(c, &o, 250, BW_REC_INSERT, "{\"op\":\"insert\",\"new\":{\"v\":4}}", e);
    offer(c, &o, 260, BW_REC_DELETE, "{\"op\":\"delete\"}", e);
    ASSERT_EQ(bw_coalesce_emit_due(c, 300, capture, &o), 0); /* insert+delete: nothing */
    ASSERT_EQ(o.n, 3);
    /* a delete consumers have not seen, then insert, then delete: the row they have is gone */
    offer(c, &o, 400, BW_REC_UPDATE, "{\"op\":\"update\",\"new\":{\"v\":5}}", e); /* calm */
    offer(c, &o, 410, BW_REC_DELETE, "{\"op\":\"delete\"}", e);
    offer(c, &o, 420, BW_REC_INSERT, "{\"op\":\"insert\",\"new\":{\"v\":6}}", e);
    offer(c, &o, 430, BW_REC_DELETE, "{\"op\":\"delete\"}", e);
    bw_coalesce_emit_due(c, 500, capture, &o);
    ASSERT_EQ(o.n, 5);
    ASSERT_STR_EQ(o.op[4], "delete");
    /* delete then insert of a row consumers have: an update with the new values */
    offer(c, &o, 510, BW_REC_DELETE, "{\"op\":\"delete\"}", e);
    offer(c, &o, 520, BW_REC_INSERT, "{\"op\":\"insert\",\"new\":{\"v\":7}}", e);
    bw_coalesce_emit_due(c, 600, capture, &o);
    ASSERT_STR_EQ(o.value[5], "{\"op\":\"update\",\"new\":{\"v\":7}}");
    ASSERT_EQ(bw_coalesce_held_bytes(c), 0);
    bw_lsntrack_commit(t, e);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 1000); /* nothing left holding it */
    bw_coalescer_free(c);
    bw_lsntrack_free(t);
}

TEST(coalesce_unchanged_toast_taken_from_the_held_change)
{
    bw_lsntrack *t = bw_lsntrack_new(0);
    bw_coalescer *c = bw_coalescer_new(t, 100, 1 << 20, &bw_json_merge_ops);
    out o = {.track = t};
    bw_txn_entry *e = bw_lsntrack_begin(t, 1000);
    offer(c, &o, 0, BW_REC_UPDATE, "{\"op\":\"update\",\"new\":{\"id\":1,\"big\":\"x\"}}", e);
    offer(c, &o, 1, BW_REC_UPDATE, "{\"op\":\"update\",\"new\":{\"id\":1,\"big\":\"AAA\",\"n\":1}}",
          e);
    offer(c, &o, 2, BW_REC_UPDATE,
          "{\"op\":\"update\",\"new\":{\"id\":1,\"n\":2},\"unchanged_toast\":[\"big\"]}", e);
    bw_coalesce_emit_due(c, 100, capture, &o);
    ASSERT_EQ(o.n, 2);
    ASSERT_STR_EQ(o.value[1], "{\"op\":\"update\",\"new\":{\"id\":1,\"n\":2,\"big\":\"AAA\"}}");
    bw_lsntrack_commit(t, e);
    bw_coalescer_free(c);
    bw_lsntrack_free(t);
}

TEST(coalesce_holds_the_confirmable_position)
{
    bw_lsntrack *t = bw_lsntrack_new(0);
    bw_coalescer *c = bw_coalescer_new(t, 100, 1 << 20, &bw_json_merge_ops);
    out o = {.track = t};
    bw_txn_entry *e1 = bw_lsntrack_begin(t, 10);
    offer(c, &o, 0, BW_REC_UPDATE, "{\"op\":\"update\",\"new\":{\"v\":1}}", e1);
    bw_lsntrack_commit(t, e1);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 10);
    bw_txn_entry *e2 = bw_lsntrack_begin(t, 20);
    offer(c, &o, 5, BW_REC_UPDATE, "{\"op\":\"update\",\"new\":{\"v\":2}}", e2); /* held */
    bw_lsntrack_commit(t, e2);
    bw_txn_entry *e3 = bw_lsntrack_begin(t, 30);
    offer(c, &o, 6, BW_REC_UPDATE, "{\"op\":\"update\",\"new\":{\"v\":3}}", e3); /* merged */
    bw_lsntrack_commit(t, e3);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 10); /* e2's change is held: nothing after it confirms */
    bw_coalesce_emit_due(c, 100, capture, &o);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 30);
    bw_coalescer_free(c);
    bw_lsntrack_free(t);
}

TEST(coalesce_memory_bound_flushes_early)
{
    bw_lsntrack *t = bw_lsntrack_new(0);
    bw_coalescer *c = bw_coalescer_new(t, 100000, 64, &bw_json_merge_ops);
    out o = {.track = t};
    bw_txn_entry *e = bw_lsntrack_begin(t, 1000);
    offer(c, &o, 0, BW_REC_UPDATE, "{\"op\":\"update\",\"new\":{\"v\":0}}", e);
    offer(c, &o, 1, BW_REC_UPDATE, "{\"op\":\"update\",\"new\":{\"v\":1,\"pad\":\"........\"}}", e);
    ASSERT_EQ(o.n, 1);
    offer(
        c, &o, 2, BW_REC_UPDATE,
        "{\"op\":\"update\",\"new\":{\"v\":2,\"pad\":\"..........................................\"}}",
        e);
    ASSERT_EQ(o.n, 2); /* over 64 bytes held: sent before its window ended */
    ASSERT_EQ(bw_coalesce_held_bytes(c), 0);
    bw_lsntrack_commit(t, e);
    bw_coalescer_free(c);
    bw_lsntrack_free(t);
}

TEST(coalesce_windows_of_many_keys_stay_within_the_bound)
{
    bw_lsntrack *t = bw_lsntrack_new(0);
    bw_coalescer *c = bw_coalescer_new(t, 100000, 65536, &bw_json_merge_ops);
    out o = {.track = t};
    bw_txn_entry *e = bw_lsntrack_begin(t, 1000);
    /* a storm over 100k distinct keys: each first change is calm, each opens a window */
    for (int i = 0; i < 100000; i++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "{\"id\":%d}", i);
        bw_header h[1] = {{"op", "update", 6}};
        int rc = bw_coalesce_offer(c, i / 1000, BW_REC_UPDATE, "t", key, (size_t) n, "{}", 2, h, 1,
                                   e, capture, &o);
        ASSERT_EQ(rc, 0);
        ASSERT_LE(bw_coalesce_keys(c) * 100, 65536 + 200); /* windows are forgotten at the bound */
    }
    bw_lsntrack_commit(t, e);
    bw_coalescer_free(c);
    bw_lsntrack_free(t);
}
