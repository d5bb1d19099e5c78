/*
 * route.c — records to Kafka messages (see route.h). Rows go to the topic of their table, keyed
 * by their key columns so that a key's changes stay in one partition, in order, and deletes are
 * followed by tombstones, so that a compacted topic keeps exactly the live rows.
 * Headers repeat what consumers filter on without parsing the value.
 */
#include "route.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "clock.h"
#include "encode.h"
#include "log.h"
#include "selection.h"

/* A transaction's tracker entry: made when it was read ahead (bw_route_peek), else now. */
static bw_txn_entry *take_entry(bw_router *r, uint64_t lsn)
{
    if (r->early_len == 0)
        return bw_lsntrack_begin(r->track, lsn);
    bw_txn_entry *e = r->early[r->early_head];
    r->early_head = (r->early_head + 1) % r->early_cap;
    r->early_len--;
    return e;
}

static void keep_entry(bw_router *r, bw_txn_entry *e)
{
    if (r->early_len == r->early_cap) {
        size_t cap = r->early_cap ? r->early_cap * 2 : 64;
        bw_txn_entry **q = bw_xcalloc(cap, sizeof(*q));
        for (size_t i = 0; i < r->early_len; i++)
            q[i] = r->early[(r->early_head + i) % r->early_cap];
        free(r->early);
        r->early = q;
        r->early_head = 0;
        r->early_cap = cap;
    }
    r->early[(r->early_head + r->early_len++) % r->early_cap] = e;
}

void bw_router_init(bw_router *r, const bw_config *cfg, bw_producer *p, bw_lsntrack *t,
                    bw_metrics *m)
{
    memset(r, 0, sizeof(*r));
    r->cfg = cfg;
    r->producer = p;
    r->track = t;
    r->metrics = m;
    bw_buf_init(&r->topic);
    bw_buf_init(&r->key);
    bw_buf_init(&r->value);
    bw_buf_init(&r->json_key);
    bw_buf_init(&r->peek_key);
    bw_buf_init(&r->keyless_topic);
}

void bw_router_free(bw_router *r)
{
    bw_buf_free(&r->topic);
    bw_buf_free(&r->key);
    bw_buf_free(&r->value);
    bw_buf_free(&r->json_key);
    bw_buf_free(&r->peek_key);
    bw_buf_free(&r->keyless_topic);
    free(r->early);
}

/* Kafka topic names: [a-zA-Z0-9._-], at most 249 characters; anything else becomes '_' */
static void append_sanitised(bw_buf *out, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        bw_buf_putc(out, ok ? c : '_');
    }
}

void bw_topic_name(bw_buf *out, const char *tmpl, const char *prefix, const bw_relation *rel,
                   const char *tenant, size_t tenant_len)
{
    bw_buf_reset(out);
    for (const char *p = tmpl; *p;) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            size_t n = close ? (size_t) (close - p + 1) : 0;
            if (n == 8 && strncmp(p, "{prefix}", n) == 0)
                append_sanitised(out, prefix, strlen(prefix));
            else if (n == 8 && strncmp(p, "{schema}", n) == 0)
                append_sanitised(out, rel ? rel->schema : "_", strlen(rel ? rel->schema : "_"));
            else if (n == 7 && strncmp(p, "{table}", n) == 0)
                append_sanitised(out, rel ? rel->table : "_", strlen(rel ? rel->table : "_"));
            else if (n == 8 && strncmp(p, "{tenant}", n) == 0) {
                if (tenant)
                    append_sanitised(out, tenant, tenant_len);
                else
                    bw_buf_puts(out, "_none");
            } else {
                n = 1; /* not a placeholder (the config refuses unknown ones) */
                append_sanitised(out, "{", 1);
            }
            p += n;
            continue;
        }
        append_sanitised(out, p, 1);
        p++;
    }
    if (out->len > 249) {
        out->len = 249;
        out->data[249] = '\0';
    }
}

typedef struct header_set {
    bw_header h[6];
    size_t n;
    char lsn[18], xid[16], time[24], table[260];
} header_set;

