/*
 * bw_binary.c
 *		The bytes of the binary protocol (docs/protocol.md): one function per record. Callers
 *		decide what to send; this file only decides how it looks.
 */
#include "breakwater.h"

#include "access/htup_details.h"
#include "datatype/timestamp.h"
#include "port/pg_bswap.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* Microseconds between the PostgreSQL epoch (2000-01-01) and the Unix epoch. */
#define UNIX_EPOCH_OFFSET_USECS ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY)

/*
 * Writers assume room was reserved: a record is a run of small appends, and checking capacity
 * once per value instead of once per field keeps enlargeStringInfo off the per-change profile.
 */
static inline void
reserve(StringInfo out, int n)
{
	if (unlikely(out->len + n >= out->maxlen))
		enlargeStringInfo(out, n);
}

static inline void
raw_u8(StringInfo out, uint8 v)
{
	out->data[out->len++] = (char) v;
}

static inline void
raw_u16(StringInfo out, uint16 v)
{
	uint16 n = pg_hton16(v);

	memcpy(out->data + out->len, &n, sizeof(n));
	out->len += sizeof(n);
}

static inline void
raw_u32(StringInfo out, uint32 v)
{
	uint32 n = pg_hton32(v);

	memcpy(out->data + out->len, &n, sizeof(n));
	out->len += sizeof(n);
}

static inline void
raw_u64(StringInfo out, uint64 v)
{
	uint64 n = pg_hton64(v);

	memcpy(out->data + out->len, &n, sizeof(n));
	out->len += sizeof(n);
}

static inline void
put_u8(StringInfo out, uint8 v)
{
	reserve(out, 1);
	raw_u8(out, v);
}

static inline void
put_u16(StringInfo out, uint16 v)
{
	reserve(out, 2);
	raw_u16(out, v);
}

static inline void
put_u32(StringInfo out, uint32 v)
{
	reserve(out, 4);
	raw_u32(out, v);
}

static inline void
put_u64(StringInfo out, uint64 v)
{
	reserve(out, 8);
	raw_u64(out, v);
}

static inline void
put_name(StringInfo out, const char *s)
{
	size_t len = strlen(s);

	reserve(out, 2 + (int) len);
	raw_u16(out, (uint16) len);
	memcpy(out->data + out->len, s, len);
	out->len += (int) len;
}

static inline void
put_bytes_value(StringInfo out, char kind, const char *data, uint32 len)
{
	reserve(out, 5 + (int) len);
	raw_u8(out, (uint8) kind);
	raw_u32(out, len);
	memcpy(out->data + out->len, data, len);
	out->len += (int) len;
}

/* Start a framed record; returns the offset to hand to end_record. */
static inline int
start_record(StringInfo out, char tag)
{
	int start = out->len;

	put_u8(out, tag);
	put_u32(out, 0);
	return start;
}

static inline void
end_record(StringInfo out, int start)
{
	uint32 n = pg_hton32((uint32) (out->len - start - 5));

	memcpy(out->data + start + 1, &n, sizeof(n));
}

static inline void
put_fixed(StringInfo out, uint32 len, uint64 v)
{
	reserve(out, 5 + 8);
	raw_u8(out, 'b');
	raw_u32(out, len);
	switch (len)
	{
		case 1:
			raw_u8(out, (uint8) v);
			break;
		case 2:
			raw_u16(out, (uint16) v);
			break;
		case 4:
			raw_u32(out, (uint32) v);
			break;
		default:
			raw_u64(out, v);
			break;
	}
}

