/*
 * avro_encode.c — changes as Confluent-framed Avro messages (avro_encode.h).
 *
 * avro-c's value API, used as its authors intend: each relation record's schema is parsed once,
 * its value class built once, and one value per relation is refilled for every change (every
 * field is set each time, so nothing of the previous change survives). The schema text given
 * to the registry is ours (avro_schema.c): avro-c drops logicalType and default attributes when
 * it prints a schema.
 */
#include "avro_encode.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>
#include <jansson.h>

#include "avro_schema.h"
#include "avro_value.h"

/* A value schema by registry id: what a held message was written with, to merge it. */
typedef struct known_schema {
    int32_t id;
    avro_schema_t schema;
    avro_value_iface_t *cls;
} known_schema;

struct bw_avro {
    bw_registry *reg;
    char *ns;
    avro_writer_t writer;
    bw_buf scratch;
    known_schema *known;
    size_t nknown;
};

struct bw_avro_rel {
    bw_avro_plan plan;
    char **names; /* each column's Avro field name */
    uint16_t ncolumns;
    avro_schema_t vschema, kschema;
    avro_value_iface_t *vcls, *kcls;
    avro_value_t value, key;
    char *topic; /* the topic whose ids follow */
    int32_t key_id, value_id;
};

bw_avro *bw_avro_new(bw_registry *reg, const char *ns)
{
    bw_avro *a = bw_xcalloc(1, sizeof(*a));
    static char empty[1];
    a->reg = reg;
    a->ns = bw_xstrdup(ns);
    a->writer = avro_writer_memory(empty, 0);
    bw_buf_init(&a->scratch);
    return a;
}

void bw_avro_free(bw_avro *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->nknown; i++) {
        avro_value_iface_decref(a->known[i].cls);
        avro_schema_decref(a->known[i].schema);
    }
    free(a->known);
    avro_writer_free(a->writer);
    bw_buf_free(&a->scratch);
    free(a->ns);
    free(a);
}

void bw_avro_rel_free(bw_avro_rel *ar)
{
    if (ar == NULL)
        return;
    if (ar->vcls) {
        avro_value_decref(&ar->value);
        avro_value_iface_decref(ar->vcls);
    }
    if (ar->kcls) {
        avro_value_decref(&ar->key);
        avro_value_iface_decref(ar->kcls);
    }
    if (ar->vschema)
        avro_schema_decref(ar->vschema);
    if (ar->kschema)
        avro_schema_decref(ar->kschema);
    for (uint16_t i = 0; ar->names && i < ar->ncolumns; i++)
        free(ar->names[i]);
    free(ar->names);
    free(ar->topic);
    bw_avro_plan_free(&ar->plan);
    free(ar);
}

static int parse(const char *text, avro_schema_t *schema, avro_value_iface_t **cls,
                 avro_value_t *value, const bw_relation *rel, char *err, size_t errlen)
{
    if (avro_schema_from_json_length(text, strlen(text), schema) != 0) {
        snprintf(err, errlen, "table \"%s.%s\": avro-c refused its schema: %s", rel->schema,
                 rel->table, avro_strerror());
        *schema = NULL;
        return -1;
    }
    *cls = avro_generic_class_from_schema(*schema);
    if (*cls == NULL || avro_generic_value_new(*cls, value) != 0) {
        snprintf(err, errlen, "table \"%s.%s\": avro-c: %s", rel->schema, rel->table,
                 avro_strerror());
        if (*cls)
            avro_value_iface_decref(*cls);
        *cls = NULL;
        return -1;
    }
    return 0;
}

