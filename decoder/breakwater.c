/*
 * breakwater.c
 *		The breakwater logical decoding output plugin: its table of callbacks, and what each
 *		callback decides to send (filters, tenant tags, lazy BEGIN, lazy stream blocks). The
 *		bytes are written by bw_binary.c or bw_json.c; per-relation decisions come from
 *		bw_relcache.c.
 */
#include "breakwater.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "utils/guc.h"
#include "utils/memutils.h"

PG_MODULE_MAGIC;

/* Changes skipped between two progress updates: keepalives while a big transaction is filtered. */
#define SKIPPED_PROGRESS_INTERVAL 100

static void bw_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init);
static void bw_shutdown(LogicalDecodingContext *ctx);
static void bw_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn);
static void bw_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn);
static void bw_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation relation,
					  ReorderBufferChange *change);
static void bw_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, int nrelations,
						Relation relations[], ReorderBufferChange *change);
static void bw_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr lsn, bool transactional,
					   const char *prefix, Size size, const char *message);
static void bw_stream_start(LogicalDecodingContext *ctx, ReorderBufferTXN *txn);
static void bw_stream_stop(LogicalDecodingContext *ctx, ReorderBufferTXN *txn);
static void bw_stream_abort(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr abort_lsn);
static void bw_stream_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn);
static void bw_stream_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation relation,
							 ReorderBufferChange *change);
static void bw_stream_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, int nrelations,
							   Relation relations[], ReorderBufferChange *change);
static void bw_stream_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr lsn,
							  bool transactional, const char *prefix, Size size, const char *message);

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = bw_startup;
	cb->begin_cb = bw_begin;
	cb->change_cb = bw_change;
	cb->truncate_cb = bw_truncate;
	cb->message_cb = bw_message;
	cb->commit_cb = bw_commit;
	cb->shutdown_cb = bw_shutdown;

	/*
	 * Streaming of large in-progress transactions; bw_startup turns it off unless the client
	 * asked for it. No stream_prepare_cb: the plugin does not decode two-phase transactions.
	 */
	cb->stream_start_cb = bw_stream_start;
	cb->stream_stop_cb = bw_stream_stop;
	cb->stream_abort_cb = bw_stream_abort;
	cb->stream_commit_cb = bw_stream_commit;
	cb->stream_change_cb = bw_stream_change;
	cb->stream_message_cb = bw_stream_message;
	cb->stream_truncate_cb = bw_stream_truncate;
}

/*
 * Text output of dates, intervals and floats depends on session settings; values written as
 * text (arrays, ranges, user types) must not. START_REPLICATION runs outside a transaction in a
 * session that is ours: set them for good. The SQL functions run inside the user's transaction
 * (even on a replication connection): set them in a GUC nest level that shutdown, or the abort
 * of that transaction, unwinds.
 */
static void
pin_output_settings(BwData *data, bool in_sql_function)
{
	static const char *const settings[][2] = {
		{"DateStyle", "ISO, YMD"},   {"IntervalStyle", "iso_8601"}, {"TimeZone", "UTC"},
		{"extra_float_digits", "1"}, {"bytea_output", "hex"},
	};
	GucAction action = GUC_ACTION_SET;
	size_t i;

	if (in_sql_function)
	{
		data->guc_nestlevel = NewGUCNestLevel();
		action = GUC_ACTION_SAVE;
	}
	for (i = 0; i < lengthof(settings); i++)
		(void) set_config_option(settings[i][0], settings[i][1], PGC_USERSET, PGC_S_SESSION, action, true,
								 ERROR, false);
}

static void
bw_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
	BwData *data = MemoryContextAllocZero(ctx->context, sizeof(BwData));

	data->change_cxt = AllocSetContextCreate(ctx->context, "breakwater change", ALLOCSET_DEFAULT_SIZES);
	data->cache_cxt = AllocSetContextCreate(ctx->context, "breakwater relations", ALLOCSET_DEFAULT_SIZES);
	ctx->output_plugin_private = data;

	/*
	 * PostgreSQL streams whenever the stream callbacks exist; we do only when asked (the client
	 * must understand S/E/X/A/K records). No two-phase callbacks: say so explicitly.
	 */
	ctx->streaming = false;
	ctx->twophase = false;

	bw_parse_options(&data->opts, ctx->output_plugin_options);
	ctx->streaming = data->opts.streaming;
	opt->output_type =
		data->opts.format == BW_FORMAT_BINARY ? OUTPUT_PLUGIN_BINARY_OUTPUT : OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
	opt->receive_rewrites = false;
	if (is_init)
		return;

	/*
	 * Binary chunks and, over the replication protocol, JSON lines are packed (fewer messages).
	 * The SQL functions return one row per write, so there JSON goes one change per row.
	 */
	data->chunk_limit = data->opts.write_chunk_bytes;
	if (data->chunk_limit < 0)
		data->chunk_limit = (data->opts.format == BW_FORMAT_JSON && IsTransactionState()) ? 1 : 65536;
	{
		MemoryContext old = MemoryContextSwitchTo(ctx->context);

		data->chunk = makeStringInfo();
		MemoryContextSwitchTo(old);
	}
	data->utc = pg_tzset("UTC");
	if (data->utc == NULL)
		elog(ERROR, "could not load time zone \"UTC\"");
	pin_output_settings(data, IsTransactionState());
	bw_relcache_init(data);
}

