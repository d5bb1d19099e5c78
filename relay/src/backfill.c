/*
 * backfill.c — backfills while streaming (see backfill.h): requests, the watermark protocol for
 * each chunk, the state file; and the `backfill` command that checks a request and writes it
 * into the WAL for a running relay.
 */
#include "backfill.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "buf.h"
#include "clock.h"
#include "condition.h"
#include "encode.h"
#include "log.h"
#include "selection.h"
#include "statefile.h"
#include "tableread.h"

#define WATERMARK_PREFIX "breakwater.watermark"
#define REQUEST_PREFIX "breakwater.backfill"
#define RECENT_XIDS 4096
#define RETRY_US 1000000

typedef enum { QUEUED, RUNNING, DONE, FAILED } job_status;
static const char *const status_names[] = {"queued", "running", "done", "failed"};

typedef struct job {
    char *id, *schema, *table, *tenant, *where, *error;
    job_status status;
    int64_t rows, estimate, started_us, finished_us;
    json_t *after; /* the last acknowledged chunk's last key: an array of text, or NULL */
} job;

/* Where the chunk in progress is in the watermark protocol. */
typedef enum { IDLE, WAIT_LOW, WINDOW, WAIT_ACK } phase;

struct bw_backfills {
    const bw_config *cfg;
    bw_router *router;
    bw_selection *sel;
    char *path;
    PGconn *conn;
    job *jobs;
    size_t njobs;
    /* the chunk in progress, of jobs[cur] */
    phase phase;
    size_t cur;
    bw_table *table; /* jobs[cur]'s table, planned when it started; NULL between jobs */
    size_t ntable;
    char nonce[24]; /* this process's watermarks: older ones (a restart's) are not ours */
    uint64_t seq;
    PGresult *chunk;
    json_t *held; /* JSON key -> row index of the chunk's rows not superseded by the stream */
    bool last;    /* the chunk was the table's last */
    int64_t sent;
    uint64_t ack_lsn; /* the high watermark's position: confirmed past it, the chunk is acked */
    int64_t retry_at_us;
    bool dirty; /* a job changed outside step: save at the next one */
    int64_t next_progress_us;
    uint32_t recent[RECENT_XIDS]; /* xids of the transactions decoded last */
    size_t nrecent, recent_pos;
    bw_buf key;
};

static char *dup_or_null(const char *s)
{
    return s ? bw_xstrdup(s) : NULL;
}

/* ---- the state file ---- */

static void job_clear(job *j)
{
    free(j->id);
    free(j->schema);
    free(j->table);
    free(j->tenant);
    free(j->where);
    free(j->error);
    json_decref(j->after);
    memset(j, 0, sizeof(*j));
}

static json_t *job_json(const job *j)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "id", j->id, "schema", j->schema,
                          "table", j->table, "status", status_names[j->status], "rows",
                          (json_int_t) j->rows, "estimate", (json_int_t) j->estimate);
    json_object_set_new(o, "tenant", j->tenant ? json_string(j->tenant) : json_null());
    json_object_set_new(o, "where", j->where ? json_string(j->where) : json_null());
    json_object_set_new(o, "error", j->error ? json_string(j->error) : json_null());
    json_object_set_new(o, "started_us", json_integer(j->started_us));
    json_object_set_new(o, "finished_us", json_integer(j->finished_us));
    if (j->after)
        json_object_set(o, "after", j->after);
    return o;
}

static int save(bw_backfills *b, char *err, size_t errlen)
{
    json_t *jobs = json_array();
    for (size_t i = 0; i < b->njobs; i++)
        json_array_append_new(jobs, job_json(&b->jobs[i]));
    json_t *doc = json_pack("{s:i, s:o}", "version", 1, "jobs", jobs);
    int rc = bw_state_write(b->cfg->state_dir, b->path, doc, err, errlen);
    json_decref(doc);
    return rc;
}

/*
 * Finished backfills stay listed (--status) up to KEEP_FINISHED of them, oldest dropped first,
 * so that the file and the loop's scan of it stay small. Not while a chunk is in progress: cur
 * indexes the array.
 */
#define KEEP_FINISHED 100

static void prune(bw_backfills *b)
{
    size_t finished = 0, out = 0;
    if (b->table != NULL)
        return;
    for (size_t i = 0; i < b->njobs; i++)
        finished += b->jobs[i].status == DONE || b->jobs[i].status == FAILED;
    for (size_t i = 0; i < b->njobs; i++) {
        bool old = b->jobs[i].status == DONE || b->jobs[i].status == FAILED;
        if (old && finished > KEEP_FINISHED) {
            job_clear(&b->jobs[i]);
            finished--;
            continue;
        }
        b->jobs[out++] = b->jobs[i];
    }
    b->njobs = out;
}

static job *add_job(bw_backfills *b)
{
    prune(b);
    b->jobs = bw_xrealloc(b->jobs, (b->njobs + 1) * sizeof(job));
    job *j = &b->jobs[b->njobs++];
    memset(j, 0, sizeof(*j));
    return j;
}

static const char *str(json_t *o, const char *name)
{
    return json_string_value(json_object_get(o, name));
}