bw_avro_rel *bw_avro_rel_new(bw_avro *a, const bw_relation *rel, char *err, size_t errlen)
{
    bw_avro_rel *ar = bw_xcalloc(1, sizeof(*ar));
    if (bw_avro_plan_build(&ar->plan, rel, a->ns, err, errlen) < 0) {
        free(ar);
        return NULL;
    }
    ar->ncolumns = rel->ncolumns;
    ar->names = bw_xcalloc(rel->ncolumns ? rel->ncolumns : 1, sizeof(*ar->names));
    for (uint16_t i = 0; i < rel->ncolumns; i++) {
        bw_buf n;
        bw_buf_init(&n);
        bw_avro_name(&n, rel->columns[i].name);
        ar->names[i] = n.data;
    }
    if (parse(ar->plan.value_schema, &ar->vschema, &ar->vcls, &ar->value, rel, err, errlen) < 0 ||
        (ar->plan.key_schema &&
         parse(ar->plan.key_schema, &ar->kschema, &ar->kcls, &ar->key, rel, err, errlen) < 0)) {
        bw_avro_rel_free(ar);
        return NULL;
    }
    return ar;
}

/* ---- registration -----------------------------------------------------------------------------
 */

/* The fields of the row record of an envelope (or of a Key record) in schema text. */
static json_t *row_fields(json_t *schema, bool key)
{
    if (key)
        return json_object_get(schema, "fields");
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(schema, "fields"), i, f)
    {
        if (strcmp(json_string_value(json_object_get(f, "name")) ?: "", "old") != 0)
            continue;
        json_t *t = json_object_get(f, "type");
        json_t *rec = json_is_array(t) ? json_array_get(t, 1) : NULL;
        return json_object_get(rec, "fields");
    }
    return NULL;
}

static void put_column(bw_buf *out, const char *avro_name)
{
    bw_buf name;
    bw_buf_init(&name);
    if (bw_avro_name_decode(&name, avro_name) < 0)
        bw_buf_puts(&name, avro_name);
    bw_buf_printf(out, "column \"%s\"", name.data);
    bw_buf_free(&name);
}

static void put_type(bw_buf *out, json_t *type)
{
    /* a row field is ["null", T]: T tells the change */
    if (json_is_array(type) && json_array_size(type) == 2)
        type = json_array_get(type, 1);
    char *s = json_dumps(type, JSON_COMPACT | JSON_ENCODE_ANY);
    bw_buf_puts(out, s ? s : "?");
    free(s);
}

/* What differs between the subject's latest schema and ours, column by column. */
static void explain(const char *latest_text, const char *ours_text, bool key, bw_buf *out)
{
    json_error_t e;
    json_t *latest = json_loads(latest_text, 0, &e);
    json_t *ours = json_loads(ours_text, 0, &e);
    json_t *lf = latest ? row_fields(latest, key) : NULL;
    json_t *of = ours ? row_fields(ours, key) : NULL;
    size_t i, j, before = out->len;
    json_t *f, *g;

    json_array_foreach(of, i, f)
    {
        const char *name = json_string_value(json_object_get(f, "name"));
        json_t *match = NULL;
        json_array_foreach(lf, j, g)
        {
            if (name && strcmp(name, json_string_value(json_object_get(g, "name")) ?: "") == 0)
                match = g;
        }
        if (name == NULL ||
            (match && json_equal(json_object_get(match, "type"), json_object_get(f, "type"))))
            continue;
        bw_buf_puts(out, out->len > before ? "; " : "");
        put_column(out, name);
        if (match == NULL) {
            bw_buf_puts(out, " added as ");
            put_type(out, json_object_get(f, "type"));
        } else {
            bw_buf_puts(out, " changed type from ");
            put_type(out, json_object_get(match, "type"));
            bw_buf_puts(out, " to ");
            put_type(out, json_object_get(f, "type"));
        }
    }
    json_array_foreach(lf, j, g)
    {
        const char *name = json_string_value(json_object_get(g, "name"));
        bool found = false;
        json_array_foreach(of, i, f)
        {
            if (name && strcmp(name, json_string_value(json_object_get(f, "name")) ?: "") == 0)
                found = true;
        }
        if (name && !found) {
            bw_buf_puts(out, out->len > before ? "; " : "");
            put_column(out, name);
            bw_buf_puts(out, " dropped");
        }
    }
    if (out->len == before)
        bw_buf_puts(out, latest ? "no column differs from the latest version (another part of "
                                  "the schema does)"
                                : "the subject's latest version could not be read");
    json_decref(latest);
    json_decref(ours);
}