static void headers_for(header_set *hs, bw_record_type type, const bw_xact *x,
                        const bw_relation *rel, const bw_value *tenant)
{
    hs->n = 0;
    const char *op = bw_record_op(type);
    hs->h[hs->n++] = (bw_header){"op", op, strlen(op)};
    if (tenant && tenant->kind == 't')
        hs->h[hs->n++] = (bw_header){"tenant", (const char *) tenant->data, tenant->len};
    if (rel) {
        int n = snprintf(hs->table, sizeof(hs->table), "%s.%s", rel->schema, rel->table);
        hs->h[hs->n++] =
            (bw_header){"table", hs->table,
                        (size_t) n < sizeof(hs->table) ? (size_t) n : sizeof(hs->table) - 1};
    }
    if (x) {
        bw_lsn_str(x->commit_lsn, hs->lsn);
        hs->h[hs->n++] = (bw_header){"lsn", hs->lsn, strlen(hs->lsn)};
        size_t n = bw_fmt_u64(hs->xid, x->xid, 1);
        hs->h[hs->n++] = (bw_header){"xid", hs->xid, n};
        n = bw_fmt_i64(hs->time, x->commit_time);
        hs->h[hs->n++] = (bw_header){"commit_time_us", hs->time, n};
    }
}

/* What the router keeps per relation record, in rel->user (the parser lets us). */
typedef struct rel_state {
    enum { UNKNOWN, NO, YES } coalesce;
    bw_avro_rel *avro;   /* value.format avro: the relation's schemas; built on first use */
    char *ensured_topic; /* the last topic made sure of (bw_topics_ensure) */
    bool compacted;      /* ensured_topic is compacted: a message without a key goes elsewhere */
} rel_state;

static rel_state *state_of(const bw_relation *rel)
{
    bw_relation *m = (bw_relation *) rel;
    if (m->user == NULL)
        m->user = bw_xcalloc(1, sizeof(rel_state));
    return m->user;
}

void bw_route_relation_free(void *router, bw_relation *rel)
{
    rel_state *rs = rel->user;
    (void) router;
    if (rs == NULL)
        return;
    bw_avro_rel_free(rs->avro);
    free(rs->ensured_topic);
    free(rs);
    rel->user = NULL;
}

/* Is rel in coalesce.tables? Decided once per relation record. */
static bool coalesced(bw_router *r, const bw_relation *rel)
{
    rel_state *rs = state_of(rel);
    if (rs->coalesce == UNKNOWN) {
        char name[260];
        snprintf(name, sizeof(name), "%s.%s", rel->schema, rel->table);
        bool yes = false;
        for (const char *p = r->cfg->coalesce_tables; *p && !yes;) {
            while (*p == ' ')
                p++;
            size_t len = strcspn(p, ",");
            char *item = bw_xstrndup(p, len);
            yes = bw_glob_match(item, name);
            free(item);
            p += len;
            p += *p == ',';
        }
        rs->coalesce = yes ? YES : NO;
    }
    return rs->coalesce == YES;
}

/*
 * The row topic r->topic exists, with the configured settings, before its first message; whether
 * it is compacted. The topic of a table without key columns is not made compacted: Kafka would
 * refuse its every message.
 */
static bool ensure_topic(bw_router *r, const bw_relation *rel)
{
    rel_state *rs = state_of(rel);
    const char *keyless_why = NULL;
    char why[300];
    if (r->topics == NULL)
        return false;
    if (rs->ensured_topic && strcmp(rs->ensured_topic, r->topic.data) == 0)
        return rs->compacted;
    if (rel->nkeys == 0) {
        snprintf(why, sizeof(why), "table %s.%s has no key columns", rel->schema, rel->table);
        keyless_why = why;
    }
    rs->compacted = bw_topics_ensure(r->topics, r->topic.data, keyless_why);
    free(rs->ensured_topic);
    rs->ensured_topic = bw_xstrdup(r->topic.data);
    return rs->compacted;
}

/*
 * A message without a key for a compacted topic: Kafka refuses it there (INVALID_RECORD), and the
 * relay would stop on it. Truncates, rows of tables without key columns and keyless deletes go to
 * topic.keyless instead, with the same value and headers, keyed by "schema.table" (hs->table) so
 * that they have a key wherever they land. That topic is made with cleanup.policy=delete: what
 * it holds is history, not rows to compact. A warning the first time per topic says so.
 */
