/*
 * bw_values.c
 *		What kind of value a column holds and in which format the binary protocol writes it;
 *		decided once per column when a relation's decisions are built, so that per-change
 *		code only switches on the kind. Also the text form of a value (tenant tags, 't' values).
 */
#include "breakwater.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

static BwTypeKind
kind_of(Oid basetype)
{
	switch (basetype)
	{
		case BOOLOID:
			return BW_T_BOOL;
		case INT2OID:
			return BW_T_INT2;
		case INT4OID:
			return BW_T_INT4;
		case INT8OID:
			return BW_T_INT8;
		case OIDOID:
			return BW_T_OID;
		case FLOAT4OID:
			return BW_T_FLOAT4;
		case FLOAT8OID:
			return BW_T_FLOAT8;
		case NUMERICOID:
			return BW_T_NUMERIC;
		case DATEOID:
			return BW_T_DATE;
		case TIMEOID:
			return BW_T_TIME;
		case TIMETZOID:
			return BW_T_TIMETZ;
		case TIMESTAMPOID:
			return BW_T_TIMESTAMP;
		case TIMESTAMPTZOID:
			return BW_T_TIMESTAMPTZ;
		case INTERVALOID:
			return BW_T_INTERVAL;
		case UUIDOID:
			return BW_T_UUID;
		case BYTEAOID:
			return BW_T_BYTEA;
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
			return BW_T_TEXT;
		case NAMEOID:
			return BW_T_NAME;
		case JSONOID:
			return BW_T_JSON;
		case JSONBOID:
			return BW_T_JSONB;
		default:
			return BW_T_OTHER;
	}
}

/* Kinds whose 'b' form the protocol documents (and the relay decodes). */
static bool
has_documented_binary(BwTypeKind kind)
{
	switch (kind)
	{
		case BW_T_BOOL:
		case BW_T_INT2:
		case BW_T_INT4:
		case BW_T_INT8:
		case BW_T_OID:
		case BW_T_FLOAT4:
		case BW_T_FLOAT8:
		case BW_T_NUMERIC:
		case BW_T_DATE:
		case BW_T_TIME:
		case BW_T_TIMETZ:
		case BW_T_TIMESTAMP:
		case BW_T_TIMESTAMPTZ:
		case BW_T_INTERVAL:
		case BW_T_UUID:
		case BW_T_BYTEA:
			return true;
		default:
			return false;
	}
}

/* Call in the memory context that should own the function lookups. */
void
bw_column_setup(BwColumn *col, Oid typid, int32 typmod, BwValueEncoding enc)
{
	Oid outfn;
	bool isvarlena;
	HeapTuple tup;
	Oid typsend;

	/*
	 * A domain's values are written as its base type's, so the relation record names the base
	 * type: a reader decodes by type oid.
	 */
	Oid basetype;
	int32 basetypmod = typmod;

	basetype = getBaseTypeAndTypmod(typid, &basetypmod);
	col->typid = basetype;
	col->typmod = typmod >= 0 ? typmod : basetypmod;
	col->typlen = get_typlen(typid);
	col->kind = kind_of(basetype);

	getTypeOutputInfo(typid, &outfn, &isvarlena);
	fmgr_info_cxt(outfn, &col->out_fn, CurrentMemoryContext);

	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for type %u", typid);
	typsend = ((Form_pg_type) GETSTRUCT(tup))->typsend;
	ReleaseSysCache(tup);

	switch (enc)
	{
		case BW_VALUES_TEXT:
			col->format = 't';
			break;
		case BW_VALUES_AUTO:
			col->format = has_documented_binary(col->kind) ? 'b' : 't';
			break;
		case BW_VALUES_SEND:
			col->format = OidIsValid(typsend) ? 'b' : 't';
			break;
	}

	/*
	 * Binary values without a hand-written fast path go through the type's send function.
	 * Text-like kinds are written as their stored bytes, which is what their send function would
	 * produce in the server encoding.
	 */
	if (col->format == 'b' &&
		(col->kind == BW_T_OTHER || col->kind == BW_T_NUMERIC || col->kind == BW_T_JSONB))
		fmgr_info_cxt(typsend, &col->send_fn, CurrentMemoryContext);
}

/* Text form of a value, palloc'd in the current (per-change) context. */
char *
bw_value_text(BwColumn *col, Datum value)
{
	switch (col->kind)
	{
		case BW_T_TEXT:
			return TextDatumGetCString(value);
		case BW_T_NAME:
			return pstrdup(NameStr(*DatumGetName(value)));
		default:
			return OutputFunctionCall(&col->out_fn, value);
	}
}

/*
 * Text form without allocation for the common tenant types (integers, text); others fall back to
 * the output function. 'buf' must hold at least 24 bytes. The result is not NUL-terminated.
 */
const char *
bw_value_text_fast(BwColumn *col, Datum value, char *buf, size_t *len)
{
	switch (col->kind)
	{
		case BW_T_INT2:
			*len = pg_ltoa(DatumGetInt16(value), buf);
			return buf;
		case BW_T_INT4:
			*len = pg_ltoa(DatumGetInt32(value), buf);
			return buf;
		case BW_T_INT8:
			*len = pg_lltoa(DatumGetInt64(value), buf);
			return buf;
		case BW_T_TEXT:
		{
			struct varlena *p = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(value));

			*len = VARSIZE_ANY_EXHDR(p);
			return VARDATA_ANY(p);
		}
		default:
		{
			char *s = bw_value_text(col, value);

			*len = strlen(s);
			return s;
		}
	}
}
