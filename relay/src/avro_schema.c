/*
 * avro_schema.c — a relation's Avro schemas and encoding plan (avro_schema.h).
 *
 * The schema text is built with jansson and printed compactly in a fixed field order, so the same
 * relation always gives the same text: registries key schemas by their text, and a relation
 * record re-sent after an unrelated invalidation must not register a new version.
 *
 * Every row field is a union with null and a null default: NULL values need it, and it is what
 * makes ADD COLUMN and DROP COLUMN compatible changes under every compatibility level.
 */
#include "avro_schema.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static bool alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

void bw_avro_name(bw_buf *out, const char *name)
{
    static const char hex[] = "0123456789abcdef";
    bool legal =
        name[0] != '\0' && !(name[0] >= '0' && name[0] <= '9') && strstr(name, "__") == NULL;
    for (const char *p = name; *p && legal; p++)
        legal = alnum((unsigned char) *p) || *p == '_';
    if (legal) {
        bw_buf_puts(out, name);
        return;
    }
    bw_buf_puts(out, "__");
    for (const unsigned char *p = (const unsigned char *) name; *p; p++) {
        if (alnum(*p))
            bw_buf_putc(out, (char) *p);
        else {
            bw_buf_putc(out, '_');
            bw_buf_putc(out, hex[*p >> 4]);
            bw_buf_putc(out, hex[*p & 15]);
        }
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int bw_avro_name_decode(bw_buf *out, const char *s)
{
    if (strncmp(s, "__", 2) != 0) {
        bw_buf_puts(out, s);
        return 0;
    }
    for (const char *p = s + 2; *p; p++) {
        if (*p != '_') {
            bw_buf_putc(out, *p);
            continue;
        }
        int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
        if (lo < 0)
            return -1;
        bw_buf_putc(out, (char) (hi << 4 | lo));
        p += 2;
    }
    return 0;
}

/* numeric's typmod: ((precision << 16) | (scale & 0x7ff)) + VARHDRSZ; scale may be negative */
static bool numeric_typmod(int32_t typmod, int *precision, int *scale)
{
    if (typmod < 4)
        return false;
    int32_t t = typmod - 4;
    *precision = (t >> 16) & 0xffff;
    *scale = (((t & 0x7ff) ^ 1024) - 1024);
    /* Avro's decimal needs 0 <= scale <= precision; PostgreSQL allows more (numeric(2,5)) */
    return *precision >= 1 && *scale >= 0 && *scale <= *precision;
}

static int plan_column(bw_avro_col *ac, const bw_relation *rel, const bw_column *col, char *err,
                       size_t errlen)
{
    memset(ac, 0, sizeof(*ac));
    if (col->format == 't') {
        ac->kind = BW_AV_TEXT;
        return 0;
    }
    switch (col->type_oid) {
    case BW_OID_BOOL:
        ac->kind = BW_AV_BOOLEAN;
        return 0;
    case BW_OID_INT2:
        ac->kind = BW_AV_INT2;
        return 0;
    case BW_OID_INT4:
        ac->kind = BW_AV_INT4;
        return 0;
    case BW_OID_INT8:
        ac->kind = BW_AV_INT8;
        return 0;
    case BW_OID_OID:
        ac->kind = BW_AV_OID;
        return 0;
    case BW_OID_FLOAT4:
        ac->kind = BW_AV_FLOAT4;
        return 0;
    case BW_OID_FLOAT8:
        ac->kind = BW_AV_FLOAT8;
        return 0;
    case BW_OID_DATE:
        ac->kind = BW_AV_DATE;
        return 0;
    case BW_OID_TIME:
        ac->kind = BW_AV_TIME;
        return 0;
    case BW_OID_TIMESTAMP:
        ac->kind = BW_AV_TIMESTAMP;
        return 0;
    case BW_OID_TIMESTAMPTZ:
        ac->kind = BW_AV_TIMESTAMPTZ;
        return 0;
    case BW_OID_NUMERIC:
        ac->kind = numeric_typmod(col->typmod, &ac->precision, &ac->scale) ? BW_AV_DECIMAL
                                                                           : BW_AV_RENDERED;
        return 0;
    case BW_OID_UUID:
        ac->kind = BW_AV_UUID;
        return 0;
    case BW_OID_BYTEA:
        ac->kind = BW_AV_BYTES;
        return 0;
    case BW_OID_TIMETZ:
    case BW_OID_INTERVAL:
        ac->kind = BW_AV_RENDERED;
        return 0;
    default:
        snprintf(err, errlen,
                 "column \"%s\" of table \"%s.%s\": type oid %" PRIu32
                 " arrives in binary format, which the relay cannot encode; use "
                 "value-encoding=auto (the default), which sends such types as text",
                 col->name, rel->schema, rel->table, col->type_oid);
        return -1;
    }
}

static json_t *logical(const char *type, const char *logical_type)
{
    return json_pack("{s:s, s:s}", "type", type, "logicalType", logical_type);
}

/* The Avro type of a column's non-null values. */
static json_t *avro_type(const bw_avro_col *ac)
{
    switch (ac->kind) {
    case BW_AV_BOOLEAN:
        return json_string("boolean");
    case BW_AV_INT2:
    case BW_AV_INT4:
        return json_string("int");
    case BW_AV_INT8:
    case BW_AV_OID:
        return json_string("long");
    case BW_AV_FLOAT4:
        return json_string("float");
    case BW_AV_FLOAT8:
        return json_string("double");
    case BW_AV_DATE:
        return logical("int", "date");
    case BW_AV_TIME:
        return logical("long", "time-micros");
    case BW_AV_TIMESTAMP:
        return logical("long", "local-timestamp-micros");
    case BW_AV_TIMESTAMPTZ:
        return logical("long", "timestamp-micros");
    case BW_AV_DECIMAL:
        return json_pack("{s:s, s:s, s:i, s:i}", "type", "bytes", "logicalType", "decimal",
                         "precision", ac->precision, "scale", ac->scale);
    case BW_AV_UUID:
        return logical("string", "uuid");
    case BW_AV_BYTES:
        return json_string("bytes");
    case BW_AV_RENDERED:
    case BW_AV_TEXT:
        return json_string("string");
    }
    return json_string("string");
}

static json_t *nullable(json_t *type)
{
    return json_pack("[s, o]", "null", type);
}

static json_t *field(const char *name, json_t *type)
{
    return json_pack("{s:s, s:o}", "name", name, "type", type);
}

static json_t *field_default_null(const char *name, json_t *type)
{
    return json_pack("{s:s, s:o, s:n}", "name", name, "type", type, "default");
}

static json_t *record(const char *name, const char *ns, json_t *fields)
{
    if (ns)
        return json_pack("{s:s, s:s, s:s, s:o}", "type", "record", "name", name, "namespace", ns,
                         "fields", fields);
    return json_pack("{s:s, s:s, s:o}", "type", "record", "name", name, "fields", fields);
}

/* The Key record: the key columns in key order, never null (key columns are NOT NULL). */
static json_t *key_record(const bw_relation *rel, const bw_avro_col *cols, const char *ns,
                          bw_buf *name)
{
    json_t *fields = json_array();
    for (uint16_t i = 0; i < rel->nkeys; i++) {
        bw_buf_reset(name);
        bw_avro_name(name, rel->columns[rel->keys[i]].name);
        json_array_append_new(fields, field(name->data, avro_type(&cols[rel->keys[i]])));
    }
    return record("Key", ns, fields);
}

static char *dump(json_t *schema)
{
    char *s = json_dumps(schema, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(schema);
    if (s == NULL)
        abort(); /* out of memory: as bw_xmalloc */
    char *copy = bw_xstrdup(s);
    free(s);
    return copy;
}

int bw_avro_plan_build(bw_avro_plan *p, const bw_relation *rel, const char *ns, char *err,
                       size_t errlen)
{
    bw_buf full, name;

    memset(p, 0, sizeof(*p));
    p->cols = bw_xcalloc(rel->ncolumns ? rel->ncolumns : 1, sizeof(*p->cols));
    for (uint16_t i = 0; i < rel->ncolumns; i++) {
        if (plan_column(&p->cols[i], rel, &rel->columns[i], err, errlen) < 0) {
            bw_avro_plan_free(p);
            return -1;
        }
    }
    for (uint16_t i = 0; i < rel->nkeys; i++) {
        if (rel->keys[i] >= rel->ncolumns) {
            snprintf(err, errlen, "table \"%s.%s\": key #%u is column #%u of %u", rel->schema,
                     rel->table, i, rel->keys[i], rel->ncolumns);
            bw_avro_plan_free(p);
            return -1;
        }
    }

    bw_buf_init(&full);
    bw_buf_init(&name);
    bw_buf_printf(&full, "%s.", ns);
    bw_avro_name(&full, rel->schema);
    bw_buf_putc(&full, '.');
    bw_avro_name(&full, rel->table);
    p->fullname = bw_xstrdup(full.data);

    if (rel->nkeys > 0)
        p->key_schema = dump(key_record(rel, p->cols, full.data, &name));

    json_t *row = json_array();
    for (uint16_t i = 0; i < rel->ncolumns; i++) {
        bw_buf_reset(&name);
        bw_avro_name(&name, rel->columns[i].name);
        json_array_append_new(row, field_default_null(name.data, nullable(avro_type(&p->cols[i]))));
    }
    json_t *truncate = record("Truncate", NULL,
                              json_pack("[o, o]", field("cascade", json_string("boolean")),
                                        field("restart_identity", json_string("boolean"))));
    json_t *fields = json_array();
    json_array_append_new(fields, field("op", json_string("string")));
    json_array_append_new(fields, json_pack("{s:s, s:{s:s, s:s}, s:[]}", "name", "unchanged_toast",
                                            "type", "type", "array", "items", "string", "default"));
    json_array_append_new(fields, field("xid", json_string("long")));
    json_array_append_new(fields, field("commit_lsn", json_string("long")));
    json_array_append_new(fields, field("commit_time", logical("long", "timestamp-micros")));
    json_array_append_new(fields, field_default_null("tenant", nullable(json_string("string"))));
    json_array_append_new(fields, field_default_null("old", nullable(record("Value", NULL, row))));
    json_array_append_new(fields, field_default_null("new", nullable(json_string("Value"))));
    json_array_append_new(fields, field_default_null("truncate", nullable(truncate)));
    if (rel->nkeys > 0) {
        json_t *key = key_record(rel, p->cols, NULL, &name);
        json_array_append_new(fields, field_default_null("key", nullable(key)));
    }
    p->value_schema = dump(record("Envelope", full.data, fields));
    bw_buf_free(&full);
    bw_buf_free(&name);
    return 0;
}

void bw_avro_plan_free(bw_avro_plan *p)
{
    free(p->cols);
    free(p->key_schema);
    free(p->value_schema);
    free(p->fullname);
    memset(p, 0, sizeof(*p));
}
