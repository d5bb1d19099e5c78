/*
 * bw_json.c
 *		The JSON format: one object per change, for people reading a slot. The same facts as
 *		the binary format, rendered so that the output does not depend on the reading session's
 *		DateStyle, TimeZone or extra_float_digits: timestamps in ISO 8601, floats in shortest
 *		exact form, numeric as an exact string, bytea as hex, json/jsonb embedded.
 */
#include "breakwater.h"

#include <math.h>

#include "access/htup_details.h"
#include "common/shortest_dec.h"
#include "datatype/timestamp.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

static const char hexdigits[] = "0123456789abcdef";

/* A JSON string from 'len' bytes: quotes, backslashes and control characters escaped. */
static void
put_string(StringInfo out, const char *s, size_t len)
{
	const char *run = s;
	const char *end = s + len;
	const char *p;

	appendStringInfoCharMacro(out, '"');
	for (p = s; p < end; p++)
	{
		unsigned char c = (unsigned char) *p;
		const char *esc;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		appendBinaryStringInfoNT(out, run, p - run);
		run = p + 1;
		switch (c)
		{
			case '"':
				esc = "\\\"";
				break;
			case '\\':
				esc = "\\\\";
				break;
			case '\n':
				esc = "\\n";
				break;
			case '\r':
				esc = "\\r";
				break;
			case '\t':
				esc = "\\t";
				break;
			case '\b':
				esc = "\\b";
				break;
			case '\f':
				esc = "\\f";
				break;
			default:
				appendStringInfo(out, "\\u%04x", c);
				continue;
		}
		appendStringInfoString(out, esc);
	}
	appendBinaryStringInfoNT(out, run, end - run);
	appendStringInfoCharMacro(out, '"');
}

static inline void
put_cstring(StringInfo out, const char *s)
{
	put_string(out, s, strlen(s));
}

static void
put_lsn(StringInfo out, XLogRecPtr lsn)
{
	appendStringInfo(out, "\"%X/%X\"", LSN_FORMAT_ARGS(lsn));
}

static void
put_timestamp(StringInfo out, Timestamp ts, bool with_tz, pg_tz *utc)
{
	struct pg_tm tm;
	fsec_t fsec;
	int tz = 0;
	char buf[MAXDATELEN + 1];

	if (TIMESTAMP_NOT_FINITE(ts))
	{
		appendStringInfoString(out, TIMESTAMP_IS_NOBEGIN(ts) ? "\"-infinity\"" : "\"infinity\"");
		return;
	}
	if (timestamp2tm(ts, with_tz ? &tz : NULL, &tm, &fsec, NULL, with_tz ? utc : NULL) != 0)
		ereport(ERROR, (errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE), errmsg("timestamp out of range")));
	EncodeDateTime(&tm, fsec, with_tz, tz, NULL, USE_XSD_DATES, buf);
	appendStringInfoCharMacro(out, '"');
	appendStringInfoString(out, buf);
	appendStringInfoCharMacro(out, '"');
}

