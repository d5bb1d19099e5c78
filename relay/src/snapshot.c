/*
 * snapshot.c — the initial snapshot (see snapshot.h): the selected tables (tableread.h), each
 * read in key order a chunk per query, the rows published through the router, progress saved in
 * the state file once Kafka acknowledged a chunk. The next chunk's query runs in PostgreSQL while
 * the relay waits for those acknowledgements.
 */
#include "snapshot.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "buf.h"
#include "clock.h"
#include "backfill.h"
#include "log.h"
#include "pgstream.h"
#include "selection.h"
#include "statefile.h"
#include "tableread.h"

/* One table to read, and how far it got. */
typedef struct plan {
    bw_table *t;
    bool done;
    int64_t rows;       /* rows sent and acknowledged */
    char **saved_after; /* the last acknowledged chunk's last key (the state file's) */
} plan;

struct bw_snapshot {
    const bw_config *cfg;
    bw_router *router;
    volatile sig_atomic_t *stop;
    bw_selection *sel;
    char *state_path;
    json_t *saved; /* the state file's content when a snapshot was left unfinished */
    PGconn *conn;
    bw_table *tables;
    size_t ntables;
    plan *plans;
    size_t nplans;
    bw_xact x; /* the position and time the rows are stamped with */
    int64_t total, started_us, next_progress_us;
    bool found_logged;
    bw_backfills *backfills; /* where an interrupted snapshot's keyed tables continue */
};

/* ---- the state file ---- */

static int state_load(bw_snapshot *s, char *err, size_t errlen)
{
    if (bw_state_read(s->state_path, &s->saved, err, errlen) < 0)
        return -1;
    json_t *v = s->saved ? json_object_get(s->saved, "version") : NULL;
    if (s->saved && (!json_is_integer(v) || json_integer_value(v) != 1 ||
                     !json_is_array(json_object_get(s->saved, "tables")))) {
        snprintf(err, errlen,
                 "snapshot state file %s is not one the relay wrote: move it away to start "
                 "without it (the slot's stream is not affected; a table's rows can be sent again "
                 "with snapshot.mode=initial-only)",
                 s->state_path);
        json_decref(s->saved);
        s->saved = NULL;
        return -1;
    }
    return 0;
}

static json_t *state_json(const bw_snapshot *s)
{
    json_t *tables = json_array();
    for (size_t i = 0; i < s->nplans; i++) {
        const plan *p = &s->plans[i];
        const bw_relation *rel = &p->t->rel;
        json_t *t = json_pack("{s:s, s:s, s:b, s:I}", "schema", rel->schema, "table", rel->table,
                              "done", p->done, "rows", (json_int_t) p->rows);
        if (p->saved_after) {
            json_t *after = json_array();
            for (uint16_t k = 0; k < rel->nkeys; k++)
                json_array_append_new(after, json_string(p->saved_after[k]));
            json_object_set_new(t, "after", after);
        }
        json_array_append_new(tables, t);
    }
    char lsn[18];
    return json_pack("{s:i, s:s, s:s, s:o}", "version", 1, "slot", s->cfg->slot_name, "lsn",
                     bw_lsn_str(s->x.commit_lsn, lsn), "tables", tables);
}

static int state_save(bw_snapshot *s, char *err, size_t errlen)
{
    json_t *doc = state_json(s);
    int rc = bw_state_write(s->cfg->state_dir, s->state_path, doc, err, errlen);
    json_decref(doc);
    return rc;
}

/* ---- planning ---- */

static void plans_free(bw_snapshot *s)
{
    for (size_t i = 0; i < s->nplans; i++)
        bw_keys_free(s->plans[i].t->rel.nkeys, s->plans[i].saved_after);
    free(s->plans);
    s->plans = NULL;
    s->nplans = 0;
    bw_tables_free(s->router, s->tables, s->ntables);
    s->tables = NULL;
    s->ntables = 0;
}