static int register_one(bw_avro *a, const bw_relation *rel, const char *topic, bool key,
                        const char *schema, int32_t *id, char *err, size_t errlen)
{
    bw_buf subject, why;
    bw_buf_init(&subject);
    bw_buf_init(&why);
    bw_buf_printf(&subject, "%s-%s", topic, key ? "key" : "value");
    bw_registry_status st = bw_registry_id(a->reg, subject.data, schema, id, &why);
    if (st == BW_REG_OK) {
        bw_buf_free(&subject);
        bw_buf_free(&why);
        return 0;
    }
    bw_buf msg;
    bw_buf_init(&msg);
    if (st == BW_REG_INCOMPATIBLE) {
        char *latest = NULL;
        bw_buf ignored;
        bw_buf_init(&ignored);
        bw_registry_latest(a->reg, subject.data, &latest, &ignored);
        bw_buf_printf(&msg,
                      "the schema registry rejected the new %s schema of table \"%s.%s\" "
                      "(subject \"%s\") as incompatible: ",
                      key ? "key" : "value", rel->schema, rel->table, subject.data);
        explain(latest, schema, key, &msg);
        bw_buf_printf(&msg,
                      ". The registry said: %s. Nothing of this change was confirmed to "
                      "PostgreSQL: make the table change compatible (e.g. add columns as "
                      "nullable, do not change types) or relax the subject's compatibility "
                      "level, then restart the relay",
                      why.data);
        free(latest);
        bw_buf_free(&ignored);
    } else {
        bw_buf_printf(&msg,
                      "registering the %s schema of table \"%s.%s\" (subject \"%s\") failed: %s; "
                      "nothing of it was confirmed to PostgreSQL",
                      key ? "key" : "value", rel->schema, rel->table, subject.data, why.data);
    }
    snprintf(err, errlen, "%s", msg.data);
    bw_buf_free(&msg);
    bw_buf_free(&subject);
    bw_buf_free(&why);
    return -1;
}

static void remember(bw_avro *a, int32_t id, avro_schema_t schema)
{
    for (size_t i = 0; i < a->nknown; i++)
        if (a->known[i].id == id)
            return;
    a->known = bw_xrealloc(a->known, (a->nknown + 1) * sizeof(*a->known));
    known_schema *k = &a->known[a->nknown++];
    k->id = id;
    k->schema = avro_schema_incref(schema);
    k->cls = avro_generic_class_from_schema(schema);
}

int bw_avro_use_topic(bw_avro *a, bw_avro_rel *ar, const bw_relation *rel, const char *topic,
                      char *err, size_t errlen)
{
    if (ar->topic && strcmp(ar->topic, topic) == 0)
        return 0;
    int32_t key_id = -1, value_id;
    if ((ar->plan.key_schema &&
         register_one(a, rel, topic, true, ar->plan.key_schema, &key_id, err, errlen) < 0) ||
        register_one(a, rel, topic, false, ar->plan.value_schema, &value_id, err, errlen) < 0)
        return -1;
    free(ar->topic);
    ar->topic = bw_xstrdup(topic);
    ar->key_id = key_id;
    ar->value_id = value_id;
    remember(a, value_id, ar->vschema);
    return 0;
}

/* ---- encoding ---------------------------------------------------------------------------------
 */

/* The framed message: magic byte 0, the id big-endian, the Avro body. */
static int frame(bw_avro *a, bw_buf *out, int32_t id, avro_value_t *v, char *err, size_t errlen)
{
    size_t size;
    bw_buf_reset(out);
    bw_buf_reserve(out, 4096);
    for (int attempt = 0;; attempt++) {
        out->data[0] = 0;
        out->data[1] = (char) ((uint32_t) id >> 24);
        out->data[2] = (char) ((uint32_t) id >> 16);
        out->data[3] = (char) ((uint32_t) id >> 8);
        out->data[4] = (char) id;
        avro_writer_memory_set_dest(a->writer, out->data + 5, (int64_t) (out->cap - 6));
        if (avro_value_write(a->writer, v) == 0)
            break;
        /* too small (the usual case: ENOSPC), or a real failure: size it once to tell */
        if (attempt > 0 || avro_value_sizeof(v, &size) != 0 || size + 6 <= out->cap) {
            snprintf(err, errlen, "avro-c could not write a message: %s", avro_strerror());
            return -1;
        }
        bw_buf_reserve(out, size + 6);
    }
    out->len = 5 + (size_t) avro_writer_tell(a->writer);
    out->data[out->len] = '\0';
    return 0;
}

