/*
 * snapshot.c — the initial snapshot (see snapshot.h): plans the selected tables from the catalog
 * in one query, reads each in key order, a chunk per query, publishes the rows through the router
 * and saves progress in the state file once Kafka acknowledged a chunk. The next chunk's query
 * runs in PostgreSQL while the relay waits for those acknowledgements.
 *
 * Values are read in binary: the columns the decoder writes in PostgreSQL's send format are
 * fetched in it, the others cast to text under the decoder's pinned output settings, so a row
 * read here becomes the same bytes in Kafka as the same row inserted and streamed.
 */
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "buf.h"
#include "log.h"
#include "selection.h"

/* a quoted PostgreSQL name: at most 63 bytes, each quote doubled, two more quotes */
#define NAMEDATALEN_QUOTED 130

/* One table to read: its relation as the decoder would describe it, and how far it got. */
typedef struct plan {
    bw_relation rel;
    char *from;       /* ONLY "schema"."table" */
    char *select;     /* the select list: columns, then tenant, then key columns as text */
    char **key_types; /* per key column, its type as format_type spells it (parameter casts) */
    char **key_names; /* per key column, quoted */
    bool has_tenant;  /* the table has its tenant column (else per missing_tenant) */
    bool done;
    int64_t rows;     /* rows sent and acknowledged */
    int64_t estimate; /* pg_class.reltuples */
    char **after;       /* keyed tables: the last chunk read's last key: the next query's bound */
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
    plan *plans;
    size_t nplans;
    bw_xact x; /* the position and time the rows are stamped with */
    int64_t total, started_us, next_progress_us;
    bool found_logged;
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void copy_keys(uint16_t nkeys, char ***dst, char *const *src);

/* ---- the state file ---- */

static int state_load(bw_snapshot *s, char *err, size_t errlen)
{
    json_error_t je;
    FILE *f = fopen(s->state_path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot read the snapshot state file %s: %s", s->state_path,
                 strerror(errno));
        return -1;
    }
    s->saved = json_loadf(f, 0, &je);
    fclose(f);
    json_t *v = s->saved ? json_object_get(s->saved, "version") : NULL;
    if (s->saved == NULL || !json_is_integer(v) || json_integer_value(v) != 1 ||
        !json_is_array(json_object_get(s->saved, "tables"))) {
        snprintf(err, errlen,
                 "snapshot state file %s is not one the relay wrote (%s): move it away to start "
                 "without it (the slot's stream is not affected; a table's rows can be sent again "
                 "with a new slot)",
                 s->state_path, s->saved ? "unexpected content" : je.text);
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
        json_t *t = json_pack("{s:s, s:s, s:b, s:I}", "schema", p->rel.schema, "table",
                              p->rel.table, "done", p->done, "rows", (json_int_t) p->rows);
        if (p->saved_after) {
            json_t *after = json_array();
            for (uint16_t k = 0; k < p->rel.nkeys; k++)
                json_array_append_new(after, json_string(p->saved_after[k]));
            json_object_set_new(t, "after", after);
        }
        json_array_append_new(tables, t);
    }
    char lsn[18];
    return json_pack("{s:i, s:s, s:s, s:o}", "version", 1, "slot", s->cfg->slot_name, "lsn",
                     bw_lsn_str(s->x.commit_lsn, lsn), "tables", tables);
}

/* Written to a temporary file, synced, renamed over the old one: a crash leaves one or the other.
 */
static int state_save(bw_snapshot *s, char *err, size_t errlen)
{
    bw_buf tmp;
    bw_buf_init(&tmp);
    bw_buf_printf(&tmp, "%s.tmp", s->state_path);
    json_t *doc = state_json(s);
    char *text = json_dumps(doc, JSON_INDENT(1));
    json_decref(doc);
    int fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    size_t len = strlen(text);
    bool ok = fd >= 0 && write(fd, text, len) == (ssize_t) len && fsync(fd) == 0;
    int saved_errno = errno;
    if (fd >= 0)
        close(fd);
    ok = ok && rename(tmp.data, s->state_path) == 0;
    if (!ok) {
        snprintf(err, errlen,
                 "cannot write the snapshot state file %s: %s (relay.state_dir must be a writable "
                 "directory)",
                 s->state_path, strerror(fd < 0 ? saved_errno : errno));
        unlink(tmp.data);
    } else {
        char *slash = strrchr(tmp.data, '/');
        if (slash) {
            *slash = '\0';
            int dfd = open(tmp.data, O_RDONLY | O_DIRECTORY);
            if (dfd >= 0) {
                fsync(dfd);
                close(dfd);
            }
        }
    }
    free(text);
    bw_buf_free(&tmp);
    return ok ? 0 : -1;
}

