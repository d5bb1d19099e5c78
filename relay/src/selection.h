/*
 * selection.h — which tables, columns and tenant column the decoder's options select, decided
 * the way the decoder decides them (decoder/bw_pattern.c, bw_relcache.c), for rows the relay
 * reads itself: snapshots. The option syntax is the decoder's: comma-separated lists, names
 * double-quoted to hold '.', ',' or '=', '*' matching any run of characters within a part.
 * tests/relay/test_snapshot.py checks both sides against each other.
 */
#ifndef BW_SELECTION_H
#define BW_SELECTION_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

typedef struct bw_selection bw_selection;

typedef enum bw_missing_tenant {
    BW_MISSING_PASS, /* sent without a tenant */
    BW_MISSING_DROP, /* not sent */
    BW_MISSING_ERROR /* stops, naming the table */
} bw_missing_tenant;

/* NULL with err set (naming the option and what is wrong) when an option does not parse. */
bw_selection *bw_selection_new(const bw_config *cfg, char *err, size_t errlen);
void bw_selection_free(bw_selection *s);

bool bw_selection_table(const bw_selection *s, const char *schema, const char *table);
/* The table's tenant column: the first tenant_columns rule that matches, else tenant_column. */
const char *bw_selection_tenant_column(const bw_selection *s, const char *schema,
                                       const char *table);
/* Excluded by exclude_columns (the caller keeps key columns all the same, as the decoder does). */
bool bw_selection_column_excluded(const bw_selection *s, const char *schema, const char *table,
                                  const char *column);
bw_missing_tenant bw_selection_missing_tenant(const bw_selection *s);

/* '*' matches any run of characters (possibly none); everything else matches itself. */
bool bw_glob_match(const char *pattern, const char *s);

#endif
