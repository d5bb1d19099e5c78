/*
 * selection.c — the decoder's table, column and tenant options, parsed and matched as the decoder
 * does (see selection.h). Parsing happens once at startup; matching once per table.
 */
#include "selection.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

typedef struct pattern {
    int nparts;
    char *parts[3]; /* unquoted */
} pattern;

typedef struct list {
    size_t n;
    void **items;
} list;

typedef struct rule {
    pattern table;
    char *column;
} rule;

struct bw_selection {
    list tables, exclude_tables, exclude_columns; /* of pattern */
    list tenant_rules;                            /* of rule */
    char *tenant_column;
    bw_missing_tenant missing;
};

static void push(list *l, void *item)
{
    l->items = bw_xrealloc(l->items, (l->n + 1) * sizeof(*l->items));
    l->items[l->n++] = item;
}

static void free_strings(list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/*
 * Splits at unquoted sep ('\0': not at all). Quotes are dropped when unquote, else kept for a
 * later split. White space around items is trimmed; an empty item is an error, as is an
 * unterminated quote. Returns 0, or -1 with err set.
 */
static int split(const char *option, const char *value, char sep, bool unquote, list *out,
                 char *err, size_t errlen)
{
    bw_buf cur;
    bool inquote = false, seen = false;
    size_t keep = 0;

    bw_buf_init(&cur);
    bw_buf_reserve(&cur, 16);
    for (const char *p = value;; p++) {
        if (*p == '\0' || (!inquote && sep != '\0' && *p == sep)) {
            if (inquote) {
                snprintf(err, errlen,
                         "unterminated quote in option \"%s\": \"%s\": close every double "
                         "quote; write \"\" for a quote inside a quoted name",
                         option, value);
                goto fail;
            }
            if (!seen || (unquote && keep == 0)) {
                snprintf(err, errlen, "empty item in option \"%s\": \"%s\"", option, value);
                goto fail;
            }
            push(out, bw_xstrndup(cur.data, keep));
            bw_buf_reset(&cur);
            seen = false;
            keep = 0;
            if (*p == '\0')
                break;
            continue;
        }
        if (*p == '"') {
            bool escaped = inquote && p[1] == '"';
            if (!unquote || escaped)
                bw_buf_putc(&cur, '"');
            if (escaped) {
                if (!unquote)
                    bw_buf_putc(&cur, '"');
                p++;
            } else
                inquote = !inquote;
            seen = true;
            keep = cur.len;
            continue;
        }
        if (!inquote && isspace((unsigned char) *p)) {
            if (seen)
                bw_buf_putc(&cur, *p);
            continue;
        }
        bw_buf_putc(&cur, *p);
        seen = true;
        keep = cur.len;
    }
    bw_buf_free(&cur);
    return 0;
fail:
    bw_buf_free(&cur);
    free_strings(out);
    return -1;
}

static int parse_pattern(const char *option, const char *item, int nparts, pattern *pat, char *err,
                         size_t errlen)
{
    list parts = {0};
    if (split(option, item, '.', true, &parts, err, errlen) < 0)
        return -1;
    if ((int) parts.n != nparts) {
        snprintf(err, errlen,
                 "invalid pattern \"%s\" in option \"%s\": a pattern needs exactly %d "
                 "dot-separated parts, this one has %zu (write %s)",
                 item, option, nparts, parts.n,
                 nparts == 3 ? "schema.table.column" : "schema.table");
        free_strings(&parts);
        return -1;
    }
    pat->nparts = nparts;
    for (int i = 0; i < nparts; i++)
        pat->parts[i] = parts.items[i];
    free(parts.items);
    return 0;
}

static int parse_patterns(const char *option, const char *value, int nparts, list *out, char *err,
                          size_t errlen)
{
    list items = {0};
    int rc = 0;
    if (value == NULL)
        return 0;
    if (split(option, value, ',', false, &items, err, errlen) < 0)
        return -1;
    for (size_t i = 0; i < items.n && rc == 0; i++) {
        pattern *p = bw_xcalloc(1, sizeof(*p));
        if ((rc = parse_pattern(option, items.items[i], nparts, p, err, errlen)) < 0)
            free(p);
        else
            push(out, p);
    }
    free_strings(&items);
    return rc;
}

static int parse_rules(const char *option, const char *value, list *out, char *err, size_t errlen)
{
    list items = {0};
    int rc = 0;
    if (value == NULL)
        return 0;
    if (split(option, value, ',', false, &items, err, errlen) < 0)
        return -1;
    for (size_t i = 0; i < items.n && rc == 0; i++) {
        list sides = {0}, col = {0};
        if ((rc = split(option, items.items[i], '=', false, &sides, err, errlen)) < 0)
            break;
        if (sides.n != 2) {
            snprintf(err, errlen,
                     "invalid rule \"%s\" in option \"%s\": a rule needs one '=' between the "
                     "table pattern and the column name",
                     (char *) items.items[i], option);
            rc = -1;
        }
        rule *r = bw_xcalloc(1, sizeof(*r));
        if (rc == 0 &&
            (rc = parse_pattern(option, sides.items[0], 2, &r->table, err, errlen)) == 0 &&
            (rc = split(option, sides.items[1], '\0', true, &col, err, errlen)) == 0) {
            r->column = col.items[0];
            free(col.items);
            push(out, r);
        } else {
            for (int k = 0; k < r->table.nparts; k++)
                free(r->table.parts[k]);
            free(r);
        }
        free_strings(&sides);
    }
    free_strings(&items);
    return rc;
}

bw_selection *bw_selection_new(const bw_config *cfg, char *err, size_t errlen)
{
    bw_selection *s = bw_xcalloc(1, sizeof(*s));
    s->tenant_column = bw_xstrdup("tenant_id");
    if (cfg->decoder_tenant_column) {
        list names = {0};
        if (split("tenant-column", cfg->decoder_tenant_column, ',', true, &names, err, errlen) < 0)
            goto fail;
        if (names.n != 1) {
            snprintf(err, errlen,
                     "invalid value \"%s\" for option \"tenant-column\": give one column name; "
                     "use decoder.tenant_columns for per-table columns",
                     cfg->decoder_tenant_column);
            free_strings(&names);
            goto fail;
        }
        free(s->tenant_column);
        s->tenant_column = names.items[0];
        free(names.items);
    }
    if (parse_patterns("tables", cfg->decoder_tables, 2, &s->tables, err, errlen) < 0 ||
        parse_patterns("exclude-tables", cfg->decoder_exclude_tables, 2, &s->exclude_tables, err,
                       errlen) < 0 ||
        parse_patterns("exclude-columns", cfg->decoder_exclude_columns, 3, &s->exclude_columns, err,
                       errlen) < 0 ||
        parse_rules("tenant-columns", cfg->decoder_tenant_columns, &s->tenant_rules, err, errlen) <
            0)
        goto fail;
    s->missing = BW_MISSING_PASS;
    if (cfg->decoder_missing_tenant && strcmp(cfg->decoder_missing_tenant, "drop") == 0)
        s->missing = BW_MISSING_DROP;
    else if (cfg->decoder_missing_tenant && strcmp(cfg->decoder_missing_tenant, "error") == 0)
        s->missing = BW_MISSING_ERROR;
    return s;
fail:
    bw_selection_free(s);
    return NULL;
}

static void free_patterns(list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        pattern *p = l->items[i];
        for (int k = 0; k < p->nparts; k++)
            free(p->parts[k]);
        free(p);
    }
    free(l->items);
}

