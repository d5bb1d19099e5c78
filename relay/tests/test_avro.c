/*
 * test_avro.c — avro_schema.c, avro_value.c, avro_encode.c and registry.c: name mapping, decimal
 * bytes, schema text, messages read back with avro-c's reader, merging for the coalescer, and the
 * registry client against a scripted fake registry (retries, rejection, unreachable).
 */
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <avro.h>

#include "avro_encode.h"
#include "avro_schema.h"
#include "avro_value.h"
#include "fake_registry.h"
#include "registry.h"

/* ---- names ---------------------------------------------------------------------------------- */

static void expect_name(const char *pg, const char *avro)
{
    bw_buf out, back;
    bw_buf_init(&out);
    bw_buf_init(&back);
    bw_avro_name(&out, pg);
    ASSERT_STR_EQ(out.data, avro);
    ASSERT_OK(bw_avro_name_decode(&back, out.data));
    ASSERT_STR_EQ(back.data ? back.data : "", pg);
    bw_buf_free(&out);
    bw_buf_free(&back);
}

TEST(avro_names_map_reversibly)
{
    expect_name("order_id", "order_id");
    expect_name("_x9", "_x9");
    expect_name("order-id", "__order_2did");
    expect_name("a__b", "__a_5f_5fb");
    expect_name("1st", "__1st");
    expect_name("Ünits", "___c3_9cnits");
    expect_name("with space", "__with_20space");
    expect_name("__", "___5f_5f");

    bw_buf out;
    bw_buf_init(&out);
    ASSERT_EQ(bw_avro_name_decode(&out, "__a_zz"), -1); /* not hex */
    bw_buf_free(&out);
}

/* ---- decimals ------------------------------------------------------------------------------- */

/* numeric's send format from base-10000 digits */
static size_t numeric(uint8_t *p, int weight, uint16_t sign, uint16_t dscale, int n, ...)
{
    va_list ap;
    p[0] = (uint8_t) (n >> 8);
    p[1] = (uint8_t) n;
    p[2] = (uint8_t) ((uint16_t) weight >> 8);
    p[3] = (uint8_t) weight;
    p[4] = (uint8_t) (sign >> 8);
    p[5] = (uint8_t) sign;
    p[6] = (uint8_t) (dscale >> 8);
    p[7] = (uint8_t) dscale;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        int d = va_arg(ap, int);
        p[8 + 2 * i] = (uint8_t) (d >> 8);
        p[9 + 2 * i] = (uint8_t) d;
    }
    va_end(ap);
    return 8 + 2 * (size_t) n;
}

static void expect_decimal(const uint8_t *p, size_t len, int scale, const char *hex)
{
    bw_buf out;
    char why[128] = "", got[128] = "";
    bw_buf_init(&out);
    int rc = bw_avro_decimal(&out, p, (uint32_t) len, scale, why, sizeof(why));
    if (rc != 0)
        unit_fail(__FILE__, __LINE__, "expected %s, got error %s", hex, why);
    for (size_t i = 0; i < out.len; i++)
        snprintf(got + 2 * i, sizeof(got) - 2 * i, "%02x", (uint8_t) out.data[i]);
    ASSERT_STR_EQ(got, hex);
    bw_buf_free(&out);
}