static int send_keyless_elsewhere(bw_router *r, bw_record_type type, const bw_relation *rel,
                                  const header_set *hs)
{
    bw_topic_name(&r->keyless_topic, r->cfg->topic_keyless, r->cfg->topic_prefix, NULL, NULL, 0);
    bw_topics_ensure(r->topics, r->keyless_topic.data,
                     "it takes the messages without a key of compacted topics");
    if (bw_topics_first_redirect(r->topics, r->topic.data))
        bw_warn("topic %s is compacted, and Kafka refuses messages without a key there: the %s "
                "of table %s.%s went to topic %s instead, keyed by \"%s\", and so will every "
                "later message without a key for %s (topic.keyless)",
                r->topic.data, bw_record_op(type), rel->schema, rel->table, r->keyless_topic.data,
                hs->table, r->topic.data);
    return bw_producer_send(r->producer, r->keyless_topic.data, hs->table, strlen(hs->table),
                            r->value.data, r->value.len, hs->h, hs->n, r->entry, r->err,
                            sizeof(r->err));
}

/* A row message (r->value) to r->topic, with its key, or without one (key NULL). */
static int send_row(bw_router *r, bw_record_type type, const bw_relation *rel, bool compacted,
                    const bw_buf *key, const header_set *hs)
{
    if (key == NULL && compacted)
        return send_keyless_elsewhere(r, type, rel, hs);
    return bw_producer_send(r->producer, r->topic.data, key ? key->data : NULL, key ? key->len : 0,
                            r->value.data, r->value.len, hs->h, hs->n, r->entry, r->err,
                            sizeof(r->err));
}

void bw_route_ensure_topic(bw_router *r, const bw_relation *rel)
{
    bw_topic_name(&r->topic, r->cfg->topic_template, r->cfg->topic_prefix, rel, NULL, 0);
    ensure_topic(r, rel);
}

/* Avro: the relation's schemas, known to the registry under topic (r->topic). */
static bw_avro_rel *avro_for(bw_router *r, const bw_relation *rel)
{
    rel_state *rs = state_of(rel);
    if (rs->avro == NULL &&
        (rs->avro = bw_avro_rel_new(r->avro, rel, r->err, sizeof(r->err))) == NULL)
        return NULL;
    if (bw_avro_use_topic(r->avro, rs->avro, rel, r->topic.data, r->err, sizeof(r->err)) < 0)
        return NULL;
    return rs->avro;
}

/* The Kafka key of a change in the configured format: 0, 1 when it has none, -1 on error. */
static int encode_key(bw_router *r, bw_avro_rel *ar, bw_buf *out, const bw_change *c)
{
    bw_buf_reset(out);
    if (ar)
        return bw_avro_key(r->avro, ar, out, c, r->err, sizeof(r->err));
    return bw_json_key(out, c, r->err, sizeof(r->err));
}

static int encode_change(bw_router *r, bw_avro_rel *ar, bw_buf *out, bw_record_type type,
                         const bw_change *c)
{
    bw_buf_reset(out);
    if (ar)
        return bw_avro_change(r->avro, ar, out, type, &r->xact, c, r->err, sizeof(r->err));
    return bw_json_change(out, type, &r->xact, c, r->err, sizeof(r->err));
}

/*
 * After a delete, when topic.tombstones: the same key with a null value, so that log compaction
 * keeps exactly the live rows. It rides on the delete's tracker entry; its op header says
 * "tombstone".
 */
static int send_tombstone(bw_router *r, const char *topic, const char *key, size_t keylen,
                          const bw_header *headers, size_t nheaders, bw_txn_entry *entry)
{
    bw_header h[8];
    size_t n = 0;
    if (!r->cfg->topic_tombstones || key == NULL)
        return 0;
    for (size_t i = 0; i < nheaders && n < 8; i++)
        h[n++] =
            strcmp(headers[i].name, "op") == 0 ? (bw_header){"op", "tombstone", 9} : headers[i];
    return bw_producer_send(r->producer, topic, key, keylen, NULL, 0, h, n, entry, r->err,
                            sizeof(r->err));
}

