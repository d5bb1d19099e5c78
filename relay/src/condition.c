/*
 * condition.c — checking that a backfill's condition is one SQL condition (condition.h), walking
 * it as PostgreSQL's lexer would, without a parser of our own.
 */
#include "condition.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static bool ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '$' || (unsigned char) c >= 0x80;
}

int bw_condition_check(const char *w, char *why, size_t whylen)
{
    int depth = 0;
    for (const char *p = w; *p; p++) {
        if (ident_char(*p) && *p != '$') { /* a word: '$' inside it is part of it (a$b$) */
            while (ident_char(p[1]))
                p++;
            /* E'...' (backslash escapes) is a word "E" right before the quote */
            if (p[1] == '\'' && (*p == 'E' || *p == 'e') && (p == w || !ident_char(p[-1]))) {
                p++;
                for (p++; *p; p++) {
                    if (*p == '\\' && p[1]) {
                        p++;
                        continue;
                    }
                    if (*p == '\'' && p[1] == '\'') {
                        p++;
                        continue;
                    }
                    if (*p == '\'')
                        break;
                }
                if (*p == '\0') {
                    snprintf(why, whylen, "an unterminated string");
                    return -1;
                }
            }
            continue;
        }
        if (*p == '\'' || *p == '"') {
            char q = *p;
            bool backslash = false;
            for (p++; *p; p++) {
                if (backslash && *p == '\\' && p[1]) {
                    p++;
                    continue;
                }
                if (*p == q && p[1] == q) {
                    p++;
                    continue;
                }
                if (*p == q)
                    break;
            }
            if (*p == '\0') {
                snprintf(why, whylen, "an unterminated %s", q == '"' ? "quoted name" : "string");
                return -1;
            }
        } else if (*p == '$' && (p[1] == '$' || p[1] == '_' || (p[1] >= 'A' && p[1] <= 'Z') ||
                                 (p[1] >= 'a' && p[1] <= 'z'))) {
            const char *end = strchr(p + 1, '$');
            size_t taglen = end ? (size_t) (end - p + 1) : 0;
            const char *close = NULL;
            for (const char *s = end ? end + 1 : NULL; s && (s = strchr(s, '$')) != NULL; s++)
                if (strncmp(s, p, taglen) == 0) {
                    close = s;
                    break;
                }
            if (close == NULL) {
                snprintf(why, whylen, "an unterminated dollar-quoted string");
                return -1;
            }
            p = close + taglen - 1;
        } else if ((*p == '-' && p[1] == '-') || (*p == '/' && p[1] == '*')) {
            snprintf(why, whylen, "a comment (leave comments out)");
            return -1;
        } else if (*p == ';') {
            snprintf(why, whylen, "a ';' (give one condition, not statements)");
            return -1;
        } else if (*p == '(')
            depth++;
        else if (*p == ')' && --depth < 0) {
            snprintf(why, whylen, "a ')' that closes more than it opened");
            return -1;
        }
    }
    if (depth != 0) {
        snprintf(why, whylen, "a '(' that is never closed");
        return -1;
    }
    return 0;
}