static int load(bw_backfills *b, char *err, size_t errlen)
{
    json_t *doc;
    if (bw_state_read(b->path, &doc, err, errlen) < 0)
        return -1;
    if (doc == NULL)
        return 0;
    json_t *jobs = json_object_get(doc, "jobs");
    if (!json_is_array(jobs)) {
        snprintf(err, errlen, "backfill state file %s has no jobs array: move it away", b->path);
        json_decref(doc);
        return -1;
    }
    size_t i;
    json_t *o;
    json_array_foreach(jobs, i, o)
    {
        if (!str(o, "id") || !str(o, "schema") || !str(o, "table"))
            continue;
        job *j = add_job(b);
        j->id = bw_xstrdup(str(o, "id"));
        j->schema = bw_xstrdup(str(o, "schema"));
        j->table = bw_xstrdup(str(o, "table"));
        j->tenant = dup_or_null(str(o, "tenant"));
        j->where = dup_or_null(str(o, "where"));
        j->error = dup_or_null(str(o, "error"));
        j->rows = (int64_t) json_integer_value(json_object_get(o, "rows"));
        j->estimate = (int64_t) json_integer_value(json_object_get(o, "estimate"));
        j->started_us = (int64_t) json_integer_value(json_object_get(o, "started_us"));
        j->finished_us = (int64_t) json_integer_value(json_object_get(o, "finished_us"));
        const char *st = str(o, "status");
        j->status = QUEUED;
        for (int k = 0; k < 4; k++)
            if (st && strcmp(st, status_names[k]) == 0)
                j->status = (job_status) k;
        json_t *after = json_object_get(o, "after");
        if (json_is_array(after))
            j->after = json_incref(after);
    }
    json_decref(doc);
    return 0;
}

/* ---- checking a request (the command and the relay alike) ---- */

