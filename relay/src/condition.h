/*
 * condition.h — a backfill's --where, checked before it goes into a query as "WHERE (<where>)".
 */
#ifndef BW_CONDITION_H
#define BW_CONDITION_H

#include <stddef.h>

/*
 * A condition goes into the chunk query as "WHERE (<where>)": it must not close that parenthesis
 * early (an OR after it would escape the tenant and the resume bound), comment out what follows,
 * or end the statement. Walks it as PostgreSQL's lexer would (quotes, quoted identifiers, E''
 * strings, dollar quotes) and refuses comments, ';' and unbalanced parentheses. 0, or -1 with why.
 */
int bw_condition_check(const char *where, char *why, size_t whylen);

#endif
