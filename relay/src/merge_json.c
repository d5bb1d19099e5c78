/*
 * merge_json.c — what the coalescer needs to merge messages of the JSON format (coalesce.h):
 * every value starts with {"op":"<op>", and names unchanged TOAST columns of its new row in
 * "unchanged_toast". Merging a TOAST column parses both values (jansson); renaming the op is a
 * splice.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "coalesce.h"

static char *json_set_op(void *arg, const char *value, size_t len, bw_record_type from,
                         bw_record_type to, size_t *outlen)
{
    char prefix[32];
    int n = snprintf(prefix, sizeof(prefix), "{\"op\":\"%s\"", bw_record_op(from));
    (void) arg;
    if (from == to || len < (size_t) n || memcmp(value, prefix, (size_t) n) != 0)
        return NULL;
    bw_buf b;
    bw_buf_init(&b);
    bw_buf_printf(&b, "{\"op\":\"%s\"", bw_record_op(to));
    bw_buf_append(&b, value + n, len - (size_t) n);
    *outlen = b.len;
    return b.data;
}

static bool json_has_unchanged(void *arg, const char *value, size_t len)
{
    (void) arg;
    return memmem(value, len, ",\"unchanged_toast\":[", 20) != NULL;
}

static char *json_merge_unchanged(void *arg, const char *held, size_t heldlen, const char *next,
                                  size_t nextlen, size_t *outlen, bool *apart)
{
    json_error_t e;
    json_t *h = json_loadb(held, heldlen, 0, &e);
    json_t *n = json_loadb(next, nextlen, 0, &e);
    char *out = NULL;
    json_t *unchanged = n ? json_object_get(n, "unchanged_toast") : NULL;
    json_t *hnew = h ? json_object_get(h, "new") : NULL;
    json_t *nnew = n ? json_object_get(n, "new") : NULL;

    (void) arg;
    *apart = false; /* JSON merges by column name, across versions of a table */
    if (json_is_array(unchanged) && json_is_object(hnew) && json_is_object(nnew)) {
        json_t *still = json_array();
        size_t i;
        json_t *col;
        json_array_foreach(unchanged, i, col)
        {
            json_t *v = json_is_string(col) ? json_object_get(hnew, json_string_value(col)) : NULL;
            if (v)
                json_object_set(nnew, json_string_value(col), v);
            else
                json_array_append(still, col);
        }
        if (json_array_size(still) > 0)
            json_object_set(n, "unchanged_toast", still);
        else
            json_object_del(n, "unchanged_toast");
        json_decref(still);
        out = json_dumps(n, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (out)
            *outlen = strlen(out);
    }
    json_decref(h);
    json_decref(n);
    if (out == NULL)
        return NULL;
    char *copy = bw_xstrndup(out, *outlen);
    free(out);
    return copy;
}

const bw_merge_ops bw_json_merge_ops = {json_set_op, json_has_unchanged, json_merge_unchanged,
                                        NULL};