TEST(avro_decimal_twos_complement)
{
    uint8_t p[64];
    size_t n;
    n = numeric(p, 0, 0x0000, 2, 2, 123, 4500); /* 123.45 */
    expect_decimal(p, n, 2, "3039");            /* 12345 */
    n = numeric(p, 0, 0x4000, 2, 2, 123, 4500); /* -123.45 */
    expect_decimal(p, n, 2, "cfc7");
    n = numeric(p, 0, 0x0000, 0, 0); /* 0 */
    expect_decimal(p, n, 3, "00");
    n = numeric(p, 0, 0x4000, 0, 0); /* -0 is 0 */
    expect_decimal(p, n, 0, "00");
    n = numeric(p, 0, 0x0000, 0, 1, 128);
    expect_decimal(p, n, 0, "0080");
    n = numeric(p, 0, 0x4000, 0, 1, 128);
    expect_decimal(p, n, 0, "80");
    n = numeric(p, 0, 0x4000, 0, 1, 129);
    expect_decimal(p, n, 0, "ff7f");
    n = numeric(p, 0, 0x0000, 0, 1, 255);
    expect_decimal(p, n, 0, "00ff");
    n = numeric(p, -1, 0x0000, 4, 1, 1); /* 0.0001 */
    expect_decimal(p, n, 4, "01");
    n = numeric(p, 1, 0x0000, 0, 1, 1); /* 10000: weight 1, trailing group implied */
    expect_decimal(p, n, 2, "0f4240");  /* 1000000 */
    n = numeric(p, 4, 0x0000, 0, 1, 1); /* 10^16 */
    expect_decimal(p, n, 0, "2386f26fc10000");

    bw_buf out;
    char why[128];
    bw_buf_init(&out);
    n = numeric(p, 0, 0xC000, 0, 0); /* NaN */
    ASSERT_EQ(bw_avro_decimal(&out, p, (uint32_t) n, 2, why, sizeof(why)), -1);
    ASSERT_STR_CONTAINS(why, "NaN has no Avro decimal form");
    n = numeric(p, 0, 0x0000, 3, 2, 1, 1230); /* 1.123, scale 2 */
    ASSERT_EQ(bw_avro_decimal(&out, p, (uint32_t) n, 2, why, sizeof(why)), -1);
    ASSERT_STR_CONTAINS(why, "beyond the scale of 2");
    ASSERT_EQ(bw_avro_decimal(&out, p, 7, 2, why, sizeof(why)), -1);
    ASSERT_STR_CONTAINS(why, "malformed numeric");
    bw_buf_free(&out);
}

/* ---- a relation ------------------------------------------------------------------------------ */

static char s_public[] = "public", s_orders[] = "orders", s_none[] = "";
static char c_id[] = "id", c_amount[] = "amount", c_note[] = "note", c_at[] = "at",
            c_dash[] = "order-id";

/* orders(id int4 key, amount numeric(10,2), note text [text format], at timestamptz,
 * "order-id" int8) */
static bw_column columns[] = {
    {BW_COL_KEY, 'b', c_id, BW_OID_INT4, -1},
    {0, 'b', c_amount, BW_OID_NUMERIC, ((10 << 16) | 2) + 4},
    {0, 't', c_note, BW_OID_TEXT, -1},
    {0, 'b', c_at, BW_OID_TIMESTAMPTZ, -1},
    {0, 'b', c_dash, BW_OID_INT8, -1},
};
static uint16_t keys[] = {0};

static bw_relation orders(void)
{
    bw_relation rel = {16384,   1, s_public, s_orders, 'd',  s_none, 5,
                       columns, 1, keys,     NULL,     NULL, 0};
    return rel;
}

