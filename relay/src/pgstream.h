/*
 * pgstream.h — the replication connection to PostgreSQL: connect (replication=database), make
 * sure the slot exists and uses the breakwater plugin, START_REPLICATION with the decoder's
 * options, read XLogData and keepalives, send standby status updates.
 */
#ifndef BW_PGSTREAM_H
#define BW_PGSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bw_pgstream bw_pgstream;

/*
 * The advisory lock a relay holds while it runs its slot's initial snapshot (class, then the
 * slot name's hashtext & 0x7fffffff); a relay that finds it held waits as a standby.
 */
#define BW_SNAPSHOT_LOCK_CLASS "1651990017"

/*
 * What the relay does around the slot before streaming (snapshot.mode=initial). Each returns 0 to
 * go on, 1 when a stop was asked (bw_pgstream_start then returns BW_PG_RETRY, "stopped"), or -1
 * with err set (BW_PG_FATAL). NULL hooks are skipped.
 */
typedef struct bw_slot_hooks {
    void *arg;
    /* before the slot is created: creating=non-NULL makes it with an exported snapshot */
    int (*creating)(void *arg, char *err, size_t errlen);
    /* the slot was just created; the exported snapshot is valid until this returns */
    int (*created)(void *arg, const char *snapshot, uint64_t consistent_point, char *err,
                   size_t errlen);
    /* the slot exists and is free; streaming starts from confirmed when this returns */
    int (*found)(void *arg, uint64_t confirmed, char *err, size_t errlen);
} bw_slot_hooks;

typedef struct bw_pgstream_opts {
    const char *conninfo;
    const char *slot;
    bool create_slot;
    const char *const *opt_names; /* decoder options */
    const char *const *opt_values;
    size_t nopts;
    const bw_slot_hooks *hooks; /* NULL: none */
} bw_pgstream_opts;

typedef enum bw_pg_status {
    BW_PG_OK = 0,
    BW_PG_RETRY = -1, /* connection trouble: try again later */
    BW_PG_BUSY = -2,  /* the slot is active in another connection: a standby waits */
    BW_PG_FATAL = -3, /* retrying cannot help (bad slot, wrong plugin, bad option, encoding) */
} bw_pg_status;

typedef enum bw_pgmsg_type { BW_PGMSG_NONE, BW_PGMSG_DATA, BW_PGMSG_KEEPALIVE } bw_pgmsg_type;

typedef struct bw_pgmsg {
    bw_pgmsg_type type;
    uint64_t wal_start; /* XLogData: start of this data */
    uint64_t wal_end;   /* the server's current end of WAL */
    bool reply_requested;
    const uint8_t *data; /* XLogData payload, valid until the next read */
    size_t len;
} bw_pgmsg;

bw_pgstream *bw_pgstream_new(void);
void bw_pgstream_free(bw_pgstream *s); /* closes the connection */

/* Connects and starts streaming; *confirmed is the slot's confirmed_flush_lsn. */
bw_pg_status bw_pgstream_start(bw_pgstream *s, const bw_pgstream_opts *o, uint64_t *confirmed,
                               char *err, size_t errlen);
int bw_pgstream_socket(const bw_pgstream *s);
/* Reads what arrived on the socket into libpq's buffer; BW_PG_RETRY when the connection died. */
bw_pg_status bw_pgstream_consume(bw_pgstream *s, char *err, size_t errlen);
/* Next complete message, or type NONE when none is buffered. */
bw_pg_status bw_pgstream_next(bw_pgstream *s, bw_pgmsg *m, char *err, size_t errlen);
/* Standby status update: received = last WAL position read, flushed = confirmable position. */
bw_pg_status bw_pgstream_feedback(bw_pgstream *s, uint64_t received, uint64_t flushed, char *err,
                                  size_t errlen);
void bw_pgstream_close(bw_pgstream *s);

/*
 * The server's current WAL position (pg_current_wal_lsn) over a second, ordinary connection that
 * is kept open between calls; the replication connection cannot run SQL while streaming. Bounded
 * by connect_timeout=2 and statement_timeout=1s so it cannot stall the loop for long. Returns 0
 * and sets *lsn, or -1 (the caller keeps its last value).
 */
int bw_pgstream_server_lsn(bw_pgstream *s, const char *conninfo, uint64_t *lsn);

#endif
