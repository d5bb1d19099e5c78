/*
 * bw_pattern.c
 *		Parsing of list-valued options ("schema.table" patterns, "pattern=column" rules,
 *		name lists) and '*' glob matching. Runs at startup and when a relation's decisions
 *		are rebuilt, never per change.
 *
 *		Lists are split at unquoted commas; a name part may be double-quoted to hold '.', ','
 *		or '=' ("" inside quotes is one quote). Names are matched as stored in the catalog
 *		(unquoted names are not case-folded: write them as PostgreSQL stores them).
 */
#include "breakwater.h"

#include <ctype.h>

#define HINT_TABLES                                                                                          \
	"Write patterns as schema.table, '*' matching any characters, e.g. \"public.orders,billing.*\"."
#define HINT_COLUMNS                                                                                         \
	"Write patterns as schema.table.column, '*' matching any characters, e.g. \"public.users.email,*.*.password\"."
#define HINT_RULES                                                                                           \
	"Write rules as schema.table=column, separated by commas, e.g. \"public.messages=org_id,billing.*=account_id\"."

/*
 * Split at unquoted 'sep'. Quotes are kept when 'unquote' is false (a later split needs them).
 * White space around items is trimmed. Empty items are an error.
 */
static List *
split_list(const char *option, const char *value, char sep, bool unquote, const char *hint)
{
	List *items = NIL;
	StringInfoData cur;
	bool inquote = false;
	bool seen = false; /* the item has a quote or a non-space character */
	int keep = 0;      /* cur's length without trailing unquoted white space */
	const char *p;

	initStringInfo(&cur);
	for (p = value;; p++)
	{
		if (*p == '\0' || (!inquote && *p == sep))
		{
			if (inquote)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("unterminated quote in option \"%s\": \"%s\"", option, value),
						 errhint("Close every double quote; write \"\" for a quote inside a quoted name.")));
			if (!seen || (unquote && keep == 0))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("empty item in option \"%s\": \"%s\"", option, value), errhint("%s", hint)));
			items = lappend(items, pnstrdup(cur.data, keep));
			resetStringInfo(&cur);
			seen = false;
			keep = 0;
			if (*p == '\0')
				break;
			continue;
		}
		if (*p == '"')
		{
			bool escaped = inquote && p[1] == '"';

			if (!unquote || escaped)
				appendStringInfoChar(&cur, '"');
			if (escaped)
			{
				if (!unquote)
					appendStringInfoChar(&cur, '"');
				p++;
			}
			else
				inquote = !inquote;
			seen = true;
			keep = cur.len;
			continue;
		}
		if (!inquote && isspace((unsigned char) *p))
		{
			if (seen)
				appendStringInfoChar(&cur, *p);
			continue;
		}
		appendStringInfoChar(&cur, *p);
		seen = true;
		keep = cur.len;
	}
	pfree(cur.data);
	return items;
}

static void
parse_pattern(const char *option, const char *item, int nparts, BwPattern *pat)
{
	const char *hint = nparts == 3 ? HINT_COLUMNS : HINT_TABLES;
	List *parts = split_list(option, item, '.', true, hint);
	ListCell *lc;
	int i = 0;

	if (list_length(parts) != nparts)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid pattern \"%s\" in option \"%s\"", item, option),
						errdetail("A pattern needs exactly %d dot-separated parts, this one has %d.", nparts,
								  list_length(parts)),
						errhint("%s", hint)));
	pat->nparts = nparts;
	foreach (lc, parts)
		pat->parts[i++] = lfirst(lc);
	list_free(parts);
}

void
bw_parse_pattern_list(const char *option, const char *value, int nparts, List **out)
{
	List *items = split_list(option, value, ',', false, nparts == 3 ? HINT_COLUMNS : HINT_TABLES);
	ListCell *lc;

	foreach (lc, items)
	{
		BwPattern *pat = palloc0(sizeof(BwPattern));

		parse_pattern(option, lfirst(lc), nparts, pat);
		*out = lappend(*out, pat);
	}
}

void
bw_parse_tenant_rules(const char *option, const char *value, List **out)
{
	List *items = split_list(option, value, ',', false, HINT_RULES);
	ListCell *lc;

	foreach (lc, items)
	{
		char *item = lfirst(lc);
		List *sides = split_list(option, item, '=', false, HINT_RULES);
		BwTenantRule *rule;
		List *col;

		if (list_length(sides) != 2)
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("invalid rule \"%s\" in option \"%s\"", item, option),
							errdetail("A rule needs one '=' between the table pattern and the column name."),
							errhint("%s", HINT_RULES)));
		rule = palloc0(sizeof(BwTenantRule));
		parse_pattern(option, linitial(sides), 2, &rule->table);
		col = split_list(option, lsecond(sides), '\0', true, HINT_RULES);
		rule->column = linitial(col);
		*out = lappend(*out, rule);
	}
}

void
bw_parse_name_list(const char *option, const char *value, const char *hint, List **out)
{
	*out = list_concat(*out, split_list(option, value, ',', true, hint));
}

/* '*' matches any run of characters (possibly none); everything else matches itself. */
bool
bw_glob_match(const char *pattern, const char *s)
{
	const char *star = NULL;
	const char *resume = NULL;

	while (*s)
	{
		if (*pattern == '*')
		{
			star = pattern++;
			resume = s;
		}
		else if (*pattern == *s)
		{
			pattern++;
			s++;
		}
		else if (star)
		{
			pattern = star + 1;
			s = ++resume;
		}
		else
			return false;
	}
	while (*pattern == '*')
		pattern++;
	return *pattern == '\0';
}

bool
bw_pattern_match(const BwPattern *p, const char *a, const char *b, const char *c)
{
	if (!bw_glob_match(p->parts[0], a) || !bw_glob_match(p->parts[1], b))
		return false;
	return p->nparts < 3 || bw_glob_match(p->parts[2], c);
}