static int route_change(bw_router *r, const bw_record *rec)
{
    const bw_change *c = &rec->u.change;
    header_set hs;
    int keyrc;
    bw_avro_rel *ar = NULL;

    bw_topic_name(&r->topic, r->cfg->topic_template, r->cfg->topic_prefix, c->rel,
                  c->tenant.kind == 't' ? (const char *) c->tenant.data : NULL, c->tenant.len);
    bool compacted = ensure_topic(r, c->rel);
    if (r->avro && (ar = avro_for(r, c->rel)) == NULL)
        return -1;
    keyrc = encode_key(r, ar, &r->key, c);
    if (keyrc < 0 || encode_change(r, ar, &r->value, rec->type, c))
        return -1;
    headers_for(&hs, rec->type, &r->xact, c->rel, &c->tenant);
    bool read = rec->type == BW_REC_READ; /* a snapshot's row: never held, never signalled */
    if (!read)
        atomic_fetch_add(&r->metrics->changes_in, 1);
    bool sent = false;
    if (r->coalescer && keyrc == 0 && !read && coalesced(r, c->rel)) {
        if (c->old_kind != 'X' && rec->type == BW_REC_UPDATE) {
            /*
             * An update that may move the row to another key is never merged. What is held for
             * its old key and for its new key goes first: a held delete of the new key published
             * after the move would delete the moved row in a consumer's replay.
             */
            bw_change moved = *c;
            moved.old_kind = 'X'; /* the key of the new row */
            int movedrc = encode_key(r, ar, &r->json_key, &moved);
            if (movedrc < 0 ||
                bw_coalesce_flush_key(r->coalescer, r->topic.data, r->key.data, r->key.len,
                                      bw_route_coalesced, r) ||
                (movedrc == 0 &&
                 bw_coalesce_flush_key(r->coalescer, r->topic.data, r->json_key.data,
                                       r->json_key.len, bw_route_coalesced, r)))
                return -1;
        } else {
            int rc = bw_coalesce_offer(r->coalescer, bw_mono_ms(), rec->type, r->topic.data,
                                       r->key.data, r->key.len, r->value.data, r->value.len, hs.h,
                                       hs.n, r->entry, bw_route_coalesced, r);
            if (rc < 0)
                return -1;
            sent = rc == 1; /* held or merged: published when its window ends */
        }
    }
    /* a tombstone needs the row's own key: a delete sent without one gets none */
    if (!sent && (send_row(r, rec->type, c->rel, compacted, keyrc == 0 ? &r->key : NULL, &hs) ||
                  (rec->type == BW_REC_DELETE &&
                   send_tombstone(r, r->topic.data, keyrc == 0 ? r->key.data : NULL, r->key.len,
                                  hs.h, hs.n, r->entry))))
        return -1;
    if (r->hooks.seen && !read)
        r->hooks.seen(r->hooks.arg, c);
    if (r->signals && c->tenant.kind == 't' && !r->peeked && !read) {
        /* sample keys are JSON in signals, whatever the row format */
        const bw_buf *sample = &r->key;
        if (ar) {
            bw_buf_reset(&r->json_key);
            keyrc = bw_json_key(&r->json_key, c, r->err, sizeof(r->err));
            if (keyrc < 0)
                return -1;
            sample = &r->json_key;
        }
        bw_signals_note(r->signals, bw_mono_ms(), (const char *) c->tenant.data, c->tenant.len,
                        c->rel, rec->type, keyrc == 0 ? sample->data : NULL,
                        keyrc == 0 ? sample->len : 0, &r->xact, r->entry);
    }
    return 0;
}

int bw_route_coalesced(void *router, const char *topic, const char *key, size_t keylen,
                       const char *value, size_t valuelen, const bw_header *headers,
                       size_t nheaders, bw_txn_entry *entry)
{
    bw_router *r = router;
    if (bw_producer_send(r->producer, topic, key, keylen, value, valuelen, headers, nheaders, entry,
                         r->err, sizeof(r->err)))
        return -1;
    for (size_t i = 0; i < nheaders; i++) /* a held delete: its tombstone follows it */
        if (strcmp(headers[i].name, "op") == 0 && headers[i].len == 6 &&
            memcmp(headers[i].value, "delete", 6) == 0)
            return send_tombstone(r, topic, key, keylen, headers, nheaders, entry);
    return 0;
}