TEST(avro_schema_of_a_relation)
{
    bw_relation rel = orders();
    bw_avro_plan p;
    char err[256];
    ASSERT_OK(bw_avro_plan_build(&p, &rel, "bw", err, sizeof(err)));
    ASSERT_STR_EQ(p.fullname, "bw.public.orders");
    ASSERT_STR_EQ(p.key_schema,
                  "{\"type\":\"record\",\"name\":\"Key\",\"namespace\":"
                  "\"bw.public.orders\",\"fields\":[{\"name\":\"id\",\"type\":\"int\"}]}");
    ASSERT_STR_CONTAINS(
        p.value_schema,
        "{\"type\":\"record\",\"name\":\"Envelope\",\"namespace\":\"bw.public.orders\","
        "\"fields\":[{\"name\":\"op\",\"type\":\"string\"},{\"name\":"
        "\"unchanged_toast\",\"type\":{\"type\":\"array\",\"items\":\"string\"},"
        "\"default\":[]},");
    ASSERT_STR_CONTAINS(p.value_schema,
                        "{\"name\":\"amount\",\"type\":[\"null\",{\"type\":\"bytes\","
                        "\"logicalType\":\"decimal\",\"precision\":10,\"scale\":2}],"
                        "\"default\":null}");
    ASSERT_STR_CONTAINS(p.value_schema, "{\"name\":\"note\",\"type\":[\"null\",\"string\"]");
    ASSERT_STR_CONTAINS(p.value_schema, "{\"name\":\"at\",\"type\":[\"null\",{\"type\":\"long\","
                                        "\"logicalType\":\"timestamp-micros\"}]");
    ASSERT_STR_CONTAINS(p.value_schema, "{\"name\":\"__order_2did\",\"type\":[\"null\",\"long\"]");
    ASSERT_STR_CONTAINS(p.value_schema, "{\"name\":\"new\",\"type\":[\"null\",\"Value\"]");
    /* the same relation gives the same text (registries key schemas by it) */
    bw_avro_plan again;
    ASSERT_OK(bw_avro_plan_build(&again, &rel, "bw", err, sizeof(err)));
    ASSERT_STR_EQ(again.value_schema, p.value_schema);
    /* avro-c accepts both */
    avro_schema_t s;
    ASSERT_OK(avro_schema_from_json_length(p.value_schema, strlen(p.value_schema), &s));
    avro_schema_decref(s);
    ASSERT_OK(avro_schema_from_json_length(p.key_schema, strlen(p.key_schema), &s));
    avro_schema_decref(s);
    bw_avro_plan_free(&p);
    bw_avro_plan_free(&again);

    /* numeric whose scale Avro cannot take, and a binary type the relay does not know */
    bw_column odd[] = {{0, 'b', c_amount, BW_OID_NUMERIC, ((2 << 16) | 5) + 4}};
    bw_relation r2 = {1, 1, s_public, s_orders, 'd', s_none, 1, odd, 0, NULL, NULL, NULL, 0};
    ASSERT_OK(bw_avro_plan_build(&p, &r2, "bw", err, sizeof(err)));
    ASSERT_EQ(p.cols[0].kind, BW_AV_RENDERED);
    ASSERT_TRUE(p.key_schema == NULL);
    ASSERT_TRUE(strstr(p.value_schema, "\"key\"") == NULL);
    bw_avro_plan_free(&p);
    odd[0].type_oid = 600; /* point */
    odd[0].typmod = -1;
    ASSERT_EQ(bw_avro_plan_build(&p, &r2, "bw", err, sizeof(err)), -1);
    ASSERT_STR_CONTAINS(err, "column \"amount\" of table \"public.orders\": type oid 600 arrives "
                             "in binary format");
}

/* ---- encoding against the fake registry ----------------------------------------------------- */

typedef struct avro_fx {
    fake_registry *fake;
    bw_config cfg;
    bw_registry *reg;
    bw_avro *avro;
    bw_avro_rel *ar;
    bw_relation rel;
    char err[1024];
    char compat[16];
} avro_fx;

static void fx_start_auth(avro_fx *fx, const char *url, int64_t retry_max_ms, char *auth)
{
    memset(fx, 0, sizeof(*fx));
    fx->cfg.schema_registry_basic_auth = auth;
    if (url == NULL) {
        fx->fake = fake_registry_start();
        ASSERT_TRUE(fx->fake != NULL);
        url = fx->fake->url;
    }
    fx->cfg.schema_registry_url = (char *) url;
    fx->cfg.schema_registry_timeout_ms = 2000;
    fx->cfg.schema_registry_retry_max_ms = retry_max_ms;
    fx->cfg.schema_registry_compatibility = fx->compat;
    fx->reg = bw_registry_new(&fx->cfg, NULL, NULL, fx->err, sizeof(fx->err));
    ASSERT_TRUE(fx->reg != NULL);
    fx->avro = bw_avro_new(fx->reg, "bw");
    fx->rel = orders();
    fx->ar = bw_avro_rel_new(fx->avro, &fx->rel, fx->err, sizeof(fx->err));
    ASSERT_TRUE(fx->ar != NULL);
}

static void fx_start(avro_fx *fx, const char *url, int64_t retry_max_ms)
{
    fx_start_auth(fx, url, retry_max_ms, NULL);
}

static void fx_stop(avro_fx *fx)
{
    bw_avro_rel_free(fx->ar);
    bw_avro_free(fx->avro);
    bw_registry_free(fx->reg);
    fake_registry_stop(fx->fake);
}

