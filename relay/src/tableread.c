/*
 * tableread.c — table rows as the decoder would send them (see tableread.h): one catalog query
 * plans every table, keyset-paginated chunk queries read them, each row becomes a change.
 */
#include "tableread.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "log.h"

/* an index has at most 32 key columns (INDEX_MAX_KEYS) */
#define BW_MAX_KEY_PARAMS 32

const char bw_table_session_settings[] =
    "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; SET TimeZone = 'UTC';"
    " SET extra_float_digits = 1; SET bytea_output = 'hex';"
    /* a backfill's condition is checked for quotes as written: a backslash is a character */
    " SET standard_conforming_strings = on";

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
    "  AND ($1::text IS NULL OR (n.nspname = $1 AND c.relname = $2))"
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

static void table_free(bw_table *t)
{
    for (uint16_t i = 0; i < t->rel.ncolumns; i++)
        free(t->rel.columns[i].name);
    free(t->rel.columns);
    free(t->rel.keys);
    free(t->rel.schema);
    free(t->rel.table);
    free(t->rel.tenant_column);
    for (uint16_t k = 0; k < t->rel.nkeys; k++) {
        free(t->key_types[k]);
        free(t->key_names[k]);
    }
    free(t->key_types);
    free(t->key_names);
    bw_keys_free(t->rel.nkeys, t->after);
    free(t->tenant_name);
    free(t->tenant_type);
    free(t->from);
    free(t->select);
}

void bw_tables_free(bw_router *router, bw_table *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bw_route_relation_free(router, &t[i].rel);
        table_free(&t[i]);
    }
    free(t);
}

void bw_keys_copy(uint16_t nkeys, char ***dst, char *const *src)
{
    if (*dst == NULL)
        *dst = bw_xcalloc(nkeys ? nkeys : 1, sizeof(char *));
    for (uint16_t k = 0; k < nkeys; k++) {
        free((*dst)[k]);
        (*dst)[k] = bw_xstrdup(src[k]);
    }
}

void bw_keys_free(uint16_t nkeys, char **keys)
{
    if (keys == NULL)
        return;
    for (uint16_t k = 0; k < nkeys; k++)
        free(keys[k]);
    free(keys);
}

int bw_pg_command(PGconn *conn, const char *sql, const char *who, const char *what, char *err,
                  size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        snprintf(err, errlen, "%s: %s: %s", who, what, PQresultErrorMessage(res));
        rc = -1;
    }
    PQclear(res);
    return rc;
}

/*
 * One table from rows [first, end) of the catalog result. 1: planned; 0: left out
 * (missing_tenant=drop); -1: missing_tenant=error, err set.
 */