static void
bw_shutdown(LogicalDecodingContext *ctx)
{
	BwData *data = ctx->output_plugin_private;

	if (data->guc_nestlevel > 0)
		AtEOXact_GUC(true, data->guc_nestlevel);
	bw_relcache_destroy();
}

static void
bw_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	txn->output_plugin_private = MemoryContextAllocZero(ctx->context, sizeof(BwTxn));
}

/*
 * BEGIN goes out with the first record that passed the filters, not before; so does a stream
 * block's S (txn is then the top-level transaction being streamed).
 */
static void
ensure_open(LogicalDecodingContext *ctx, BwData *data, ReorderBufferTXN *txn, bool streaming)
{
	BwTxn *bt = txn->output_plugin_private;

	if (bt->opened)
		return;
	bt->opened = true;
	if (data->opts.format != BW_FORMAT_BINARY)
		return;
	bw_chunk_begin_record(data);
	if (streaming)
	{
		bw_binary_stream_start(data->chunk, txn->xid, !bt->streamed);
		bt->streamed = true;
		bt->subxid = InvalidTransactionId;
	}
	else
		bw_binary_begin(data->chunk, txn);
	bw_chunk_end_record(ctx, data, false);
}

/*
 * In a stream block, an X record names the (sub)transaction of the changes after it, so that a
 * reader can discard them if that subtransaction rolls back. Only when it changes.
 */
static void
ensure_subxact(LogicalDecodingContext *ctx, BwData *data, ReorderBufferTXN *txn, TransactionId subxid)
{
	BwTxn *bt = txn->output_plugin_private;

	if (bt->subxid == subxid)
		return;
	bt->subxid = subxid;
	bw_chunk_begin_record(data);
	bw_binary_subxact(data->chunk, subxid);
	bw_chunk_end_record(ctx, data, false);
}

static void
ensure_relation_sent(LogicalDecodingContext *ctx, BwData *data, BwRelation *rel)
{
	if (rel->sent || data->opts.format != BW_FORMAT_BINARY)
		return;
	bw_chunk_begin_record(data);
	bw_binary_relation(data->chunk, rel);
	rel->sent = true;
	bw_chunk_end_record(ctx, data, false);
}

/* Keep the walsender's keepalives flowing while a large transaction is filtered out. */
static void
count_skipped(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	BwTxn *bt = txn->output_plugin_private;

	if (++bt->skipped >= SKIPPED_PROGRESS_INTERVAL)
	{
		bt->skipped = 0;
		OutputPluginUpdateProgress(ctx, false);
	}
}

static void
bw_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
	BwData *data = ctx->output_plugin_private;
	BwTxn *bt = txn->output_plugin_private;

	if (bt->opened)
	{
		if (data->opts.format == BW_FORMAT_BINARY)
		{
			bw_chunk_begin_record(data);
			bw_binary_commit(data->chunk, txn);
		}
		bw_chunk_flush(ctx, data, true);
	}
	else
		OutputPluginUpdateProgress(ctx, true);
	pfree(bt);
	txn->output_plugin_private = NULL;
}

static void
report_missing_tenant_value(BwRelation *rel, bool is_delete)
{
	if (is_delete && !rel->tenant_in_identity)
		ereport(
			ERROR,
			(errcode(ERRCODE_NOT_NULL_VIOLATION),
			 errmsg(
				 "DELETE on table \"%s.%s\" carries no tenant: column \"%s\" is not part of its replica identity",
				 rel->schema, rel->table, rel->tenant_name),
			 errdetail("The breakwater option \"missing-tenant\" is \"error\"."),
			 errhint(
				 "Add the tenant column to the primary key, use REPLICA IDENTITY FULL or USING INDEX on an index that includes it, or set \"missing-tenant\" to \"pass\" or \"drop\".")));
	ereport(
		ERROR,
		(errcode(ERRCODE_NOT_NULL_VIOLATION),
		 errmsg("row of table \"%s.%s\" has a NULL tenant in column \"%s\"", rel->schema, rel->table,
				rel->tenant_name),
		 errdetail("The breakwater option \"missing-tenant\" is \"error\"."),
		 errhint("Fill the tenant column of every row, or set \"missing-tenant\" to \"pass\" or \"drop\".")));
}