static const uint8_t v_id[] = {0, 0, 0, 7};
static const uint8_t v_at[] = {0, 0, 0, 0, 0, 0, 0, 1}; /* 2000-01-01 00:00:00.000001 UTC */
static const uint8_t v_big[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};

/* A body read back with the schema it was written with. */
static void read_back(const bw_buf *msg, const char *schema_text, avro_value_iface_t **cls,
                      avro_value_t *v)
{
    avro_schema_t s;
    ASSERT_OK(avro_schema_from_json_length(schema_text, strlen(schema_text), &s));
    *cls = avro_generic_class_from_schema(s);
    avro_schema_decref(s);
    ASSERT_OK(avro_generic_value_new(*cls, v));
    avro_reader_t r = avro_reader_memory(msg->data + 5, (int64_t) msg->len - 5);
    ASSERT_OK(avro_value_read(r, v));
    avro_reader_free(r);
}

static void get_path(avro_value_t *v, const char *field, avro_value_t *out)
{
    avro_value_t f;
    ASSERT_OK(avro_value_get_by_name(v, field, &f, NULL));
    if (avro_value_get_type(&f) == AVRO_UNION)
        ASSERT_OK(avro_value_get_current_branch(&f, out));
    else
        *out = f;
}

TEST(avro_encodes_a_change_in_the_confluent_wire_format)
{
    avro_fx fx;
    fx_start(&fx, NULL, 1000);
    ASSERT_OK(
        bw_avro_use_topic(fx.avro, fx.ar, &fx.rel, "bw.public.orders", fx.err, sizeof(fx.err)));
    ASSERT_EQ(fx.fake->registrations, 2); /* key, then value */
    ASSERT_STR_EQ(fx.fake->last_path, "POST /subjects/bw.public.orders-value/versions");
    /* the same topic again asks nothing */
    ASSERT_OK(
        bw_avro_use_topic(fx.avro, fx.ar, &fx.rel, "bw.public.orders", fx.err, sizeof(fx.err)));
    ASSERT_EQ(fx.fake->requests, 2);

    uint8_t amount[32];
    size_t amount_len = numeric(amount, 0, 0x4000, 2, 2, 123, 4500); /* -123.45 */
    bw_value vals[] = {{'b', v_id, 4},
                       {'b', amount, (uint32_t) amount_len},
                       {'t', (const uint8_t *) "héllo", 6},
                       {'b', v_at, 8},
                       {'n', NULL, 0}};
    bw_change c = {&fx.rel, {'t', (const uint8_t *) "acme", 4}, 'X', 0, NULL, 5, vals};
    bw_xact x = {4242, 0x16B3748, 0x16B3780, 1700000000000000};
    bw_buf key, value;
    bw_buf_init(&key);
    bw_buf_init(&value);
    ASSERT_OK(bw_avro_key(fx.avro, fx.ar, &key, &c, fx.err, sizeof(fx.err)));
    ASSERT_MEM_EQ(key.data, "\0\0\0\0\1", 5);
    ASSERT_EQ(key.len, 6);
    ASSERT_EQ((uint8_t) key.data[5], 14); /* zigzag 7 */
    ASSERT_OK(
        bw_avro_change(fx.avro, fx.ar, &value, BW_REC_INSERT, &x, &c, fx.err, sizeof(fx.err)));
    ASSERT_MEM_EQ(value.data, "\0\0\0\0\2", 5);

    avro_value_iface_t *cls;
    avro_value_t v, f, row;
    const char *s;
    size_t n;
    int64_t l;
    int32_t i;
    read_back(&value, fx.fake->schemas[1], &cls, &v);
    get_path(&v, "op", &f);
    ASSERT_OK(avro_value_get_string(&f, &s, &n));
    ASSERT_STR_EQ(s, "insert");
    get_path(&v, "xid", &f);
    ASSERT_OK(avro_value_get_long(&f, &l));
    ASSERT_EQ(l, 4242);
    get_path(&v, "commit_lsn", &f);
    ASSERT_OK(avro_value_get_long(&f, &l));
    ASSERT_EQ(l, 0x16B3748);
    get_path(&v, "commit_time", &f);
    ASSERT_OK(avro_value_get_long(&f, &l));
    ASSERT_EQ(l, 1700000000000000);
    get_path(&v, "tenant", &f);
    ASSERT_OK(avro_value_get_string(&f, &s, &n));
    ASSERT_STR_EQ(s, "acme");
    get_path(&v, "old", &f);
    ASSERT_EQ(avro_value_get_type(&f), AVRO_NULL);
    get_path(&v, "key", &f);
    get_path(&f, "id", &row);
    ASSERT_OK(avro_value_get_int(&row, &i));
    ASSERT_EQ(i, 7);
    get_path(&v, "new", &row);
    get_path(&row, "id", &f);
    ASSERT_OK(avro_value_get_int(&f, &i));
    ASSERT_EQ(i, 7);
    get_path(&row, "amount", &f);
    const void *bytes;
    ASSERT_OK(avro_value_get_bytes(&f, &bytes, &n));
    ASSERT_EQ(n, 2);
    ASSERT_MEM_EQ(bytes, "\xcf\xc7", 2);
    get_path(&row, "note", &f);
    ASSERT_OK(avro_value_get_string(&f, &s, &n));
    ASSERT_STR_EQ(s, "héllo");
    get_path(&row, "at", &f);
    ASSERT_OK(avro_value_get_long(&f, &l));
    ASSERT_EQ(l, INT64_C(946684800000001));
    get_path(&row, "__order_2did", &f);
    ASSERT_EQ(avro_value_get_type(&f), AVRO_NULL);
    avro_value_decref(&v);
    avro_value_iface_decref(cls);

    /* a value outside Avro's range names the column */
    vals[3] = (bw_value){'b', v_big, 8};
    vals[3].data = (const uint8_t *) "\x7f\xff\xff\xff\xff\xff\xff\xf0";
    ASSERT_EQ(bw_avro_change(fx.avro, fx.ar, &value, BW_REC_INSERT, &x, &c, fx.err, sizeof(fx.err)),
              -1);
    ASSERT_STR_CONTAINS(fx.err, "column \"at\" of table \"public.orders\": timestamp beyond");
    bw_buf_free(&key);
    bw_buf_free(&value);
    fx_stop(&fx);
}