/* ---- planning ---- */

static void plan_free(plan *p)
{
    for (uint16_t i = 0; i < p->rel.ncolumns; i++)
        free(p->rel.columns[i].name);
    free(p->rel.columns);
    free(p->rel.keys);
    free(p->rel.schema);
    free(p->rel.table);
    free(p->rel.tenant_column);
    for (uint16_t k = 0; k < p->rel.nkeys; k++) {
        free(p->key_types[k]);
        free(p->key_names[k]);
        if (p->after)
            free(p->after[k]);
        if (p->saved_after)
            free(p->saved_after[k]);
    }
    free(p->key_types);
    free(p->key_names);
    free(p->after);
    free(p->saved_after);
    free(p->from);
    free(p->select);
}

static void plans_free(bw_snapshot *s)
{
    for (size_t i = 0; i < s->nplans; i++) {
        bw_route_relation_free(s->router, &s->plans[i].rel);
        plan_free(&s->plans[i]);
    }
    free(s->plans);
    s->plans = NULL;
    s->nplans = 0;
}

/* The decoder writes these in PostgreSQL's send format ('b'), everything else as text. */
static bool binary_kind(uint32_t oid)
{
    switch (oid) {
    case BW_OID_BOOL:
    case BW_OID_INT2:
    case BW_OID_INT4:
    case BW_OID_INT8:
    case BW_OID_OID:
    case BW_OID_FLOAT4:
    case BW_OID_FLOAT8:
    case BW_OID_NUMERIC:
    case BW_OID_DATE:
    case BW_OID_TIME:
    case BW_OID_TIMETZ:
    case BW_OID_TIMESTAMP:
    case BW_OID_TIMESTAMPTZ:
    case BW_OID_INTERVAL:
    case BW_OID_UUID:
    case BW_OID_BYTEA:
        return true;
    default:
        return false;
    }
}

/*
 * How a text-format value is selected so that its bytes are the decoder's: text-like types in
 * binary (their send format is their stored text, bpchar's padding included); any other type
 * through its output function, which format('%s') calls (a cast to text may differ from it:
 * char(n) drops its padding, inet shows its netmask). format() turns NULL into '', hence the CASE.
 */
static void put_text_expr(bw_buf *b, uint32_t oid, const char *q)
{
    switch (oid) {
    case BW_OID_TEXT:
    case BW_OID_VARCHAR:
    case BW_OID_BPCHAR:
    case BW_OID_NAME:
    case BW_OID_JSON:
        bw_buf_puts(b, q);
        break;
    default:
        bw_buf_printf(b, "CASE WHEN %s IS NULL THEN NULL ELSE format('%%s', %s) END", q, q);
    }
}

/*
 * Every column of every ordinary, permanent user table, with its base type (domains unwrapped as
 * the decoder does) and whether it is a key column: the replica identity index's, else the
 * primary key's. One row per column, tables in name order.
 */