static int set_null(avro_value_t *field)
{
    avro_value_t branch;
    return avro_value_set_branch(field, 0, &branch) || avro_value_set_null(&branch);
}

/* The row record from a full tuple; 'n' and 'u' values are null ('u' are named elsewhere). */
static int set_row(bw_avro *a, bw_avro_rel *ar, avro_value_t *row, const bw_relation *rel,
                   const bw_value *vals, char *err, size_t errlen)
{
    for (uint16_t i = 0; i < rel->ncolumns; i++) {
        avro_value_t field, branch;
        if (avro_value_get_by_index(row, i, &field, NULL) != 0)
            goto avro_fail;
        if (vals[i].kind == 'n' || vals[i].kind == 'u') {
            if (set_null(&field))
                goto avro_fail;
            continue;
        }
        if (avro_value_set_branch(&field, 1, &branch) != 0)
            goto avro_fail;
        if (bw_avro_set(&branch, &ar->plan.cols[i], rel, &rel->columns[i], &vals[i], &a->scratch,
                        err, errlen) < 0)
            return -1;
    }
    return 0;
avro_fail:
    snprintf(err, errlen, "table \"%s.%s\": avro-c: %s", rel->schema, rel->table, avro_strerror());
    return -1;
}

/* A Key record; key_tuple: vals holds the key columns in order, else a full row. */
static int set_key(bw_avro *a, bw_avro_rel *ar, avro_value_t *rec, const bw_relation *rel,
                   const bw_value *vals, bool key_tuple, char *err, size_t errlen)
{
    for (uint16_t i = 0; i < rel->nkeys; i++) {
        uint16_t col = rel->keys[i];
        const bw_value *v = &vals[key_tuple ? i : col];
        avro_value_t field;
        if (v->kind != 'b' && v->kind != 't') {
            snprintf(err, errlen,
                     "column \"%s\" of table \"%s.%s\": a key column without a value (%s)",
                     rel->columns[col].name, rel->schema, rel->table,
                     v->kind == 'n' ? "NULL" : "unchanged TOAST");
            return -1;
        }
        if (avro_value_get_by_index(rec, i, &field, NULL) != 0) {
            snprintf(err, errlen, "table \"%s.%s\": avro-c: %s", rel->schema, rel->table,
                     avro_strerror());
            return -1;
        }
        if (bw_avro_set(&field, &ar->plan.cols[col], rel, &rel->columns[col], v, &a->scratch, err,
                        errlen) < 0)
            return -1;
    }
    return 0;
}

int bw_avro_key(bw_avro *a, bw_avro_rel *ar, bw_buf *out, const bw_change *c, char *err,
                size_t errlen)
{
    bool key_tuple;
    const bw_value *src;
    if (c->rel->nkeys == 0 || ar->kcls == NULL)
        return 1;
    if (bw_change_check(c, c->old_kind == 'X' && c->nnew > 0, err, errlen) < 0)
        return -1;
    if ((src = bw_change_key_source(c, &key_tuple)) == NULL)
        return 1;
    if (set_key(a, ar, &ar->key, c->rel, src, key_tuple, err, errlen) < 0)
        return -1;
    return frame(a, out, ar->key_id, &ar->key, err, errlen);
}

