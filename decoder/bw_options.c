/*
 * bw_options.c
 *		The plugin's options: one table of names, one parser. Every unknown, repeated or
 *		malformed option is an ERROR naming the option, the bad value and what is accepted.
 */
#include "breakwater.h"

#include "commands/defrem.h"

typedef enum BwOptionId
{
	OPT_FORMAT,
	OPT_TABLES,
	OPT_EXCLUDE_TABLES,
	OPT_TENANT_COLUMN,
	OPT_TENANT_COLUMNS,
	OPT_MISSING_TENANT,
	OPT_EXCLUDE_COLUMNS,
	OPT_ACTIONS,
	OPT_MESSAGE_PREFIXES,
	OPT_WRITE_CHUNK_BYTES,
	OPT_VALUE_ENCODING,
	OPT_PROTOCOL_VERSION,
	OPT_STREAMING,
	OPT_COUNT
} BwOptionId;

static const char *const option_names[OPT_COUNT] = {
	[OPT_FORMAT] = "format",
	[OPT_TABLES] = "tables",
	[OPT_EXCLUDE_TABLES] = "exclude-tables",
	[OPT_TENANT_COLUMN] = "tenant-column",
	[OPT_TENANT_COLUMNS] = "tenant-columns",
	[OPT_MISSING_TENANT] = "missing-tenant",
	[OPT_EXCLUDE_COLUMNS] = "exclude-columns",
	[OPT_ACTIONS] = "actions",
	[OPT_MESSAGE_PREFIXES] = "message-prefixes",
	[OPT_WRITE_CHUNK_BYTES] = "write-chunk-bytes",
	[OPT_VALUE_ENCODING] = "value-encoding",
	[OPT_PROTOCOL_VERSION] = "protocol-version",
	[OPT_STREAMING] = "streaming",
};

#define MIN_CHUNK_BYTES 1
#define MAX_CHUNK_BYTES (256 * 1024 * 1024)

/* Map 'value' to one of 'words' (NULL-terminated) or fail with a hint listing them. */
static int
choose(const char *option, const char *value, const char *const *words)
{
	StringInfoData list;
	int i;

	for (i = 0; words[i]; i++)
		if (strcmp(value, words[i]) == 0)
			return i;
	initStringInfo(&list);
	for (i = 0; words[i]; i++)
		appendStringInfo(&list, "%s\"%s\"", i == 0 ? "" : (words[i + 1] ? ", " : " or "), words[i]);
	ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("invalid value \"%s\" for option \"%s\"", value, option),
					errhint("Valid values are %s.", list.data)));
	return -1; /* not reached */
}

static int
parse_int(const char *option, const char *value, int min, int max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (errno != 0 || end == value || *end != '\0' || v < min || v > max)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid value \"%s\" for option \"%s\"", value, option),
						errhint("Give a whole number from %d to %d.", min, max)));
	return (int) v;
}

static int
parse_actions(const char *option, const char *value)
{
	static const char *const words[] = {"insert", "update", "delete", "truncate", NULL};
	List *names = NIL;
	ListCell *lc;
	int actions = 0;

	bw_parse_name_list(option, value, "Give a comma-separated list of insert, update, delete and truncate.",
					   &names);
	foreach (lc, names)
		actions |= 1 << choose(option, lfirst(lc), words);
	return actions;
}

static void
set_defaults(BwOptions *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->format = BW_FORMAT_JSON;
	opts->value_encoding = BW_VALUES_AUTO;
	opts->tenant_column = "tenant_id";
	opts->missing_tenant = BW_MISSING_PASS;
	opts->actions = BW_ACTION_INSERT | BW_ACTION_UPDATE | BW_ACTION_DELETE | BW_ACTION_TRUNCATE;
	opts->write_chunk_bytes = -1;
}