static void
put_value(StringInfo out, BwColumn *col, Datum v, bool isnull)
{
	if (isnull)
	{
		put_u8(out, 'n');
		return;
	}
	/* Never detoast an unchanged value: the TOAST data may be gone or invisible. */
	if (col->typlen == -1 && VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(v)))
	{
		put_u8(out, 'u');
		return;
	}
	if (col->format == 'b')
	{
		switch (col->kind)
		{
			case BW_T_BOOL:
				put_fixed(out, 1, DatumGetBool(v) ? 1 : 0);
				return;
			case BW_T_INT2:
				put_fixed(out, 2, (uint16) DatumGetInt16(v));
				return;
			case BW_T_INT4:
				put_fixed(out, 4, (uint32) DatumGetInt32(v));
				return;
			case BW_T_OID:
				put_fixed(out, 4, DatumGetObjectId(v));
				return;
			case BW_T_DATE:
				put_fixed(out, 4, (uint32) DatumGetDateADT(v));
				return;
			case BW_T_INT8:
				put_fixed(out, 8, (uint64) DatumGetInt64(v));
				return;
			case BW_T_TIME:
				put_fixed(out, 8, (uint64) DatumGetTimeADT(v));
				return;
			case BW_T_TIMESTAMP:
			case BW_T_TIMESTAMPTZ:
				put_fixed(out, 8, (uint64) DatumGetTimestamp(v));
				return;
			case BW_T_FLOAT4:
			{
				union
				{
					float4 f;
					uint32 i;
				} u;

				u.f = DatumGetFloat4(v);
				put_fixed(out, 4, u.i);
				return;
			}
			case BW_T_FLOAT8:
			{
				union
				{
					float8 f;
					uint64 i;
				} u;

				u.f = DatumGetFloat8(v);
				put_fixed(out, 8, u.i);
				return;
			}
			case BW_T_TIMETZ:
			{
				TimeTzADT *t = DatumGetTimeTzADTP(v);

				put_u8(out, 'b');
				put_u32(out, 12);
				put_u64(out, (uint64) t->time);
				put_u32(out, (uint32) t->zone);
				return;
			}
			case BW_T_INTERVAL:
			{
				Interval *i = DatumGetIntervalP(v);

				put_u8(out, 'b');
				put_u32(out, 16);
				put_u64(out, (uint64) i->time);
				put_u32(out, (uint32) i->day);
				put_u32(out, (uint32) i->month);
				return;
			}
			case BW_T_UUID:
				put_bytes_value(out, 'b', (char *) DatumGetUUIDP(v)->data, UUID_LEN);
				return;
			case BW_T_BYTEA:
			case BW_T_TEXT:
			case BW_T_JSON:
			{
				struct varlena *p = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(v));

				put_bytes_value(out, 'b', VARDATA_ANY(p), VARSIZE_ANY_EXHDR(p));
				return;
			}
			case BW_T_NAME:
			{
				const char *s = NameStr(*DatumGetName(v));

				put_bytes_value(out, 'b', s, strlen(s));
				return;
			}
			case BW_T_NUMERIC:
			case BW_T_JSONB:
			case BW_T_OTHER:
			{
				bytea *b = SendFunctionCall(&col->send_fn, v);

				put_bytes_value(out, 'b', VARDATA(b), VARSIZE(b) - VARHDRSZ);
				return;
			}
		}
	}
	switch (col->kind)
	{
		case BW_T_TEXT:
		case BW_T_JSON:
		{
			struct varlena *p = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(v));

			put_bytes_value(out, 't', VARDATA_ANY(p), VARSIZE_ANY_EXHDR(p));
			return;
		}
		default:
		{
			char *s = bw_value_text(col, v);

			put_bytes_value(out, 't', s, strlen(s));
			return;
		}
	}
}

static void
put_tuple(StringInfo out, BwRelation *rel, BwTuple *tuple, bool keys_only)
{
	int n = keys_only ? rel->nkeys : rel->ncolumns;
	int i;

	put_u16(out, (uint16) n);
	for (i = 0; i < n; i++)
	{
		BwColumn *col = &rel->columns[keys_only ? rel->keys[i] : i];
		put_value(out, col, tuple->values[col->attnum - 1], tuple->nulls[col->attnum - 1]);
	}
}

static void
put_xact(StringInfo out, char tag, ReorderBufferTXN *txn)
{
	int start = start_record(out, tag);

	put_u32(out, txn->xid);
	put_u64(out, txn->final_lsn);
	put_u64(out, txn->end_lsn);
	put_u64(out, (uint64) (txn->xact_time.commit_time + UNIX_EPOCH_OFFSET_USECS));
	end_record(out, start);
}