static PGconn *connect_pg(const char *conninfo, const char *who, char *err, size_t errlen)
{
    const char *keys[] = {"dbname", "fallback_application_name", "client_encoding", NULL};
    const char *vals[] = {conninfo, "breakwater-relay backfill", "UTF8", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(conn) != CONNECTION_OK) {
        snprintf(err, errlen, "%s: could not connect to PostgreSQL: %s", who, PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    if (bw_pg_command(conn, bw_table_session_settings, who, "pinning output settings", err,
                      errlen) < 0) {
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/*
 * Checks a request against the catalog and the decoder options: the table exists, the stream
 * carries it, it has key columns, the tenant filter has a column to apply to, the condition is
 * valid SQL on it. Returns the planned table (*t, to free with bw_tables_free) and the planner's
 * estimate of its rows, or -1 with err saying what is wrong and how to fix it.
 */
static int validate(PGconn *conn, const bw_selection *sel, const char *schema, const char *table,
                    const char *tenant, const char *where, bw_table **t, int64_t *estimate,
                    char *err, size_t errlen)
{
    const char *params[2] = {schema, table};
    size_t n = 0;
    char why[256];
    *t = NULL;
    if (where && bw_condition_check(where, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "--where \"%s\" is not one condition on %s.%s: it has %s", where,
                 schema, table, why);
        return -1;
    }
    PGresult *res =
        PQexecParams(conn,
                     "SELECT c.relkind, c.relpersistence FROM pg_class c JOIN pg_namespace n"
                     " ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                     2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "could not look up table %s.%s: %s", schema, table,
                 PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }
    bool exists = PQntuples(res) > 0;
    char relkind = exists ? PQgetvalue(res, 0, 0)[0] : 'r';
    char persistence = exists ? PQgetvalue(res, 0, 1)[0] : 'p';
    PQclear(res);
    if (!exists) {
        snprintf(err, errlen,
                 "table %s.%s does not exist (names are matched as PostgreSQL stores them: "
                 "case-sensitive, without quotes)",
                 schema, table);
        return -1;
    }
    if (relkind == 'p') {
        snprintf(err, errlen,
                 "table %s.%s is partitioned: its rows live in its partitions, which stream under "
                 "their own names; backfill each partition",
                 schema, table);
        return -1;
    }
    if (relkind != 'r' || persistence != 'p') {
        snprintf(err, errlen,
                 "%s.%s is not an ordinary permanent table (a view, a foreign, unlogged or "
                 "temporary table): it is not decoded, so there is nothing to backfill",
                 schema, table);
        return -1;
    }
    if (!bw_selection_table(sel, schema, table)) {
        snprintf(err, errlen,
                 "table %s.%s is not selected by decoder.tables / decoder.exclude_tables: its "
                 "changes are not streamed, so there is nothing to backfill",
                 schema, table);
        return -1;
    }
    if (bw_tables_plan(conn, sel, schema, table, NULL, t, &n, err, errlen) < 0)
        return -1;
    if (n == 0) {
        snprintf(err, errlen,
                 "table %s.%s has no tenant column and decoder.missing_tenant is drop: its rows "
                 "are never sent",
                 schema, table);
        goto fail;
    }
    if ((*t)->rel.nkeys == 0) {
        snprintf(err, errlen,
                 "table %s.%s has no key columns (no primary key or replica identity index): a "
                 "backfill needs a key to reconcile its rows with the stream; publish the table "
                 "whole with snapshot.mode=initial-only instead",
                 schema, table);
        goto fail;
    }
    if (tenant && (*t)->tenant_name == NULL) {
        snprintf(err, errlen,
                 "table %s.%s has no tenant column \"%s\": --tenant cannot apply to it (see "
                 "decoder.tenant_column and decoder.tenant_columns)",
                 schema, table, bw_selection_tenant_column(sel, schema, table));
        goto fail;
    }
    bw_buf q;
    bw_buf_init(&q);
    bw_buf_printf(&q, "EXPLAIN (FORMAT JSON) SELECT 1 FROM (SELECT * FROM %s WHERE true",
                  (*t)->from);
    if (tenant)
        bw_buf_printf(&q, " AND %s = $1::%s", (*t)->tenant_name, (*t)->tenant_type);
    bw_buf_puts(&q, ") AS bw_t");
    if (where)
        bw_buf_printf(&q, " WHERE (%s)", where);
    res = PQexecParams(conn, q.data, tenant ? 1 : 0, NULL, &tenant, NULL, NULL, 0);
    bw_buf_free(&q);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char *msg = bw_xstrdup(PQresultErrorMessage(res));
        msg[strcspn(msg, "\n")] = '\0';
        if (where)
            snprintf(err, errlen, "--where \"%s\" is not a valid condition on %s.%s: %s", where,
                     schema, table, msg);
        else
            snprintf(err, errlen, "--tenant \"%s\" does not fit column %s of %s.%s: %s", tenant,
                     (*t)->tenant_name, schema, table, msg);
        free(msg);
        PQclear(res);
        goto fail;
    }
    *estimate = bw_plan_rows(PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
fail:
    bw_tables_free(NULL, *t, n);
    *t = NULL;
    return -1;
}

/* "schema.table" (split at the first '.'), or the request's "schema" and "table" members. */
static int request_names(json_t *req, char **schema, char **table)
{
    const char *s = str(req, "schema"), *t = str(req, "table");
    if (t == NULL)
        return -1;
    if (s) {
        *schema = bw_xstrdup(s);
        *table = bw_xstrdup(t);
        return 0;
    }
    const char *dot = strchr(t, '.');
    *schema = dot ? bw_xstrndup(t, (size_t) (dot - t)) : bw_xstrdup("public");
    *table = bw_xstrdup(dot ? dot + 1 : t);
    return 0;
}

/* ---- the relay side ---- */

static void drop_chunk(bw_backfills *b)
{
    PQclear(b->chunk);
    b->chunk = NULL;
    json_decref(b->held);
    b->held = NULL;
}

static void end_table(bw_backfills *b)
{
    drop_chunk(b);
    bw_tables_free(b->router, b->table, b->ntable);
    b->table = NULL;
    b->ntable = 0;
    b->phase = IDLE;
}

static void disconnect(bw_backfills *b)
{
    if (b->conn)
        PQfinish(b->conn);
    b->conn = NULL;
}

/* PostgreSQL trouble: log it, start the chunk again a little later. */
static void retry_later(bw_backfills *b, const char *why)
{
    bw_warn("backfill %s: %s; the chunk is read again in a moment", b->jobs[b->cur].id, why);
    drop_chunk(b);
    disconnect(b);
    b->phase = IDLE;
    b->retry_at_us = bw_wall_us() + RETRY_US;
}

/* how: "refused" (a request that cannot run) or "failed" (one that stopped running) */
static void fail_job(bw_backfills *b, job *j, const char *how, const char *why)
{
    (void) b;
    bw_error("backfill %s %s: %s", j->id, how, why);
    free(j->error);
    j->error = bw_xstrdup(why);
    j->status = FAILED;
    j->finished_us = bw_wall_us();
}

/*
 * A watermark is a transactional message in a transaction of its own: it is decoded at that
 * commit, in commit order with the changes, and the commit flushes the WAL so the walsender sends
 * it at once (PostgreSQL 15 does not flush a non-transactional message's WAL).
 */
static int emit_watermark(bw_backfills *b, const char *kind, char *why, size_t whylen)
{
    char content[96];
    snprintf(content, sizeof(content), "%s:%" PRIu64 ":%s", b->nonce, b->seq, kind);
    const char *params[1] = {content};
    PGresult *res = PQexecParams(
        b->conn, "SELECT pg_logical_emit_message(true, '" WATERMARK_PREFIX "', $1)::text", 1, NULL,
        params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(why, whylen, "could not write the %s watermark: %s", kind,
                 PQresultErrorMessage(res));
        rc = -1;
    }
    PQclear(res);
    return rc;
}

static bool recently_decoded(const bw_backfills *b, uint32_t xid)
{
    for (size_t i = 0; i < b->nrecent; i++)
        if (b->recent[i] == xid)
            return true;
    return false;
}

/*
 * A transaction the chunk's snapshot saw in progress but that was already decoded: its commit
 * came before the low watermark, so the window cannot catch its changes. "xmin:xmax:xip,..."
 */
static bool snapshot_races(const bw_backfills *b, const char *snapshot)
{
    const char *p = strrchr(snapshot, ':');
    while (p && *p) {
        p++;
        char *end;
        unsigned long long x = strtoull(p, &end, 10);
        if (end == p)
            break;
        if (recently_decoded(b, (uint32_t) x))
            return true;
        p = strchr(end, ',');
    }
    return false;
}

/* The JSON key of a change: the same bytes for a chunk's row and a streamed change of it. */
static const char *key_of(bw_backfills *b, const bw_change *c)
{
    char why[256];
    bw_buf_reset(&b->key);
    if (bw_json_key(&b->key, c, why, sizeof(why)) != 0)
        return NULL;
    return b->key.data;
}

/* The low watermark came through the stream: read the chunk now, then write the high one. */
static void read_chunk(bw_backfills *b)
{
    job *j = &b->jobs[b->cur];
    bw_table *t = b->table;
    char why[1024];
    PGresult *res = PQexec(b->conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"
                                    " SELECT pg_current_snapshot()::text");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(why, sizeof(why), "reading %s: %s", t->from, PQresultErrorMessage(res));
        PQclear(res);
        retry_later(b, why);
        return;
    }
    bool races = snapshot_races(b, PQgetvalue(res, 0, 0));
    PQclear(res);
    if (bw_table_send_query(b->conn, t, NULL, j->tenant, j->where, b->cfg->backfill_chunk_rows, why,
                            sizeof(why)) < 0 ||
        (b->chunk = bw_table_result(b->conn, t, why, sizeof(why))) == NULL ||
        bw_pg_command(b->conn, "COMMIT", "backfill", "ending the chunk's transaction", why,
                      sizeof(why)) < 0) {
        if (PQstatus(b->conn) == CONNECTION_OK) {
            /* the query itself failed (a condition that divides by zero, a bad cast): it would
             * fail again, and hold up every backfill behind it */
            PQclear(PQexec(b->conn, "ROLLBACK"));
            fail_job(b, j, "failed", why);
            end_table(b);
            b->dirty = true;
            return;
        }
        retry_later(b, why);
        return;
    }
    if (races) {
        bw_debug("backfill %s: a transaction decoded before the low watermark was not visible "
                 "yet to the chunk's snapshot: reading the chunk again",
                 j->id);
        drop_chunk(b);
        b->phase = IDLE;
        return;
    }
    int n = PQntuples(b->chunk);
    b->last = n < b->cfg->backfill_chunk_rows;
    b->held = json_object();
    bw_value *vals = bw_xcalloc(t->rel.ncolumns ? t->rel.ncolumns : 1, sizeof(bw_value));
    for (int row = 0; row < n; row++) {
        bw_change c;
        int rc = bw_table_row(t, b->sel, b->chunk, row, vals, &c, why, sizeof(why));
        const char *k = rc > 0 ? key_of(b, &c) : NULL;
        if (rc < 0) {
            fail_job(b, j, "failed", why);
            free(vals);
            end_table(b);
            b->dirty = true;
            return;
        }
        if (k)
            json_object_set_new(b->held, k, json_integer(row));
    }
    free(vals);
    b->seq++; /* the high watermark has a number of its own: a late low one cannot match it */
    if (emit_watermark(b, "high", why, sizeof(why)) < 0) {
        retry_later(b, why);
        return;
    }
    b->phase = WINDOW;
}

/* The high watermark: what the stream did not supersede goes out, on the watermark's entry. */
static int publish_chunk(bw_backfills *b, uint64_t lsn, bw_txn_entry *e, uint64_t confirmed,
                         char *err, size_t errlen)
{
    bw_table *t = b->table;
    int n = PQntuples(b->chunk);
    bw_xact x = {.xid = 0, .commit_lsn = lsn, .end_lsn = lsn, .commit_time = bw_wall_us()};
    bw_value *vals = bw_xcalloc(t->rel.ncolumns ? t->rel.ncolumns : 1, sizeof(bw_value));
    char why[512];
    b->sent = 0;
    for (int row = 0; row < n; row++) {
        bw_change c;
        if (bw_table_row(t, b->sel, b->chunk, row, vals, &c, why, sizeof(why)) <= 0)
            continue;
        const char *k = key_of(b, &c);
        if (k == NULL || json_object_get(b->held, k) == NULL)
            continue; /* superseded by the stream */
        if (bw_route_read(b->router, &c, &x, e) != 0) {
            snprintf(err, errlen, "backfill %s: %s", b->jobs[b->cur].id, b->router->err);
            free(vals);
            return -1;
        }
        b->sent++;
    }
    free(vals);
    if (n > 0)
        bw_table_last_key(t, b->chunk);
    atomic_fetch_add(&b->router->metrics->backfill_rows, (uint64_t) b->sent);
    drop_chunk(b);
    b->ack_lsn = confirmed; /* the watermark transaction's end: its entry carries the rows */
    b->phase = WAIT_ACK;
    return 0;
}

/*
 * What is wrong with a request's shape, or NULL: a JSON object whose members are all known and
 * strings, with a table. A misspelt "tennant" must not turn into a backfill of every tenant.
 */
static const char *request_problem(json_t *req)
{
    static const char *const known[] = {"id", "schema", "table", "tenant", "where", NULL};
    const char *name;
    json_t *v;
    if (!json_is_object(req))
        return "the request is not a JSON object: give {\"table\": \"schema.table\", "
               "\"tenant\": \"...\", \"where\": \"...\"}";
    json_object_foreach(req, name, v)
    {
        size_t i = 0;
        while (known[i] && strcmp(known[i], name) != 0)
            i++;
        if (known[i] == NULL)
            return "the request has a member other than id, schema, table, tenant and where";
        if (!json_is_string(v))
            return "the request's members must be strings (write a numeric tenant as \"42\")";
    }
    if (json_object_get(req, "table") == NULL)
        return "the request names no table: give {\"table\": \"schema.table\"}";
    return NULL;
}

/* A request from the stream: checked, then queued (or recorded as refused). */
static int take_request(bw_backfills *b, const bw_message *m, char *err, size_t errlen)
{
    json_error_t je;
    json_t *req = json_loadb((const char *) m->content, m->content_len, 0, &je);
    char lsn[18], why[1024];
    char *schema = NULL, *table = NULL;
    const char *id = req ? str(req, "id") : NULL;
    char idbuf[40];
    if (id == NULL) {
        snprintf(idbuf, sizeof(idbuf), "lsn-%s", bw_lsn_str(m->lsn, lsn));
        id = idbuf;
    }
    for (size_t i = 0; i < b->njobs; i++)
        if (strcmp(b->jobs[i].id, id) == 0) { /* read again after a restart */
            json_decref(req);
            return 0;
        }
    job *j = add_job(b);
    j->id = bw_xstrdup(id);
    const char *bad = request_problem(req);
    if (bad || request_names(req, &schema, &table) < 0) {
        j->schema = bw_xstrdup("?");
        j->table = bw_xstrdup("?");
        fail_job(b, j, "refused", bad ? bad : "the request names no table");
        json_decref(req);
        return save(b, err, errlen);
    }
    j->schema = schema;
    j->table = table;
    j->tenant = dup_or_null(str(req, "tenant"));
    j->where = dup_or_null(str(req, "where"));
    json_decref(req);
    if (b->conn == NULL &&
        (b->conn = connect_pg(b->cfg->pg_conninfo, "backfill", why, sizeof(why))) == NULL) {
        /* PostgreSQL's trouble, not the request's: it is checked again when it starts */
        bw_warn("backfill %s: queued unchecked: %s", j->id, why);
        j->status = QUEUED;
        return save(b, err, errlen);
    }
    bw_table *t;
    if (validate(b->conn, b->sel, j->schema, j->table, j->tenant, j->where, &t, &j->estimate, why,
                 sizeof(why)) < 0)
        fail_job(b, j, "refused", why);
    else {
        bw_tables_free(b->router, t, 1);
        j->status = QUEUED;
        bw_info("backfill %s: %s.%s%s%s%s%s queued, about %" PRId64 " rows", j->id, j->schema,
                j->table, j->tenant ? ", tenant " : "", j->tenant ? j->tenant : "",
                j->where ? ", where " : "", j->where ? j->where : "", j->estimate);
    }
    return save(b, err, errlen);
}

/* Watermarks carry "<nonce>:<seq>:<low|high>". Returns the kind when it is the awaited one. */
static const char *our_watermark(const bw_backfills *b, const bw_message *m)
{
    char want[96];
    int n = snprintf(want, sizeof(want), "%s:%" PRIu64 ":", b->nonce, b->seq);
    if (m->content_len < (uint32_t) n + 3 || memcmp(m->content, want, (size_t) n) != 0)
        return NULL;
    size_t rest = m->content_len - (uint32_t) n;
    if (rest == 3 && memcmp(m->content + n, "low", 3) == 0)
        return "low";
    if (rest == 4 && memcmp(m->content + n, "high", 4) == 0)
        return "high";
    return NULL;
}

static int on_control(void *arg, const bw_message *m, bw_txn_entry *e, uint64_t confirmed,
                      char *err, size_t errlen)
{
    bw_backfills *b = arg;
    size_t plen = m->prefix_len;
    if (plen == sizeof(REQUEST_PREFIX) - 1 && memcmp(m->prefix, REQUEST_PREFIX, plen) == 0)
        return take_request(b, m, err, errlen);
    if (plen != sizeof(WATERMARK_PREFIX) - 1 || memcmp(m->prefix, WATERMARK_PREFIX, plen) != 0)
        return 0;
    const char *kind = our_watermark(b, m);
    if (kind == NULL)
        return 0; /* another process's, or a chunk given up */
    if (strcmp(kind, "low") == 0 && b->phase == WAIT_LOW) {
        read_chunk(b);
        return 0;
    }
    if (strcmp(kind, "high") == 0 && b->phase == WINDOW)
        return publish_chunk(b, m->lsn, e, confirmed, err, errlen);
    return 0;
}

/* A streamed change between the watermarks: its key's row in the chunk is older. */
static void on_seen(void *arg, const bw_change *c)
{
    bw_backfills *b = arg;
    if (b->phase != WINDOW || c->rel->relid != b->table->rel.relid)
        return;
    const char *k = key_of(b, c);
    if (k)
        json_object_del(b->held, k);
    if (c->nnew > 0 && c->old_kind != 'X') { /* the key may have changed: the new one too */
        bw_change moved = *c;
        moved.old_kind = 'X';
        if ((k = key_of(b, &moved)) != NULL)
            json_object_del(b->held, k);
    }
}

static void on_truncated(void *arg, uint32_t relid)
{
    bw_backfills *b = arg;
    if (b->phase == WINDOW && relid == b->table->rel.relid)
        json_object_clear(b->held); /* every row of the chunk is gone */
}

static void on_committed(void *arg, uint32_t xid)
{
    bw_backfills *b = arg;
    b->recent[b->recent_pos] = xid;
    b->recent_pos = (b->recent_pos + 1) % RECENT_XIDS;
    if (b->nrecent < RECENT_XIDS)
        b->nrecent++;
}

void bw_backfills_attach(bw_backfills *b, bw_router *router)
{
    router->hooks = (bw_route_hooks){b, on_control, on_seen, on_truncated, on_committed};
}

static void set_running_metrics(bw_backfills *b)
{
    int64_t running = 0, estimate = 0;
    for (size_t i = 0; i < b->njobs; i++)
        if (b->jobs[i].status == RUNNING || b->jobs[i].status == QUEUED) {
            running++;
            estimate +=
                b->jobs[i].estimate > b->jobs[i].rows ? b->jobs[i].estimate : b->jobs[i].rows;
        }
    atomic_store(&b->router->metrics->backfills_running, running);
    atomic_store(&b->router->metrics->backfill_rows_estimate, estimate);
}

static void progress(bw_backfills *b, job *j, bool force)
{
    int64_t now = bw_wall_us();
    if (!force && now < b->next_progress_us)
        return;
    b->next_progress_us = now + 5000000;
    double secs = (double) (now - j->started_us) / 1e6;
    bw_info("backfill %s: %" PRId64 " of about %" PRId64 " rows (%.0f rows/s)", j->id, j->rows,
            j->estimate > j->rows ? j->estimate : j->rows,
            secs > 0 ? (double) j->rows / secs : 0.0);
}

/* Starts jobs[cur]: its table planned, its position restored. false when it cannot run. */
static bool start_job(bw_backfills *b)
{
    job *j = &b->jobs[b->cur];
    char why[1024];
    bw_table *t;
    int64_t estimate = 0;
    if (validate(b->conn, b->sel, j->schema, j->table, j->tenant, j->where, &t, &estimate, why,
                 sizeof(why)) < 0) {
        fail_job(b, j, "refused", why);
        return false;
    }
    b->table = t;
    b->ntable = 1;
    size_t nafter = json_array_size(j->after);
    if (nafter > 0 && nafter == t->rel.nkeys) {
        t->after = bw_xcalloc(nafter, sizeof(char *));
        for (size_t k = 0; k < nafter; k++) {
            const char *v = json_string_value(json_array_get(j->after, k));
            t->after[k] = bw_xstrdup(v ? v : "");
        }
        bw_info("backfill %s: %s.%s: resuming after %" PRId64 " rows", j->id, j->schema, j->table,
                j->rows);
    } else {
        j->rows = 0;
        j->estimate = estimate;
        j->started_us = bw_wall_us();
        bw_info("backfill %s: %s.%s%s%s started, about %" PRId64 " rows", j->id, j->schema,
                j->table, j->tenant ? ", tenant " : "", j->tenant ? j->tenant : "", estimate);
    }
    if (j->started_us == 0)
        j->started_us = bw_wall_us();
    j->status = RUNNING;
    return true;
}

int bw_backfills_step(bw_backfills *b, char *err, size_t errlen)
{
    if (b->phase == WAIT_ACK) {
        if (bw_lsntrack_confirmed(b->router->track) < b->ack_lsn)
            return 0;
        job *j = &b->jobs[b->cur];
        j->rows += b->sent;
        json_decref(j->after);
        j->after = json_array();
        for (uint16_t k = 0; b->table->after && k < b->table->rel.nkeys; k++)
            json_array_append_new(j->after, json_string(b->table->after[k]));
        if (b->last) {
            j->status = DONE;
            j->finished_us = bw_wall_us();
            double secs = (double) (j->finished_us - j->started_us) / 1e6;
            bw_info("backfill %s: done, %" PRId64 " rows in %.1f s", j->id, j->rows, secs);
            end_table(b);
        } else {
            progress(b, j, false);
            b->phase = IDLE;
        }
        set_running_metrics(b);
        if (save(b, err, errlen) < 0)
            return -1;
        /* and the next chunk at once: the loop may not turn again before its poll times out */
    }
    if (b->dirty) {
        b->dirty = false;
        set_running_metrics(b);
        if (save(b, err, errlen) < 0)
            return -1;
    }
    if (b->phase != IDLE || bw_wall_us() < b->retry_at_us)
        return 0;
    if (b->table == NULL) { /* the next job, if any */
        size_t i;
        for (i = 0; i < b->njobs && b->jobs[i].status != RUNNING; i++)
            ;
        if (i == b->njobs)
            for (i = 0; i < b->njobs && b->jobs[i].status != QUEUED; i++)
                ;
        if (i == b->njobs)
            return 0;
        char why[1024];
        if (b->conn == NULL &&
            (b->conn = connect_pg(b->cfg->pg_conninfo, "backfill", why, sizeof(why))) == NULL) {
            bw_warn("%s; retrying in a moment", why);
            b->retry_at_us = bw_wall_us() + RETRY_US;
            return 0;
        }
        b->cur = i;
        bool ok = start_job(b);
        set_running_metrics(b);
        if (save(b, err, errlen) < 0)
            return -1;
        if (!ok)
            return 0;
    }
    char why[1024];
    b->seq++;
    if (emit_watermark(b, "low", why, sizeof(why)) < 0) {
        retry_later(b, why);
        return 0;
    }
    b->phase = WAIT_LOW;
    return 0;
}

int bw_backfills_enqueue(bw_backfills *b, const char *id, const char *schema, const char *table,
                         char *const *after, uint16_t nafter, int64_t rows, int64_t estimate,
                         char *err, size_t errlen)
{
    for (size_t i = 0; i < b->njobs; i++)
        if (strcmp(b->jobs[i].id, id) == 0)
            return 0;
    job *j = add_job(b);
    j->id = bw_xstrdup(id);
    j->schema = bw_xstrdup(schema);
    j->table = bw_xstrdup(table);
    j->status = QUEUED;
    j->rows = rows;
    j->estimate = estimate;
    j->started_us = bw_wall_us();
    if (after && nafter > 0) {
        j->after = json_array();
        for (uint16_t k = 0; k < nafter; k++)
            json_array_append_new(j->after, json_string(after[k]));
    }
    bw_info("backfill %s: %s.%s queued, %" PRId64 " rows already sent", id, schema, table, rows);
    set_running_metrics(b);
    return save(b, err, errlen);
}

void bw_backfills_reset(bw_backfills *b)
{
    if (b->phase == WAIT_LOW || b->phase == WINDOW) {
        drop_chunk(b);
        b->phase = IDLE;
    }
    b->nrecent = 0;
}

const char *bw_backfills_path(const bw_backfills *b)
{
    return b->path;
}

bw_backfills *bw_backfills_new(const bw_config *cfg, bw_router *router, char *err, size_t errlen)
{
    bw_backfills *b = bw_xcalloc(1, sizeof(*b));
    b->cfg = cfg;
    b->router = router;
    b->path = bw_state_path(cfg->state_dir, cfg->slot_name, "backfills");
    bw_buf_init(&b->key);
    snprintf(b->nonce, sizeof(b->nonce), "%lx%x", (unsigned long) bw_wall_us(),
             (unsigned) getpid());
    if ((b->sel = bw_selection_new(cfg, err, errlen)) == NULL || load(b, err, errlen) < 0) {
        bw_backfills_free(b);
        return NULL;
    }
    set_running_metrics(b);
    return b;
}

void bw_backfills_free(bw_backfills *b)
{
    if (b == NULL)
        return;
    end_table(b);
    disconnect(b);
    for (size_t i = 0; i < b->njobs; i++)
        job_clear(&b->jobs[i]);
    free(b->jobs);
    bw_selection_free(b->sel);
    bw_buf_free(&b->key);
    free(b->path);
    free(b);
}

/* ---- the command ---- */

bool bw_backfill_command(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "backfill") == 0)
            return true;
    return false;
}

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    bw_buf_append(arg, data, size * n);
    return size * n;
}