int bw_route_signal(void *router, const bw_signal *sig)
{
    bw_router *r = router;
    header_set hs;
    char table[260];

    bw_buf_reset(&r->value);
    bw_signal_json(&r->value, sig);
    bw_topic_name(&r->topic, r->cfg->signals_topic, r->cfg->topic_prefix, NULL, sig->tenant,
                  sig->tenant_len);
    int n = snprintf(table, sizeof(table), "%s.%s", sig->schema, sig->table);
    hs.n = 0;
    hs.h[hs.n++] = (bw_header){"op", "signal", 6};
    hs.h[hs.n++] = (bw_header){"tenant", sig->tenant, sig->tenant_len};
    hs.h[hs.n++] =
        (bw_header){"table", table, n < (int) sizeof(table) ? (size_t) n : sizeof(table) - 1};
    return bw_producer_send(r->producer, r->topic.data, sig->tenant, sig->tenant_len, r->value.data,
                            r->value.len, hs.h, hs.n, sig->hold, r->err, sizeof(r->err));
}

static int route_truncate(bw_router *r, const bw_record *rec)
{
    const bw_truncate *t = &rec->u.truncate;
    char lsn[18];

    for (uint16_t i = 0; i < t->nrels; i++) {
        const bw_relation *rel = t->rels[i];
        header_set hs;

        if (r->hooks.truncated)
            r->hooks.truncated(r->hooks.arg, rel->relid);
        bw_topic_name(&r->topic, r->cfg->topic_template, r->cfg->topic_prefix, rel, NULL, 0);
        bool compacted = ensure_topic(r, rel);
        headers_for(&hs, BW_REC_TRUNCATE, &r->xact, rel, NULL);
        if (r->avro) {
            bw_avro_rel *ar = avro_for(r, rel);
            if (ar == NULL || bw_avro_truncate(r->avro, ar, &r->value, &r->xact, t->options, r->err,
                                               sizeof(r->err)) < 0)
                return -1;
            goto send;
        }
        bw_buf_reset(&r->value);
        bw_buf_printf(&r->value,
                      "{\"op\":\"truncate\",\"xid\":%" PRIu32
                      ",\"commit_lsn\":\"%s\",\"commit_time\":",
                      r->xact.xid, bw_lsn_str(r->xact.commit_lsn, lsn));
        if (bw_json_commit_time(&r->value, r->xact.commit_time) < 0) {
            snprintf(r->err, sizeof(r->err), "commit time of xid %" PRIu32 " is out of range",
                     r->xact.xid);
            return -1;
        }
        bw_buf_puts(&r->value, ",\"schema\":");
        bw_buf_json_string(&r->value, rel->schema, strlen(rel->schema));
        bw_buf_puts(&r->value, ",\"table\":");
        bw_buf_json_string(&r->value, rel->table, strlen(rel->table));
        bw_buf_printf(&r->value, ",\"cascade\":%s,\"restart_identity\":%s}",
                      (t->options & 1) ? "true" : "false", (t->options & 2) ? "true" : "false");
    send:
        if (send_row(r, BW_REC_TRUNCATE, rel, compacted, NULL, &hs))
            return -1;
    }
    return 0;
}

/*
 * The tenant an application event names: a JSON object payload with a "tenant" string or
 * integer member. Parsed with jansson (a well-kept library; payloads are the application's and
 * may be anything). Returns the tenant as a malloc'd string, or NULL.
 */
static char *event_tenant(const bw_message *m)
{
    json_error_t error;
    json_t *doc = json_loadb((const char *) m->content, m->content_len, JSON_DECODE_ANY, &error);
    char *tenant = NULL;

    if (doc == NULL)
        return NULL;
    json_t *t = json_is_object(doc) ? json_object_get(doc, "tenant") : NULL;
    if (json_is_string(t))
        tenant = bw_xstrndup(json_string_value(t), json_string_length(t));
    else if (json_is_integer(t)) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(t));
        tenant = bw_xstrdup(buf);
    }
    json_decref(doc);
    return tenant;
}