static void
warn_missing_tenant_value(BwRelation *rel, bool is_delete)
{
	if (is_delete && !rel->tenant_in_identity)
		ereport(
			WARNING,
			(errmsg(
				 "deletes on table \"%s.%s\" carry no tenant: column \"%s\" is not part of its replica identity",
				 rel->schema, rel->table, rel->tenant_name),
			 errdetail("Such deletes are sent without a tenant; this is reported once per table."),
			 errhint(
				 "Add the tenant column to the primary key, or use REPLICA IDENTITY FULL or USING INDEX on an index that includes it.")));
	else
		ereport(
			WARNING,
			(errmsg(
				 "table \"%s.%s\" has rows with a NULL tenant in column \"%s\": they are sent without a tenant",
				 rel->schema, rel->table, rel->tenant_name),
			 errdetail("This is reported once per table."),
			 errhint(
				 "Set \"missing-tenant\" to \"drop\" to leave such rows out, or \"error\" to stop on them.")));
	rel->warned = true;
}

/*
 * A row change, in a transaction at its commit or (streaming) in a block of an in-progress one;
 * txn is the top-level transaction either way, change->txn the subtransaction it belongs to.
 */
static void
emit_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation relation,
			ReorderBufferChange *change, bool streaming)
{
	BwData *data = ctx->output_plugin_private;
	MemoryContext old = MemoryContextSwitchTo(data->change_cxt);
	TupleDesc desc = RelationGetDescr(relation);
	BwTuple *newtuple = NULL;
	BwTuple *oldtuple = NULL;
	BwRelation *rel;
	char op;
	char oldkind;
	int action;
	Datum tenant = (Datum) 0;
	bool has_tenant = false;

	switch (change->action)
	{
		case REORDER_BUFFER_CHANGE_INSERT:
			op = 'I';
			action = BW_ACTION_INSERT;
			break;
		case REORDER_BUFFER_CHANGE_UPDATE:
			op = 'U';
			action = BW_ACTION_UPDATE;
			break;
		case REORDER_BUFFER_CHANGE_DELETE:
			op = 'D';
			action = BW_ACTION_DELETE;
			break;
		default:
			elog(ERROR, "unexpected change action %d", (int) change->action);
	}
	if (!(data->opts.actions & action))
		goto skip;
	rel = bw_relcache_get(data, relation);
	if (!rel->included)
		goto skip;

	/* deform each tuple once into the relation's reusable arrays */
	if (change->data.tp.newtuple != NULL)
	{
		heap_deform_tuple(&change->data.tp.newtuple->tuple, desc, rel->new.values, rel->new.nulls);
		newtuple = &rel->new;
	}
	if (change->data.tp.oldtuple != NULL)
	{
		heap_deform_tuple(&change->data.tp.oldtuple->tuple, desc, rel->old.values, rel->old.nulls);
		oldtuple = &rel->old;
	}
	if (op == 'I' || oldtuple == NULL)
		oldkind = 'X';
	else
		oldkind = rel->replident == REPLICA_IDENTITY_FULL ? 'O' : 'K';

	/* the tenant tag: from the new row, or for a delete from what the old tuple carries */
	if (rel->tenant_attnum != 0)
	{
		int i = rel->tenant_attnum - 1;
		BwTuple *src = (op == 'D') ? (rel->tenant_in_identity ? oldtuple : NULL) : newtuple;
		bool isnull = true;

		if (src != NULL && !src->nulls[i])
		{
			tenant = src->values[i];
			isnull = false;
		}
		/* a TOASTed tenant that did not change: the old key may still carry it */
		if (!isnull && rel->tenant.typlen == -1 && VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(tenant)))
		{
			isnull = true;
			if (oldtuple != NULL && rel->tenant_in_identity && !oldtuple->nulls[i])
			{
				tenant = oldtuple->values[i];
				isnull = false;
			}
		}
		has_tenant = !isnull;
		if (!has_tenant)
		{
			/*
			 * A delete whose replica identity lacks the tenant column removes a row that had a
			 * tenant: dropping it would hide the delete from consumers, so even "drop" sends it
			 * untagged (with the warning); "error" stops.
			 */
			bool identity_gap = (op == 'D' && !rel->tenant_in_identity);

			if (data->opts.missing_tenant == BW_MISSING_DROP && !identity_gap)
				goto skip;
			if (data->opts.missing_tenant == BW_MISSING_ERROR)
				report_missing_tenant_value(rel, op == 'D');
			if (!rel->warned)
				warn_missing_tenant_value(rel, op == 'D');
		}
	}
	else if (data->opts.missing_tenant == BW_MISSING_DROP)
		goto skip;

	ensure_open(ctx, data, txn, streaming);
	ensure_relation_sent(ctx, data, rel);
	if (streaming)
		ensure_subxact(ctx, data, txn, change->txn->xid);
	bw_chunk_begin_record(data);
	if (data->opts.format == BW_FORMAT_BINARY)
		bw_binary_change(data->chunk, rel, op, tenant, has_tenant, oldtuple, oldkind, newtuple);
	else
		bw_json_change(data->chunk, data, txn, change->lsn, rel, op, tenant, has_tenant, oldtuple, oldkind,
					   newtuple);
	bw_chunk_end_record(ctx, data, false);
	goto done;

