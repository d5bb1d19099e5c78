/*
 * proto.h — the reader of the decoder's binary protocol (docs/protocol.md, version 1): chunks in,
 * records out, with the relid → relation map of the decoding session.
 *
 * Records point into the chunk being parsed and into the parser's scratch arrays: they are valid
 * only during the callback. Relations live until replaced by a newer R record for the same relid
 * (then `generation` grows) or until the parser is freed.
 */
#ifndef BW_PROTO_H
#define BW_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BW_PROTO_VERSION 1

/* PostgreSQL type oids the relay decodes (values in 'b' format; see docs/protocol.md) */
enum {
    BW_OID_BOOL = 16,
    BW_OID_BYTEA = 17,
    BW_OID_NAME = 19,
    BW_OID_INT8 = 20,
    BW_OID_INT2 = 21,
    BW_OID_INT4 = 23,
    BW_OID_TEXT = 25,
    BW_OID_OID = 26,
    BW_OID_JSON = 114,
    BW_OID_FLOAT4 = 700,
    BW_OID_FLOAT8 = 701,
    BW_OID_BPCHAR = 1042,
    BW_OID_VARCHAR = 1043,
    BW_OID_DATE = 1082,
    BW_OID_TIME = 1083,
    BW_OID_TIMESTAMP = 1114,
    BW_OID_TIMESTAMPTZ = 1184,
    BW_OID_INTERVAL = 1186,
    BW_OID_TIMETZ = 1266,
    BW_OID_NUMERIC = 1700,
    BW_OID_UUID = 2950,
    BW_OID_JSONB = 3802,
};

#define BW_COL_KEY 0x01
#define BW_COL_TENANT 0x02

typedef struct bw_value {
    char kind; /* 'n' NULL, 'u' unchanged TOAST, 'b' binary, 't' text */
    const uint8_t *data;
    uint32_t len;
} bw_value;

typedef struct bw_column {
    uint8_t flags; /* BW_COL_* */
    char format;   /* 'b' or 't' */
    char *name;    /* NUL-terminated copy */
    uint32_t type_oid;
    int32_t typmod;
} bw_column;

typedef struct bw_relation {
    uint32_t relid;
    uint32_t generation; /* 1 for the first R record of this relid, +1 per later one */
    char *schema;
    char *table;
    char replident;      /* 'd', 'n', 'f', 'i' */
    char *tenant_column; /* "" when none */
    uint16_t ncolumns;
    bw_column *columns;
    uint16_t nkeys;
    uint16_t *keys; /* indexes into columns[] of the key columns, in order */
    void *user;     /* for the relay's per-relation state (e.g. topic); see bw_parser_new */
    uint8_t *raw;   /* the framed R record itself, to replay it (streamed transactions) */
    uint32_t raw_len;
} bw_relation;

typedef enum bw_record_type {
    BW_REC_BEGIN,
    BW_REC_COMMIT,
    BW_REC_RELATION,
    BW_REC_INSERT,
    BW_REC_UPDATE,
    BW_REC_DELETE,
    BW_REC_TRUNCATE,
    BW_REC_MESSAGE,
    /* streamed transactions (docs/protocol.md, "Streamed transactions") */
    BW_REC_STREAM_START,
    BW_REC_STREAM_STOP,
    BW_REC_SUBXACT,
    BW_REC_STREAM_ABORT,
    BW_REC_STREAM_COMMIT,
    /* made by the relay, not the protocol: a row read by a snapshot (snapshot.c) */
    BW_REC_READ,
} bw_record_type;

typedef struct bw_xact {
    uint32_t xid;
    uint64_t commit_lsn;
    uint64_t end_lsn;
    int64_t commit_time; /* microseconds since the Unix epoch */
} bw_xact;

typedef struct bw_change {
    const bw_relation *rel;
    bw_value tenant; /* kind 't' or 'n' */
    char old_kind;   /* 'K' key only, 'O' whole old row, 'X' none */
    uint16_t nold;   /* K: rel->nkeys values (key columns in order); O: rel->ncolumns */
    const bw_value *old;
    uint16_t nnew; /* rel->ncolumns for insert/update, 0 for delete */
    const bw_value *new_;
} bw_change;