/*
 * Logical decoding messages. An application event whose JSON payload names a tenant goes to the
 * signal topic, keyed by that tenant, next to the tenant's change signals: an application can emit
 * "invoice paid" inside its transaction without a trigger writing to a table. Events are not rate
 * limited: each is a fact of its own. Any other message goes to {prefix}.messages keyed by its
 * prefix, its content as the value.
 */
/* An application event to the signal topic of its tenant, keyed by the tenant. */
static int send_event(bw_router *r, const bw_message *m, const char *tenant, bw_txn_entry *e)
{
    header_set hs;
    char lsn[18];
    bw_buf_reset(&r->value);
    bw_buf_puts(&r->value, "{\"tenant\":");
    bw_buf_json_string(&r->value, tenant, strlen(tenant));
    bw_buf_puts(&r->value, ",\"prefix\":");
    bw_buf_json_string(&r->value, m->prefix, m->prefix_len);
    bw_buf_printf(&r->value,
                  ",\"lsn\":\"%s\",\"transactional\":%s,\"event\":", bw_lsn_str(m->lsn, lsn),
                  m->transactional ? "true" : "false");
    bw_buf_append(&r->value, m->content, m->content_len);
    bw_buf_putc(&r->value, '}');
    bw_topic_name(&r->topic, r->cfg->signals_topic, r->cfg->topic_prefix, NULL, tenant,
                  strlen(tenant));
    hs.n = 0;
    hs.h[hs.n++] = (bw_header){"op", "event", 5};
    hs.h[hs.n++] = (bw_header){"tenant", tenant, strlen(tenant)};
    hs.h[hs.n++] = (bw_header){"prefix", m->prefix, m->prefix_len};
    return bw_producer_send(r->producer, r->topic.data, tenant, strlen(tenant), r->value.data,
                            r->value.len, hs.h, hs.n, e, r->err, sizeof(r->err));
}

static bool reserved(const bw_message *m)
{
    size_t n = sizeof(BW_RESERVED_PREFIX) - 1;
    return m->prefix_len >= n && memcmp(m->prefix, BW_RESERVED_PREFIX, n) == 0;
}

static int route_message(bw_router *r, const bw_record *rec)
{
    const bw_message *m = &rec->u.message;
    bw_txn_entry *e = r->entry;
    header_set hs;
    int rc = 0;

    if (reserved(m)) { /* the relay's own (backfills): never published */
        if (!m->transactional)
            e = take_entry(r, m->lsn);
        if (r->hooks.control)
            rc = r->hooks.control(r->hooks.arg, m, e, m->transactional ? r->xact.end_lsn : m->lsn,
                                  r->err, sizeof(r->err));
        if (!m->transactional)
            bw_lsntrack_commit(r->track, e);
        return rc;
    }
    char *tenant = r->signals ? event_tenant(m) : NULL;

    if (!m->transactional) /* outside any transaction: an entry of its own */
        e = take_entry(r, m->lsn);
    if (tenant) {
        if (!r->peeked) /* else sent when it was read (bw_route_peek) */
            rc = send_event(r, m, tenant, e);
        free(tenant);
    } else {
        bw_buf_reset(&r->topic);
        append_sanitised(&r->topic, r->cfg->topic_prefix, strlen(r->cfg->topic_prefix));
        bw_buf_puts(&r->topic, ".messages");
        headers_for(&hs, BW_REC_MESSAGE, m->transactional ? &r->xact : NULL, NULL, NULL);
        rc = bw_producer_send(r->producer, r->topic.data, m->prefix, m->prefix_len, m->content,
                              m->content_len, hs.h, hs.n, e, r->err, sizeof(r->err));
    }
    if (!m->transactional)
        bw_lsntrack_commit(r->track, e);
    return rc;
}

static int route_record(bw_router *r, const bw_record *rec);

int bw_route_record(void *router, const bw_record *rec)
{
    return route_record(router, rec) == 0 ? 0 : BW_ROUTE_FAILED;
}

