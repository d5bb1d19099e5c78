/*
 * proto.c — the reader of the decoder's binary protocol (docs/protocol.md). Every length is
 * checked against the bytes that remain before it is trusted: a malformed chunk is an error
 * with its offset, never a read out of bounds.
 */
#include "proto.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

/* relid → relation, open addressing; tables in a slot are few, rehash is rare */
typedef struct rel_slot {
    uint32_t relid;
    bw_relation *rel; /* NULL = empty */
} rel_slot;

struct bw_parser {
    rel_slot *slots;
    size_t nslots; /* power of two */
    size_t nrels;
    bw_relation_free_cb free_user;
    void *free_arg;
    /* scratch for one change: values of the old and new tuples, and truncate relations */
    bw_value *old;
    bw_value *new_;
    size_t nvalues_cap;
    const bw_relation **trunc;
    size_t ntrunc_cap;
};

typedef struct reader {
    const uint8_t *p;
    const uint8_t *end;
    const uint8_t *start; /* of the chunk: for offsets in messages */
    char *err;
    size_t errlen;
    int failed;
} reader;

static void fail(reader *r, const char *what)
{
    if (!r->failed)
        snprintf(r->err, r->errlen, "malformed breakwater chunk at byte %td: %s", r->p - r->start,
                 what);
    r->failed = 1;
}

static int need(reader *r, size_t n, const char *what)
{
    if (r->failed)
        return -1;
    if ((size_t) (r->end - r->p) < n) {
        fail(r, what);
        return -1;
    }
    return 0;
}

static uint8_t get_u8(reader *r, const char *what)
{
    if (need(r, 1, what))
        return 0;
    return *r->p++;
}

static uint16_t get_u16(reader *r, const char *what)
{
    if (need(r, 2, what))
        return 0;
    uint16_t v = (uint16_t) ((r->p[0] << 8) | r->p[1]);
    r->p += 2;
    return v;
}

static uint32_t get_u32(reader *r, const char *what)
{
    if (need(r, 4, what))
        return 0;
    uint32_t v = ((uint32_t) r->p[0] << 24) | ((uint32_t) r->p[1] << 16) |
                 ((uint32_t) r->p[2] << 8) | (uint32_t) r->p[3];
    r->p += 4;
    return v;
}

static uint64_t get_u64(reader *r, const char *what)
{
    uint64_t hi = get_u32(r, what);
    uint64_t lo = get_u32(r, what);
    return (hi << 32) | lo;
}

static const uint8_t *get_bytes(reader *r, size_t n, const char *what)
{
    if (need(r, n, what))
        return NULL;
    const uint8_t *p = r->p;
    r->p += n;
    return p;
}

static char *get_name(reader *r, const char *what)
{
    uint16_t len = get_u16(r, what);
    const uint8_t *p = get_bytes(r, len, what);
    if (p == NULL)
        return NULL;
    return bw_xstrndup((const char *) p, len);
}

static void get_value(reader *r, bw_value *v, const char *what)
{
    v->kind = (char) get_u8(r, what);
    v->data = NULL;
    v->len = 0;
    switch (v->kind) {
    case 'n':
    case 'u':
        return;
    case 'b':
    case 't':
        v->len = get_u32(r, what);
        v->data = get_bytes(r, v->len, what);
        return;
    default:
        if (!r->failed) {
            char msg[96];
            snprintf(msg, sizeof(msg), "unknown value kind 0x%02x in %s", (unsigned char) v->kind,
                     what);
            fail(r, msg);
        }
    }
}

/* ---- relation map ---- */

static void relation_free(bw_parser *p, bw_relation *rel)
{
    if (rel == NULL)
        return;
    if (p->free_user && rel->user)
        p->free_user(p->free_arg, rel);
    for (uint16_t i = 0; i < rel->ncolumns; i++)
        free(rel->columns[i].name);
    free(rel->columns);
    free(rel->keys);
    free(rel->raw);
    free(rel->schema);
    free(rel->table);
    free(rel->tenant_column);
    free(rel);
}

static rel_slot *find_slot(const bw_parser *p, uint32_t relid)
{
    size_t mask = p->nslots - 1;
    size_t i = (relid * 2654435761u) & mask;
    while (p->slots[i].rel != NULL && p->slots[i].relid != relid)
        i = (i + 1) & mask;
    return &p->slots[i];
}

static void grow(bw_parser *p)
{
    rel_slot *old = p->slots;
    size_t n = p->nslots;
    p->nslots = n ? n * 2 : 64;
    p->slots = bw_xcalloc(p->nslots, sizeof(rel_slot));
    for (size_t i = 0; i < n; i++)
        if (old[i].rel)
            *find_slot(p, old[i].relid) = old[i];
    free(old);
}