static void
put_float(StringInfo out, double v, bool is_float4)
{
	char buf[32];

	if (isnan(v))
		appendStringInfoString(out, "\"NaN\"");
	else if (isinf(v))
		appendStringInfoString(out, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
	else
	{
		int len = is_float4 ? float_to_shortest_decimal_bufn((float) v, buf)
							: double_to_shortest_decimal_bufn(v, buf);

		appendBinaryStringInfoNT(out, buf, len);
	}
}

static void
put_value(StringInfo out, BwColumn *col, Datum v, pg_tz *utc)
{
	char buf[MAXDATELEN + 1];
	struct pg_tm tm;
	fsec_t fsec;

	switch (col->kind)
	{
		case BW_T_BOOL:
			appendStringInfoString(out, DatumGetBool(v) ? "true" : "false");
			return;
		case BW_T_INT2:
			appendBinaryStringInfoNT(out, buf, pg_ltoa(DatumGetInt16(v), buf));
			return;
		case BW_T_INT4:
			appendBinaryStringInfoNT(out, buf, pg_ltoa(DatumGetInt32(v), buf));
			return;
		case BW_T_INT8:
			appendBinaryStringInfoNT(out, buf, pg_lltoa(DatumGetInt64(v), buf));
			return;
		case BW_T_OID:
			appendBinaryStringInfoNT(out, buf, pg_ultoa_n(DatumGetObjectId(v), buf));
			return;
		case BW_T_FLOAT4:
			put_float(out, DatumGetFloat4(v), true);
			return;
		case BW_T_FLOAT8:
			put_float(out, DatumGetFloat8(v), false);
			return;
		case BW_T_TIMESTAMP:
			put_timestamp(out, DatumGetTimestamp(v), false, utc);
			return;
		case BW_T_TIMESTAMPTZ:
			put_timestamp(out, DatumGetTimestampTz(v), true, utc);
			return;
		case BW_T_DATE:
		{
			DateADT d = DatumGetDateADT(v);

			if (DATE_NOT_FINITE(d))
			{
				appendStringInfoString(out, DATE_IS_NOBEGIN(d) ? "\"-infinity\"" : "\"infinity\"");
				return;
			}
			j2date(d + POSTGRES_EPOCH_JDATE, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
			EncodeDateOnly(&tm, USE_XSD_DATES, buf);
			put_cstring(out, buf);
			return;
		}
		case BW_T_TIME:
			time2tm(DatumGetTimeADT(v), &tm, &fsec);
			EncodeTimeOnly(&tm, fsec, false, 0, USE_XSD_DATES, buf);
			put_cstring(out, buf);
			return;
		case BW_T_TIMETZ:
		{
			int tz;

			timetz2tm(DatumGetTimeTzADTP(v), &tm, &fsec, &tz);
			EncodeTimeOnly(&tm, fsec, true, tz, USE_XSD_DATES, buf);
			put_cstring(out, buf);
			return;
		}
		case BW_T_INTERVAL:
		{
			struct pg_itm itm;

			interval2itm(*DatumGetIntervalP(v), &itm);
			EncodeInterval(&itm, INTSTYLE_ISO_8601, buf);
			put_cstring(out, buf);
			return;
		}
		case BW_T_BYTEA:
		{
			struct varlena *p = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(v));
			const unsigned char *d = (const unsigned char *) VARDATA_ANY(p);
			size_t len = VARSIZE_ANY_EXHDR(p);
			size_t i;
			char *w;

			enlargeStringInfo(out, (int) (len * 2 + 2));
			w = out->data + out->len;
			*w++ = '"';
			for (i = 0; i < len; i++)
			{
				*w++ = hexdigits[d[i] >> 4];
				*w++ = hexdigits[d[i] & 0xf];
			}
			*w++ = '"';
			out->len += (int) (len * 2 + 2);
			out->data[out->len] = '\0';
			return;
		}
		case BW_T_TEXT:
		{
			struct varlena *p = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(v));

			put_string(out, VARDATA_ANY(p), VARSIZE_ANY_EXHDR(p));
			return;
		}
		case BW_T_JSON:
		{
			/* json is stored as the text it was given, validated on input */
			struct varlena *p = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(v));

			appendBinaryStringInfoNT(out, VARDATA_ANY(p), VARSIZE_ANY_EXHDR(p));
			return;
		}
		case BW_T_JSONB:
			appendStringInfoString(out, bw_value_text(col, v));
			return;
		case BW_T_NAME:
		case BW_T_NUMERIC:
		case BW_T_UUID:
		case BW_T_OTHER:
			put_cstring(out, bw_value_text(col, v));
			return;
	}
}

/*
 * Writes {"col":value,...} for a tuple; unchanged TOASTed columns are left out of the object
 * and their names collected in 'unchanged'.
 */
static void
put_row(StringInfo out, BwRelation *rel, BwTuple *tuple, bool keys_only, pg_tz *utc, List **unchanged)
{
	int n = keys_only ? rel->nkeys : rel->ncolumns;
	bool first = true;
	int i;

	appendStringInfoCharMacro(out, '{');
	for (i = 0; i < n; i++)
	{
		BwColumn *col = &rel->columns[keys_only ? rel->keys[i] : i];
		bool isnull = tuple->nulls[col->attnum - 1];
		Datum v = tuple->values[col->attnum - 1];

		if (!isnull && col->typlen == -1 && VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(v)))
		{
			if (unchanged)
				*unchanged = lappend(*unchanged, col->name);
			continue;
		}
		if (!first)
			appendStringInfoCharMacro(out, ',');
		first = false;
		put_cstring(out, col->name);
		appendStringInfoCharMacro(out, ':');
		if (isnull)
			appendStringInfoString(out, "null");
		else
			put_value(out, col, v, utc);
	}
	appendStringInfoCharMacro(out, '}');
}