skip:
	count_skipped(ctx, txn);
done:
	MemoryContextSwitchTo(old);
	MemoryContextReset(data->change_cxt);
}

static void
bw_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation relation, ReorderBufferChange *change)
{
	emit_change(ctx, txn, relation, change, false);
}

static void
emit_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, int nrelations, Relation relations[],
			  ReorderBufferChange *change, bool streaming)
{
	BwData *data = ctx->output_plugin_private;
	MemoryContext old = MemoryContextSwitchTo(data->change_cxt);
	BwRelation **rels = palloc(sizeof(BwRelation *) * nrelations);
	Oid *relids = palloc(sizeof(Oid) * nrelations);
	int n = 0;
	int i;

	if (data->opts.actions & BW_ACTION_TRUNCATE)
	{
		for (i = 0; i < nrelations; i++)
		{
			BwRelation *rel = bw_relcache_get(data, relations[i]);

			if (!rel->included || (rel->tenant_attnum == 0 && data->opts.missing_tenant == BW_MISSING_DROP))
				continue;
			rels[n] = rel;
			relids[n] = rel->relid;
			n++;
		}
	}
	if (n == 0)
		count_skipped(ctx, txn);
	else
	{
		ensure_open(ctx, data, txn, streaming);
		for (i = 0; i < n; i++)
			ensure_relation_sent(ctx, data, rels[i]);
		if (streaming)
			ensure_subxact(ctx, data, txn, change->txn->xid);
		bw_chunk_begin_record(data);
		if (data->opts.format == BW_FORMAT_BINARY)
			bw_binary_truncate(data->chunk, n, relids, change->data.truncate.cascade,
							   change->data.truncate.restart_seqs);
		else
			bw_json_truncate(data->chunk, data, txn, change->lsn, n, rels, change->data.truncate.cascade,
							 change->data.truncate.restart_seqs);
		bw_chunk_end_record(ctx, data, false);
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(data->change_cxt);
}

static void
bw_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, int nrelations, Relation relations[],
			ReorderBufferChange *change)
{
	emit_truncate(ctx, txn, nrelations, relations, change, false);
}

static bool
prefix_wanted(BwData *data, const char *prefix)
{
	ListCell *lc;

	foreach (lc, data->opts.message_prefixes)
	{
		if (bw_glob_match(lfirst(lc), prefix))
			return true;
	}
	return false;
}

/*
 * The subtransaction a streamed transactional message belongs to. Unlike stream_change,
 * stream_message is not given the change, only the top-level transaction, so this is inferred:
 * the newest subtransaction (highest xid) that wrote WAL before the message and has not been
 * aborted. That is the message's own subtransaction, or one of its subtransactions already
 * released into it (they can roll back only together with it, so readers that discard every
 * subxid at or after an aborted one, as docs/protocol.md says, treat the message right).
 */
static TransactionId
message_subxid(ReorderBufferTXN *txn, XLogRecPtr lsn)
{
	TransactionId subxid = txn->xid;
	dlist_iter iter;

	dlist_foreach(iter, &txn->subtxns)
	{
		ReorderBufferTXN *sub = dlist_container(ReorderBufferTXN, node, iter.cur);

		/* lsn is the end of the message's WAL record; first_lsn the start of a record */
		if (sub->first_lsn < lsn && TransactionIdFollows(sub->xid, subxid))
			subxid = sub->xid;
	}
	return subxid;
}

