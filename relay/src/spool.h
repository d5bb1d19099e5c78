/*
 * spool.h — streamed transactions (docs/protocol.md, "Streamed transactions"): the records of
 * each in-progress transaction kept in an unlinked temporary file until its stream commit (then
 * replayed, in order, as one transaction) or abort (then dropped, whole or from an aborted
 * subtransaction on).
 *
 * Memory stays flat in the transaction's size: only offsets live in memory. A spool holds the
 * framed records as they came, each change preceded by the relation record of the version it
 * was written with, so that a replay decodes it with that version even if DDL came since.
 */
#ifndef BW_SPOOL_H
#define BW_SPOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "proto.h"

typedef struct bw_spools bw_spools;

/* dir: where the files go ("" = $TMPDIR, else /tmp). */
bw_spools *bw_spools_new(const char *dir);
void bw_spools_free(bw_spools *s);

/*
 * Takes a record of the stream. Returns 1 when it was the spool's (stream start and stop,
 * subtransactions, aborts, and every change, truncate and message inside a block), 0 when it
 * is not (the caller routes it), -1 on error (err set: the file could not be written, or the
 * records are out of order).
 */
int bw_spools_take(bw_spools *s, const bw_record *rec, char *err, size_t errlen);

/*
 * A stream commit: the replay of the transaction's records, framed by a BEGIN and a COMMIT
 * record with the commit's fields, decoded with a parser of its own whose relations are released
 * through free_user. The spool is the replay's from now on. NULL on error (err set).
 */
typedef struct bw_replay bw_replay;
bw_replay *bw_spools_replay_start(bw_spools *s, const bw_xact *commit,
                                  bw_relation_free_cb free_user, void *free_arg, char *err,
                                  size_t errlen);
/*
 * Hands the next records to cb (the BEGIN, then a batch of about a megabyte, ..., the COMMIT).
 * Returns 0 while more remains, 1 once the COMMIT went, cb's non-zero value, or -1 (err set).
 */
int bw_replay_step(bw_replay *j, bw_record_cb cb, void *arg, char *err, size_t errlen);
/* Releases the replay and its spool file. */
void bw_replay_free(bw_replay *j);

/* The stream broke: what it had of unfinished transactions will be sent again from the start. */
void bw_spools_clear(bw_spools *s);

/* Bytes in spool files now; transactions spooled now. */
int64_t bw_spools_bytes(const bw_spools *s);
size_t bw_spools_count(const bw_spools *s);

#endif