/* GET http://<http.listen><path>; 0 with the body, -1 when nothing answers. */
static int http_get(const char *listen, const char *path, bw_buf *body, long *status, char *err,
                    size_t errlen)
{
    bw_buf url;
    bw_buf_init(&url);
    /* a wildcard listen address is reached on the loopback */
    if (strncmp(listen, "0.0.0.0:", 8) == 0)
        bw_buf_printf(&url, "http://127.0.0.1%s%s", listen + 7, path);
    else if (strncmp(listen, "[::]:", 5) == 0)
        bw_buf_printf(&url, "http://[::1]%s%s", listen + 4, path);
    else
        bw_buf_printf(&url, "http://%s%s", listen, path);
    CURL *curl = curl_easy_init();
    curl_easy_setopt(curl, CURLOPT_URL, url.data);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, body);
    CURLcode rc = curl_easy_perform(curl);
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
    else
        snprintf(err, errlen, "%s", curl_easy_strerror(rc));
    curl_easy_cleanup(curl);
    bw_buf_free(&url);
    return rc == CURLE_OK ? 0 : -1;
}

static void print_status(const char *body)
{
    json_error_t je;
    json_t *doc = json_loads(body, 0, &je);
    json_t *jobs = json_object_get(doc, "jobs");
    size_t i;
    json_t *o;
    int64_t now = bw_wall_us();
    json_array_foreach(jobs, i, o)
    {
        int64_t started = (int64_t) json_integer_value(json_object_get(o, "started_us"));
        int64_t finished = (int64_t) json_integer_value(json_object_get(o, "finished_us"));
        int64_t rows = (int64_t) json_integer_value(json_object_get(o, "rows"));
        double secs = started > 0 ? (double) ((finished > 0 ? finished : now) - started) / 1e6 : 0;
        json_object_set_new(o, "rate", json_real(secs > 0 ? (double) rows / secs : 0.0));
        json_object_del(o, "after");
    }
    char *text = jobs ? json_dumps(jobs, JSON_INDENT(2)) : NULL;
    printf("%s\n", text ? text : "[]");
    free(text);
    json_decref(doc);
}

