/*
 * test_selection.c — the decoder's table, column and tenant options as the relay reads them for
 * snapshots: patterns, quotes, rules, precedence, and errors that name the option. The same
 * option values are checked against the decoder itself end to end (tests/relay/test_snapshot.py).
 */
#include <string.h>

#include "selection.h"
#include "unit.h"

static bw_selection *sel(const char *tables, const char *exclude_tables, const char *tenant_column,
                         const char *tenant_columns, const char *exclude_columns,
                         const char *missing)
{
    bw_config cfg;
    char err[256] = "";
    memset(&cfg, 0, sizeof(cfg));
    cfg.decoder_tables = (char *) tables;
    cfg.decoder_exclude_tables = (char *) exclude_tables;
    cfg.decoder_tenant_column = (char *) tenant_column;
    cfg.decoder_tenant_columns = (char *) tenant_columns;
    cfg.decoder_exclude_columns = (char *) exclude_columns;
    cfg.decoder_missing_tenant = (char *) missing;
    bw_selection *s = bw_selection_new(&cfg, err, sizeof(err));
    if (s == NULL)
        unit_fail(__FILE__, __LINE__, "bw_selection_new: %s", err);
    return s;
}

static void expect_error(const char *tables, const char *tenant_columns, const char *needle)
{
    bw_config cfg;
    char err[256] = "";
    memset(&cfg, 0, sizeof(cfg));
    cfg.decoder_tables = (char *) tables;
    cfg.decoder_tenant_columns = (char *) tenant_columns;
    ASSERT_NULL(bw_selection_new(&cfg, err, sizeof(err)));
    ASSERT_STR_CONTAINS(err, needle);
}

TEST(selection_defaults_select_everything)
{
    bw_selection *s = sel(NULL, NULL, NULL, NULL, NULL, NULL);
    ASSERT_TRUE(bw_selection_table(s, "public", "orders"));
    ASSERT_STR_EQ(bw_selection_tenant_column(s, "public", "orders"), "tenant_id");
    ASSERT_FALSE(bw_selection_column_excluded(s, "public", "orders", "email"));
    ASSERT_EQ(bw_selection_missing_tenant(s), BW_MISSING_PASS);
    bw_selection_free(s);
}

TEST(selection_patterns_match_each_part)
{
    bw_selection *s = sel("public.ord*, billing.*", "billing.audit_*", NULL, NULL, NULL, "drop");
    ASSERT_TRUE(bw_selection_table(s, "public", "orders"));
    ASSERT_TRUE(bw_selection_table(s, "public", "ord"));
    ASSERT_FALSE(bw_selection_table(s, "public", "customers"));
    ASSERT_FALSE(bw_selection_table(s, "publicx", "orders"));
    ASSERT_TRUE(bw_selection_table(s, "billing", "invoices"));
    ASSERT_FALSE(bw_selection_table(s, "billing", "audit_log")); /* excluded after included */
    ASSERT_EQ(bw_selection_missing_tenant(s), BW_MISSING_DROP);
    bw_selection_free(s);
}

TEST(selection_quoted_names_hold_dots_commas_and_quotes)
{
    bw_selection *s = sel("\"my.schema\".\"a,b\", public.\"Say \"\"hi\"\"\"", NULL, "\"Org Id\"",
                          NULL, "*.*.\"pass.word\"", "error");
    ASSERT_TRUE(bw_selection_table(s, "my.schema", "a,b"));
    ASSERT_FALSE(bw_selection_table(s, "my", "schema"));
    ASSERT_TRUE(bw_selection_table(s, "public", "Say \"hi\""));
    ASSERT_STR_EQ(bw_selection_tenant_column(s, "public", "x"), "Org Id");
    ASSERT_TRUE(bw_selection_column_excluded(s, "a", "b", "pass.word"));
    ASSERT_FALSE(bw_selection_column_excluded(s, "a", "b", "password"));
    ASSERT_EQ(bw_selection_missing_tenant(s), BW_MISSING_ERROR);
    bw_selection_free(s);
}

TEST(selection_first_tenant_rule_wins)
{
    bw_selection *s =
        sel(NULL, NULL, "org", "billing.*=account_id, billing.x=never, public.orgs=id", NULL, NULL);
    ASSERT_STR_EQ(bw_selection_tenant_column(s, "billing", "x"), "account_id");
    ASSERT_STR_EQ(bw_selection_tenant_column(s, "public", "orgs"), "id");
    ASSERT_STR_EQ(bw_selection_tenant_column(s, "public", "orders"), "org");
    bw_selection_free(s);
}

TEST(selection_errors_name_the_option)
{
    expect_error("public", NULL, "invalid pattern \"public\" in option \"tables\"");
    expect_error("public.a,,public.b", NULL, "empty item in option \"tables\"");
    expect_error("\"public.a", NULL, "unterminated quote in option \"tables\"");
    expect_error(NULL, "public.a", "invalid rule \"public.a\" in option \"tenant-columns\"");
    expect_error(NULL, "public.a=b=c", "invalid rule");
}