static const char CATALOG_QUERY[] =
    "WITH RECURSIVE rels AS ("
    " SELECT c.oid, n.nspname, c.relname, c.relreplident, greatest(c.reltuples, 0)::int8 AS est,"
    "  coalesce((SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident"
    "            AND c.relreplident = 'i' LIMIT 1),"
    "           (SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))"
    "   AS keyidx"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind = 'r' AND c.relpersistence = 'p'"
    "  AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema'])"
    "  AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_'),"
    " base AS ("
    " SELECT a.attrelid, a.attnum, a.atttypid AS typ, a.atttypmod AS dmod"
    " FROM pg_attribute a JOIN rels r ON r.oid = a.attrelid"
    " WHERE a.attnum > 0 AND NOT a.attisdropped"
    " UNION ALL"
    " SELECT b.attrelid, b.attnum, t.typbasetype, t.typtypmod"
    " FROM base b JOIN pg_type t ON t.oid = b.typ WHERE t.typtype = 'd')"
    " SELECT r.oid, r.nspname, r.relname, r.relreplident, a.attname, b.typ,"
    "  CASE WHEN a.atttypmod >= 0 THEN a.atttypmod ELSE b.dmod END,"
    "  format_type(a.atttypid, a.atttypmod),"
    "  a.attnum = ANY (coalesce((SELECT (i.indkey::int2[])[0:i.indnkeyatts - 1]"
    "   FROM pg_index i WHERE i.indexrelid = r.keyidx), '{}')), r.est"
    " FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped"
    " JOIN base b ON b.attrelid = a.attrelid AND b.attnum = a.attnum"
    " JOIN pg_type bt ON bt.oid = b.typ AND bt.typtype <> 'd'"
    " ORDER BY r.nspname, r.relname, a.attnum";