/* The state file's progress for schema.table, when resuming; NULL when it has none. */
static json_t *saved_table(const bw_snapshot *s, const char *schema, const char *table)
{
    json_t *tables = s->saved ? json_object_get(s->saved, "tables") : NULL;
    size_t i;
    json_t *t;
    json_array_foreach(tables, i, t)
    {
        const char *ts = json_string_value(json_object_get(t, "schema"));
        const char *tt = json_string_value(json_object_get(t, "table"));
        if (ts && tt && strcmp(ts, schema) == 0 && strcmp(tt, table) == 0)
            return t;
    }
    return NULL;
}

/*
 * The tables to read, with the progress a resumed snapshot saved. A state saved before the tables
 * were planned (tables []) resumes nothing: every table is read.
 */
static int plan_all(bw_snapshot *s, char *err, size_t errlen)
{
    if (bw_tables_plan(s->conn, s->sel, NULL, NULL, "snapshot", &s->tables, &s->ntables, err,
                       errlen) < 0)
        return -1;
    s->plans = bw_xcalloc(s->ntables + 1, sizeof(plan));
    bool resuming = s->saved && json_array_size(json_object_get(s->saved, "tables")) > 0;
    int64_t estimate = 0;
    for (size_t i = 0; i < s->ntables; i++) {
        bw_table *t = &s->tables[i];
        json_t *saved = resuming ? saved_table(s, t->rel.schema, t->rel.table) : NULL;
        if (resuming && saved == NULL)
            continue; /* created after the snapshot began: the stream has all its rows */
        plan *p = &s->plans[s->nplans++];
        p->t = t;
        if (saved) {
            p->done = json_is_true(json_object_get(saved, "done"));
            p->rows = (int64_t) json_integer_value(json_object_get(saved, "rows"));
            json_t *after = json_object_get(saved, "after");
            if (json_is_array(after) && json_array_size(after) == t->rel.nkeys &&
                t->rel.nkeys > 0) {
                t->after = bw_xcalloc(t->rel.nkeys, sizeof(char *));
                for (uint16_t k = 0; k < t->rel.nkeys; k++) {
                    const char *v = json_string_value(json_array_get(after, k));
                    t->after[k] = bw_xstrdup(v ? v : "");
                }
                bw_keys_copy(t->rel.nkeys, &p->saved_after, t->after);
            } else if (!p->done)
                p->rows = 0; /* keyless (or its key changed): read again from the start */
        }
        if (!p->done)
            estimate += t->estimate > p->rows ? t->estimate : p->rows;
    }
    atomic_store(&s->router->metrics->snapshot_rows_estimate, estimate);
    return 0;
}

/* ---- reading ---- */

/* Publishes a chunk's rows on one tracker entry. Returns rows sent, or -1. */
static int64_t publish_chunk(bw_snapshot *s, bw_table *t, PGresult *res, bw_txn_entry *e, char *err,
                             size_t errlen)
{
    int n = PQntuples(res);
    bw_value *vals = bw_xcalloc(t->rel.ncolumns ? t->rel.ncolumns : 1, sizeof(bw_value));
    int64_t sent = 0;
    for (int row = 0; row < n; row++) {
        bw_change c;
        char why[512];
        int rc = bw_table_row(t, s->sel, res, row, vals, &c, why, sizeof(why));
        if (rc == 0)
            continue;
        if (rc < 0 || bw_route_read(s->router, &c, &s->x, e) != 0) {
            snprintf(err, errlen, "snapshot: %s", rc < 0 ? why : s->router->err);
            free(vals);
            return -1;
        }
        sent++;
    }
    free(vals);
    atomic_fetch_add(&s->router->metrics->snapshot_rows, (uint64_t) sent);
    return sent;
}

/*
 * Waits, serving delivery reports, until at most max_open chunks await Kafka's acknowledgements.
 * 0, 1 stopped, -1.
 */
