/*
 * test_condition.c — a backfill's condition: what passes (strings, quoted names, E'' and
 * dollar-quoted strings that hold parentheses and quotes) and what is refused (a parenthesis
 * closed early, comments, ';', unterminated quotes), each with the reason.
 */
#include "condition.h"
#include "unit.h"

static void ok(const char *w)
{
    char why[128] = "";
    if (bw_condition_check(w, why, sizeof(why)) != 0)
        unit_fail(__FILE__, __LINE__, "refused %s: %s", w, why);
}

static void refused(const char *w, const char *because)
{
    char why[128] = "";
    if (bw_condition_check(w, why, sizeof(why)) == 0)
        unit_fail(__FILE__, __LINE__, "accepted %s", w);
    ASSERT_STR_CONTAINS(why, because);
}

TEST(condition_accepts_one_condition)
{
    ok("id > 10");
    ok("(a = 1 OR b = 2) AND c IN (1, 2, (3))");
    ok("note = ')' OR note = '('''"); /* quotes doubled inside a string */
    ok("\"odd ) name\" = 1");
    ok("note = E'it\\'s )'"); /* backslash escapes in E'' */
    ok("body = $x$ ) ; -- $x$ AND n = $$(($$");
    ok("a$b$ = 1 AND c = 2"); /* '$' inside a name is part of it */
    ok("updated_at > now() - interval '1 day'");
    ok("name' )' = 'x'"); /* a plain string after a word: no escapes */
}

TEST(condition_refuses_what_could_escape)
{
    refused("id <= 10) OR (true", "closes more than it opened");
    refused("(id <= 10", "never closed");
    refused("id = 1; DROP TABLE t", "';'");
    refused("id > 0 -- all", "comment");
    refused("id > 0 /* x */", "comment");
    refused("note = 'open", "unterminated string");
    refused("\"open = 1", "unterminated quoted name");
    refused("body = $x$ never closed", "dollar-quoted");
    /* a name ending in $b$ is one word: the ')' after it counts */
    refused("(SELECT true AS a$b$)) OR true OR ((SELECT 1 AS c$b$) = 1", "closes more");
    refused("note = E'\\'') OR (true", "closes more");
}