/* Sets the envelope's fields common to every message; rows and key are left to the caller. */
static int set_envelope(bw_avro_rel *ar, const char *op, const bw_xact *x, const bw_value *tenant)
{
    avro_value_t *v = &ar->value, f, b;
    int rc = 0;
    rc |= avro_value_get_by_index(v, BW_AVF_OP, &f, NULL) ||
          avro_value_set_string_len(&f, op, strlen(op) + 1);
    rc |= avro_value_get_by_index(v, BW_AVF_UNCHANGED_TOAST, &f, NULL) || avro_value_reset(&f);
    rc |= avro_value_get_by_index(v, BW_AVF_XID, &f, NULL) || avro_value_set_long(&f, x->xid);
    rc |= avro_value_get_by_index(v, BW_AVF_COMMIT_LSN, &f, NULL) ||
          avro_value_set_long(&f, (int64_t) x->commit_lsn);
    rc |= avro_value_get_by_index(v, BW_AVF_COMMIT_TIME, &f, NULL) ||
          avro_value_set_long(&f, x->commit_time);
    rc |= avro_value_get_by_index(v, BW_AVF_TENANT, &f, NULL);
    if (tenant && tenant->kind == 't') {
        char *s = bw_xstrndup((const char *) tenant->data, tenant->len);
        rc |= avro_value_set_branch(&f, 1, &b) || avro_value_set_string_len(&b, s, tenant->len + 1);
        free(s);
    } else
        rc |= set_null(&f);
    rc |= avro_value_get_by_index(v, BW_AVF_OLD, &f, NULL) || set_null(&f);
    rc |= avro_value_get_by_index(v, BW_AVF_NEW, &f, NULL) || set_null(&f);
    rc |= avro_value_get_by_index(v, BW_AVF_TRUNCATE, &f, NULL) || set_null(&f);
    if (ar->kcls)
        rc |= avro_value_get_by_index(v, BW_AVF_KEY, &f, NULL) || set_null(&f);
    return rc ? -1 : 0;
}

int bw_avro_change(bw_avro *a, bw_avro_rel *ar, bw_buf *out, bw_record_type type, const bw_xact *x,
                   const bw_change *c, char *err, size_t errlen)
{
    const bw_relation *rel = c->rel;
    avro_value_t *v = &ar->value, f, b;
    bool has_new = type != BW_REC_DELETE;

    if (type != BW_REC_INSERT && type != BW_REC_UPDATE && type != BW_REC_DELETE &&
        type != BW_REC_READ) {
        snprintf(err, errlen, "record type %d is not an insert, update, delete or read",
                 (int) type);
        return -1;
    }
    if (bw_change_check(c, has_new, err, errlen) < 0)
        return -1;
    if (set_envelope(ar, bw_record_op(type), x, &c->tenant) < 0)
        goto avro_fail;
    if (c->old_kind == 'O') {
        if (avro_value_get_by_index(v, BW_AVF_OLD, &f, NULL) || avro_value_set_branch(&f, 1, &b))
            goto avro_fail;
        if (set_row(a, ar, &b, rel, c->old, err, errlen) < 0)
            return -1;
    }
    if (has_new) {
        if (avro_value_get_by_index(v, BW_AVF_NEW, &f, NULL) || avro_value_set_branch(&f, 1, &b))
            goto avro_fail;
        if (set_row(a, ar, &b, rel, c->new_, err, errlen) < 0)
            return -1;
        if (avro_value_get_by_index(v, BW_AVF_UNCHANGED_TOAST, &f, NULL))
            goto avro_fail;
        for (uint16_t i = 0; i < rel->ncolumns; i++) {
            avro_value_t item;
            if (c->new_[i].kind == 'u' &&
                (avro_value_append(&f, &item, NULL) ||
                 avro_value_set_string_len(&item, ar->names[i], strlen(ar->names[i]) + 1)))
                goto avro_fail;
        }
    }
    bool key_tuple;
    const bw_value *src = ar->kcls ? bw_change_key_source(c, &key_tuple) : NULL;
    if (src) {
        if (avro_value_get_by_index(v, BW_AVF_KEY, &f, NULL) || avro_value_set_branch(&f, 1, &b))
            goto avro_fail;
        if (set_key(a, ar, &b, rel, src, key_tuple, err, errlen) < 0)
            return -1;
    }
    return frame(a, out, ar->value_id, v, err, errlen);
avro_fail:
    snprintf(err, errlen, "table \"%s.%s\": avro-c: %s", rel->schema, rel->table, avro_strerror());
    return -1;
}

