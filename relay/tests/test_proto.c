/*
 * test_proto.c — the protocol reader on hand-built chunks: every record type, relation
 * replacement, unknown tags and appended fields, and malformed input at every cut.
 */
#include <stdio.h>
#include <stdlib.h>

#include "buf.h"
#include "proto.h"
#include "spool.h"
#include "unit.h"

/* ---- building chunks ---- */

static void u8(bw_buf *b, uint8_t v)
{
    bw_buf_append(b, &v, 1);
}

static void u16(bw_buf *b, uint16_t v)
{
    u8(b, (uint8_t) (v >> 8));
    u8(b, (uint8_t) v);
}

static void u32(bw_buf *b, uint32_t v)
{
    u16(b, (uint16_t) (v >> 16));
    u16(b, (uint16_t) v);
}

static void u64(bw_buf *b, uint64_t v)
{
    u32(b, (uint32_t) (v >> 32));
    u32(b, (uint32_t) v);
}

static void name(bw_buf *b, const char *s)
{
    u16(b, (uint16_t) strlen(s));
    bw_buf_puts(b, s);
}

/* starts a record; returns the offset of its length field */
static size_t rec(bw_buf *b, char tag)
{
    u8(b, (uint8_t) tag);
    size_t at = b->len;
    u32(b, 0);
    return at;
}

static void end(bw_buf *b, size_t at)
{
    uint32_t n = (uint32_t) (b->len - at - 4);
    uint8_t be[4] = {(uint8_t) (n >> 24), (uint8_t) (n >> 16), (uint8_t) (n >> 8), (uint8_t) n};
    memcpy(b->data + at, be, 4);
}

static void xact(bw_buf *b, char tag, uint32_t xid, uint64_t commit, uint64_t endl, int64_t t)
{
    size_t at = rec(b, tag);
    u32(b, xid);
    u64(b, commit);
    u64(b, endl);
    u64(b, (uint64_t) t);
    end(b, at);
}

/* relation 16384 public.orders (id int4 key, tenant_id text tenant, note text) */
static void relation(bw_buf *b, uint32_t relid, int ncols)
{
    size_t at = rec(b, 'R');
    u32(b, relid);
    name(b, "public");
    name(b, "orders");
    u8(b, 'd');
    name(b, "tenant_id");
    u16(b, (uint16_t) ncols);
    const char *names[] = {"id", "tenant_id", "note", "extra"};
    uint8_t flags[] = {BW_COL_KEY, BW_COL_TENANT, 0, 0};
    uint32_t types[] = {BW_OID_INT4, BW_OID_TEXT, BW_OID_TEXT, BW_OID_INT8};
    for (int i = 0; i < ncols; i++) {
        u8(b, flags[i]);
        u8(b, i == 0 || i == 3 ? 'b' : 't');
        name(b, names[i]);
        u32(b, types[i]);
        u32(b, (uint32_t) -1);
    }
    end(b, at);
}

static void val_int4(bw_buf *b, int32_t v)
{
    u8(b, 'b');
    u32(b, 4);
    u32(b, (uint32_t) v);
}

static void val_text(bw_buf *b, const char *s)
{
    u8(b, 't');
    u32(b, (uint32_t) strlen(s));
    bw_buf_puts(b, s);
}

/* ---- collecting records ---- */

typedef struct seen {
    int n;
    bw_record_type types[32];
    bw_xact xacts[32];
    char note[32][32];
    char old_kind[32];
    uint16_t nold[32], nnew[32];
    uint32_t generation[32];
    int stop_at; /* return 7 from the callback at this record, if > 0 */
} seen;

static int collect(void *arg, const bw_record *r)
{
    seen *s = arg;
    int i = s->n++;
    s->types[i] = r->type;
    if (r->type == BW_REC_BEGIN || r->type == BW_REC_COMMIT)
        s->xacts[i] = r->u.xact;
    if (r->type == BW_REC_RELATION)
        s->generation[i] = r->u.rel->generation;
    if (r->type == BW_REC_INSERT || r->type == BW_REC_UPDATE || r->type == BW_REC_DELETE) {
        const bw_change *c = &r->u.change;
        s->old_kind[i] = c->old_kind;
        s->nold[i] = c->nold;
        s->nnew[i] = c->nnew;
        if (c->nnew > 2 && c->new_[2].kind == 't')
            snprintf(s->note[i], sizeof(s->note[i]), "%.*s", (int) c->new_[2].len,
                     (const char *) c->new_[2].data);
        else if (c->nnew > 2)
            snprintf(s->note[i], sizeof(s->note[i]), "<%c>", c->new_[2].kind);
    }
    return s->stop_at > 0 && s->n == s->stop_at ? 7 : 0;
}

