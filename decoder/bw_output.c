/*
 * bw_output.c
 *		Packing records into writes. Each OutputPluginWrite costs the walsender a CopyData
 *		message and usually a send() call, so records collect in one chunk until it reaches
 *		the size bound or the transaction commits. The chunk buffer's memory is bounded by the
 *		bound plus the largest single record, whatever the transaction's size.
 */
#include "breakwater.h"

/*
 * Called before each record: opens the chunk (binary: version byte; json: separator).
 *
 * A record left open is one whose writing an ERROR cut short. Decoding normally ends with such
 * an error, but while streaming PostgreSQL catches one kind, a catalog lookup that finds the
 * streamed (sub)transaction aborted meanwhile, and goes on with stream_stop and later blocks:
 * the half-written record must not reach the client, so it is dropped here.
 */
void
bw_chunk_begin_record(BwData *data)
{
	StringInfo chunk = data->chunk;

	bw_chunk_drop_partial_record(data);
	data->record_start = chunk->len;
	data->record_open = true;
	if (data->opts.format == BW_FORMAT_BINARY)
	{
		if (chunk->len == 0)
			appendStringInfoCharMacro(chunk, (char) BW_PROTOCOL_VERSION);
	}
	else if (chunk->len > 0)
		appendStringInfoCharMacro(chunk, '\n');
}

void
bw_chunk_flush(LogicalDecodingContext *ctx, BwData *data, bool last_write)
{
	StringInfo chunk = data->chunk;

	data->record_open = false;
	if (chunk->len == 0)
		return;
	OutputPluginPrepareWrite(ctx, last_write);
	appendBinaryStringInfoNT(ctx->out, chunk->data, chunk->len);
	OutputPluginWrite(ctx, last_write);

	/* one huge row must not pin its buffer for the rest of the session */
	if (chunk->maxlen > 4 * Max(data->chunk_limit, 65536))
	{
		pfree(chunk->data);
		initStringInfo(chunk);
	}
	else
		resetStringInfo(chunk);
}

void
bw_chunk_end_record(LogicalDecodingContext *ctx, BwData *data, bool end_of_txn)
{
	data->record_open = false;
	if (end_of_txn || data->chunk->len >= data->chunk_limit)
		bw_chunk_flush(ctx, data, end_of_txn);
}

/* Forget the record an ERROR interrupted, if any (see bw_chunk_begin_record). */
void
bw_chunk_drop_partial_record(BwData *data)
{
	if (!data->record_open)
		return;
	data->chunk->len = data->record_start;
	data->chunk->data[data->record_start] = '\0';
	data->record_open = false;
}