TEST(avro_merge_ops_rename_and_fill_unchanged_columns)
{
    avro_fx fx;
    fx_start(&fx, NULL, 1000);
    ASSERT_OK(bw_avro_use_topic(fx.avro, fx.ar, &fx.rel, "t", fx.err, sizeof(fx.err)));
    uint8_t amount[32];
    size_t amount_len = numeric(amount, 0, 0x0000, 0, 1, 5);
    bw_value held_vals[] = {{'b', v_id, 4},
                            {'b', amount, (uint32_t) amount_len},
                            {'t', (const uint8_t *) "a long note", 11},
                            {'n', NULL, 0},
                            {'n', NULL, 0}};
    bw_value next_vals[] = {
        {'b', v_id, 4}, {'n', NULL, 0}, {'u', NULL, 0}, {'n', NULL, 0}, {'u', NULL, 0}};
    bw_change held = {&fx.rel, {'n', NULL, 0}, 'X', 0, NULL, 5, held_vals};
    bw_change next = {&fx.rel, {'n', NULL, 0}, 'X', 0, NULL, 5, next_vals};
    bw_xact x = {1, 2, 3, 4};
    bw_buf h, n;
    bw_buf_init(&h);
    bw_buf_init(&n);
    ASSERT_OK(bw_avro_change(fx.avro, fx.ar, &h, BW_REC_INSERT, &x, &held, fx.err, sizeof(fx.err)));
    ASSERT_OK(bw_avro_change(fx.avro, fx.ar, &n, BW_REC_UPDATE, &x, &next, fx.err, sizeof(fx.err)));
    bw_merge_ops ops = bw_avro_merge_ops(fx.avro);
    ASSERT_FALSE(ops.has_unchanged(ops.arg, h.data, h.len));
    ASSERT_TRUE(ops.has_unchanged(ops.arg, n.data, n.len));

    size_t len = 0;
    bool apart = true;
    char *merged = ops.merge_unchanged(ops.arg, h.data, h.len, n.data, n.len, &len, &apart);
    ASSERT_FALSE(apart);
    ASSERT_TRUE(merged != NULL);
    char *renamed = ops.set_op(ops.arg, merged, len, BW_REC_UPDATE, BW_REC_INSERT, &len);
    ASSERT_TRUE(renamed != NULL);
    ASSERT_EQ(ops.set_op(ops.arg, renamed, len, BW_REC_INSERT, BW_REC_INSERT, &len), NULL);

    bw_buf out = {renamed, len, len + 1};
    avro_value_iface_t *cls;
    avro_value_t v, f, row;
    const char *s;
    size_t sn;
    read_back(&out, fx.fake->schemas[1], &cls, &v);
    get_path(&v, "op", &f);
    ASSERT_OK(avro_value_get_string(&f, &s, &sn));
    ASSERT_STR_EQ(s, "insert");
    get_path(&v, "new", &row);
    get_path(&row, "note", &f); /* taken from the held change */
    ASSERT_OK(avro_value_get_string(&f, &s, &sn));
    ASSERT_STR_EQ(s, "a long note");
    get_path(&v, "unchanged_toast", &f); /* the held change had "order-id" as NULL: filled */
    ASSERT_OK(avro_value_get_size(&f, &sn));
    ASSERT_EQ(sn, 0);
    avro_value_decref(&v);
    avro_value_iface_decref(cls);
    ASSERT_FALSE(ops.has_unchanged(ops.arg, renamed, len));

    /* another schema id: apart */
    n.data[4] = 9;
    ASSERT_EQ(ops.merge_unchanged(ops.arg, h.data, h.len, n.data, n.len, &len, &apart), NULL);
    ASSERT_TRUE(apart);
    free(merged);
    free(renamed);
    bw_buf_free(&h);
    bw_buf_free(&n);
    fx_stop(&fx);
}

