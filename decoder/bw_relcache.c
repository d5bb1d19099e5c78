/*
 * bw_relcache.c
 *		Per-relation decisions (included?, emitted columns, key columns, tenant column, how each
 *		value is written), computed once and kept until a relcache or namespace invalidation
 *		marks them stale. Invalidation callbacks only clear a flag: they can fire in the middle
 *		of our own catalog access. Nothing here points into relcache entries.
 */
#include "breakwater.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "nodes/bitmapset.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/relcache.h"
#include "utils/syscache.h"

/*
 * The only global mutable state of the plugin: relcache and syscache callbacks take no pointer
 * that could follow a decoding session, and cannot be unregistered. It points at the current
 * session's cache and is cleared when that cache's memory goes away (also on error).
 */
static HTAB *current_cache = NULL;

static void
invalidate_all(void)
{
	HASH_SEQ_STATUS status;
	BwRelation *entry;

	if (current_cache == NULL)
		return;
	hash_seq_init(&status, current_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
		entry->valid = false;
}

static void
relcache_callback(Datum arg, Oid relid)
{
	BwRelation *entry;

	if (current_cache == NULL)
		return;
	if (!OidIsValid(relid))
	{
		invalidate_all();
		return;
	}
	entry = hash_search(current_cache, &relid, HASH_FIND, NULL);
	if (entry != NULL)
		entry->valid = false;
}

/* A schema renamed changes the name of every relation in it. */
static void
namespace_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	invalidate_all();
}

static void
cache_memory_reset(void *arg)
{
	current_cache = NULL;
}

void
bw_relcache_init(BwData *data)
{
	static bool callbacks_registered = false;
	HASHCTL ctl;
	MemoryContextCallback *mcb;

	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(BwRelation);
	ctl.hcxt = data->cache_cxt;
	current_cache = hash_create("breakwater relations", 128, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	mcb = MemoryContextAlloc(data->cache_cxt, sizeof(MemoryContextCallback));
	mcb->func = cache_memory_reset;
	mcb->arg = NULL;
	MemoryContextRegisterResetCallback(data->cache_cxt, mcb);

	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, namespace_callback, (Datum) 0);
		callbacks_registered = true;
	}
}

void
bw_relcache_destroy(void)
{
	current_cache = NULL;
}

static bool
table_included(BwOptions *opts, const char *schema, const char *table)
{
	ListCell *lc;
	bool included = (opts->tables == NIL);

	foreach (lc, opts->tables)
	{
		if (bw_pattern_match(lfirst(lc), schema, table, NULL))
		{
			included = true;
			break;
		}
	}
	if (!included)
		return false;
	foreach (lc, opts->exclude_tables)
	{
		if (bw_pattern_match(lfirst(lc), schema, table, NULL))
			return false;
	}
	return true;
}

static const char *
tenant_column_for(BwOptions *opts, const char *schema, const char *table)
{
	ListCell *lc;

	foreach (lc, opts->tenant_rules)
	{
		BwTenantRule *rule = lfirst(lc);

		if (bw_pattern_match(&rule->table, schema, table, NULL))
			return rule->column;
	}
	return opts->tenant_column;
}

static bool
column_excluded(BwOptions *opts, const char *schema, const char *table, const char *column)
{
	ListCell *lc;

	foreach (lc, opts->exclude_columns)
	{
		if (bw_pattern_match(lfirst(lc), schema, table, column))
			return true;
	}
	return false;
}

/*
 * Key columns: the replica identity index's, or else the primary key's (identity FULL or
 * NOTHING). Attribute numbers offset as bitmapsets of attributes are.
 */
static Bitmapset *
key_columns(Relation rel, Bitmapset **identity)
{
	Bitmapset *keys;
	Oid pkoid;

	*identity = RelationGetIdentityKeyBitmap(rel);
	if (*identity != NULL)
		return *identity;

	keys = NULL;
	pkoid = RelationGetPrimaryKeyIndex(rel);
	if (OidIsValid(pkoid))
	{
		Relation idx = RelationIdGetRelation(pkoid);
		int i;

		if (!RelationIsValid(idx))
			elog(ERROR, "could not open primary key index %u of relation \"%s\"", pkoid,
				 RelationGetRelationName(rel));
		for (i = 0; i < idx->rd_index->indnkeyatts; i++)
		{
			AttrNumber attnum = idx->rd_index->indkey.values[i];

			if (attnum > 0)
				keys = bms_add_member(keys, attnum - FirstLowInvalidHeapAttributeNumber);
		}
		RelationClose(idx);
	}
	return keys;
}