int bw_avro_truncate(bw_avro *a, bw_avro_rel *ar, bw_buf *out, const bw_xact *x, uint8_t options,
                     char *err, size_t errlen)
{
    avro_value_t f, b, flag;
    if (set_envelope(ar, "truncate", x, NULL) < 0 ||
        avro_value_get_by_index(&ar->value, BW_AVF_TRUNCATE, &f, NULL) ||
        avro_value_set_branch(&f, 1, &b) || avro_value_get_by_index(&b, 0, &flag, NULL) ||
        avro_value_set_boolean(&flag, (options & 1) != 0) ||
        avro_value_get_by_index(&b, 1, &flag, NULL) ||
        avro_value_set_boolean(&flag, (options & 2) != 0)) {
        snprintf(err, errlen, "avro-c: %s", avro_strerror());
        return -1;
    }
    return frame(a, out, ar->value_id, &ar->value, err, errlen);
}

/* ---- merging held messages (the coalescer) ----------------------------------------------------
 */

static int32_t id_of(const char *value, size_t len)
{
    if (len < 5 || value[0] != 0)
        return -1;
    const uint8_t *p = (const uint8_t *) value + 1;
    return (int32_t) ((uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3]);
}

/* A zigzag varint at *p (bounded by end); advances *p. -1 on malformed input. */
static int read_varint(const uint8_t **p, const uint8_t *end, int64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t) (b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = (int64_t) (v >> 1) ^ -(int64_t) (v & 1);
            return 0;
        }
    }
    return -1;
}

static size_t put_varint(uint8_t *w, int64_t n)
{
    uint64_t v = ((uint64_t) n << 1) ^ (uint64_t) (n >> 63);
    size_t len = 0;
    while (v >= 0x80) {
        w[len++] = (uint8_t) (v | 0x80);
        v >>= 7;
    }
    w[len++] = (uint8_t) v;
    return len;
}

/* The op is the body's first field: a length and the name. */
static char *avro_set_op(void *arg, const char *value, size_t len, bw_record_type from,
                         bw_record_type to, size_t *outlen)
{
    const uint8_t *p = (const uint8_t *) value + 5, *end = (const uint8_t *) value + len;
    int64_t n;
    (void) arg;
    if (from == to || id_of(value, len) < 0 || read_varint(&p, end, &n) < 0 || n < 0 || n > end - p)
        return NULL;
    const char *op = bw_record_op(to);
    size_t oplen = strlen(op);
    const uint8_t *rest = p + n;
    char *out = bw_xmalloc(5 + 10 + oplen + (size_t) (end - rest) + 1);
    memcpy(out, value, 5);
    size_t w = 5 + put_varint((uint8_t *) out + 5, (int64_t) oplen);
    memcpy(out + w, op, oplen);
    w += oplen;
    memcpy(out + w, rest, (size_t) (end - rest));
    w += (size_t) (end - rest);
    out[w] = '\0';
    *outlen = w;
    return out;
}

/* unchanged_toast follows the op: a non-empty array starts with a non-zero block count. */
static bool avro_has_unchanged(void *arg, const char *value, size_t len)
{
    const uint8_t *p = (const uint8_t *) value + 5, *end = (const uint8_t *) value + len;
    int64_t n;
    (void) arg;
    if (id_of(value, len) < 0 || read_varint(&p, end, &n) < 0 || n < 0 || n > end - p)
        return false;
    p += n;
    return read_varint(&p, end, &n) == 0 && n != 0;
}

static int read_body(avro_value_t *v, const char *value, size_t len)
{
    avro_reader_t r = avro_reader_memory(value + 5, (int64_t) (len - 5));
    int rc = avro_value_read(r, v);
    avro_reader_free(r);
    return rc;
}

