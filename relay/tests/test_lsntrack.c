/*
 * test_lsntrack.c — the confirmable position never passes an unacknowledged message, never moves
 * backwards, and keepalives advance it only behind completed work.
 */
#include <stdlib.h>

#include "lsntrack.h"
#include "unit.h"

TEST(lsntrack_waits_for_every_message_of_a_transaction)
{
    bw_lsntrack *t = bw_lsntrack_new(100);
    bw_txn_entry *a = bw_lsntrack_begin(t, 200);
    bw_lsntrack_add(a);
    bw_lsntrack_add(a);
    bw_lsntrack_commit(t, a);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 100);
    bw_lsntrack_delivered(t, a);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 100);
    bw_lsntrack_delivered(t, a);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 200);
    ASSERT_EQ(bw_lsntrack_open_entries(t), 0);
    bw_lsntrack_free(t);
}

TEST(lsntrack_not_before_commit_is_read)
{
    bw_lsntrack *t = bw_lsntrack_new(0);
    bw_txn_entry *a = bw_lsntrack_begin(t, 50);
    bw_lsntrack_add(a);
    bw_lsntrack_delivered(t, a); /* delivered, but more may come: not complete */
    ASSERT_EQ(bw_lsntrack_confirmed(t), 0);
    bw_lsntrack_commit(t, a);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 50);
    bw_lsntrack_free(t);
}

TEST(lsntrack_later_transactions_wait_for_earlier_ones)
{
    bw_lsntrack *t = bw_lsntrack_new(0);
    bw_txn_entry *a = bw_lsntrack_begin(t, 10);
    bw_lsntrack_add(a);
    bw_lsntrack_commit(t, a);
    bw_txn_entry *b = bw_lsntrack_begin(t, 20);
    bw_lsntrack_add(b);
    bw_lsntrack_commit(t, b);
    bw_lsntrack_delivered(t, b); /* out of order: the later one first */
    ASSERT_EQ(bw_lsntrack_confirmed(t), 0);
    ASSERT_EQ(bw_lsntrack_pending_messages(t), 1);
    bw_lsntrack_delivered(t, a);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 20);
    bw_lsntrack_free(t);
}

TEST(lsntrack_keepalives)
{
    bw_lsntrack *t = bw_lsntrack_new(5);
    bw_lsntrack_keepalive(t, 3); /* behind: ignored */
    ASSERT_EQ(bw_lsntrack_confirmed(t), 5);
    bw_lsntrack_keepalive(t, 8); /* nothing open: confirmable at once */
    ASSERT_EQ(bw_lsntrack_confirmed(t), 8);
    bw_txn_entry *a = bw_lsntrack_begin(t, 20);
    bw_lsntrack_add(a);
    bw_lsntrack_commit(t, a);
    bw_lsntrack_keepalive(t, 30);
    bw_lsntrack_keepalive(t, 40); /* merged into one entry */
    ASSERT_EQ(bw_lsntrack_open_entries(t), 2);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 8);
    bw_lsntrack_delivered(t, a);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 40);
    bw_lsntrack_free(t);
}

TEST(lsntrack_abandoned_transaction_confirms_nothing)
{
    bw_lsntrack *t = bw_lsntrack_new(100);
    bw_txn_entry *a = bw_lsntrack_begin(t, 500);
    bw_lsntrack_add(a);
    bw_lsntrack_abandon(t, a); /* connection lost mid-transaction */
    ASSERT_EQ(bw_lsntrack_confirmed(t), 100);
    bw_txn_entry *b = bw_lsntrack_begin(t, 500); /* the same transaction, streamed again */
    bw_lsntrack_add(b);
    bw_lsntrack_commit(t, b);
    bw_lsntrack_delivered(t, b);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 100); /* the abandoned copy is still in flight */
    bw_lsntrack_delivered(t, a);
    ASSERT_EQ(bw_lsntrack_confirmed(t), 500);
    bw_lsntrack_free(t);
}

/* A random schedule of transactions and out-of-order acknowledgements, against a model. */
TEST(lsntrack_random_schedules_match_a_model)
{
    for (unsigned seed = 1; seed <= 200; seed++) {
        srand(seed);
        enum { N = 64 };
        bw_lsntrack *t = bw_lsntrack_new(0);
        bw_txn_entry *e[N];
        int msgs[N], acked[N];
        for (int i = 0; i < N; i++) {
            e[i] = bw_lsntrack_begin(t, (uint64_t) (i + 1) * 10);
            msgs[i] = rand() % 4;
            acked[i] = 0;
            for (int m = 0; m < msgs[i]; m++)
                bw_lsntrack_add(e[i]);
            bw_lsntrack_commit(t, e[i]);
        }
        uint64_t last = 0;
        for (;;) {
            int open[N], nopen = 0;
            for (int i = 0; i < N; i++)
                if (acked[i] < msgs[i])
                    open[nopen++] = i;
            if (nopen == 0)
                break;
            int i = open[rand() % nopen];
            acked[i]++;
            bw_lsntrack_delivered(t, e[i]);
            /* model: the longest fully acknowledged prefix */
            uint64_t want = 0;
            for (int k = 0; k < N && acked[k] == msgs[k]; k++)
                want = (uint64_t) (k + 1) * 10;
            ASSERT_EQ(bw_lsntrack_confirmed(t), want);
            ASSERT_GE(bw_lsntrack_confirmed(t), last);
            last = bw_lsntrack_confirmed(t);
        }
        ASSERT_EQ(bw_lsntrack_confirmed(t), (uint64_t) N * 10);
        bw_lsntrack_free(t);
    }
}