static int wait_acked(bw_snapshot *s, size_t max_open, char *err, size_t errlen)
{
    while (bw_lsntrack_open_entries(s->router->track) > max_open) {
        bw_producer_poll(s->router->producer, 20);
        const char *failure = bw_producer_failure(s->router->producer);
        if (failure) {
            snprintf(err, errlen, "snapshot: %s", failure);
            return -1;
        }
        if (*s->stop)
            return 1;
    }
    return 0;
}

static void progress(bw_snapshot *s, bool force)
{
    int64_t now = bw_wall_us();
    if (!force && now < s->next_progress_us)
        return;
    s->next_progress_us = now + 5000000;
    double secs = (double) (now - s->started_us) / 1e6;
    int64_t est = atomic_load(&s->router->metrics->snapshot_rows_estimate);
    bw_info("snapshot: %" PRId64 " of about %" PRId64 " rows sent (%.0f rows/s)", s->total,
            est > s->total ? est : s->total, secs > 0 ? (double) s->total / secs : 0.0);
}

/*
 * Reads one table to its end, a chunk at a time, two chunks in flight: publish chunk k, ask
 * PostgreSQL for chunk k+1, wait until Kafka has acknowledged chunk k-1 (the tracker confirms
 * its entries in order, so one open entry means every earlier chunk is acknowledged), save
 * chunk k-1 as done, take chunk k+1. A restart re-sends at most the two chunks in flight.
 * 0, 1 stopped, -1. On failure the caller closes the connection with the query in it.
 */
static int read_table(bw_snapshot *s, plan *p, char *err, size_t errlen)
{
    bw_table *t = p->t;
    int rc = 0;
    bool keyless = t->rel.nkeys == 0;
    int64_t prev_sent = -1; /* chunk k-1's rows, while it awaits its acknowledgements */
    char **prev_after = NULL;
    char why[768];
    int64_t limit = s->cfg->snapshot_chunk_rows;
    if (keyless) {
        bw_buf q;
        bw_buf_init(&q);
        p->rows = 0;
        bw_buf_printf(&q, "DECLARE bw_snapshot_rows NO SCROLL CURSOR FOR SELECT %s FROM %s",
                      t->select, t->from);
        rc = bw_pg_command(s->conn, q.data, "snapshot", "declaring a cursor", err, errlen);
        bw_buf_free(&q);
        if (rc < 0)
            return -1;
    }
    if (t->after)
        bw_info("snapshot: %s.%s: resuming after %" PRId64 " rows", t->rel.schema, t->rel.table,
                p->rows);
    if (bw_table_send_query(s->conn, t, "bw_snapshot_rows", NULL, NULL, limit, why, sizeof(why)) <
        0) {
        snprintf(err, errlen, "snapshot: %s", why);
        return -1;
    }
    for (;;) {
        PGresult *res = bw_table_result(s->conn, t, why, sizeof(why));
        if (res == NULL) {
            snprintf(err, errlen, "snapshot: %s", why);
            rc = -1;
            break;
        }
        int n = PQntuples(res);
        bw_txn_entry *e = bw_lsntrack_begin(s->router->track, 0);
        int64_t sent = publish_chunk(s, t, res, e, err, errlen);
        bw_lsntrack_commit(s->router->track, e);
        bool last = n < limit;
        if (sent >= 0 && !keyless && n > 0)
            bw_table_last_key(t, res);
        PQclear(res);
        if (sent < 0) {
            rc = -1;
            break;
        }
        if (!last && bw_table_send_query(s->conn, t, "bw_snapshot_rows", NULL, NULL, limit, why,
                                         sizeof(why)) < 0) {
            snprintf(err, errlen, "snapshot: %s", why);
            rc = -1;
            break;
        }
        if ((rc = wait_acked(s, last ? 0 : 1, err, errlen)) != 0)
            break;
        if (prev_sent >= 0) { /* chunk k-1 is acknowledged */
            p->rows += prev_sent;
            s->total += prev_sent;
            if (prev_after)
                bw_keys_copy(t->rel.nkeys, &p->saved_after, prev_after);
        }
        prev_sent = sent;
        if (!keyless && n > 0)
            bw_keys_copy(t->rel.nkeys, &prev_after, t->after);
        if (last) { /* and so is chunk k */
            p->rows += sent;
            s->total += sent;
            p->done = true;
        }
        if ((rc = state_save(s, err, errlen)) < 0)
            break;
        progress(s, false);
        if (last)
            break;
    }
    bw_keys_free(t->rel.nkeys, prev_after);
    if (rc != 0)
        return rc;
    if (keyless && bw_pg_command(s->conn, "CLOSE bw_snapshot_rows", "snapshot", "closing a cursor",
                                 err, errlen) < 0)
        return -1;
    bw_info("snapshot: %s.%s: done, %" PRId64 " rows", t->rel.schema, t->rel.table, p->rows);
    return 0;
}