static char *avro_merge_unchanged(void *arg, const char *held, size_t heldlen, const char *next,
                                  size_t nextlen, size_t *outlen, bool *apart)
{
    bw_avro *a = arg;
    int32_t id = id_of(next, nextlen);
    known_schema *k = NULL;

    *apart = id != id_of(held, heldlen);
    for (size_t i = 0; i < a->nknown && !*apart; i++)
        if (a->known[i].id == id)
            k = &a->known[i];
    if (*apart || k == NULL || k->cls == NULL) {
        *apart = true; /* another schema version: the two are not merged */
        return NULL;
    }
    avro_value_t h, n, hnew, nnew, hrow, nrow, list, item;
    char *result = NULL;
    if (avro_generic_value_new(k->cls, &h) != 0)
        return NULL;
    if (avro_generic_value_new(k->cls, &n) != 0) {
        avro_value_decref(&h);
        return NULL;
    }
    int branch_h, branch_n;
    size_t count;
    if (read_body(&h, held, heldlen) || read_body(&n, next, nextlen) ||
        avro_value_get_by_index(&h, BW_AVF_NEW, &hnew, NULL) ||
        avro_value_get_by_index(&n, BW_AVF_NEW, &nnew, NULL) ||
        avro_value_get_discriminant(&hnew, &branch_h) ||
        avro_value_get_discriminant(&nnew, &branch_n) || branch_h != 1 || branch_n != 1 ||
        avro_value_get_current_branch(&hnew, &hrow) ||
        avro_value_get_current_branch(&nnew, &nrow) ||
        avro_value_get_by_index(&n, BW_AVF_UNCHANGED_TOAST, &list, NULL) ||
        avro_value_get_size(&list, &count))
        goto done;

    /* names still unchanged after the merge (the held change marked them too) */
    char **still = bw_xcalloc(count ? count : 1, sizeof(*still));
    size_t nstill = 0;
    for (size_t i = 0; i < count; i++) {
        const char *name;
        size_t namelen;
        avro_value_t hf, nf;
        if (avro_value_get_by_index(&list, i, &item, NULL) ||
            avro_value_get_string(&item, &name, &namelen))
            continue;
        bool copied = false;
        if (avro_value_get_by_name(&hrow, name, &hf, NULL) == 0 &&
            avro_value_get_by_name(&nrow, name, &nf, NULL) == 0) {
            /* held has a value unless it marked the column as unchanged itself */
            avro_value_t hlist, hitem;
            size_t hcount = 0;
            bool marked = false;
            if (avro_value_get_by_index(&h, BW_AVF_UNCHANGED_TOAST, &hlist, NULL) == 0 &&
                avro_value_get_size(&hlist, &hcount) == 0) {
                for (size_t j = 0; j < hcount && !marked; j++) {
                    const char *hname;
                    size_t hlen;
                    marked = avro_value_get_by_index(&hlist, j, &hitem, NULL) == 0 &&
                             avro_value_get_string(&hitem, &hname, &hlen) == 0 &&
                             strcmp(hname, name) == 0;
                }
            }
            copied = !marked && avro_value_copy(&nf, &hf) == 0;
        }
        if (!copied)
            still[nstill++] = bw_xstrdup(name);
    }
    avro_value_reset(&list);
    for (size_t i = 0; i < nstill; i++) {
        avro_value_append(&list, &item, NULL);
        avro_value_set_string(&item, still[i]);
        free(still[i]);
    }
    free(still);
    bw_buf out;
    char err[256];
    bw_buf_init(&out);
    if (frame(a, &out, id, &n, err, sizeof(err)) == 0) {
        *outlen = out.len;
        result = out.data;
    } else
        bw_buf_free(&out);
done:
    avro_value_decref(&h);
    avro_value_decref(&n);
    return result;
}

bw_merge_ops bw_avro_merge_ops(bw_avro *a)
{
    bw_merge_ops ops = {avro_set_op, avro_has_unchanged, avro_merge_unchanged, a};
    return ops;
}