int bw_route_read(bw_router *r, const bw_change *c, const bw_xact *x, bw_txn_entry *entry)
{
    bw_record rec = {.type = BW_REC_READ, .u.change = *c};
    if (bw_change_check(c, true, r->err, sizeof(r->err)) < 0)
        return BW_ROUTE_FAILED;
    bw_xact saved = r->xact;
    bw_txn_entry *saved_entry = r->entry;
    r->xact = *x;
    r->entry = entry;
    int rc = route_change(r, &rec);
    r->xact = saved;
    r->entry = saved_entry;
    return rc == 0 ? 0 : BW_ROUTE_FAILED;
}

/*
 * A streamed transaction's commit: its spooled records go through the router from now on, a
 * step per loop turn (bw_route_step), between a BEGIN and a COMMIT of the commit's fields, as a
 * transaction read at its commit would. The BEGIN goes now, so that its tracker entry keeps its
 * place in stream order.
 */
static int replay(bw_router *r, const bw_xact *commit)
{
    if (r->entry || r->job) {
        snprintf(r->err, sizeof(r->err),
                 "stream commit of xid %" PRIu32 " inside xid %" PRIu32 " or another replay",
                 commit->xid, r->xact.xid);
        return -1;
    }
    atomic_fetch_add(&r->metrics->streamed_transactions, 1);
    bw_info("xid %" PRIu32 " committed after streaming: sending it from its spool (%" PRId64
            " bytes of spooled transactions)",
            commit->xid, bw_spools_bytes(r->spools));
    r->job = bw_spools_replay_start(r->spools, commit, bw_route_relation_free, r, r->err,
                                    sizeof(r->err));
    if (r->job == NULL)
        return -1;
    return bw_route_step(r) == BW_ROUTE_FAILED ? -1 : 0;
}

int bw_route_step(bw_router *r)
{
    char err[sizeof(r->err)];
    if (r->job == NULL)
        return 0;
    bool peeked = r->peeked;
    r->peeked = false; /* a spool's records were never read ahead */
    err[0] = '\0';
    int rc = bw_replay_step(r->job, bw_route_record, r, err, sizeof(err));
    r->peeked = peeked;
    if (rc == 0)
        return 1;
    if (rc != 1 && rc != BW_ROUTE_FAILED) /* the spool's own error, not the router's */
        snprintf(r->err, sizeof(r->err), "%s", err);
    bw_replay_free(r->job);
    r->job = NULL;
    atomic_store(&r->metrics->spool_bytes, bw_spools_bytes(r->spools));
    return rc == 1 ? 0 : BW_ROUTE_FAILED;
}

int bw_route_peek(void *router, const bw_record *rec)
{
    bw_router *r = router;
    const bw_change *c = &rec->u.change;

    switch (rec->type) {
    case BW_REC_STREAM_START:
        r->in_block = true;
        return 0;
    case BW_REC_STREAM_STOP:
        r->in_block = false;
        return 0;
    case BW_REC_BEGIN:
        r->peek_xact = rec->u.xact;
        r->peek_entry = bw_lsntrack_begin(r->track, rec->u.xact.end_lsn);
        keep_entry(r, r->peek_entry);
        return 0;
    case BW_REC_COMMIT:
        r->peek_entry = NULL;
        return 0;
    case BW_REC_STREAM_COMMIT:
        keep_entry(r, bw_lsntrack_begin(r->track, rec->u.xact.end_lsn));
        return 0;
    case BW_REC_MESSAGE: {
        /* application events are signals too: they go now, on the transaction's entry */
        const bw_message *m = &rec->u.message;
        bw_txn_entry *e = r->peek_entry;
        if (!m->transactional)
            keep_entry(r, e = bw_lsntrack_begin(r->track, m->lsn));
        char *tenant = r->signals && !(m->transactional && r->in_block) && e && !reserved(m)
                           ? event_tenant(m)
                           : NULL;
        int rc = tenant ? send_event(r, m, tenant, e) : 0;
        free(tenant);
        return rc == 0 ? 0 : BW_ROUTE_FAILED;
    }
    case BW_REC_INSERT:
    case BW_REC_UPDATE:
    case BW_REC_DELETE:
        /* changes of transactions in progress are not news yet: their signals come at commit */
        if (r->in_block || r->signals == NULL || r->peek_entry == NULL || c->tenant.kind != 't')
            return 0;
        bw_buf_reset(&r->peek_key);
        int keyrc = bw_json_key(&r->peek_key, c, r->err, sizeof(r->err));
        if (keyrc < 0)
            return 0; /* the routing will say what is wrong with it */
        bw_signals_note(r->signals, bw_mono_ms(), (const char *) c->tenant.data, c->tenant.len,
                        c->rel, rec->type, keyrc == 0 ? r->peek_key.data : NULL,
                        keyrc == 0 ? r->peek_key.len : 0, &r->peek_xact, r->peek_entry);
        return 0;
    default:
        return 0;
    }
}