static void disconnect(bw_snapshot *s)
{
    if (s->conn)
        PQfinish(s->conn);
    s->conn = NULL;
}

/*
 * Opens the reading connection and its REPEATABLE READ transaction, on the exported snapshot
 * when there is one; output settings pinned as the decoder pins them.
 */
static int open_transaction(bw_snapshot *s, const char *exported, char *err, size_t errlen)
{
    const char *keys[] = {"dbname", "fallback_application_name", "client_encoding", NULL};
    const char *vals[] = {s->cfg->pg_conninfo, "breakwater-relay snapshot", "UTF8", NULL};
    s->conn = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(s->conn) != CONNECTION_OK) {
        snprintf(err, errlen, "snapshot: could not connect to PostgreSQL: %s",
                 PQerrorMessage(s->conn));
        return -1;
    }
    if (bw_pg_command(s->conn, bw_table_session_settings, "snapshot", "pinning output settings",
                      err, errlen) < 0 ||
        bw_pg_command(s->conn,
                      "SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0;"
                      " BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                      "snapshot", "starting the snapshot transaction", err, errlen) < 0)
        return -1;
    if (exported) {
        char *lit = PQescapeLiteral(s->conn, exported, strlen(exported));
        bw_buf q;
        bw_buf_init(&q);
        bw_buf_printf(&q, "SET TRANSACTION SNAPSHOT %s", lit ? lit : "''");
        PQfreemem(lit);
        int rc = bw_pg_command(s->conn, q.data, "snapshot", "importing the slot's snapshot", err,
                               errlen);
        bw_buf_free(&q);
        if (rc < 0)
            return -1;
    }
    PGresult *res = PQexec(s->conn, "SELECT pg_current_wal_lsn()::text, "
                                    "(extract(epoch FROM transaction_timestamp()) * 1e6)::int8");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "snapshot: reading the snapshot's position: %s",
                 PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }
    if (!exported && bw_lsn_parse(PQgetvalue(res, 0, 0), &s->x.commit_lsn) != 0)
        s->x.commit_lsn = 0;
    s->x.commit_time = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    s->x.end_lsn = s->x.commit_lsn;
    s->x.xid = 0;
    PQclear(res);
    return 0;
}

/*
 * While the snapshot runs the slot is not active (the walsender released it after creating it),
 * so a standby relay would take it and stream rows the snapshot then overwrites. The snapshot's
 * connection holds an advisory lock (BW_SNAPSHOT_LOCK, the slot's name) that standbys look for
 * (pgstream.c); it goes with the connection.
 */
static int hold_slot(bw_snapshot *s, char *err, size_t errlen)
{
    const char *params[1] = {s->cfg->slot_name};
    PGresult *res = PQexecParams(s->conn,
                                 "SELECT pg_try_advisory_lock(" BW_SNAPSHOT_LOCK_CLASS
                                 ", hashtext($1) & 2147483647)",
                                 1, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQgetvalue(res, 0, 0)[0] != 't') {
        snprintf(err, errlen, "snapshot: another relay is running the snapshot of slot \"%s\"%s%s",
                 s->cfg->slot_name, PQresultStatus(res) == PGRES_TUPLES_OK ? "" : ": ",
                 PQresultStatus(res) == PGRES_TUPLES_OK ? "" : PQresultErrorMessage(res));
        rc = -1;
    }
    PQclear(res);
    return rc;
}