static void insert(bw_buf *b, uint32_t relid, int32_t id, const char *note)
{
    size_t at = rec(b, 'I');
    u32(b, relid);
    val_text(b, "acme");
    u8(b, 'X');
    u16(b, 3);
    val_int4(b, id);
    val_text(b, "acme");
    if (note)
        val_text(b, note);
    else
        u8(b, 'n');
    end(b, at);
}

static void transaction(bw_buf *b)
{
    u8(b, 1);
    xact(b, 'B', 700, 0x100, 0x180, 1700000000000000LL);
    relation(b, 16384, 3);
    insert(b, 16384, 1, "hello");
    /* update with old key */
    size_t at = rec(b, 'U');
    u32(b, 16384);
    val_text(b, "acme");
    u8(b, 'K');
    u16(b, 1);
    val_int4(b, 1);
    u16(b, 3);
    val_int4(b, 2);
    val_text(b, "acme");
    u8(b, 'u');
    end(b, at);
    /* keyless delete */
    at = rec(b, 'D');
    u32(b, 16384);
    u8(b, 'n');
    u8(b, 'X');
    end(b, at);
    xact(b, 'C', 700, 0x100, 0x180, 1700000000000000LL);
}

TEST(proto_transaction_records)
{
    bw_buf b;
    bw_buf_init(&b);
    transaction(&b);
    bw_parser *p = bw_parser_new(NULL, NULL);
    seen s = {0};
    char err[256] = "";
    ASSERT_OK(bw_parse_chunk(p, (const uint8_t *) b.data, b.len, collect, &s, err, sizeof(err)));
    ASSERT_EQ(s.n, 6);
    ASSERT_EQ(s.types[0], BW_REC_BEGIN);
    ASSERT_EQ(s.xacts[0].xid, 700);
    ASSERT_EQ(s.xacts[0].commit_lsn, 0x100);
    ASSERT_EQ(s.xacts[0].end_lsn, 0x180);
    ASSERT_EQ(s.xacts[0].commit_time, 1700000000000000LL);
    ASSERT_EQ(s.types[1], BW_REC_RELATION);
    ASSERT_EQ(s.generation[1], 1);
    ASSERT_EQ(s.types[2], BW_REC_INSERT);
    ASSERT_STR_EQ(s.note[2], "hello");
    ASSERT_EQ(s.old_kind[2], 'X');
    ASSERT_EQ(s.types[3], BW_REC_UPDATE);
    ASSERT_EQ(s.old_kind[3], 'K');
    ASSERT_EQ(s.nold[3], 1);
    ASSERT_STR_EQ(s.note[3], "<u>");
    ASSERT_EQ(s.types[4], BW_REC_DELETE);
    ASSERT_EQ(s.old_kind[4], 'X');
    ASSERT_EQ(s.nnew[4], 0);
    ASSERT_EQ(s.types[5], BW_REC_COMMIT);

    const bw_relation *rel = bw_parser_relation(p, 16384);
    ASSERT_NOT_NULL(rel);
    ASSERT_STR_EQ(rel->schema, "public");
    ASSERT_STR_EQ(rel->table, "orders");
    ASSERT_STR_EQ(rel->tenant_column, "tenant_id");
    ASSERT_EQ(rel->nkeys, 1);
    ASSERT_EQ(rel->keys[0], 0);
    ASSERT_EQ(rel->columns[0].format, 'b');
    ASSERT_EQ(rel->columns[1].flags, BW_COL_TENANT);
    bw_parser_free(p);
    bw_buf_free(&b);
}