static int plan_one(PGconn *conn, const bw_selection *sel, PGresult *res, int first, int end,
                    const char *who, bw_table *t, char *err, size_t errlen)
{
    const char *schema = PQgetvalue(res, first, 1), *table = PQgetvalue(res, first, 2);
    const char *tenant = bw_selection_tenant_column(sel, schema, table);
    size_t ncols = (size_t) (end - first);

    memset(t, 0, sizeof(*t));
    t->rel.relid = (uint32_t) strtoul(PQgetvalue(res, first, 0), NULL, 10);
    t->rel.generation = 1;
    t->rel.schema = bw_xstrdup(schema);
    t->rel.table = bw_xstrdup(table);
    t->rel.replident = PQgetvalue(res, first, 3)[0];
    t->rel.columns = bw_xcalloc(ncols, sizeof(bw_column));
    t->rel.keys = bw_xcalloc(ncols, sizeof(uint16_t));
    t->key_types = bw_xcalloc(ncols, sizeof(char *));
    t->key_names = bw_xcalloc(ncols, sizeof(char *));
    t->estimate = strtoll(PQgetvalue(res, first, 9), NULL, 10);
    char *qs = quote_ident(conn, schema), *qt = quote_ident(conn, table);
    bw_buf b, tenant_expr;
    bw_buf_init(&b);
    bw_buf_init(&tenant_expr);
    bw_buf_printf(&b, "ONLY %s.%s AS bw_t", qs, qt); /* bw_t.key: not the text outputs */
    t->from = bw_xstrdup(b.data);
    free(qs);
    free(qt);

    bw_buf_reset(&b);
    for (int row = first; row < end; row++) {
        const char *name = PQgetvalue(res, row, 4);
        uint32_t oid = (uint32_t) strtoul(PQgetvalue(res, row, 5), NULL, 10);
        bool is_key = PQgetvalue(res, row, 8)[0] == 't';
        bool is_tenant = strcmp(name, tenant) == 0;
        char *q = quote_ident(conn, name);
        bw_buf qualified;
        bw_buf_init(&qualified);
        bw_buf_printf(&qualified, "bw_t.%s", q);
        free(q);
        if (is_tenant) {
            put_text_expr(&tenant_expr, oid, qualified.data);
            t->tenant_name = bw_xstrdup(qualified.data);
            t->tenant_type = bw_xstrdup(PQgetvalue(res, row, 7));
        }
        if (!is_key && bw_selection_column_excluded(sel, schema, table, name)) {
            bw_buf_free(&qualified);
            continue;
        }
        bw_column *c = &t->rel.columns[t->rel.ncolumns];
        c->name = bw_xstrdup(name);
        c->type_oid = oid;
        c->typmod = (int32_t) strtol(PQgetvalue(res, row, 6), NULL, 10);
        c->format = binary_kind(oid) ? 'b' : 't';
        c->flags = (uint8_t) ((is_key ? BW_COL_KEY : 0) | (is_tenant ? BW_COL_TENANT : 0));
        if (b.len)
            bw_buf_puts(&b, ", ");
        if (c->format == 't')
            put_text_expr(&b, oid, qualified.data);
        else
            bw_buf_puts(&b, qualified.data);
        if (is_key) {
            t->key_types[t->rel.nkeys] = bw_xstrdup(PQgetvalue(res, row, 7));
            t->key_names[t->rel.nkeys] = bw_xstrdup(qualified.data);
            t->rel.keys[t->rel.nkeys++] = t->rel.ncolumns;
        }
        t->rel.ncolumns++;
        bw_buf_free(&qualified);
    }
    t->rel.tenant_column = bw_xstrdup(t->tenant_name ? tenant : "");
    bw_buf_printf(&b, ", %s", t->tenant_name ? tenant_expr.data : "NULL::text");
    /* keys through their output functions: the next chunk's bound goes back through their input */
    for (uint16_t k = 0; k < t->rel.nkeys; k++)
        bw_buf_printf(&b, ", format('%%s', %s)", t->key_names[k]);
    t->select = bw_xstrdup(b.data);
    bw_buf_free(&b);
    bw_buf_free(&tenant_expr);

    if (t->tenant_name)
        return 1;
    switch (bw_selection_missing_tenant(sel)) {
    case BW_MISSING_ERROR:
        snprintf(err, errlen,
                 "%s: table \"%s.%s\" has no tenant column \"%s\" and decoder.missing_tenant is "
                 "error: name its tenant column in decoder.tenant_columns, leave it out with "
                 "decoder.exclude_tables, or set decoder.missing_tenant to pass or drop",
                 who ? who : "backfill", schema, table, tenant);
        table_free(t);
        return -1;
    case BW_MISSING_DROP:
        if (who)
            bw_warn("%s: table \"%s.%s\" has no tenant column \"%s\": its rows are left out "
                    "(decoder.missing_tenant=drop)",
                    who, schema, table, tenant);
        table_free(t);
        return 0;
    case BW_MISSING_PASS:
        if (who)
            bw_warn("%s: table \"%s.%s\" has no tenant column \"%s\": its rows are sent without a "
                    "tenant",
                    who, schema, table, tenant);
        break;
    }
    return 1;
}

int64_t bw_plan_rows(const char *explain)
{
    json_error_t je;
    json_t *doc = json_loads(explain, 0, &je);
    json_t *plan = json_object_get(json_object_get(json_array_get(doc, 0), "Plan"), "Plan Rows");
    int64_t rows = json_is_number(plan) ? (int64_t) json_number_value(plan) : 0;
    json_decref(doc);
    return rows;
}

/*
 * A table never analysed has no reltuples: the planner then estimates from its current size, as
 * EXPLAIN shows (nothing is executed).
 */
static int64_t explain_estimate(PGconn *conn, const char *from)
{
    bw_buf q;
    bw_buf_init(&q);
    bw_buf_printf(&q, "EXPLAIN (FORMAT JSON) SELECT 1 FROM %s", from);
    PGresult *res = PQexec(conn, q.data);
    int64_t rows = PQresultStatus(res) == PGRES_TUPLES_OK ? bw_plan_rows(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);
    bw_buf_free(&q);
    return rows;
}

int bw_tables_plan(PGconn *conn, const bw_selection *sel, const char *schema, const char *table,
                   const char *who, bw_table **out, size_t *n, char *err, size_t errlen)
{
    const char *params[2] = {schema, table};
    PGresult *res = PQexecParams(conn, CATALOG_QUERY, 2, NULL, params, NULL, NULL, 0);
    *out = NULL;
    *n = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s: could not list the tables: %s", who, PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }
    int rows = PQntuples(res);
    bw_table *t = bw_xcalloc((size_t) rows + 1, sizeof(bw_table));
    size_t count = 0;
    for (int first = 0, end; first < rows; first = end) {
        for (end = first + 1;
             end < rows && strcmp(PQgetvalue(res, end, 0), PQgetvalue(res, first, 0)) == 0;)
            end++;
        if (!bw_selection_table(sel, PQgetvalue(res, first, 1), PQgetvalue(res, first, 2)))
            continue;
        int rc = plan_one(conn, sel, res, first, end, who, &t[count], err, errlen);
        if (rc < 0) {
            PQclear(res);
            bw_tables_free(NULL, t, count);
            return -1;
        }
        if (rc > 0 && t[count].estimate <= 0)
            t[count].estimate = explain_estimate(conn, t[count].from);
        count += (size_t) rc;
    }
    PQclear(res);
    *out = t;
    *n = count;
    return 0;
}

