/*
 * test_route.c — topic names from topic.template: placeholders, sanitising, the length limit.
 */
#include "buf.h"
#include "proto.h"
#include "route.h"
#include "unit.h"

TEST(route_topic_names)
{
    bw_relation rel = {0};
    rel.schema = "public";
    rel.table = "order items";
    bw_buf out;
    bw_buf_init(&out);
    bw_topic_name(&out, "{prefix}.{schema}.{table}", "bw", &rel, NULL, 0);
    ASSERT_STR_EQ(out.data, "bw.public.order_items");
    bw_topic_name(&out, "{prefix}.{tenant}", "bw", &rel, "acme/eu", 7);
    ASSERT_STR_EQ(out.data, "bw.acme_eu");
    bw_topic_name(&out, "t-{tenant}", "bw", &rel, NULL, 0);
    ASSERT_STR_EQ(out.data, "t-_none");
    bw_topic_name(&out, "{prefix}{unknown}", "p", &rel, NULL, 0);
    ASSERT_STR_EQ(out.data, "p_unknown_");
    char long_name[400];
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    rel.table = long_name;
    bw_topic_name(&out, "{table}", "p", &rel, NULL, 0);
    ASSERT_EQ(out.len, 249);
    bw_buf_free(&out);
}