void bw_selection_free(bw_selection *s)
{
    if (s == NULL)
        return;
    free_patterns(&s->tables);
    free_patterns(&s->exclude_tables);
    free_patterns(&s->exclude_columns);
    for (size_t i = 0; i < s->tenant_rules.n; i++) {
        rule *r = s->tenant_rules.items[i];
        for (int k = 0; k < r->table.nparts; k++)
            free(r->table.parts[k]);
        free(r->column);
        free(r);
    }
    free(s->tenant_rules.items);
    free(s->tenant_column);
    free(s);
}

bool bw_glob_match(const char *p, const char *s)
{
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*p == '*') {
            star = p++;
            resume = s;
        } else if (*p == *s) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++resume;
        } else
            return false;
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

static bool match(const pattern *p, const char *a, const char *b, const char *c)
{
    if (!bw_glob_match(p->parts[0], a) || !bw_glob_match(p->parts[1], b))
        return false;
    return p->nparts < 3 || bw_glob_match(p->parts[2], c);
}

static bool any(const list *l, const char *a, const char *b, const char *c)
{
    for (size_t i = 0; i < l->n; i++)
        if (match(l->items[i], a, b, c))
            return true;
    return false;
}

bool bw_selection_table(const bw_selection *s, const char *schema, const char *table)
{
    if (s->tables.n > 0 && !any(&s->tables, schema, table, NULL))
        return false;
    return !any(&s->exclude_tables, schema, table, NULL);
}

const char *bw_selection_tenant_column(const bw_selection *s, const char *schema, const char *table)
{
    for (size_t i = 0; i < s->tenant_rules.n; i++) {
        const rule *r = s->tenant_rules.items[i];
        if (match(&r->table, schema, table, NULL))
            return r->column;
    }
    return s->tenant_column;
}

bool bw_selection_column_excluded(const bw_selection *s, const char *schema, const char *table,
                                  const char *column)
{
    return any(&s->exclude_columns, schema, table, column);
}

bw_missing_tenant bw_selection_missing_tenant(const bw_selection *s)
{
    return s->missing;
}