static void
put_header(StringInfo out, BwData *data, ReorderBufferTXN *txn, const char *op, XLogRecPtr lsn)
{
	appendStringInfoString(out, "{\"op\":\"");
	appendStringInfoString(out, op);
	appendStringInfoString(out, "\",\"lsn\":");
	put_lsn(out, lsn);
	if (txn != NULL)
	{
		appendStringInfo(out, ",\"xid\":%u,\"commit_lsn\":", txn->xid);
		put_lsn(out, txn->final_lsn);
		appendStringInfoString(out, ",\"commit_time\":");
		put_timestamp(out, txn->xact_time.commit_time, true, data->utc);
	}
}

static void
put_relation_name(StringInfo out, BwRelation *rel)
{
	appendStringInfoString(out, "\"schema\":");
	put_cstring(out, rel->schema);
	appendStringInfoString(out, ",\"table\":");
	put_cstring(out, rel->table);
}

void
bw_json_change(StringInfo out, BwData *data, ReorderBufferTXN *txn, XLogRecPtr lsn, BwRelation *rel, char op,
			   Datum tenant, bool has_tenant, BwTuple *oldtuple, char oldkind, BwTuple *newtuple)
{
	List *unchanged = NIL;

	put_header(out, data, txn, op == 'I' ? "insert" : op == 'U' ? "update" : "delete", lsn);
	appendStringInfoCharMacro(out, ',');
	put_relation_name(out, rel);
	appendStringInfoString(out, ",\"tenant\":");
	if (has_tenant)
		put_cstring(out, bw_value_text(&rel->tenant, tenant));
	else
		appendStringInfoString(out, "null");

	/* "key": from the old key when the change has one, else from the new row */
	appendStringInfoString(out, ",\"key\":");
	if (rel->nkeys == 0)
		appendStringInfoString(out, "null");
	else if (oldkind != 'X')
		put_row(out, rel, oldtuple, true, data->utc, NULL);
	else if (newtuple != NULL)
		put_row(out, rel, newtuple, true, data->utc, NULL);
	else
		appendStringInfoString(out, "null");
	if (op == 'D' && oldkind == 'X')
		appendStringInfoString(out, ",\"keyless\":true");
	if (oldkind == 'O')
	{
		appendStringInfoString(out, ",\"old\":");
		put_row(out, rel, oldtuple, false, data->utc, NULL);
	}
	if (newtuple != NULL)
	{
		appendStringInfoString(out, ",\"new\":");
		put_row(out, rel, newtuple, false, data->utc, &unchanged);
	}
	if (unchanged != NIL)
	{
		ListCell *lc;

		appendStringInfoString(out, ",\"unchanged_toast\":[");
		foreach (lc, unchanged)
		{
			if (lc != list_head(unchanged))
				appendStringInfoCharMacro(out, ',');
			put_cstring(out, lfirst(lc));
		}
		appendStringInfoCharMacro(out, ']');
	}
	appendStringInfoCharMacro(out, '}');
}

void
bw_json_truncate(StringInfo out, BwData *data, ReorderBufferTXN *txn, XLogRecPtr lsn, int nrels,
				 BwRelation **rels, bool cascade, bool restart)
{
	int i;

	put_header(out, data, txn, "truncate", lsn);
	appendStringInfoString(out, ",\"tables\":[");
	for (i = 0; i < nrels; i++)
	{
		if (i > 0)
			appendStringInfoCharMacro(out, ',');
		appendStringInfoCharMacro(out, '{');
		put_relation_name(out, rels[i]);
		appendStringInfoCharMacro(out, '}');
	}
	appendStringInfo(out, "],\"cascade\":%s,\"restart_identity\":%s}", cascade ? "true" : "false",
					 restart ? "true" : "false");
}

void
bw_json_message(StringInfo out, BwData *data, ReorderBufferTXN *txn, bool transactional, XLogRecPtr lsn,
				const char *prefix, Size size, const char *message)
{
	put_header(out, data, transactional ? txn : NULL, "message", lsn);
	appendStringInfo(out, ",\"transactional\":%s,\"prefix\":", transactional ? "true" : "false");
	put_cstring(out, prefix);
	/* content as text when it is valid in the database encoding, else as hex */
	if (pg_verifymbstr(message, (int) size, true))
	{
		appendStringInfoString(out, ",\"content\":");
		put_string(out, message, size);
	}
	else
	{
		Size i;

		appendStringInfoString(out, ",\"content_hex\":\"");
		for (i = 0; i < size; i++)
		{
			appendStringInfoCharMacro(out, hexdigits[((unsigned char) message[i]) >> 4]);
			appendStringInfoCharMacro(out, hexdigits[((unsigned char) message[i]) & 0xf]);
		}
		appendStringInfoCharMacro(out, '"');
	}
	appendStringInfoCharMacro(out, '}');
}