/* Takes --table, --tenant, --where, --status (as --x=v or --x v) and the word out of argv. */
static int take_args(int *argc, char **argv, const char **table, const char **tenant,
                     const char **where, bool *status)
{
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        size_t n = 0;
        if (strcmp(a, "backfill") == 0)
            continue;
        if (strcmp(a, "--status") == 0) {
            *status = true;
            continue;
        }
        if (strncmp(a, "--table", 7) == 0)
            dst = table, n = 7;
        else if (strncmp(a, "--tenant", 8) == 0)
            dst = tenant, n = 8;
        else if (strncmp(a, "--where", 7) == 0)
            dst = where, n = 7;
        if (dst && a[n] == '=') {
            *dst = a + n + 1;
            continue;
        }
        if (dst && a[n] == '\0') {
            if (i + 1 >= *argc) {
                fprintf(stderr, "breakwater-relay backfill: %s needs a value\n", a);
                return -1;
            }
            *dst = argv[++i];
            continue;
        }
        argv[out++] = argv[i];
    }
    *argc = out;
    argv[out] = NULL;
    return 0;
}

int bw_backfill_cli(int argc, char **argv, char **envp)
{
    const char *table = NULL, *tenant = NULL, *where = NULL;
    bool status = false;
    bw_config cfg;
    bw_config_action action;
    bw_buf cfgerr, body;
    char err[2048] = "";
    long code = 0;
    int rc = 1;
    PGconn *conn = NULL;
    bw_selection *sel = NULL;
    bw_table *t = NULL;

    memset(&cfg, 0, sizeof(cfg));
    bw_buf_init(&cfgerr);
    bw_buf_init(&body);
    if (take_args(&argc, argv, &table, &tenant, &where, &status) < 0)
        return 2;
    if (bw_config_load(&cfg, argc, argv, envp, &action, &cfgerr) != 0) {
        fprintf(stderr, "breakwater-relay backfill: %s\n", cfgerr.data);
        bw_buf_free(&cfgerr);
        return 2;
    }
    bw_buf_free(&cfgerr);
    if (action != BW_CONFIG_RUN) {
        rc = 0;
        goto out;
    }
    if (!status && table == NULL) {
        fprintf(stderr, "breakwater-relay backfill: give --table=schema.table (and optionally "
                        "--tenant=T, --where=SQL), or --status\n");
        rc = 2;
        goto out;
    }
    if (cfg.http_listen[0] == '\0') {
        fprintf(stderr, "breakwater-relay backfill: http.listen is off in this configuration: the "
                        "command reaches the running relay through it; nothing was requested\n");
        goto out;
    }
    if (http_get(cfg.http_listen, status ? "/backfills" : "/healthz", &body, &code, err,
                 sizeof(err)) < 0) {
        fprintf(stderr,
                "breakwater-relay backfill: no relay answers at %s (http.listen): %s. Start the "
                "relay first; nothing was requested\n",
                cfg.http_listen, err);
        goto out;
    }
    if (status) {
        if (code != 200) {
            fprintf(stderr, "breakwater-relay backfill: %s/backfills answered %ld: %s\n",
                    cfg.http_listen, code, body.data ? body.data : "");
            goto out;
        }
        print_status(body.data ? body.data : "{}");
        rc = 0;
        goto out;
    }
    char *schema = NULL, *name = NULL;
    json_t *req = json_pack("{s:s}", "table", table);
    request_names(req, &schema, &name);
    json_decref(req);
    int64_t estimate = 0;
    if ((sel = bw_selection_new(&cfg, err, sizeof(err))) == NULL ||
        (conn = connect_pg(cfg.pg_conninfo, "backfill", err, sizeof(err))) == NULL ||
        validate(conn, sel, schema, name, tenant, where, &t, &estimate, err, sizeof(err)) < 0) {
        fprintf(stderr, "breakwater-relay backfill: %s; nothing was requested\n", err);
        free(schema);
        free(name);
        goto out;
    }
    char id[48];
    snprintf(id, sizeof(id), "bf-%" PRId64 "-%d", bw_wall_us() / 1000000, (int) getpid());
    req = json_pack("{s:s, s:s, s:s}", "id", id, "schema", schema, "table", name);
    if (tenant)
        json_object_set_new(req, "tenant", json_string(tenant));
    if (where)
        json_object_set_new(req, "where", json_string(where));
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    const char *params[1] = {text};
    PGresult *res =
        PQexecParams(conn, "SELECT pg_logical_emit_message(true, '" REQUEST_PREFIX "', $1)::text",
                     1, NULL, params, NULL, NULL, 0);
    free(text);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fprintf(stderr, "breakwater-relay backfill: could not write the request: %s",
                PQresultErrorMessage(res));
    else {
        printf("backfill %s requested at %s: %s.%s%s%s%s%s, about %" PRId64
               " rows; follow it with: breakwater-relay backfill --status\n",
               id, PQgetvalue(res, 0, 0), schema, name, tenant ? ", tenant " : "",
               tenant ? tenant : "", where ? ", where " : "", where ? where : "", estimate);
        rc = 0;
    }
    PQclear(res);
    free(schema);
    free(name);
out:
    bw_tables_free(NULL, t, t ? 1 : 0);
    if (conn)
        PQfinish(conn);
    bw_selection_free(sel);
    bw_buf_free(&body);
    bw_config_free(&cfg);
    return rc;
}