static void
emit_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr lsn, bool transactional,
			 const char *prefix, Size size, const char *message, bool streaming)
{
	BwData *data = ctx->output_plugin_private;
	MemoryContext old;

	if (!prefix_wanted(data, prefix))
	{
		if (transactional)
			count_skipped(ctx, txn);
		return;
	}
	old = MemoryContextSwitchTo(data->change_cxt);
	if (transactional)
		ensure_open(ctx, data, txn, streaming);
	if (transactional && streaming)
		ensure_subxact(ctx, data, txn, message_subxid(txn, lsn));
	bw_chunk_begin_record(data);
	if (data->opts.format == BW_FORMAT_BINARY)
		bw_binary_message(data->chunk, transactional, lsn, prefix, size, message);
	else
		bw_json_message(data->chunk, data, txn, transactional, lsn, prefix, size, message);
	/* a message outside a transaction is a chunk of its own */
	bw_chunk_end_record(ctx, data, !transactional);
	MemoryContextSwitchTo(old);
	MemoryContextReset(data->change_cxt);
}

static void
bw_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr lsn, bool transactional,
		   const char *prefix, Size size, const char *message)
{
	emit_message(ctx, txn, lsn, transactional, prefix, size, message, false);
}

/*
 * Streaming. PostgreSQL hands over a large transaction while it is still in progress, in blocks
 * (stream_start .. stream_stop) of the changes decoded so far, then either stream_commit (after a
 * last block with the rest) or stream_abort, also once for each subtransaction that rolls back.
 * Only the binary format streams (bw_parse_options).
 */
static void
bw_stream_start(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	BwTxn *bt = txn->output_plugin_private;

	Assert(((BwData *) ctx->output_plugin_private)->opts.format == BW_FORMAT_BINARY);
	if (bt == NULL)
	{
		bt = MemoryContextAllocZero(ctx->context, sizeof(BwTxn));
		txn->output_plugin_private = bt;
	}
	/* like BEGIN, S waits for the block's first record that passes the filters */
	bt->opened = false;
	bt->subxid = InvalidTransactionId;
}

static void
bw_stream_stop(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	BwData *data = ctx->output_plugin_private;
	BwTxn *bt = txn->output_plugin_private;

	/* the block may end early after an ERROR PostgreSQL caught (see bw_chunk_begin_record) */
	bw_chunk_drop_partial_record(data);
	if (!bt->opened)
		return;
	bt->opened = false;
	bw_chunk_begin_record(data);
	bw_binary_stream_stop(data->chunk);
	bw_chunk_end_record(ctx, data, true);
}

/*
 * The whole transaction (txn is top-level) or one subtransaction (txn->toptxn set) rolled back.
 * Sent only if something of the transaction was streamed in this session.
 */
static void
bw_stream_abort(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr abort_lsn)
{
	BwData *data = ctx->output_plugin_private;
	ReorderBufferTXN *top = txn->toptxn != NULL ? txn->toptxn : txn;
	BwTxn *bt = top->output_plugin_private;

	if (bt != NULL && bt->streamed)
	{
		bw_chunk_begin_record(data);
		bw_binary_stream_abort(data->chunk, top->xid, txn->xid, abort_lsn);
		bw_chunk_end_record(ctx, data, true);
	}
	if (top == txn && bt != NULL)
	{
		pfree(bt);
		txn->output_plugin_private = NULL;
	}
}

static void
bw_stream_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
	BwData *data = ctx->output_plugin_private;
	BwTxn *bt = txn->output_plugin_private;

	if (bt != NULL && bt->streamed)
	{
		bw_chunk_begin_record(data);
		bw_binary_stream_commit(data->chunk, txn);
		bw_chunk_end_record(ctx, data, true);
	}
	else
		OutputPluginUpdateProgress(ctx, true);
	if (bt != NULL)
	{
		pfree(bt);
		txn->output_plugin_private = NULL;
	}
}

static void
bw_stream_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation relation,
				 ReorderBufferChange *change)
{
	emit_change(ctx, txn, relation, change, true);
}

static void
bw_stream_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, int nrelations, Relation relations[],
				   ReorderBufferChange *change)
{
	emit_truncate(ctx, txn, nrelations, relations, change, true);
}

static void
bw_stream_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr lsn, bool transactional,
				  const char *prefix, Size size, const char *message)
{
	emit_message(ctx, txn, lsn, transactional, prefix, size, message, transactional);
}