void
bw_binary_begin(StringInfo out, ReorderBufferTXN *txn)
{
	put_xact(out, 'B', txn);
}

void
bw_binary_commit(StringInfo out, ReorderBufferTXN *txn)
{
	put_xact(out, 'C', txn);
}

/* Streamed transactions (docs/protocol.md, "Streamed transactions"). */
void
bw_binary_stream_start(StringInfo out, TransactionId xid, bool first)
{
	int start = start_record(out, 'S');

	put_u32(out, xid);
	put_u8(out, first ? 1 : 0);
	end_record(out, start);
}

void
bw_binary_stream_stop(StringInfo out)
{
	end_record(out, start_record(out, 'E'));
}

void
bw_binary_subxact(StringInfo out, TransactionId subxid)
{
	int start = start_record(out, 'X');

	put_u32(out, subxid);
	end_record(out, start);
}

void
bw_binary_stream_abort(StringInfo out, TransactionId xid, TransactionId subxid, XLogRecPtr abort_lsn)
{
	int start = start_record(out, 'A');

	put_u32(out, xid);
	put_u32(out, subxid);
	put_u64(out, abort_lsn);
	end_record(out, start);
}

void
bw_binary_stream_commit(StringInfo out, ReorderBufferTXN *txn)
{
	put_xact(out, 'K', txn);
}

void
bw_binary_relation(StringInfo out, BwRelation *rel)
{
	int start = start_record(out, 'R');
	int i;

	put_u32(out, rel->relid);
	put_name(out, rel->schema);
	put_name(out, rel->table);
	put_u8(out, (uint8) rel->replident);
	put_name(out, rel->tenant_name ? rel->tenant_name : "");
	put_u16(out, (uint16) rel->ncolumns);
	for (i = 0; i < rel->ncolumns; i++)
	{
		BwColumn *col = &rel->columns[i];

		put_u8(out, (col->is_key ? 1 : 0) | (col->is_tenant ? 2 : 0));
		put_u8(out, (uint8) col->format);
		put_name(out, col->name);
		put_u32(out, col->typid);
		put_u32(out, (uint32) col->typmod);
	}
	end_record(out, start);
}

void
bw_binary_change(StringInfo out, BwRelation *rel, char op, Datum tenant, bool has_tenant, BwTuple *oldtuple,
				 char oldkind, BwTuple *newtuple)
{
	int start = start_record(out, op);

	put_u32(out, rel->relid);
	if (has_tenant)
	{
		char buf[32];
		size_t len;
		const char *s = bw_value_text_fast(&rel->tenant, tenant, buf, &len);

		put_bytes_value(out, 't', s, (uint32) len);
	}
	else
		put_u8(out, 'n');
	put_u8(out, (uint8) oldkind);
	if (oldkind != 'X')
		put_tuple(out, rel, oldtuple, oldkind == 'K');
	if (newtuple != NULL)
		put_tuple(out, rel, newtuple, false);
	end_record(out, start);
}

void
bw_binary_truncate(StringInfo out, int nrelids, Oid *relids, bool cascade, bool restart)
{
	int start = start_record(out, 'T');
	int i;

	put_u8(out, (cascade ? 1 : 0) | (restart ? 2 : 0));
	put_u16(out, (uint16) nrelids);
	for (i = 0; i < nrelids; i++)
		put_u32(out, relids[i]);
	end_record(out, start);
}

void
bw_binary_message(StringInfo out, bool transactional, XLogRecPtr lsn, const char *prefix, Size size,
				  const char *message)
{
	int start = start_record(out, 'M');

	put_u8(out, transactional ? 1 : 0);
	put_u64(out, lsn);
	put_name(out, prefix);
	put_u32(out, (uint32) size);
	appendBinaryStringInfoNT(out, message, size);
	end_record(out, start);
}
