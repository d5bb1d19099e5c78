/*
 * breakwater.h
 *		Types shared by the breakwater output plugin's files: the parsed options,
 *		the per-relation decisions, the per-session and per-transaction state.
 */
#ifndef BREAKWATER_H
#define BREAKWATER_H

#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "replication/logical.h"
#include "replication/reorderbuffer.h"
#include "utils/rel.h"

#define BW_PROTOCOL_VERSION 1

/* what a row whose tenant cannot be found becomes */
typedef enum BwMissingTenant
{
	BW_MISSING_PASS,
	BW_MISSING_DROP,
	BW_MISSING_ERROR
} BwMissingTenant;

typedef enum BwFormat
{
	BW_FORMAT_BINARY,
	BW_FORMAT_JSON
} BwFormat;

typedef enum BwValueEncoding
{
	BW_VALUES_AUTO,
	BW_VALUES_TEXT,
	BW_VALUES_SEND
} BwValueEncoding;

#define BW_ACTION_INSERT   0x01
#define BW_ACTION_UPDATE   0x02
#define BW_ACTION_DELETE   0x04
#define BW_ACTION_TRUNCATE 0x08

/* A "schema.table" (or "schema.table.column") pattern; '*' matches any run of characters. */
typedef struct BwPattern
{
	char *parts[3];
	int nparts;
} BwPattern;

/* "pattern=column" from tenant-columns */
typedef struct BwTenantRule
{
	BwPattern table;
	char *column;
} BwTenantRule;

typedef struct BwOptions
{
	BwFormat format;
	BwValueEncoding value_encoding;
	List *tables;         /* of BwPattern *; NIL = every table */
	List *exclude_tables; /* of BwPattern * */
	char *tenant_column;
	List *tenant_rules; /* of BwTenantRule * */
	BwMissingTenant missing_tenant;
	List *exclude_columns;  /* of BwPattern * with 3 parts */
	int actions;            /* BW_ACTION_* bits */
	List *message_prefixes; /* of char * patterns; NIL = no messages */
	int write_chunk_bytes;  /* -1 = the format's default */
	bool streaming;         /* stream in-progress transactions (binary only) */
} BwOptions;

/*
 * How one column's values are written. Decided once per relation (type lookups, output
 * functions), so that the per-change work is a switch on 'kind'.
 */
typedef enum BwTypeKind
{
	BW_T_OTHER, /* output (or send) function */
	BW_T_BOOL,
	BW_T_INT2,
	BW_T_INT4,
	BW_T_INT8,
	BW_T_OID,
	BW_T_FLOAT4,
	BW_T_FLOAT8,
	BW_T_NUMERIC,
	BW_T_DATE,
	BW_T_TIME,
	BW_T_TIMETZ,
	BW_T_TIMESTAMP,
	BW_T_TIMESTAMPTZ,
	BW_T_INTERVAL,
	BW_T_UUID,
	BW_T_BYTEA,
	BW_T_TEXT, /* text, varchar, bpchar: the stored bytes are the text form */
	BW_T_NAME,
	BW_T_JSON, /* json: stored text, valid JSON */
	BW_T_JSONB
} BwTypeKind;

typedef struct BwColumn
{
	AttrNumber attnum; /* in the relation's tuple descriptor, 1-based */
	char *name;
	Oid typid;
	int32 typmod;
	int16 typlen;
	BwTypeKind kind;
	char format; /* binary protocol value format: 'b' or 't' */
	bool is_key;
	bool is_tenant;
	FmgrInfo out_fn;  /* text output function */
	FmgrInfo send_fn; /* binary send function, when format is 'b' and kind is OTHER */
} BwColumn;

/* A deformed tuple: values and nulls indexed by attnum - 1. */
typedef struct BwTuple
{
	Datum *values;
	bool *nulls;
} BwTuple;

/* Everything decided about one relation, keyed by relid. */
typedef struct BwRelation
{
	Oid relid;     /* hash key */
	bool valid;    /* cleared by invalidation callbacks */
	bool building; /* set while build() runs: still set means an error cut it short */
	bool sent;     /* relation record written in this session */
	bool included;
	bool warned;       /* one warning per relation, never one per row */
	MemoryContext cxt; /* everything below lives here; reset on rebuild */
	char *schema;
	char *table;
	char replident;
	int ncolumns; /* emitted columns */
	BwColumn *columns;
	int nkeys;
	int *keys;                /* indexes into columns[] */
	char *tenant_name;        /* configured tenant column name, NULL if none matched */
	int tenant_col;           /* index into columns[], -1 if not emitted */
	AttrNumber tenant_attnum; /* in the descriptor, 0 if the table lacks the column */
	BwColumn tenant;          /* how to print the tenant (type of the tenant column) */
	bool tenant_in_identity;  /* does a DELETE's old tuple carry the tenant? */
	int natts;                /* size of the arrays below: the descriptor's natts */
	BwTuple old;              /* reused for every change: no allocation per change */
	BwTuple new;
} BwRelation;