typedef struct bw_truncate {
    uint8_t options; /* bit 0 CASCADE, bit 1 RESTART IDENTITY */
    uint16_t nrels;
    const bw_relation *const *rels;
} bw_truncate;

typedef struct bw_message {
    bool transactional;
    uint64_t lsn;
    const char *prefix; /* not NUL-terminated */
    uint16_t prefix_len;
    const uint8_t *content;
    uint32_t content_len;
} bw_message;

typedef struct bw_stream_start {
    uint32_t xid;
    bool first; /* the transaction's first block in this session */
} bw_stream_start;

typedef struct bw_stream_abort {
    uint32_t xid;
    uint32_t subxid; /* == xid: the whole transaction */
    uint64_t abort_lsn;
} bw_stream_abort;

typedef struct bw_record {
    bw_record_type type;
    uint32_t size;      /* framed size in bytes (header included): for accounting */
    const uint8_t *raw; /* the framed record (size bytes), valid during the callback */
    union {
        bw_xact xact;           /* BEGIN, COMMIT, STREAM_COMMIT */
        bw_stream_start stream; /* STREAM_START */
        uint32_t subxid;        /* SUBXACT */
        bw_stream_abort abort;  /* STREAM_ABORT */
        const bw_relation *rel; /* RELATION */
        bw_change change;       /* INSERT, UPDATE, DELETE */
        bw_truncate truncate;   /* TRUNCATE */
        bw_message message;     /* MESSAGE */
    } u;
} bw_record;

typedef struct bw_parser bw_parser;

/* Called for each record; a non-zero return stops parsing and is returned by bw_parse_chunk. */
typedef int (*bw_record_cb)(void *arg, const bw_record *rec);
/* Called when a relation is replaced or the parser freed, to release rel->user. */
typedef void (*bw_relation_free_cb)(void *arg, bw_relation *rel);

bw_parser *bw_parser_new(bw_relation_free_cb free_user, void *free_arg);
/* A parser that knows src's relations (their latest versions), and nothing else of it. */
bw_parser *bw_parser_copy(const bw_parser *src, bw_relation_free_cb free_user, void *free_arg);
void bw_parser_free(bw_parser *p);

/*
 * Parses one chunk. Returns 0, the callback's non-zero value, or -1 on malformed input with a
 * message in err (what was wrong and where).
 */
int bw_parse_chunk(bw_parser *p, const uint8_t *data, size_t len, bw_record_cb cb, void *arg,
                   char *err, size_t errlen);

const bw_relation *bw_parser_relation(const bw_parser *p, uint32_t relid);

/*
 * Checks that a change's tuples fit its relation (key indexes, old key or row, and the new row
 * when need_new), so that encoders stay in bounds. Returns 0, or -1 with err set to
 * "table \"s.t\": <what does not fit>".
 */
int bw_change_check(const bw_change *c, bool need_new, char *err, size_t errlen);

/*
 * Where a change's key comes from: the old key (*key_tuple: values in key order) or old row when
 * it has one, else the new row; NULL when it has none (no key columns, or a keyless delete).
 */
const bw_value *bw_change_key_source(const bw_change *c, bool *key_tuple);

/* The name of a record type as messages and headers spell it: "insert", "update", "delete",
 * "truncate", "message", "read"; "?" for the others. */
const char *bw_record_op(bw_record_type t);

/* Big-endian integers of the protocol and of PostgreSQL's send formats; p must hold them. */
static inline uint16_t bw_rd16(const uint8_t *p)
{
    return (uint16_t) ((unsigned) p[0] << 8 | p[1]);
}

static inline uint32_t bw_rd32(const uint8_t *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static inline uint64_t bw_rd64(const uint8_t *p)
{
    return (uint64_t) bw_rd32(p) << 32 | bw_rd32(p + 4);
}

/* "X/X" as PostgreSQL prints an LSN; buf of at least 18 bytes. */
const char *bw_lsn_str(uint64_t lsn, char *buf);
/* Parses "X/X"; returns 0 on success. */
int bw_lsn_parse(const char *s, uint64_t *lsn);

#endif