void
bw_parse_options(BwOptions *opts, List *options)
{
	static const char *const formats[] = {"binary", "json", NULL};
	static const char *const encodings[] = {"auto", "text", "send", NULL};
	static const char *const missing[] = {"pass", "drop", "error", NULL};
	static const char *const off_on[] = {"off", "on", NULL};
	bool seen[OPT_COUNT] = {0};
	ListCell *lc;

	set_defaults(opts);
	foreach (lc, options)
	{
		DefElem *elem = lfirst(lc);
		const char *value;
		int id;

		for (id = 0; id < OPT_COUNT; id++)
			if (strcmp(elem->defname, option_names[id]) == 0)
				break;
		if (id == OPT_COUNT)
			ereport(
				ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unrecognized option \"%s\" for output plugin \"breakwater\"", elem->defname),
				 errhint(
					 "Valid options are format, tables, exclude-tables, tenant-column, tenant-columns, missing-tenant, exclude-columns, actions, message-prefixes, write-chunk-bytes, value-encoding, protocol-version and streaming.")));
		if (seen[id])
			ereport(ERROR, (errcode(ERRCODE_SYNTAX_ERROR),
							errmsg("option \"%s\" is given more than once", elem->defname),
							errhint("Give each option once.")));
		seen[id] = true;
		if (elem->arg == NULL)
			ereport(
				ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" needs a value", elem->defname),
				 errhint(
					 "Give it a value: (\"%s\" 'value') in START_REPLICATION, -o %s=value with pg_recvlogical.",
					 elem->defname, elem->defname)));
		value = strVal(elem->arg);

		switch ((BwOptionId) id)
		{
			case OPT_FORMAT:
				opts->format = (BwFormat) choose(elem->defname, value, formats);
				break;
			case OPT_VALUE_ENCODING:
				opts->value_encoding = (BwValueEncoding) choose(elem->defname, value, encodings);
				break;
			case OPT_TABLES:
				bw_parse_pattern_list(elem->defname, value, 2, &opts->tables);
				break;
			case OPT_EXCLUDE_TABLES:
				bw_parse_pattern_list(elem->defname, value, 2, &opts->exclude_tables);
				break;
			case OPT_TENANT_COLUMN:
			{
				List *names = NIL;

				bw_parse_name_list(elem->defname, value, "Give one column name, e.g. \"tenant_id\".", &names);
				if (list_length(names) != 1)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid value \"%s\" for option \"%s\"", value, elem->defname),
							 errhint("Give one column name; use \"tenant-columns\" for per-table columns.")));
				opts->tenant_column = linitial(names);
				break;
			}
			case OPT_TENANT_COLUMNS:
				bw_parse_tenant_rules(elem->defname, value, &opts->tenant_rules);
				break;
			case OPT_MISSING_TENANT:
				opts->missing_tenant = (BwMissingTenant) choose(elem->defname, value, missing);
				break;
			case OPT_EXCLUDE_COLUMNS:
				bw_parse_pattern_list(elem->defname, value, 3, &opts->exclude_columns);
				break;
			case OPT_ACTIONS:
				opts->actions = parse_actions(elem->defname, value);
				break;
			case OPT_MESSAGE_PREFIXES:
				bw_parse_name_list(
					elem->defname, value,
					"Give a comma-separated list of prefixes, '*' matching any characters, e.g. \"app.*,audit\".",
					&opts->message_prefixes);
				break;
			case OPT_WRITE_CHUNK_BYTES:
				opts->write_chunk_bytes = parse_int(elem->defname, value, MIN_CHUNK_BYTES, MAX_CHUNK_BYTES);
				break;
			case OPT_PROTOCOL_VERSION:
				if (strcmp(value, CppAsString2(BW_PROTOCOL_VERSION)) != 0)
					ereport(
						ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("protocol version \"%s\" is not supported by this breakwater plugin", value),
						 errhint("This plugin speaks protocol version %d; upgrade the plugin or the client.",
								 BW_PROTOCOL_VERSION)));
				break;
			case OPT_STREAMING:
				opts->streaming = choose(elem->defname, value, off_on) == 1;
				break;
			case OPT_COUNT:
				break;
		}
	}

	/* streamed blocks, aborts and commits exist in the binary protocol only */
	if (opts->streaming && opts->format != BW_FORMAT_BINARY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"streaming\" is \"on\" but \"format\" is \"json\""),
				 errdetail("Only the binary format can stream transactions that are still in progress."),
				 errhint("Add format=binary, or set \"streaming\" to \"off\".")));
}