/* Per decoding session: lives in ctx->context. */
typedef struct BwData
{
	BwOptions opts;
	MemoryContext change_cxt; /* reset after every change */
	MemoryContext cache_cxt;  /* relation cache */
	StringInfo chunk;         /* records waiting to be written */
	int chunk_limit;          /* flush once the chunk reaches this many bytes */
	int record_start;         /* chunk length before the record being written */
	bool record_open;         /* a record is being written (see bw_chunk_begin_record) */
	int guc_nestlevel;        /* SQL interface: output settings restored at shutdown */
	pg_tz *utc;
} BwData;

/*
 * Per transaction: txn->output_plugin_private. A streamed transaction keeps it in its top-level
 * txn from its first stream block to its stream commit or abort.
 */
typedef struct BwTxn
{
	bool opened;          /* B written; when streaming, this block's S written */
	bool streamed;        /* an S was written for this transaction in this session */
	TransactionId subxid; /* streaming: xid of this block's last X record, or invalid */
	uint64 skipped;       /* changes filtered out since the last progress update */
} BwTxn;

/* breakwater.c */
extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

/* bw_options.c */
extern void bw_parse_options(BwOptions *opts, List *options);

/* bw_pattern.c */
extern void bw_parse_pattern_list(const char *option, const char *value, int nparts, List **out);
extern void bw_parse_tenant_rules(const char *option, const char *value, List **out);
extern void bw_parse_name_list(const char *option, const char *value, const char *hint, List **out);
extern bool bw_pattern_match(const BwPattern *p, const char *a, const char *b, const char *c);
extern bool bw_glob_match(const char *pattern, const char *s);

/* bw_relcache.c */
extern void bw_relcache_init(BwData *data);
extern void bw_relcache_destroy(void);
extern BwRelation *bw_relcache_get(BwData *data, Relation rel);

/* bw_values.c */
extern void bw_column_setup(BwColumn *col, Oid typid, int32 typmod, BwValueEncoding enc);
extern char *bw_value_text(BwColumn *col, Datum value);
extern const char *bw_value_text_fast(BwColumn *col, Datum value, char *buf, size_t *len);

/* bw_output.c */
extern void bw_chunk_begin_record(BwData *data);
extern void bw_chunk_end_record(LogicalDecodingContext *ctx, BwData *data, bool end_of_txn);
extern void bw_chunk_flush(LogicalDecodingContext *ctx, BwData *data, bool last_write);
extern void bw_chunk_drop_partial_record(BwData *data);

/* bw_binary.c */
extern void bw_binary_begin(StringInfo out, ReorderBufferTXN *txn);
extern void bw_binary_commit(StringInfo out, ReorderBufferTXN *txn);
extern void bw_binary_stream_start(StringInfo out, TransactionId xid, bool first);
extern void bw_binary_stream_stop(StringInfo out);
extern void bw_binary_subxact(StringInfo out, TransactionId subxid);
extern void bw_binary_stream_abort(StringInfo out, TransactionId xid, TransactionId subxid,
								   XLogRecPtr abort_lsn);
extern void bw_binary_stream_commit(StringInfo out, ReorderBufferTXN *txn);
extern void bw_binary_relation(StringInfo out, BwRelation *rel);
extern void bw_binary_change(StringInfo out, BwRelation *rel, char op, Datum tenant, bool has_tenant,
							 BwTuple *oldtuple, char oldkind, BwTuple *newtuple);
extern void bw_binary_truncate(StringInfo out, int nrelids, Oid *relids, bool cascade, bool restart);
extern void bw_binary_message(StringInfo out, bool transactional, XLogRecPtr lsn, const char *prefix,
							  Size size, const char *message);

/* bw_json.c */
extern void bw_json_change(StringInfo out, BwData *data, ReorderBufferTXN *txn, XLogRecPtr lsn,
						   BwRelation *rel, char op, Datum tenant, bool has_tenant, BwTuple *oldtuple,
						   char oldkind, BwTuple *newtuple);
extern void bw_json_truncate(StringInfo out, BwData *data, ReorderBufferTXN *txn, XLogRecPtr lsn, int nrels,
							 BwRelation **rels, bool cascade, bool restart);
extern void bw_json_message(StringInfo out, BwData *data, ReorderBufferTXN *txn, bool transactional,
							XLogRecPtr lsn, const char *prefix, Size size, const char *message);

#endif /* BREAKWATER_H */