TEST(proto_relation_replaced_and_kept_across_chunks)
{
    bw_buf b;
    bw_buf_init(&b);
    u8(&b, 1);
    relation(&b, 16384, 3);
    bw_parser *p = bw_parser_new(NULL, NULL);
    seen s = {0};
    char err[256];
    ASSERT_OK(bw_parse_chunk(p, (const uint8_t *) b.data, b.len, collect, &s, err, sizeof(err)));
    bw_buf_reset(&b);
    u8(&b, 1);
    relation(&b, 16384, 4);    /* ALTER TABLE ADD COLUMN */
    insert(&b, 16384, 5, "x"); /* 3 values for a 4-column relation: malformed */
    s.n = 0;
    ASSERT_EQ(bw_parse_chunk(p, (const uint8_t *) b.data, b.len, collect, &s, err, sizeof(err)),
              -1);
    ASSERT_STR_CONTAINS(err, "new row has 3 values, its relation says 4");
    ASSERT_EQ(s.generation[0], 2);
    ASSERT_EQ(bw_parser_relation(p, 16384)->ncolumns, 4);
    bw_parser_free(p);
    bw_buf_free(&b);
}

static int count_records(void *arg, const bw_record *r)
{
    (void) r;
    (*(int *) arg)++;
    return 0;
}

TEST(proto_many_relations_grow_the_map)
{
    bw_buf b;
    bw_buf_init(&b);
    u8(&b, 1);
    for (uint32_t i = 0; i < 500; i++)
        relation(&b, 20000 + i * 7, 3);
    bw_parser *p = bw_parser_new(NULL, NULL);
    char err[256];
    int n = 0;
    ASSERT_OK(
        bw_parse_chunk(p, (const uint8_t *) b.data, b.len, count_records, &n, err, sizeof(err)));
    ASSERT_EQ(n, 500);
    for (uint32_t i = 0; i < 500; i++)
        ASSERT_EQ(bw_parser_relation(p, 20000 + i * 7)->relid, 20000 + i * 7);
    ASSERT_NULL(bw_parser_relation(p, 20001));
    bw_parser_free(p);
    bw_buf_free(&b);
}

TEST(proto_unknown_tags_skipped_appended_fields_ignored)
{
    bw_buf b;
    bw_buf_init(&b);
    u8(&b, 1);
    size_t at = rec(&b, 'Z'); /* a tag from a later version */
    u64(&b, 42);
    end(&b, at);
    at = rec(&b, 'B');
    u32(&b, 9);
    u64(&b, 1);
    u64(&b, 2);
    u64(&b, 3);
    u32(&b, 0xdeadbeef); /* a field appended by a later version */
    end(&b, at);
    bw_parser *p = bw_parser_new(NULL, NULL);
    seen s = {0};
    char err[256];
    ASSERT_OK(bw_parse_chunk(p, (const uint8_t *) b.data, b.len, collect, &s, err, sizeof(err)));
    ASSERT_EQ(s.n, 1);
    ASSERT_EQ(s.types[0], BW_REC_BEGIN);
    ASSERT_EQ(s.xacts[0].xid, 9);
    ASSERT_EQ(s.xacts[0].commit_time, 3);
    bw_parser_free(p);
    bw_buf_free(&b);
}

