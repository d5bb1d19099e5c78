/*
 * snapshot.h — the initial snapshot (snapshot.mode): the rows of the tables the decoder options
 * select, read in key order in chunks and published as op "read" through the router, so that a
 * consumer sees the tables as they were at the slot's consistent point before the stream that
 * follows it. Progress is kept in <relay.state_dir>/<slot>.snapshot.json, saved after each chunk
 * Kafka acknowledged, so that a relay stopped or killed mid-snapshot resumes after the last such
 * chunk (docs/snapshots.md).
 */
#ifndef BW_SNAPSHOT_H
#define BW_SNAPSHOT_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "route.h"

typedef struct bw_snapshot bw_snapshot;

/*
 * stop: set by signal handlers; a snapshot checks it between chunks. NULL with err set when the
 * decoder options do not parse or the state file cannot be read.
 */
bw_snapshot *bw_snapshot_new(const bw_config *cfg, bw_router *router, volatile sig_atomic_t *stop,
                             char *err, size_t errlen);
void bw_snapshot_free(bw_snapshot *s);

/* The slot hooks (pgstream.h) of snapshot.mode=initial; arg is the bw_snapshot. */
int bw_snapshot_creating(void *arg, char *err, size_t errlen);
int bw_snapshot_created(void *arg, const char *snapshot, uint64_t consistent_point, char *err,
                        size_t errlen);
int bw_snapshot_found(void *arg, uint64_t confirmed, char *err, size_t errlen);

/* An interrupted snapshot's keyed tables continue as backfills in b (snapshot.mode=initial). */
struct bw_backfills;
void bw_snapshot_resume_as(bw_snapshot *s, struct bw_backfills *b);

/*
 * snapshot.mode=initial-only: reads every selected table (or what an interrupted run left) in a
 * fresh REPEATABLE READ transaction, without a slot. 0 when done, 1 when stopped, -1 on error.
 */
int bw_snapshot_only(bw_snapshot *s, char *err, size_t errlen);

#endif