TEST(avro_registry_retries_then_registers)
{
    avro_fx fx;
    fx_start(&fx, NULL, 10000);
    fx.fake->fail_next = 2;
    fx.fake->fail_status = 503;
    snprintf(fx.compat, sizeof(fx.compat), "BACKWARD");
    ASSERT_OK(bw_avro_use_topic(fx.avro, fx.ar, &fx.rel, "t", fx.err, sizeof(fx.err)));
    /* two failures, then for the key and for the value: GET versions (404: a new subject),
     * PUT config, POST */
    ASSERT_EQ(fx.fake->requests, 8);
    ASSERT_EQ(fx.fake->configs, 2);
    ASSERT_EQ(fx.fake->registrations, 2);
    ASSERT_EQ(bw_registry_registrations(fx.reg), 2);

    /* another relay (process) later: the subjects exist, their level is left alone */
    bw_avro_rel_free(fx.ar);
    bw_avro_free(fx.avro);
    bw_registry_free(fx.reg);
    fx.reg = bw_registry_new(&fx.cfg, NULL, NULL, fx.err, sizeof(fx.err));
    fx.avro = bw_avro_new(fx.reg, "bw");
    fx.ar = bw_avro_rel_new(fx.avro, &fx.rel, fx.err, sizeof(fx.err));
    ASSERT_OK(bw_avro_use_topic(fx.avro, fx.ar, &fx.rel, "t", fx.err, sizeof(fx.err)));
    ASSERT_EQ(fx.fake->configs, 2);
    ASSERT_EQ(fx.fake->requests, 12); /* GET versions (200) and POST, for key and value */
    fx_stop(&fx);
}

TEST(avro_registry_gives_up_with_the_registry_message)
{
    avro_fx fx;
    fx_start(&fx, NULL, 300);
    fx.fake->fail_next = 1000;
    fx.fake->fail_status = 500;
    ASSERT_EQ(bw_avro_use_topic(fx.avro, fx.ar, &fx.rel, "t", fx.err, sizeof(fx.err)), -1);
    ASSERT_STR_CONTAINS(fx.err, "registering the key schema of table \"public.orders\" (subject "
                                "\"t-key\") failed: POST http://127.0.0.1:");
    ASSERT_STR_CONTAINS(fx.err, "/subjects/t-key/versions: HTTP 500: scripted failure (gave up "
                                "after ");
    ASSERT_STR_CONTAINS(fx.err, "nothing of it was confirmed to PostgreSQL");
    fx_stop(&fx);
}