static char *quote_ident(PGconn *conn, const char *name)
{
    char *q = PQescapeIdentifier(conn, name, strlen(name));
    char *out = bw_xstrdup(q ? q : "\"?\"");
    PQfreemem(q);
    return out;
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
 * Builds one plan from rows [first, end) of the catalog result (one table). Returns 1 when the
 * table is read, 0 when it is left out (missing tenant column and missing_tenant=drop; a resumed
 * snapshot that did not have it), -1 with err set.
 */
static int plan_table(bw_snapshot *s, PGresult *res, int first, int end, plan *p, char *err,
                      size_t errlen)
{
    const char *schema = PQgetvalue(res, first, 1), *table = PQgetvalue(res, first, 2);
    const char *tenant = bw_selection_tenant_column(s->sel, schema, table);
    json_t *saved = NULL;

    /* a state saved before the tables were planned (tables []) resumes nothing: plan them all */
    if (s->saved && json_array_size(json_object_get(s->saved, "tables")) > 0 &&
        (saved = saved_table(s, schema, table)) == NULL)
        return 0; /* created after the snapshot began: the stream has all its rows */
    memset(p, 0, sizeof(*p));
    p->rel.relid = (uint32_t) strtoul(PQgetvalue(res, first, 0), NULL, 10);
    p->rel.generation = 1;
    p->rel.schema = bw_xstrdup(schema);
    p->rel.table = bw_xstrdup(table);
    p->rel.replident = PQgetvalue(res, first, 3)[0];
    p->rel.columns = bw_xcalloc((size_t) (end - first), sizeof(bw_column));
    p->rel.keys = bw_xcalloc((size_t) (end - first), sizeof(uint16_t));
    p->key_types = bw_xcalloc((size_t) (end - first), sizeof(char *));
    p->key_names = bw_xcalloc((size_t) (end - first), sizeof(char *));
    p->estimate = strtoll(PQgetvalue(res, first, 9), NULL, 10);
    char *qs = quote_ident(s->conn, schema), *qt = quote_ident(s->conn, table);
    bw_buf b;
    bw_buf_init(&b);
    bw_buf_printf(&b, "ONLY %s.%s AS bw_t", qs, qt); /* bw_t.key: not the ::text outputs */
    p->from = bw_xstrdup(b.data);
    free(qs);
    free(qt);

    bw_buf_reset(&b);
    char *tenant_q = NULL;
    for (int row = first; row < end; row++) {
        const char *name = PQgetvalue(res, row, 4);
        bool is_key = PQgetvalue(res, row, 8)[0] == 't';
        bool is_tenant = strcmp(name, tenant) == 0;
        char *q = quote_ident(s->conn, name);
        if (is_tenant) {
            bw_buf t;
            bw_buf_init(&t);
            put_text_expr(&t, (uint32_t) strtoul(PQgetvalue(res, row, 5), NULL, 10), q);
            tenant_q = bw_xstrdup(t.data);
            bw_buf_free(&t);
        }
        if (!is_key && bw_selection_column_excluded(s->sel, schema, table, name)) {
            free(q);
            continue;
        }
        bw_column *c = &p->rel.columns[p->rel.ncolumns];
        c->name = bw_xstrdup(name);
        c->type_oid = (uint32_t) strtoul(PQgetvalue(res, row, 5), NULL, 10);
        c->typmod = (int32_t) strtol(PQgetvalue(res, row, 6), NULL, 10);
        c->format = binary_kind(c->type_oid) ? 'b' : 't';
        c->flags = (uint8_t) ((is_key ? BW_COL_KEY : 0) | (is_tenant ? BW_COL_TENANT : 0));
        if (b.len)
            bw_buf_puts(&b, ", ");
        if (c->format == 't')
            put_text_expr(&b, c->type_oid, q);
        else
            bw_buf_puts(&b, q);
        if (is_key) {
            p->key_types[p->rel.nkeys] = bw_xstrdup(PQgetvalue(res, row, 7));
            char qualified[NAMEDATALEN_QUOTED + 8];
            snprintf(qualified, sizeof(qualified), "bw_t.%s", q);
            p->key_names[p->rel.nkeys] = bw_xstrdup(qualified);
            p->rel.keys[p->rel.nkeys++] = p->rel.ncolumns;
        }
        p->rel.ncolumns++;
        free(q);
    }
    p->has_tenant = tenant_q != NULL;
    p->rel.tenant_column = bw_xstrdup(p->has_tenant ? tenant : "");
    bw_buf_printf(&b, ", %s", p->has_tenant ? tenant_q : "NULL::text");
    /* keys by their output functions: the next chunk's bound goes back through their input */
    for (uint16_t k = 0; k < p->rel.nkeys; k++)
        bw_buf_printf(&b, ", format('%%s', %s)", p->key_names[k]);
    p->select = bw_xstrdup(b.data);
    bw_buf_free(&b);
    free(tenant_q);

    if (saved) {
        p->done = json_is_true(json_object_get(saved, "done"));
        p->rows = (int64_t) json_integer_value(json_object_get(saved, "rows"));
        json_t *after = json_object_get(saved, "after");
        if (json_is_array(after) && json_array_size(after) == p->rel.nkeys && p->rel.nkeys > 0) {
            p->after = bw_xcalloc(p->rel.nkeys, sizeof(char *));
            for (uint16_t k = 0; k < p->rel.nkeys; k++) {
                const char *v = json_string_value(json_array_get(after, k));
                p->after[k] = bw_xstrdup(v ? v : "");
            }
            copy_keys(p->rel.nkeys, &p->saved_after, p->after);
        } else
            p->rows = 0; /* keyless (or its key changed): read again from the start */
    }

    if (!p->has_tenant) {
        switch (bw_selection_missing_tenant(s->sel)) {
        case BW_MISSING_ERROR:
            snprintf(err, errlen,
                     "snapshot: table \"%s.%s\" has no tenant column \"%s\" and "
                     "decoder.missing_tenant is error: name its tenant column in "
                     "decoder.tenant_columns, leave it out with decoder.exclude_tables, or set "
                     "decoder.missing_tenant to pass or drop",
                     schema, table, tenant);
            plan_free(p);
            return -1;
        case BW_MISSING_DROP:
            bw_warn("snapshot: table \"%s.%s\" has no tenant column \"%s\": its rows are left out "
                    "(decoder.missing_tenant=drop)",
                    schema, table, tenant);
            plan_free(p);
            return 0;
        case BW_MISSING_PASS:
            bw_warn("snapshot: table \"%s.%s\" has no tenant column \"%s\": its rows are sent "
                    "without a tenant",
                    schema, table, tenant);
            break;
        }
    }
    return 1;
}

static int plan_all(bw_snapshot *s, char *err, size_t errlen)
{
    PGresult *res = PQexecParams(s->conn, CATALOG_QUERY, 0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "snapshot: could not list the tables: %s", PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }
    int n = PQntuples(res);
    s->plans = bw_xcalloc((size_t) n + 1, sizeof(plan));
    for (int first = 0, end; first < n; first = end) {
        for (end = first + 1;
             end < n && strcmp(PQgetvalue(res, end, 0), PQgetvalue(res, first, 0)) == 0;)
            end++;
        if (!bw_selection_table(s->sel, PQgetvalue(res, first, 1), PQgetvalue(res, first, 2)))
            continue;
        int rc = plan_table(s, res, first, end, &s->plans[s->nplans], err, errlen);
        if (rc < 0) {
            PQclear(res);
            return -1;
        }
        s->nplans += (size_t) rc;
    }
    PQclear(res);
    int64_t estimate = 0;
    for (size_t i = 0; i < s->nplans; i++)
        if (!s->plans[i].done)
            estimate +=
                s->plans[i].estimate > s->plans[i].rows ? s->plans[i].estimate : s->plans[i].rows;
    atomic_store(&s->router->metrics->snapshot_rows_estimate, estimate);
    return 0;
}

/* ---- reading ---- */

static bool failed(PGresult *res, ExecStatusType want, const char *what, char *err, size_t errlen)
{
    if (PQresultStatus(res) == want)
        return false;
    snprintf(err, errlen, "snapshot: %s: %s", what, PQresultErrorMessage(res));
    return true;
}

static int exec_ok(PGconn *conn, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    bool bad = failed(res, PGRES_COMMAND_OK, what, err, errlen);
    PQclear(res);
    return bad ? -1 : 0;
}

/* Sends the query of p's next chunk (keyed: after p->after; keyless: the cursor's next rows). */
static int send_chunk_query(bw_snapshot *s, const plan *p, char *err, size_t errlen)
{
    bw_buf q;
    bw_buf_init(&q);
    int ok;
    if (p->rel.nkeys == 0) {
        bw_buf_printf(&q, "FETCH FORWARD %" PRId64 " FROM bw_snapshot_rows",
                      s->cfg->snapshot_chunk_rows);
        ok = PQsendQueryParams(s->conn, q.data, 0, NULL, NULL, NULL, NULL, 1);
    } else {
        bw_buf_printf(&q, "SELECT %s FROM %s", p->select, p->from);
        if (p->after) {
            bw_buf_puts(&q, " WHERE (");
            for (uint16_t k = 0; k < p->rel.nkeys; k++)
                bw_buf_printf(&q, "%s%s", k ? ", " : "", p->key_names[k]);
            bw_buf_puts(&q, ") > (");
            for (uint16_t k = 0; k < p->rel.nkeys; k++)
                bw_buf_printf(&q, "%s$%u::%s", k ? ", " : "", k + 1, p->key_types[k]);
            bw_buf_putc(&q, ')');
        }
        bw_buf_puts(&q, " ORDER BY ");
        for (uint16_t k = 0; k < p->rel.nkeys; k++)
            bw_buf_printf(&q, "%s%s", k ? ", " : "", p->key_names[k]);
        bw_buf_printf(&q, " LIMIT %" PRId64, s->cfg->snapshot_chunk_rows);
        ok = PQsendQueryParams(s->conn, q.data, p->after ? p->rel.nkeys : 0, NULL,
                               (const char *const *) p->after, NULL, NULL, 1);
    }
    if (!ok)
        snprintf(err, errlen, "snapshot: could not query %s: %s", p->from, PQerrorMessage(s->conn));
    bw_buf_free(&q);
    return ok ? 0 : -1;
}

static PGresult *chunk_result(bw_snapshot *s, const plan *p, char *err, size_t errlen)
{
    PGresult *res = PQgetResult(s->conn);
    for (PGresult *extra; (extra = PQgetResult(s->conn)) != NULL;)
        PQclear(extra);
    if (res == NULL || failed(res, PGRES_TUPLES_OK, p->from, err, errlen)) {
        if (res == NULL)
            snprintf(err, errlen, "snapshot: reading %s: %s", p->from, PQerrorMessage(s->conn));
        PQclear(res);
        return NULL;
    }
    return res;
}

/* Publishes a chunk's rows on one tracker entry. Returns rows sent, or -1. */
static int64_t publish_chunk(bw_snapshot *s, plan *p, PGresult *res, bw_txn_entry *e, char *err,
                             size_t errlen)
{
    int n = PQntuples(res);
    uint16_t nc = p->rel.ncolumns;
    bw_value *vals = bw_xcalloc(nc ? nc : 1, sizeof(bw_value));
    int64_t sent = 0;
    for (int row = 0; row < n; row++) {
        for (uint16_t i = 0; i < nc; i++) {
            if (PQgetisnull(res, row, i))
                vals[i] = (bw_value){'n', NULL, 0};
            else
                vals[i] =
                    (bw_value){p->rel.columns[i].format, (const uint8_t *) PQgetvalue(res, row, i),
                               (uint32_t) PQgetlength(res, row, i)};
        }
        bw_change c = {.rel = &p->rel, .old_kind = 'X', .nnew = nc, .new_ = vals};
        if (PQgetisnull(res, row, nc)) {
            c.tenant = (bw_value){'n', NULL, 0};
            if (p->has_tenant && bw_selection_missing_tenant(s->sel) == BW_MISSING_DROP)
                continue;
            if (p->has_tenant && bw_selection_missing_tenant(s->sel) == BW_MISSING_ERROR) {
                snprintf(err, errlen,
                         "snapshot: a row of table \"%s.%s\" has no tenant (NULL in column "
                         "\"%s\") and decoder.missing_tenant is error",
                         p->rel.schema, p->rel.table, p->rel.tenant_column);
                free(vals);
                return -1;
            }
        } else
            c.tenant = (bw_value){'t', (const uint8_t *) PQgetvalue(res, row, nc),
                                  (uint32_t) PQgetlength(res, row, nc)};
        if (bw_route_read(s->router, &c, &s->x, e) != 0) {
            snprintf(err, errlen, "snapshot: %s", s->router->err);
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
    int64_t now = now_us();
    if (!force && now < s->next_progress_us)
        return;
    s->next_progress_us = now + 5000000;
    double secs = (double) (now - s->started_us) / 1e6;
    int64_t est = atomic_load(&s->router->metrics->snapshot_rows_estimate);
    bw_info("snapshot: %" PRId64 " of about %" PRId64 " rows sent (%.0f rows/s)", s->total,
            est > s->total ? est : s->total, secs > 0 ? (double) s->total / secs : 0.0);
}

/* The last row's key columns (after the tenant in the select list), as the next chunk's bound. */
static void remember_last_key(plan *p, PGresult *res)
{
    int last = PQntuples(res) - 1, base = p->rel.ncolumns + 1;
    if (p->after == NULL)
        p->after = bw_xcalloc(p->rel.nkeys, sizeof(char *));
    for (uint16_t k = 0; k < p->rel.nkeys; k++) {
        free(p->after[k]);
        p->after[k] =
            bw_xstrndup(PQgetvalue(res, last, base + k), (size_t) PQgetlength(res, last, base + k));
    }
}

/* dst (nkeys strings, allocated on first use) = src */
static void copy_keys(uint16_t nkeys, char ***dst, char *const *src)
{
    if (*dst == NULL)
        *dst = bw_xcalloc(nkeys, sizeof(char *));
    for (uint16_t k = 0; k < nkeys; k++) {
        free((*dst)[k]);
        (*dst)[k] = bw_xstrdup(src[k]);
    }
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
    int rc = 0;
    bool keyless = p->rel.nkeys == 0;
    int64_t prev_sent = -1; /* chunk k-1's rows, while it awaits its acknowledgements */
    char **prev_after = NULL;
    bw_buf q;
    bw_buf_init(&q);
    if (keyless) {
        p->rows = 0;
        bw_buf_printf(&q, "DECLARE bw_snapshot_rows NO SCROLL CURSOR FOR SELECT %s FROM %s",
                      p->select, p->from);
        rc = exec_ok(s->conn, q.data, "declaring a cursor", err, errlen);
        bw_buf_free(&q);
        if (rc < 0)
            return -1;
    }
    if (p->after)
        bw_info("snapshot: %s.%s: resuming after %" PRId64 " rows", p->rel.schema, p->rel.table,
                p->rows);
    if (send_chunk_query(s, p, err, errlen) < 0)
        return -1;
    for (;;) {
        PGresult *res = chunk_result(s, p, err, errlen);
        if (res == NULL) {
            rc = -1;
            break;
        }
        int n = PQntuples(res);
        bw_txn_entry *e = bw_lsntrack_begin(s->router->track, 0);
        int64_t sent = publish_chunk(s, p, res, e, err, errlen);
        bw_lsntrack_commit(s->router->track, e);
        bool last = n < s->cfg->snapshot_chunk_rows;
        if (sent >= 0 && !keyless && n > 0)
            remember_last_key(p, res);
        PQclear(res);
        if (sent < 0 || (!last && send_chunk_query(s, p, err, errlen) < 0)) {
            rc = -1;
            break;
        }
        if ((rc = wait_acked(s, last ? 0 : 1, err, errlen)) != 0)
            break;
        if (prev_sent >= 0) { /* chunk k-1 is acknowledged */
            p->rows += prev_sent;
            s->total += prev_sent;
            if (prev_after)
                copy_keys(p->rel.nkeys, &p->saved_after, prev_after);
        }
        prev_sent = sent;
        if (!keyless && n > 0)
            copy_keys(p->rel.nkeys, &prev_after, p->after);
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
    if (prev_after) {
        for (uint16_t k = 0; k < p->rel.nkeys; k++)
            free(prev_after[k]);
        free(prev_after);
    }
    if (rc != 0)
        return rc;
    if (keyless && exec_ok(s->conn, "CLOSE bw_snapshot_rows", "closing a cursor", err, errlen) < 0)
        return -1;
    bw_info("snapshot: %s.%s: done, %" PRId64 " rows", p->rel.schema, p->rel.table, p->rows);
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
    if (exec_ok(s->conn,
                "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; SET TimeZone = 'UTC';"
                " SET extra_float_digits = 1; SET bytea_output = 'hex';"
                " SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0;"
                " BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                "starting the snapshot transaction", err, errlen) < 0)
        return -1;
    if (exported) {
        char *lit = PQescapeLiteral(s->conn, exported, strlen(exported));
        bw_buf q;
        bw_buf_init(&q);
        bw_buf_printf(&q, "SET TRANSACTION SNAPSHOT %s", lit ? lit : "''");
        PQfreemem(lit);
        int rc = exec_ok(s->conn, q.data, "importing the slot's snapshot", err, errlen);
        bw_buf_free(&q);
        if (rc < 0)
            return -1;
    }
    PGresult *res = PQexec(s->conn, "SELECT pg_current_wal_lsn()::text, "
                                    "(extract(epoch FROM transaction_timestamp()) * 1e6)::int8");
    if (failed(res, PGRES_TUPLES_OK, "reading the snapshot's position", err, errlen)) {
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

/* The whole snapshot: plan, read every table left, forget the state. 0, 1 stopped, -1. */
static int run(bw_snapshot *s, const char *exported, uint64_t lsn, char *err, size_t errlen)
{
    char at[18];
    int rc = -1;
    s->x.commit_lsn = lsn;
    s->started_us = now_us();
    s->next_progress_us = s->started_us + 5000000;
    s->total = 0;
    atomic_store(&s->router->metrics->snapshot_running, 1);
    if (open_transaction(s, exported, err, errlen) < 0 || plan_all(s, err, errlen) < 0)
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
    if (exec_ok(s->conn, "COMMIT", "ending the snapshot transaction", err, errlen) < 0)
        goto out;
    if (unlink(s->state_path) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "snapshot: cannot remove the state file %s: %s", s->state_path,
                 strerror(errno));
        goto out;
    }
    double secs = (double) (now_us() - s->started_us) / 1e6;
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
    bw_buf path;
    bw_buf_init(&path);
    bw_buf_printf(&path, "%s/%s.snapshot.json", cfg->state_dir, cfg->slot_name);
    s->state_path = bw_xstrdup(path.data);
    bw_buf_free(&path);
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
    if (mkdir(s->cfg->state_dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create relay.state_dir %s: %s", s->cfg->state_dir,
                 strerror(errno));
        return -1;
    }
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

int bw_snapshot_only(bw_snapshot *s, char *err, size_t errlen)
{
    if (s->saved == NULL && bw_snapshot_creating(s, err, errlen) < 0)
        return -1;
    return run(s, NULL, 0, err, errlen);
}