TEST(proto_wrong_version_is_refused)
{
    uint8_t chunk[] = {2};
    bw_parser *p = bw_parser_new(NULL, NULL);
    seen s = {0};
    char err[256];
    ASSERT_EQ(bw_parse_chunk(p, chunk, 1, collect, &s, err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "version 2 is not supported");
    ASSERT_EQ(bw_parse_chunk(p, chunk, 0, collect, &s, err, sizeof(err)), -1);
    bw_parser_free(p);
}

typedef struct bounds {
    size_t at[64];
    int n;
    size_t pos;
} bounds;

static int record_bounds(void *arg, const bw_record *r)
{
    bounds *b = arg;
    b->pos += r->size;
    b->at[b->n++] = b->pos;
    return 0;
}

TEST(proto_cut_parses_only_at_record_boundaries)
{
    bw_buf b;
    bw_buf_init(&b);
    transaction(&b);
    bounds ends = {.pos = 1};
    char err[256] = "";
    bw_parser *whole = bw_parser_new(NULL, NULL);
    ASSERT_OK(bw_parse_chunk(whole, (const uint8_t *) b.data, b.len, record_bounds, &ends, err,
                             sizeof(err)));
    bw_parser_free(whole);
    for (size_t cut = 1; cut < b.len; cut++) {
        bool boundary = cut == 1;
        for (int i = 0; i < ends.n; i++)
            boundary = boundary || ends.at[i] == cut;
        bw_parser *p = bw_parser_new(NULL, NULL);
        seen s = {0};
        /* a copy of exactly `cut` bytes, so ASan sees any read past the end */
        uint8_t *copy = malloc(cut);
        memcpy(copy, b.data, cut);
        int rc = bw_parse_chunk(p, copy, cut, collect, &s, err, sizeof(err));
        if (boundary)
            ASSERT_OK(rc);
        else {
            ASSERT_EQ(rc, -1);
            ASSERT_STR_CONTAINS(err, "malformed breakwater chunk");
        }
        free(copy);
        bw_parser_free(p);
    }
    bw_buf_free(&b);
}

TEST(proto_change_before_relation_is_an_error)
{
    bw_buf b;
    bw_buf_init(&b);
    u8(&b, 1);
    insert(&b, 999, 1, "x");
    bw_parser *p = bw_parser_new(NULL, NULL);
    seen s = {0};
    char err[256];
    ASSERT_EQ(bw_parse_chunk(p, (const uint8_t *) b.data, b.len, collect, &s, err, sizeof(err)),
              -1);
    ASSERT_STR_CONTAINS(err, "relation 999 before its relation record");
    bw_parser_free(p);
    bw_buf_free(&b);
}

TEST(proto_callback_stops_parsing)
{
    bw_buf b;
    bw_buf_init(&b);
    transaction(&b);
    bw_parser *p = bw_parser_new(NULL, NULL);
    seen s = {0};
    s.stop_at = 3;
    char err[256];
    ASSERT_EQ(bw_parse_chunk(p, (const uint8_t *) b.data, b.len, collect, &s, err, sizeof(err)), 7);
    ASSERT_EQ(s.n, 3);
    bw_parser_free(p);
    bw_buf_free(&b);
}

TEST(proto_truncate_and_message)
{
    bw_buf b;
    bw_buf_init(&b);
    u8(&b, 1);
    relation(&b, 1, 3);
    relation(&b, 2, 3);
    size_t at = rec(&b, 'T');
    u8(&b, 3);
    u16(&b, 2);
    u32(&b, 1);
    u32(&b, 2);
    end(&b, at);
    at = rec(&b, 'M');
    u8(&b, 0);
    u64(&b, 0xABCDEF);
    name(&b, "app.x");
    u32(&b, 3);
    bw_buf_append(&b, "a\0b", 3);
    end(&b, at);
    bw_parser *p = bw_parser_new(NULL, NULL);
    char err[256];
    int n = 0;
    ASSERT_OK(
        bw_parse_chunk(p, (const uint8_t *) b.data, b.len, count_records, &n, err, sizeof(err)));
    ASSERT_EQ(n, 4);
    bw_parser_free(p);
    bw_buf_free(&b);
}

TEST(proto_lsn_text)
{
    char buf[18];
    uint64_t v;
    ASSERT_STR_EQ(bw_lsn_str(0x16B374D848ULL, buf), "16/B374D848");
    ASSERT_STR_EQ(bw_lsn_str(0, buf), "0/0");
    ASSERT_OK(bw_lsn_parse("16/B374D848", &v));
    ASSERT_EQ(v, 0x16B374D848ULL);
    ASSERT_EQ(bw_lsn_parse("16/B374D848x", &v), -1);
    ASSERT_EQ(bw_lsn_parse("nope", &v), -1);
}

/* ---- streamed transactions through the spool (spool.c) ---- */

typedef struct spool_fx {
    bw_spools *spools;
    bw_replay *job;
    seen out; /* what the replay routed */
} spool_fx;

static int spool_record(void *arg, const bw_record *r)
{
    spool_fx *fx = arg;
    char err[256];
    int taken = bw_spools_take(fx->spools, r, err, sizeof(err));
    if (taken < 0)
        unit_fail(__FILE__, __LINE__, "bw_spools_take: %s", err);
    if (taken == 0 && r->type == BW_REC_STREAM_COMMIT) {
        fx->job = bw_spools_replay_start(fx->spools, &r->u.xact, NULL, NULL, err, sizeof(err));
        if (fx->job == NULL)
            unit_fail(__FILE__, __LINE__, "replay: %s", err);
        int rc;
        while ((rc = bw_replay_step(fx->job, collect, &fx->out, err, sizeof(err))) == 0)
            ;
        if (rc != 1)
            unit_fail(__FILE__, __LINE__, "replay step %d: %s", rc, err);
        bw_replay_free(fx->job);
        fx->job = NULL;
    }
    return 0;
}

static void stream_start(bw_buf *b, uint32_t xid, int first)
{
    size_t at = rec(b, 'S');
    u32(b, xid);
    u8(b, (uint8_t) first);
    end(b, at);
}

static void subxact(bw_buf *b, uint32_t xid)
{
    size_t at = rec(b, 'X');
    u32(b, xid);
    end(b, at);
}

static void stream_abort(bw_buf *b, uint32_t xid, uint32_t subxid)
{
    size_t at = rec(b, 'A');
    u32(b, xid);
    u32(b, subxid);
    u64(b, 0x500);
    end(b, at);
}

static void parse_all(bw_parser *p, bw_buf *b, spool_fx *fx)
{
    char err[256];
    if (bw_parse_chunk(p, (const uint8_t *) b->data, b->len, spool_record, fx, err, sizeof(err)))
        unit_fail(__FILE__, __LINE__, "parse: %s", err);
    bw_buf_reset(b);
    u8(b, 1);
}

TEST(spool_savepoint_abort_ddl_and_replay)
{
    spool_fx fx = {bw_spools_new(NULL), NULL, {0}};
    bw_parser *p = bw_parser_new(NULL, NULL);
    bw_buf b;
    bw_buf_init(&b);
    u8(&b, 1);

    /* block 1: rows 1-2 of the top transaction, rows 3-4 in subtransaction 101 */
    stream_start(&b, 100, 1);
    relation(&b, 16384, 3);
    subxact(&b, 100);
    insert(&b, 16384, 1, "a");
    insert(&b, 16384, 2, "b");
    subxact(&b, 101);
    insert(&b, 16384, 3, "rolled back");
    subxact(&b, 102); /* a child of 101: rolls back with it */
    insert(&b, 16384, 4, "rolled back too");
    (void) rec(&b, 'E'), end(&b, b.len - 4);
    parse_all(p, &b, &fx);
    ASSERT_EQ(bw_spools_count(fx.spools), 1);
    ASSERT_EQ(fx.out.n, 0); /* nothing routed before the commit */

    /* the relation is sent again between the blocks (a new version): the spool writes it before
     * the next change, so the replay decodes each change with its own version */
    relation(&b, 16384, 3);
    stream_abort(&b, 100, 101);
    stream_start(&b, 100, 0);
    subxact(&b, 103); /* a savepoint after the rollback: kept */
    insert(&b, 16384, 5, "kept");
    (void) rec(&b, 'E'), end(&b, b.len - 4);
    xact(&b, 'K', 100, 0x400, 0x480, 1700000000000000LL);
    parse_all(p, &b, &fx);

    /* BEGIN, the relation, 1, 2, its next version, 5, COMMIT: nothing of 101 and 102 */
    ASSERT_EQ(fx.out.n, 7);
    ASSERT_EQ(fx.out.types[0], BW_REC_BEGIN);
    ASSERT_EQ(fx.out.xacts[0].end_lsn, 0x480);
    ASSERT_EQ(fx.out.types[1], BW_REC_RELATION);
    ASSERT_STR_EQ(fx.out.note[2], "a");
    ASSERT_STR_EQ(fx.out.note[3], "b");
    ASSERT_EQ(fx.out.types[4], BW_REC_RELATION);
    ASSERT_STR_EQ(fx.out.note[5], "kept");
    ASSERT_EQ(fx.out.types[6], BW_REC_COMMIT);
    ASSERT_EQ(bw_spools_count(fx.spools), 0);
    ASSERT_EQ(bw_spools_bytes(fx.spools), 0);

    /* a whole abort drops the spool; a first block again starts over */
    stream_start(&b, 200, 1);
    subxact(&b, 200);
    insert(&b, 16384, 9, "x");
    (void) rec(&b, 'E'), end(&b, b.len - 4);
    parse_all(p, &b, &fx);
    ASSERT_EQ(bw_spools_count(fx.spools), 1);
    ASSERT_GT(bw_spools_bytes(fx.spools), 0);
    stream_abort(&b, 200, 200);
    parse_all(p, &b, &fx);
    ASSERT_EQ(bw_spools_count(fx.spools), 0);
    ASSERT_EQ(fx.out.n, 7);

    bw_buf_free(&b);
    bw_parser_free(p);
    bw_spools_free(fx.spools);
}