TEST(avro_registry_unreachable_names_the_url)
{
    /* a port nobody listens on: bound, then closed */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    ASSERT_OK(bind(s, (struct sockaddr *) &a, sizeof(a)));
    ASSERT_OK(getsockname(s, (struct sockaddr *) &a, &alen));
    close(s);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", ntohs(a.sin_port));
    avro_fx fx;
    fx_start(&fx, url, 250);
    ASSERT_EQ(bw_avro_use_topic(fx.avro, fx.ar, &fx.rel, "t", fx.err, sizeof(fx.err)), -1);
    url[strlen(url) - 1] = '\0'; /* the trailing slash is not doubled */
    ASSERT_STR_CONTAINS(fx.err, url);
    ASSERT_STR_CONTAINS(fx.err, "/subjects/t-key/versions: ");
    ASSERT_STR_CONTAINS(fx.err, "gave up after");
    fx_stop(&fx);
}

TEST(avro_registry_rejection_names_the_column)
{
    avro_fx fx;
    fx_start(&fx, NULL, 1000);
    ASSERT_OK(bw_avro_use_topic(fx.avro, fx.ar, &fx.rel, "t", fx.err, sizeof(fx.err)));
    /* the table changes: amount becomes text, note is dropped, "new col" added */
    char c_new[] = "new col";
    bw_column changed[] = {
        {BW_COL_KEY, 'b', c_id, BW_OID_INT4, -1}, {0, 't', c_amount, BW_OID_TEXT, -1},
        {0, 'b', c_at, BW_OID_TIMESTAMPTZ, -1},   {0, 'b', c_dash, BW_OID_INT8, -1},
        {0, 'b', c_new, BW_OID_INT4, -1},
    };
    bw_relation rel2 = {16384,   2, s_public, s_orders, 'd',  s_none, 5,
                        changed, 1, keys,     NULL,     NULL, 0};
    bw_avro_rel *ar2 = bw_avro_rel_new(fx.avro, &rel2, fx.err, sizeof(fx.err));
    ASSERT_TRUE(ar2 != NULL);
    fx.fake->reject = 1;
    fx.fake->latest = fx.fake->schemas[1];
    ASSERT_EQ(bw_avro_use_topic(fx.avro, ar2, &rel2, "t", fx.err, sizeof(fx.err)), -1);
    ASSERT_STR_CONTAINS(fx.err, "the schema registry rejected the new value schema of table "
                                "\"public.orders\" (subject \"t-value\") as incompatible: ");
    ASSERT_STR_CONTAINS(fx.err, "column \"amount\" changed type from {\"type\":\"bytes\","
                                "\"logicalType\":\"decimal\",\"precision\":10,\"scale\":2} to "
                                "\"string\"");
    ASSERT_STR_CONTAINS(fx.err, "column \"new col\" added as \"int\"");
    ASSERT_STR_CONTAINS(fx.err, "column \"note\" dropped");
    ASSERT_STR_CONTAINS(fx.err, "The registry said: POST ");
    ASSERT_STR_CONTAINS(fx.err, "HTTP 409: Schema being registered is incompatible");
    bw_avro_rel_free(ar2);
    fx_stop(&fx);
}

TEST(avro_registry_basic_auth)
{
    avro_fx fx;
    char auth[] = "relay:s3cret";
    fx_start_auth(&fx, NULL, 1000, auth);
    ASSERT_OK(bw_avro_use_topic(fx.avro, fx.ar, &fx.rel, "t", fx.err, sizeof(fx.err)));
    ASSERT_STR_EQ(fx.fake->last_auth, "Basic cmVsYXk6czNjcmV0"); /* base64("relay:s3cret") */
    fx_stop(&fx);

    fx_start(&fx, NULL, 1000);
    ASSERT_OK(bw_avro_use_topic(fx.avro, fx.ar, &fx.rel, "t", fx.err, sizeof(fx.err)));
    ASSERT_STR_EQ(fx.fake->last_auth, "");
    fx_stop(&fx);
}
