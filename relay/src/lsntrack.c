/*
 * lsntrack.c — the confirmable LSN (see lsntrack.h). A FIFO of entries; freed entries are
 * recycled through a free list, so a busy stream allocates nothing per transaction.
 */
#include "lsntrack.h"

#include <stdbool.h>
#include <stdlib.h>

#include "buf.h"

struct bw_txn_entry {
    uint64_t lsn;
    uint64_t pending; /* messages handed to Kafka, not yet acknowledged */
    bool complete;    /* no more messages will be added */
    bool keepalive;
    bw_txn_entry *next;
};

struct bw_lsntrack {
    bw_txn_entry *head; /* oldest */
    bw_txn_entry *tail;
    bw_txn_entry *free;
    uint64_t confirmed;
    size_t open;
};

bw_lsntrack *bw_lsntrack_new(uint64_t confirmed)
{
    bw_lsntrack *t = bw_xcalloc(1, sizeof(*t));
    t->confirmed = confirmed;
    return t;
}

static void free_list(bw_txn_entry *e)
{
    while (e) {
        bw_txn_entry *next = e->next;
        free(e);
        e = next;
    }
}

void bw_lsntrack_free(bw_lsntrack *t)
{
    if (t == NULL)
        return;
    free_list(t->head);
    free_list(t->free);
    free(t);
}

static bw_txn_entry *push(bw_lsntrack *t, uint64_t lsn, bool keepalive)
{
    bw_txn_entry *e = t->free;
    if (e)
        t->free = e->next;
    else
        e = bw_xmalloc(sizeof(*e));
    e->lsn = lsn;
    e->pending = 0;
    e->complete = keepalive;
    e->keepalive = keepalive;
    e->next = NULL;
    if (t->tail)
        t->tail->next = e;
    else
        t->head = e;
    t->tail = e;
    t->open++;
    return e;
}

static void advance(bw_lsntrack *t)
{
    while (t->head && t->head->complete && t->head->pending == 0) {
        bw_txn_entry *e = t->head;
        if (e->lsn > t->confirmed)
            t->confirmed = e->lsn;
        t->head = e->next;
        if (t->head == NULL)
            t->tail = NULL;
        e->next = t->free;
        t->free = e;
        t->open--;
    }
}

bw_txn_entry *bw_lsntrack_begin(bw_lsntrack *t, uint64_t end_lsn)
{
    return push(t, end_lsn, false);
}

void bw_lsntrack_add(bw_txn_entry *e)
{
    e->pending++;
}

void bw_lsntrack_commit(bw_lsntrack *t, bw_txn_entry *e)
{
    e->complete = true;
    advance(t);
}

void bw_lsntrack_abandon(bw_lsntrack *t, bw_txn_entry *e)
{
    e->lsn = 0; /* advance() only ever moves confirmed forward */
    e->complete = true;
    advance(t);
}

void bw_lsntrack_delivered(bw_lsntrack *t, bw_txn_entry *e)
{
    e->pending--;
    if (e == t->head)
        advance(t);
}

void bw_lsntrack_keepalive(bw_lsntrack *t, uint64_t wal_end)
{
    if (wal_end <= t->confirmed)
        return;
    if (t->head == NULL) {
        t->confirmed = wal_end;
        return;
    }
    if (t->tail->keepalive) {
        if (wal_end > t->tail->lsn)
            t->tail->lsn = wal_end;
        return;
    }
    push(t, wal_end, true);
}

uint64_t bw_lsntrack_confirmed(const bw_lsntrack *t)
{
    return t->confirmed;
}

size_t bw_lsntrack_open_entries(const bw_lsntrack *t)
{
    return t->open;
}

uint64_t bw_lsntrack_pending_messages(const bw_lsntrack *t)
{
    uint64_t n = 0;
    for (const bw_txn_entry *e = t->head; e; e = e->next)
        n += e->pending;
    return n;
}