static void
report_missing_tenant_column(BwData *data, BwRelation *entry, const char *column)
{
	switch (data->opts.missing_tenant)
	{
		case BW_MISSING_ERROR:
			ereport(
				ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("table \"%s.%s\" has no tenant column \"%s\"", entry->schema, entry->table, column),
				 errdetail("The breakwater option \"missing-tenant\" is \"error\"."),
				 errhint(
					 "Name this table's tenant column in \"tenant-columns\", leave the table out with \"exclude-tables\", or set \"missing-tenant\" to \"pass\" or \"drop\".")));
			break;
		case BW_MISSING_PASS:
			if (!entry->warned)
				ereport(
					WARNING,
					(errmsg(
						 "table \"%s.%s\" has no tenant column \"%s\": its changes are sent without a tenant",
						 entry->schema, entry->table, column),
					 errhint(
						 "Name this table's tenant column in \"tenant-columns\", or set \"missing-tenant\" to \"drop\" to leave its changes out.")));
			break;
		case BW_MISSING_DROP:
			if (!entry->warned)
				ereport(
					WARNING,
					(errmsg("table \"%s.%s\" has no tenant column \"%s\": its changes are dropped",
							entry->schema, entry->table, column),
					 errhint(
						 "Name this table's tenant column in \"tenant-columns\", or leave the table out with \"exclude-tables\" to silence this warning.")));
			break;
	}
	entry->warned = true;
}

static void
build(BwData *data, BwRelation *entry, Relation rel)
{
	BwOptions *opts = &data->opts;
	TupleDesc desc = RelationGetDescr(rel);
	MemoryContext old;
	Bitmapset *keys;
	Bitmapset *identity;
	const char *tenant_name;
	int i;

	/*
	 * Set first: an invalidation arriving during the catalog access below clears it again.
	 * 'building' stays set if an ERROR cuts this short; while streaming, PostgreSQL catches one
	 * (a concurrent abort of the streamed transaction) and decoding goes on with this entry.
	 */
	entry->valid = true;
	entry->building = true;
	entry->sent = false;
	if (entry->cxt == NULL)
		entry->cxt = AllocSetContextCreate(data->cache_cxt, "breakwater relation", ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(entry->cxt);
	old = MemoryContextSwitchTo(entry->cxt);

	entry->schema = get_namespace_name(RelationGetNamespace(rel));
	entry->table = pstrdup(RelationGetRelationName(rel));
	entry->included = table_included(opts, entry->schema, entry->table);
	entry->ncolumns = 0;
	entry->nkeys = 0;
	entry->tenant_col = -1;
	entry->tenant_attnum = 0;
	entry->tenant_name = NULL;
	if (!entry->included)
		goto done;

	entry->replident = rel->rd_rel->relreplident;
	keys = key_columns(rel, &identity);
	tenant_name = tenant_column_for(opts, entry->schema, entry->table);

	entry->natts = desc->natts;
	entry->old.values = palloc0(sizeof(Datum) * Max(desc->natts, 1));
	entry->old.nulls = palloc0(sizeof(bool) * Max(desc->natts, 1));
	entry->new.values = palloc0(sizeof(Datum) * Max(desc->natts, 1));
	entry->new.nulls = palloc0(sizeof(bool) * Max(desc->natts, 1));
	entry->columns = palloc0(sizeof(BwColumn) * Max(desc->natts, 1));
	entry->keys = palloc0(sizeof(int) * Max(desc->natts, 1));
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool is_key = bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, keys);
		bool is_tenant = (strcmp(NameStr(att->attname), tenant_name) == 0);
		BwColumn *col;

		if (att->attisdropped)
			continue;
		if (is_tenant)
		{
			entry->tenant_attnum = att->attnum;
			entry->tenant_name = pstrdup(tenant_name);
			bw_column_setup(&entry->tenant, att->atttypid, att->atttypmod, BW_VALUES_TEXT);
			entry->tenant.attnum = att->attnum;
			entry->tenant_in_identity =
				(entry->replident == REPLICA_IDENTITY_FULL) ||
				bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, identity);
		}
		if (column_excluded(opts, entry->schema, entry->table, NameStr(att->attname)))
		{
			if (!is_key)
				continue;
			if (!entry->warned)
				ereport(
					WARNING,
					(errmsg(
						 "column \"%s\" of table \"%s.%s\" is sent despite \"exclude-columns\": it is part of the table's key",
						 NameStr(att->attname), entry->schema, entry->table),
					 errhint(
						 "Consumers need the key to tell rows apart; take the column out of \"exclude-columns\" to silence this warning.")));
			entry->warned = true;
		}
		col = &entry->columns[entry->ncolumns];
		col->attnum = att->attnum;
		col->name = pstrdup(NameStr(att->attname));
		col->is_key = is_key;
		col->is_tenant = is_tenant;
		bw_column_setup(col, att->atttypid, att->atttypmod, opts->value_encoding);
		if (is_tenant)
			entry->tenant_col = entry->ncolumns;
		if (is_key)
			entry->keys[entry->nkeys++] = entry->ncolumns;
		entry->ncolumns++;
	}
	if (entry->tenant_attnum == 0)
		report_missing_tenant_column(data, entry, tenant_name);

done:
	entry->building = false;
	MemoryContextSwitchTo(old);
}

BwRelation *
bw_relcache_get(BwData *data, Relation rel)
{
	Oid relid = RelationGetRelid(rel);
	BwRelation *entry;
	bool found;

	entry = hash_search(current_cache, &relid, HASH_ENTER, &found);
	if (!found)
	{
		entry->valid = false;
		entry->building = false;
		entry->warned = false;
		entry->cxt = NULL;
	}
	/* the width check guards the reused arrays should an invalidation ever be missed */
	if (!entry->valid || entry->building || (entry->included && entry->natts != RelationGetDescr(rel)->natts))
		build(data, entry, rel);
	return entry;
}
