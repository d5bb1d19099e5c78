/*
 * tableread.h — reading table rows as the decoder would send them, for snapshots and backfills:
 * which tables and columns (the decoder options, through selection.h), their relation as an R
 * record would describe it, and key-ordered chunk queries whose rows become bw_change values for
 * the router. Values come in the decoder's formats: binary for the kinds it writes in
 * PostgreSQL's send format, the type's text output (under the decoder's pinned settings, which
 * the connection must set: bw_table_session_settings) for the others.
 */
#ifndef BW_TABLEREAD_H
#define BW_TABLEREAD_H

#include <libpq-fe.h>

#include "proto.h"
#include "route.h"
#include "selection.h"

typedef struct bw_table {
    bw_relation rel;
    char *from;        /* ONLY "schema"."table" AS bw_t */
    char *select;      /* the columns, then the tenant's text, then the key columns' text */
    char **key_types;  /* per key column: its type as format_type spells it */
    char **key_names;  /* per key column: bw_t."name" */
    char *tenant_name; /* bw_t."tenant column"; NULL when the table has none */
    char *tenant_type; /* its type as format_type spells it */
    int64_t estimate;  /* pg_class.reltuples, or the planner's guess when never analysed */
    char **after;      /* the last row read's key, as text: the next chunk's bound; NULL at first */
} bw_table;

/* SET commands pinning the output settings the decoder pins while it decodes. */
extern const char bw_table_session_settings[];

/*
 * The tables the options select (schema and table NULL), or the one named, with the decoder's
 * missing_tenant rule for tables without their tenant column: error fails, drop leaves the table
 * out (a warning), pass keeps it (a warning). who prefixes messages ("snapshot", "backfill 3");
 * NULL: no warnings (checking a request).
 * Returns 0 with *out (malloc'd, *n entries; may be none), or -1 with err set.
 */
int bw_tables_plan(PGconn *conn, const bw_selection *sel, const char *schema, const char *table,
                   const char *who, bw_table **out, size_t *n, char *err, size_t errlen);
/* The "Plan Rows" of EXPLAIN (FORMAT JSON) output: the planner's row estimate; 0 if absent. */
int64_t bw_plan_rows(const char *explain);

/* Frees the tables and what the router kept for their relations. */
void bw_tables_free(bw_router *router, bw_table *t, size_t n);

/*
 * Sends (PQsendQueryParams, binary results) the query of t's next chunk: keyed tables after
 * t->after in key order, limit rows, only tenant's rows when tenant is not NULL, only rows
 * matching where when it is not NULL. A keyless table: FETCH limit rows from cursor (declared by
 * the caller over SELECT t->select FROM t->from).
 */
int bw_table_send_query(PGconn *conn, const bw_table *t, const char *cursor, const char *tenant,
                        const char *where, int64_t limit, char *err, size_t errlen);
/* The result of the query sent, or NULL with err set. */
PGresult *bw_table_result(PGconn *conn, const bw_table *t, char *err, size_t errlen);

/*
 * Row row of a chunk as a change (an insert's shape) into *c, its values in vals (ncolumns,
 * pointing into res). 1: send it; 0: missing_tenant=drop leaves it out; -1: missing_tenant=error
 * (err says which table).
 */
int bw_table_row(const bw_table *t, const bw_selection *sel, PGresult *res, int row, bw_value *vals,
                 bw_change *c, char *err, size_t errlen);
/* t->after = the key of res's last row (res not empty). */
void bw_table_last_key(bw_table *t, PGresult *res);

/* nkeys strings: *dst (allocated on first use) = src; and freeing such an array. */
void bw_keys_copy(uint16_t nkeys, char ***dst, char *const *src);
void bw_keys_free(uint16_t nkeys, char **keys);

/* Runs a command; -1 with err ("<who>: <what>: <PostgreSQL's message>") when it fails. */
int bw_pg_command(PGconn *conn, const char *sql, const char *who, const char *what, char *err,
                  size_t errlen);

#endif