static int ignore(void *arg, const bw_record *rec)
{
    (void) arg;
    (void) rec;
    return 0;
}

bw_parser *bw_parser_copy(const bw_parser *src, bw_relation_free_cb free_user, void *free_arg)
{
    bw_parser *p = bw_parser_new(free_user, free_arg);
    bw_buf chunk;
    char err[256];
    bw_buf_init(&chunk);
    for (size_t i = 0; i < src->nslots; i++) {
        const bw_relation *rel = src->slots[i].rel;
        if (rel == NULL || rel->raw == NULL)
            continue;
        bw_buf_reset(&chunk);
        bw_buf_putc(&chunk, BW_PROTO_VERSION);
        bw_buf_append(&chunk, rel->raw, rel->raw_len);
        /* the record parsed once already: it parses again */
        bw_parse_chunk(p, (const uint8_t *) chunk.data, chunk.len, ignore, NULL, err, sizeof(err));
    }
    bw_buf_free(&chunk);
    return p;
}

const bw_relation *bw_parser_relation(const bw_parser *p, uint32_t relid)
{
    if (p->nslots == 0)
        return NULL;
    return find_slot(p, relid)->rel;
}

static int shape_error(char *err, size_t errlen, const bw_relation *rel, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int shape_error(char *err, size_t errlen, const bw_relation *rel, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        int n = snprintf(err, errlen, "table \"%s.%s\": ", rel->schema, rel->table);
        if (n >= 0 && (size_t) n < errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + n, errlen - (size_t) n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

int bw_change_check(const bw_change *c, bool need_new, char *err, size_t errlen)
{
    const bw_relation *rel = c->rel;
    for (int i = 0; i < rel->nkeys; i++)
        if (rel->keys[i] >= rel->ncolumns)
            return shape_error(err, errlen, rel, "key #%d is column #%u of %u", i, rel->keys[i],
                               rel->ncolumns);
    switch (c->old_kind) {
    case 'K':
        if (c->nold != rel->nkeys || (c->nold > 0 && c->old == NULL))
            return shape_error(err, errlen, rel, "old key of %u values for %u key columns", c->nold,
                               rel->nkeys);
        break;
    case 'O':
        if (c->nold != rel->ncolumns || (c->nold > 0 && c->old == NULL))
            return shape_error(err, errlen, rel, "old row of %u values for %u columns", c->nold,
                               rel->ncolumns);
        break;
    case 'X':
        break;
    default:
        return shape_error(err, errlen, rel, "old kind 0x%02x is none of 'K', 'O', 'X'",
                           (unsigned char) c->old_kind);
    }
    if (need_new && (c->nnew != rel->ncolumns || (c->nnew > 0 && c->new_ == NULL)))
        return shape_error(err, errlen, rel, "new row of %u values for %u columns", c->nnew,
                           rel->ncolumns);
    return 0;
}

const bw_value *bw_change_key_source(const bw_change *c, bool *key_tuple)
{
    *key_tuple = c->old_kind == 'K';
    if (c->rel->nkeys == 0)
        return NULL;
    if (c->old_kind == 'K' || c->old_kind == 'O')
        return c->old;
    return c->nnew > 0 ? c->new_ : NULL;
}

const char *bw_record_op(bw_record_type t)
{
    switch (t) {
    case BW_REC_INSERT:
        return "insert";
    case BW_REC_UPDATE:
        return "update";
    case BW_REC_DELETE:
        return "delete";
    case BW_REC_TRUNCATE:
        return "truncate";
    case BW_REC_MESSAGE:
        return "message";
    case BW_REC_READ:
        return "read";
    default:
        return "?";
    }
}

bw_parser *bw_parser_new(bw_relation_free_cb free_user, void *free_arg)
{
    bw_parser *p = bw_xcalloc(1, sizeof(*p));
    p->free_user = free_user;
    p->free_arg = free_arg;
    grow(p);
    return p;
}

void bw_parser_free(bw_parser *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->nslots; i++)
        relation_free(p, p->slots[i].rel);
    free(p->slots);
    free(p->old);
    free(p->new_);
    free(p->trunc);
    free(p);
}

static void ensure_values(bw_parser *p, size_t n)
{
    if (n <= p->nvalues_cap)
        return;
    p->old = bw_xrealloc(p->old, n * sizeof(bw_value));
    p->new_ = bw_xrealloc(p->new_, n * sizeof(bw_value));
    p->nvalues_cap = n;
}

/* ---- records ---- */

static int parse_relation(bw_parser *p, reader *r, const bw_relation **out)
{
    bw_relation *rel = bw_xcalloc(1, sizeof(*rel));

    rel->relid = get_u32(r, "relation id");
    rel->schema = get_name(r, "relation schema");
    rel->table = get_name(r, "relation name");
    rel->replident = (char) get_u8(r, "replica identity");
    rel->tenant_column = get_name(r, "tenant column");
    rel->ncolumns = get_u16(r, "column count");
    if (!r->failed && (size_t) (r->end - r->p) < (size_t) rel->ncolumns * 12)
        fail(r, "column count larger than the record");
    if (!r->failed) {
        rel->columns = bw_xcalloc(rel->ncolumns, sizeof(bw_column));
        rel->keys = bw_xcalloc(rel->ncolumns, sizeof(uint16_t));
    }
    for (uint16_t i = 0; i < rel->ncolumns && !r->failed; i++) {
        bw_column *c = &rel->columns[i];
        c->flags = get_u8(r, "column flags");
        c->format = (char) get_u8(r, "column format");
        c->name = get_name(r, "column name");
        c->type_oid = get_u32(r, "column type");
        c->typmod = (int32_t) get_u32(r, "column typmod");
        if (!r->failed && c->format != 'b' && c->format != 't')
            fail(r, "column format is neither 'b' nor 't'");
        if (c->flags & BW_COL_KEY)
            rel->keys[rel->nkeys++] = i;
    }
    if (r->failed) {
        relation_free(p, rel);
        return -1;
    }

    if (p->nrels * 2 >= p->nslots)
        grow(p);
    rel_slot *s = find_slot(p, rel->relid);
    if (s->rel) {
        rel->generation = s->rel->generation + 1;
        relation_free(p, s->rel);
    } else {
        rel->generation = 1;
        p->nrels++;
    }
    s->relid = rel->relid;
    s->rel = rel;
    *out = rel;
    return 0;
}

static const bw_relation *lookup(bw_parser *p, reader *r, uint32_t relid)
{
    const bw_relation *rel = bw_parser_relation(p, relid);
    if (rel == NULL && !r->failed) {
        char msg[96];
        snprintf(msg, sizeof(msg), "change for relation %" PRIu32 " before its relation record",
                 relid);
        fail(r, msg);
    }
    return rel;
}

static void parse_tuple(reader *r, bw_value *vals, uint16_t expect, uint16_t *n, const char *what)
{
    *n = get_u16(r, what);
    if (!r->failed && *n != expect) {
        char msg[128];
        snprintf(msg, sizeof(msg), "%s has %u values, its relation says %u", what, *n, expect);
        fail(r, msg);
        return;
    }
    for (uint16_t i = 0; i < *n && !r->failed; i++)
        get_value(r, &vals[i], what);
}

static int parse_change(bw_parser *p, reader *r, bw_record *rec)
{
    bw_change *c = &rec->u.change;
    const bw_relation *rel = lookup(p, r, get_u32(r, "change relation id"));
    if (rel == NULL)
        return -1;
    ensure_values(p, rel->ncolumns);
    c->rel = rel;
    get_value(r, &c->tenant, "tenant");
    c->old_kind = (char) get_u8(r, "old tuple kind");
    c->nold = c->nnew = 0;
    c->old = p->old;
    c->new_ = p->new_;
    switch (c->old_kind) {
    case 'K':
        parse_tuple(r, p->old, rel->nkeys, &c->nold, "old key");
        break;
    case 'O':
        parse_tuple(r, p->old, rel->ncolumns, &c->nold, "old row");
        break;
    case 'X':
        break;
    default:
        fail(r, "unknown old tuple kind");
    }
    if (rec->type != BW_REC_DELETE)
        parse_tuple(r, p->new_, rel->ncolumns, &c->nnew, "new row");
    return r->failed ? -1 : 0;
}

static int parse_truncate(bw_parser *p, reader *r, bw_record *rec)
{
    rec->u.truncate.options = get_u8(r, "truncate options");
    uint16_t n = get_u16(r, "truncate relation count");
    if (n > p->ntrunc_cap) {
        p->trunc = bw_xrealloc(p->trunc, n * sizeof(*p->trunc));
        p->ntrunc_cap = n;
    }
    for (uint16_t i = 0; i < n && !r->failed; i++)
        p->trunc[i] = lookup(p, r, get_u32(r, "truncate relation id"));
    rec->u.truncate.nrels = n;
    rec->u.truncate.rels = p->trunc;
    return r->failed ? -1 : 0;
}

int bw_parse_chunk(bw_parser *p, const uint8_t *data, size_t len, bw_record_cb cb, void *arg,
                   char *err, size_t errlen)
{
    reader whole = {data, data + len, data, err, errlen, 0};
    uint8_t version = get_u8(&whole, "chunk version byte");
    if (whole.failed)
        return -1;
    if (version != BW_PROTO_VERSION) {
        snprintf(err, errlen,
                 "breakwater protocol version %u is not supported (this relay reads version %d): "
                 "upgrade the relay or install the matching plugin",
                 version, BW_PROTO_VERSION);
        return -1;
    }
    while (whole.p < whole.end) {
        const uint8_t *rec_start = whole.p;
        uint8_t tag = get_u8(&whole, "record tag");
        uint32_t body = get_u32(&whole, "record length");
        const uint8_t *b = get_bytes(&whole, body, "record body");
        if (b == NULL)
            return -1;
        /* a record's fields are read within its own body: later versions may append fields */
        reader r = {b, b + body, data, err, errlen, 0};
        bw_record rec;
        memset(&rec, 0, sizeof(rec));
        rec.size = (uint32_t) (whole.p - rec_start);
        rec.raw = rec_start;
        switch (tag) {
        case 'B':
        case 'C':
        case 'K': /* a streamed transaction's commit: the fields of C */
            rec.type = tag == 'B'   ? BW_REC_BEGIN
                       : tag == 'C' ? BW_REC_COMMIT
                                    : BW_REC_STREAM_COMMIT;
            rec.u.xact.xid = get_u32(&r, "xid");
            rec.u.xact.commit_lsn = get_u64(&r, "commit lsn");
            rec.u.xact.end_lsn = get_u64(&r, "end lsn");
            rec.u.xact.commit_time = (int64_t) get_u64(&r, "commit time");
            break;
        case 'R':
            rec.type = BW_REC_RELATION;
            parse_relation(p, &r, &rec.u.rel);
            if (!r.failed && rec.u.rel) {
                bw_relation *rel = (bw_relation *) rec.u.rel;
                rel->raw = bw_xmalloc(rec.size);
                memcpy(rel->raw, rec_start, rec.size);
                rel->raw_len = rec.size;
            }
            break;
        case 'S':
            rec.type = BW_REC_STREAM_START;
            rec.u.stream.xid = get_u32(&r, "stream xid");
            rec.u.stream.first = get_u8(&r, "stream first flag") != 0;
            break;
        case 'E':
            rec.type = BW_REC_STREAM_STOP;
            break;
        case 'X':
            rec.type = BW_REC_SUBXACT;
            rec.u.subxid = get_u32(&r, "subtransaction xid");
            break;
        case 'A':
            rec.type = BW_REC_STREAM_ABORT;
            rec.u.abort.xid = get_u32(&r, "stream abort xid");
            rec.u.abort.subxid = get_u32(&r, "stream abort subxid");
            rec.u.abort.abort_lsn = get_u64(&r, "stream abort lsn");
            break;

        case 'I':
        case 'U':
        case 'D':
            rec.type = tag == 'I' ? BW_REC_INSERT : tag == 'U' ? BW_REC_UPDATE : BW_REC_DELETE;
            parse_change(p, &r, &rec);
            break;
        case 'T':
            rec.type = BW_REC_TRUNCATE;
            parse_truncate(p, &r, &rec);
            break;
        case 'M': {
            bw_message *m = &rec.u.message;
            rec.type = BW_REC_MESSAGE;
            m->transactional = get_u8(&r, "message flag") != 0;
            m->lsn = get_u64(&r, "message lsn");
            m->prefix_len = get_u16(&r, "message prefix");
            m->prefix = (const char *) get_bytes(&r, m->prefix_len, "message prefix");
            m->content_len = get_u32(&r, "message content");
            m->content = get_bytes(&r, m->content_len, "message content");
            break;
        }
        default:
            continue; /* unknown tag: skip its body (forward compatibility) */
        }
        if (r.failed)
            return -1;
        int rc = cb(arg, &rec);
        if (rc != 0)
            return rc;
    }
    return 0;
}

const char *bw_lsn_str(uint64_t lsn, char *buf)
{
    snprintf(buf, 18, "%X/%X", (unsigned) (lsn >> 32), (unsigned) (lsn & 0xffffffffu));
    return buf;
}

int bw_lsn_parse(const char *s, uint64_t *lsn)
{
    unsigned hi, lo;
    int n = 0;
    if (sscanf(s, "%X/%X%n", &hi, &lo, &n) != 2 || s[n] != '\0')
        return -1;
    *lsn = ((uint64_t) hi << 32) | lo;
    return 0;
}
