/*
 * backfill.h — backfills while streaming (docs/snapshots.md, "Backfills"): the current rows of one
 * table, optionally one tenant's and those matching a condition, sent again as op "read" without
 * stopping the stream. Requests arrive through the stream itself (a pg_logical_emit_message with
 * the prefix breakwater.backfill, which the `breakwater-relay backfill` command writes after
 * checking it), so they are ordered with the changes and survive a restart.
 *
 * Each chunk follows the watermark technique (DBLog): a low watermark message (transactional, in
 * a transaction of its own), the chunk read in key order, a high watermark message. A change
 * streamed between the two watermarks drops its key's row from the chunk (the stream is newer); at
 * the high watermark the rest goes out. A transaction decoded before the low watermark but
 * invisible to the chunk's snapshot (its commit record written, its visibility not yet) would make
 * a row stale: the chunk's snapshot is checked against the transactions decoded recently, and such
 * a chunk is read again.
 *
 * Progress is saved in <relay.state_dir>/<slot>.backfills.json once Kafka acknowledged a chunk;
 * after a restart a backfill resumes after its last saved chunk.
 */
#ifndef BW_BACKFILL_H
#define BW_BACKFILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "proto.h"
#include "route.h"

typedef struct bw_backfills bw_backfills;

/* Loads the state file. NULL with err set when it cannot be read or an option does not parse. */
bw_backfills *bw_backfills_new(const bw_config *cfg, bw_router *router, char *err, size_t errlen);
void bw_backfills_free(bw_backfills *b);
/* The state file's path (served at /backfills). */
const char *bw_backfills_path(const bw_backfills *b);
/* Points the router's backfill hooks at b. */
void bw_backfills_attach(bw_backfills *b, bw_router *router);

/*
 * A turn of the main loop while streaming: records the chunk Kafka acknowledged, starts the next
 * one. Trouble with PostgreSQL is logged and retried; -1 (err set) only when the state cannot be
 * saved.
 */
int bw_backfills_step(bw_backfills *b, char *err, size_t errlen);
/*
 * Queues a backfill of a whole table that continues after after[] (nafter key values as text;
 * NULL: from the start), rows already sent. An id already known is not queued again. For a
 * snapshot that was interrupted: the rest of its tables go out while streaming.
 */
int bw_backfills_enqueue(bw_backfills *b, const char *id, const char *schema, const char *table,
                         char *const *after, uint16_t nafter, int64_t rows, int64_t estimate,
                         char *err, size_t errlen);

/* The stream broke: a chunk between its watermarks is read again after the reconnection. */
void bw_backfills_reset(bw_backfills *b);

/* `breakwater-relay ... backfill ...`: requests a backfill of a running relay, or --status. */
bool bw_backfill_command(int argc, char **argv);
int bw_backfill_cli(int argc, char **argv, char **envp);

#endif