/*
 * As pg_dump does: an ACCESS SHARE lock on each table left, right after the snapshot was taken,
 * so that no table rewrite (ALTER TABLE ... TYPE, VACUUM FULL, CLUSTER) can empty a table in the
 * snapshot's eyes before it is read; such DDL waits for the snapshot's end.
 */
static int lock_tables(bw_snapshot *s, char *err, size_t errlen)
{
    for (size_t i = 0; i < s->nplans; i++) {
        if (s->plans[i].done)
            continue;
        const bw_relation *rel = &s->plans[i].t->rel;
        char *qs = PQescapeIdentifier(s->conn, rel->schema, strlen(rel->schema));
        char *qt = PQescapeIdentifier(s->conn, rel->table, strlen(rel->table));
        bw_buf q;
        bw_buf_init(&q);
        bw_buf_printf(&q, "LOCK TABLE ONLY %s.%s IN ACCESS SHARE MODE", qs ? qs : "?",
                      qt ? qt : "?");
        PQfreemem(qs);
        PQfreemem(qt);
        int rc = bw_pg_command(s->conn, q.data, "snapshot", "locking a table", err, errlen);
        bw_buf_free(&q);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/*
 * A snapshot interrupted (its exported snapshot gone with the old process): the keyed tables it
 * did not finish continue as backfills, after their last acknowledged chunk, while the relay
 * streams from the slot's consistent point; the watermarks reconcile them with the stream, and
 * the stream does not wait for them. Tables without key columns cannot be reconciled so: they
 * are read whole under the new snapshot, before streaming. Not for initial-only: no stream.
 */
static int hand_over(bw_snapshot *s, char *err, size_t errlen)
{
    const char *first = json_string_value(json_object_get(s->saved, "lsn"));
    size_t handed = 0;
    if (s->backfills == NULL)
        return 0;
    for (size_t i = 0; i < s->nplans; i++) {
        plan *p = &s->plans[i];
        const bw_relation *rel = &p->t->rel;
        if (p->done || rel->nkeys == 0)
            continue;
        bw_buf id;
        bw_buf_init(&id);
        bw_buf_printf(&id, "snapshot-%s-%s.%s", first ? first : "0/0", rel->schema, rel->table);
        int rc = bw_backfills_enqueue(s->backfills, id.data, rel->schema, rel->table,
                                      p->saved_after, p->saved_after ? rel->nkeys : 0, p->rows,
                                      p->t->estimate, err, errlen);
        bw_buf_free(&id);
        if (rc < 0)
            return -1;
        p->done = true;
        handed++;
    }
    if (handed > 0)
        bw_info("snapshot: resuming: %zu table(s) continue as backfills while the relay streams",
                handed);
    return 0;
}

/* The whole snapshot: plan, read every table left, forget the state. 0, 1 stopped, -1. */
static int run(bw_snapshot *s, const char *exported, uint64_t lsn, char *err, size_t errlen)
{
    char at[18];
    int rc = -1;
    s->x.commit_lsn = lsn;
    s->started_us = bw_wall_us();
    s->next_progress_us = s->started_us + 5000000;
    s->total = 0;
    atomic_store(&s->router->metrics->snapshot_running, 1);
    if (open_transaction(s, exported, err, errlen) < 0 || hold_slot(s, err, errlen) < 0 ||
        plan_all(s, err, errlen) < 0 || (!exported && hand_over(s, err, errlen) < 0) ||
        lock_tables(s, err, errlen) < 0)
        goto out;
    size_t left = 0;
    for (size_t i = 0; i < s->nplans; i++)
        left += !s->plans[i].done;
    if (exported)
        bw_info("snapshot: exported snapshot %s at %s: reading %zu table(s), about %" PRId64
                " rows",
                exported, bw_lsn_str(lsn, at), left,
                atomic_load(&s->router->metrics->snapshot_rows_estimate));
    else
        bw_info("snapshot: %s under a new snapshot at %s: %zu table(s) to read, about %" PRId64
                " rows",
                s->saved ? "resuming an interrupted snapshot" : "reading",
                bw_lsn_str(s->x.commit_lsn, at), left,
                atomic_load(&s->router->metrics->snapshot_rows_estimate));
    if (state_save(s, err, errlen) < 0)
        goto out;
    for (size_t i = 0; i < s->nplans; i++) {
        if (s->plans[i].done)
            continue;
        if ((rc = read_table(s, &s->plans[i], err, errlen)) != 0)
            goto out;
        rc = -1;
    }
    if (bw_pg_command(s->conn, "COMMIT", "snapshot", "ending the snapshot transaction", err,
                      errlen) < 0)
        goto out;
    if (unlink(s->state_path) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "snapshot: cannot remove the state file %s: %s", s->state_path,
                 strerror(errno));
        goto out;
    }
    double secs = (double) (bw_wall_us() - s->started_us) / 1e6;
    bw_info("snapshot: done: %" PRId64 " rows from %zu table(s) in %.1f s (%.0f rows/s)", s->total,
            left, secs, secs > 0 ? (double) s->total / secs : 0.0);
    json_decref(s->saved);
    s->saved = NULL;
    rc = 0;
out:
    if (rc > 0)
        bw_info("snapshot: stopped; it resumes after its last acknowledged chunk on restart");
    disconnect(s);
    plans_free(s);
    atomic_store(&s->router->metrics->snapshot_running, 0);
    atomic_store(&s->router->metrics->snapshot_rows_estimate, 0);
    return rc;
}

/* ---- entry points ---- */

bw_snapshot *bw_snapshot_new(const bw_config *cfg, bw_router *router, volatile sig_atomic_t *stop,
                             char *err, size_t errlen)
{
    bw_snapshot *s = bw_xcalloc(1, sizeof(*s));
    s->cfg = cfg;
    s->router = router;
    s->stop = stop;
    s->state_path = bw_state_path(cfg->state_dir, cfg->slot_name, "snapshot");
    if ((s->sel = bw_selection_new(cfg, err, errlen)) == NULL || state_load(s, err, errlen) < 0) {
        bw_snapshot_free(s);
        return NULL;
    }
    return s;
}

void bw_snapshot_free(bw_snapshot *s)
{
    if (s == NULL)
        return;
    disconnect(s);
    plans_free(s);
    bw_selection_free(s->sel);
    json_decref(s->saved);
    free(s->state_path);
    free(s);
}

/* Before the slot exists: a state file that says a snapshot is due, so a kill cannot skip it. */
int bw_snapshot_creating(void *arg, char *err, size_t errlen)
{
    bw_snapshot *s = arg;
    json_decref(s->saved); /* a state left from a slot that is gone */
    s->saved = NULL;
    return state_save(s, err, errlen);
}

int bw_snapshot_created(void *arg, const char *snapshot, uint64_t consistent_point, char *err,
                        size_t errlen)
{
    return run(arg, snapshot, consistent_point, err, errlen);
}

int bw_snapshot_found(void *arg, uint64_t confirmed, char *err, size_t errlen)
{
    bw_snapshot *s = arg;
    (void) confirmed;
    if (s->saved == NULL) {
        if (!s->found_logged)
            bw_info("slot \"%s\" exists: no initial snapshot (snapshot.mode=initial reads the "
                    "tables when the relay creates the slot)",
                    s->cfg->slot_name);
        s->found_logged = true;
        return 0;
    }
    /* the exported snapshot died with the relay: the rest is read under a new one */
    return run(s, NULL, 0, err, errlen);
}

void bw_snapshot_resume_as(bw_snapshot *s, bw_backfills *b)
{
    s->backfills = b;
}

int bw_snapshot_only(bw_snapshot *s, char *err, size_t errlen)
{
    if (s->saved == NULL && bw_snapshot_creating(s, err, errlen) < 0)
        return -1;
    return run(s, NULL, 0, err, errlen);
}
