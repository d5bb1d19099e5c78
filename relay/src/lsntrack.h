/*
 * lsntrack.h — which position may be confirmed to PostgreSQL.
 *
 * Entries are kept in stream order: one per transaction (its end LSN) and one per keepalive
 * (the server's WAL end at that point). A transaction's entry counts its messages that Kafka has
 * not acknowledged; it is complete once its commit was read. The confirmable position is the LSN
 * of the last entry of the longest prefix whose entries are all complete with nothing pending:
 * nothing at or below it waits for Kafka. It never moves backwards.
 */
#ifndef BW_LSNTRACK_H
#define BW_LSNTRACK_H

#include <stddef.h>
#include <stdint.h>

typedef struct bw_txn_entry bw_txn_entry; /* handed to each message as its delivery opaque */
typedef struct bw_lsntrack bw_lsntrack;

bw_lsntrack *bw_lsntrack_new(uint64_t confirmed);
void bw_lsntrack_free(bw_lsntrack *t);

/* A transaction began; end_lsn is what confirming it means. */
bw_txn_entry *bw_lsntrack_begin(bw_lsntrack *t, uint64_t end_lsn);
/* One more message of e was handed to Kafka. */
void bw_lsntrack_add(bw_txn_entry *e);
/* e's commit was read: no more messages will be added. */
void bw_lsntrack_commit(bw_lsntrack *t, bw_txn_entry *e);
/* The stream broke before e's commit: e completes without confirming anything. */
void bw_lsntrack_abandon(bw_lsntrack *t, bw_txn_entry *e);
/* Kafka acknowledged one message of e. */
void bw_lsntrack_delivered(bw_lsntrack *t, bw_txn_entry *e);
/* The server reported that everything before wal_end was sent: confirmable once earlier
 * entries are. Consecutive keepalives merge into one entry. */
void bw_lsntrack_keepalive(bw_lsntrack *t, uint64_t wal_end);

uint64_t bw_lsntrack_confirmed(const bw_lsntrack *t);
/* Entries not yet confirmable, and messages not yet acknowledged. */
size_t bw_lsntrack_open_entries(const bw_lsntrack *t);
uint64_t bw_lsntrack_pending_messages(const bw_lsntrack *t);

#endif