int bw_table_send_query(PGconn *conn, const bw_table *t, const char *cursor, const char *tenant,
                        const char *where, int64_t limit, char *err, size_t errlen)
{
    bw_buf q;
    const char *params[BW_MAX_KEY_PARAMS + 1];
    int nparams = 0, ok;
    bw_buf_init(&q);
    if (t->rel.nkeys == 0) {
        bw_buf_printf(&q, "FETCH FORWARD %" PRId64 " FROM %s", limit, cursor);
    } else {
        /*
         * The bounds (key, tenant) in a subquery and a caller's condition outside it: whatever the
         * condition says, it can only narrow the rows the bounds let through.
         */
        bw_buf_printf(&q, "SELECT %s FROM (SELECT * FROM %s WHERE true", t->select, t->from);
        if (t->after && t->rel.nkeys <= BW_MAX_KEY_PARAMS) {
            bw_buf_puts(&q, " AND (");
            for (uint16_t k = 0; k < t->rel.nkeys; k++)
                bw_buf_printf(&q, "%s%s", k ? ", " : "", t->key_names[k]);
            bw_buf_puts(&q, ") > (");
            for (uint16_t k = 0; k < t->rel.nkeys; k++) {
                params[nparams++] = t->after[k];
                bw_buf_printf(&q, "%s$%d::%s", k ? ", " : "", nparams, t->key_types[k]);
            }
            bw_buf_putc(&q, ')');
        }
        if (tenant && t->tenant_name) {
            params[nparams++] = tenant;
            bw_buf_printf(&q, " AND %s = $%d::%s", t->tenant_name, nparams, t->tenant_type);
        }
        bw_buf_puts(&q, ") AS bw_t");
        if (where)
            bw_buf_printf(&q, " WHERE (%s)", where);
        bw_buf_puts(&q, " ORDER BY ");
        for (uint16_t k = 0; k < t->rel.nkeys; k++)
            bw_buf_printf(&q, "%s%s", k ? ", " : "", t->key_names[k]);
        bw_buf_printf(&q, " LIMIT %" PRId64, limit);
    }
    ok = PQsendQueryParams(conn, q.data, nparams, NULL, params, NULL, NULL, 1);
    if (!ok)
        snprintf(err, errlen, "could not query %s: %s", t->from, PQerrorMessage(conn));
    bw_buf_free(&q);
    return ok ? 0 : -1;
}

PGresult *bw_table_result(PGconn *conn, const bw_table *t, char *err, size_t errlen)
{
    PGresult *res = PQgetResult(conn);
    for (PGresult *extra; (extra = PQgetResult(conn)) != NULL;)
        PQclear(extra);
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "reading %s: %s", t->from,
                 res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        PQclear(res);
        return NULL;
    }
    return res;
}

int bw_table_row(const bw_table *t, const bw_selection *sel, PGresult *res, int row, bw_value *vals,
                 bw_change *c, char *err, size_t errlen)
{
    uint16_t nc = t->rel.ncolumns;
    for (uint16_t i = 0; i < nc; i++) {
        if (PQgetisnull(res, row, i))
            vals[i] = (bw_value){'n', NULL, 0};
        else
            vals[i] =
                (bw_value){t->rel.columns[i].format, (const uint8_t *) PQgetvalue(res, row, i),
                           (uint32_t) PQgetlength(res, row, i)};
    }
    *c = (bw_change){.rel = &t->rel, .old_kind = 'X', .nnew = nc, .new_ = vals};
    if (!PQgetisnull(res, row, nc)) {
        c->tenant = (bw_value){'t', (const uint8_t *) PQgetvalue(res, row, nc),
                               (uint32_t) PQgetlength(res, row, nc)};
        return 1;
    }
    c->tenant = (bw_value){'n', NULL, 0};
    if (t->tenant_name && bw_selection_missing_tenant(sel) == BW_MISSING_DROP)
        return 0;
    if (t->tenant_name && bw_selection_missing_tenant(sel) == BW_MISSING_ERROR) {
        snprintf(err, errlen,
                 "a row of table \"%s.%s\" has no tenant (NULL in column \"%s\") and "
                 "decoder.missing_tenant is error",
                 t->rel.schema, t->rel.table, t->rel.tenant_column);
        return -1;
    }
    return 1;
}

void bw_table_last_key(bw_table *t, PGresult *res)
{
    int last = PQntuples(res) - 1, base = t->rel.ncolumns + 1;
    if (t->after == NULL)
        t->after = bw_xcalloc(t->rel.nkeys ? t->rel.nkeys : 1, sizeof(char *));
    for (uint16_t k = 0; k < t->rel.nkeys; k++) {
        free(t->after[k]);
        t->after[k] =
            bw_xstrndup(PQgetvalue(res, last, base + k), (size_t) PQgetlength(res, last, base + k));
    }
}