static int route_record(bw_router *r, const bw_record *rec)
{
    if (r->spools) {
        int taken = bw_spools_take(r->spools, rec, r->err, sizeof(r->err));
        if (taken != 0) {
            atomic_store(&r->metrics->spool_bytes, bw_spools_bytes(r->spools));
            return taken < 0 ? -1 : 0;
        }
        if (rec->type == BW_REC_STREAM_COMMIT)
            return replay(r, &rec->u.xact);
    }
    switch (rec->type) {
    case BW_REC_BEGIN:
        if (r->entry) {
            snprintf(r->err, sizeof(r->err), "begin of xid %" PRIu32 " inside xid %" PRIu32,
                     rec->u.xact.xid, r->xact.xid);
            return -1;
        }
        r->xact = rec->u.xact;
        r->entry = take_entry(r, rec->u.xact.end_lsn);
        return 0;
    case BW_REC_COMMIT:
        if (r->entry == NULL) {
            snprintf(r->err, sizeof(r->err), "commit of xid %" PRIu32 " without begin",
                     rec->u.xact.xid);
            return -1;
        }
        atomic_fetch_add(&r->metrics->transactions_in, 1);
        atomic_store(&r->metrics->last_commit_time_us, rec->u.xact.commit_time);
        if (r->hooks.committed)
            r->hooks.committed(r->hooks.arg, rec->u.xact.xid);
        bw_lsntrack_commit(r->track, r->entry);
        r->entry = NULL;
        return 0;
    case BW_REC_RELATION:
        bw_debug("relation %s.%s (relid %" PRIu32 ", version %" PRIu32 ", %u columns)",
                 rec->u.rel->schema, rec->u.rel->table, rec->u.rel->relid, rec->u.rel->generation,
                 rec->u.rel->ncolumns);
        return 0;
    case BW_REC_INSERT:
    case BW_REC_UPDATE:
    case BW_REC_DELETE:
    case BW_REC_TRUNCATE:
        if (r->entry == NULL) {
            snprintf(r->err, sizeof(r->err), "%s outside a transaction", bw_record_op(rec->type));
            return -1;
        }
        return rec->type == BW_REC_TRUNCATE ? route_truncate(r, rec) : route_change(r, rec);
    case BW_REC_MESSAGE:
        if (rec->u.message.transactional && r->entry == NULL) {
            snprintf(r->err, sizeof(r->err), "transactional message outside a transaction");
            return -1;
        }
        return route_message(r, rec);
    default:
        if (rec->type >= BW_REC_STREAM_START) {
            snprintf(r->err, sizeof(r->err),
                     "a streamed-transaction record, but streaming is off (decoder.streaming)");
            return -1;
        }
    }
    return 0;
}

void bw_router_abandon(bw_router *r)
{
    if (r->job) {
        bw_replay_free(r->job);
        r->job = NULL;
    }
    while (r->early_len > 0) /* read ahead, never routed: they confirm nothing */
        bw_lsntrack_abandon(r->track, take_entry(r, 0));
    r->in_block = false;
    r->peek_entry = NULL;
    if (r->spools) { /* the slot sends unfinished transactions again from their start */
        bw_spools_clear(r->spools);
        atomic_store(&r->metrics->spool_bytes, 0);
    }
    if (r->entry == NULL)
        return;
    /*
     * The transaction will be streamed again from its start after reconnecting; this partial
     * copy may still have messages in flight. Complete it with a position that confirms nothing.
     */
    bw_lsntrack_abandon(r->track, r->entry);
    r->entry = NULL;
}
