/*
 * registry.c — the schema registry client (registry.h): libcurl for HTTP (TLS, basic auth,
 * timeouts, keep-alive come with it), jansson for the JSON bodies.
 *
 * schema_registry.url may list several base URLs, comma-separated, as Confluent's clients
 * accept: a connection failure moves to the next one.
 */
#include "registry.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "clock.h"
#include "log.h"

#define CONTENT_TYPE "application/vnd.schemaregistry.v1+json"

struct bw_registry {
    CURL *curl;
    struct curl_slist *headers;
    char **urls;
    size_t nurls, current;
    const bw_config *cfg;
    bw_registry_wait_cb wait;
    void *wait_arg;
    json_t *ids;    /* "subject\nschema" → id */
    json_t *compat; /* subjects whose compatibility was set */
    bw_buf resp;
    char curl_err[CURL_ERROR_SIZE];
    uint64_t registrations;
};

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    bw_buf *b = arg;
    if (b->len + size * n > 4 * 1024 * 1024)
        return 0; /* no answer of ours is this large: stop reading (a transport error) */
    bw_buf_append(b, data, size * n);
    return size * n;
}

static void split_urls(bw_registry *r, const char *list)
{
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ", ");
        if (n == 0)
            break;
        while (n > 0 && p[n - 1] == '/')
            n--; /* base URLs with or without a trailing slash */
        r->urls = bw_xrealloc(r->urls, (r->nurls + 1) * sizeof(*r->urls));
        r->urls[r->nurls++] = bw_xstrndup(p, n);
        p += strcspn(p, ",");
    }
}

bw_registry *bw_registry_new(const bw_config *cfg, bw_registry_wait_cb wait, void *wait_arg,
                             char *err, size_t errlen)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "libcurl could not be initialised");
        return NULL;
    }
    bw_registry *r = bw_xcalloc(1, sizeof(*r));
    r->cfg = cfg;
    r->wait = wait;
    r->wait_arg = wait_arg;
    r->ids = json_object();
    r->compat = json_object();
    bw_buf_init(&r->resp);
    split_urls(r, cfg->schema_registry_url ? cfg->schema_registry_url : "");
    if (r->nurls == 0) {
        snprintf(err, errlen,
                 "schema_registry.url is not set; value.format=avro needs a schema "
                 "registry (Confluent API), e.g. http://localhost:8081");
        bw_registry_free(r);
        return NULL;
    }
    r->curl = curl_easy_init();
    if (r->curl == NULL) {
        snprintf(err, errlen, "libcurl could not create a handle");
        bw_registry_free(r);
        return NULL;
    }
    r->headers = curl_slist_append(NULL, "Content-Type: " CONTENT_TYPE);
    r->headers = curl_slist_append(r->headers, "Accept: " CONTENT_TYPE ", application/json");
    CURL *c = r->curl;
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->resp);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->curl_err);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long) cfg->schema_registry_timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long) cfg->schema_registry_timeout_ms);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "breakwater-relay/" BW_RELAY_VERSION);
    if (cfg->schema_registry_basic_auth && cfg->schema_registry_basic_auth[0]) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERPWD, cfg->schema_registry_basic_auth);
    }
    if (cfg->schema_registry_ssl_ca_location && cfg->schema_registry_ssl_ca_location[0])
        curl_easy_setopt(c, CURLOPT_CAINFO, cfg->schema_registry_ssl_ca_location);
    if (cfg->schema_registry_ssl_certificate_location &&
        cfg->schema_registry_ssl_certificate_location[0])
        curl_easy_setopt(c, CURLOPT_SSLCERT, cfg->schema_registry_ssl_certificate_location);
    if (cfg->schema_registry_ssl_key_location && cfg->schema_registry_ssl_key_location[0])
        curl_easy_setopt(c, CURLOPT_SSLKEY, cfg->schema_registry_ssl_key_location);
    if (cfg->schema_registry_ssl_key_password && cfg->schema_registry_ssl_key_password[0])
        curl_easy_setopt(c, CURLOPT_KEYPASSWD, cfg->schema_registry_ssl_key_password);
    return r;
}

void bw_registry_free(bw_registry *r)
{
    if (r == NULL)
        return;
    if (r->curl)
        curl_easy_cleanup(r->curl);
    curl_slist_free_all(r->headers);
    for (size_t i = 0; i < r->nurls; i++)
        free(r->urls[i]);
    free(r->urls);
    json_decref(r->ids);
    json_decref(r->compat);
    bw_buf_free(&r->resp);
    free(r);
    curl_global_cleanup();
}

/* The registry's own message from an error body ({"error_code":..,"message":..}), else the body. */
static void put_reason(bw_buf *err, const bw_buf *body)
{
    json_error_t e;
    json_t *doc = body->len ? json_loadb(body->data, body->len, 0, &e) : NULL;
    json_t *msg = json_is_object(doc) ? json_object_get(doc, "message") : NULL;
    if (json_is_string(msg))
        bw_buf_append(err, json_string_value(msg), json_string_length(msg));
    else if (body->len > 0)
        bw_buf_append(err, body->data, body->len > 500 ? 500 : body->len);
    else
        bw_buf_puts(err, "(empty response)");
    json_decref(doc);
}

/*
 * One HTTP exchange against the current base URL. Returns 0 with *status and r->resp set, or -1
 * when no HTTP answer came (err says why).
 */
static int exchange(bw_registry *r, const char *method, const char *path, const char *body,
                    long *status, bw_buf *err)
{
    bw_buf url;
    bw_buf_init(&url);
    bw_buf_printf(&url, "%s%s", r->urls[r->current], path);
    bw_buf_reset(&r->resp);
    r->curl_err[0] = '\0';
    curl_easy_setopt(r->curl, CURLOPT_URL, url.data);
    curl_easy_setopt(r->curl, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(r->curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(r->curl, CURLOPT_POSTFIELDSIZE, (long) strlen(body));
    } else {
        curl_easy_setopt(r->curl, CURLOPT_HTTPGET, 1L);
    }
    CURLcode rc = curl_easy_perform(r->curl);
    int ret = 0;
    if (rc != CURLE_OK) {
        bw_buf_reset(err);
        bw_buf_printf(err, "%s %s: %s", method, url.data,
                      r->curl_err[0] ? r->curl_err : curl_easy_strerror(rc));
        ret = -1;
    } else {
        curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, status);
        if (*status >= 300) {
            bw_buf_reset(err);
            bw_buf_printf(err, "%s %s: HTTP %ld: ", method, url.data, *status);
            put_reason(err, &r->resp);
        }
    }
    bw_buf_free(&url);
    return ret;
}

/* An exchange, retried while the failure may pass: no answer, 408, 429, 5xx. */
static int call(bw_registry *r, const char *method, const char *path, const char *body,
                long *status, bw_buf *err)
{
    int64_t deadline = bw_mono_ms() + r->cfg->schema_registry_retry_max_ms;
    int wait = 200;
    for (int attempt = 1;; attempt++) {
        int rc = exchange(r, method, path, body, status, err);
        bool again = rc < 0 || *status == 408 || *status == 429 || *status >= 500;
        if (!again)
            return 0;
        if (rc < 0 && r->nurls > 1)
            r->current = (r->current + 1) % r->nurls;
        if (bw_mono_ms() + wait > deadline) {
            bw_buf_printf(err,
                          " (gave up after %d attempts in %" PRId64 " ms: "
                          "schema_registry.retry_max_ms)",
                          attempt, r->cfg->schema_registry_retry_max_ms);
            return -1;
        }
        bw_warn("schema registry: %s; retrying in %d ms", err->data, wait);
        if (r->wait)
            r->wait(r->wait_arg, wait);
        else {
            struct timespec ts = {wait / 1000, (long) (wait % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        wait = wait * 2 > 5000 ? 5000 : wait * 2;
    }
}

static bw_registry_status status_of(long status)
{
    if (status == 409)
        return BW_REG_INCOMPATIBLE;
    if (status == 422)
        return BW_REG_INVALID;
    return BW_REG_FAILED;
}

/* Subject names go into URL paths: percent-encode all but unreserved characters. */
static void put_path_segment(bw_buf *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~')
            bw_buf_putc(out, (char) *p);
        else {
            bw_buf_putc(out, '%');
            bw_buf_putc(out, hex[*p >> 4]);
            bw_buf_putc(out, hex[*p & 15]);
        }
    }
}

/* A call whose 2xx answer is JSON: *doc gets it (NULL when it does not parse; caller decrefs). */
static bw_registry_status call_json(bw_registry *r, const char *method, const char *path,
                                    const char *body, long *status, json_t **doc, bw_buf *err)
{
    json_error_t e;
    *doc = NULL;
    *status = 0;
    if (call(r, method, path, body, status, err) < 0)
        return BW_REG_FAILED;
    if (*status >= 300)
        return status_of(*status);
    *doc = json_loadb(r->resp.data, r->resp.len, 0, &e);
    return BW_REG_OK;
}

/* "/subjects/<subject><suffix>" */
static void subject_path(bw_buf *path, const char *subject, const char *suffix)
{
    bw_buf_puts(path, "/subjects/");
    put_path_segment(path, subject);
    bw_buf_puts(path, suffix);
}

/*
 * schema_registry.compatibility applies to subjects the relay creates: a subject that has
 * versions already keeps its level, so an operator who relaxed it (to let a change through, as
 * the relay's rejection message suggests) is not overruled by the relay's next start.
 */
static bw_registry_status set_compatibility(bw_registry *r, const char *subject, bw_buf *err)
{
    const char *level = r->cfg->schema_registry_compatibility;
    if (level == NULL || level[0] == '\0' || json_object_get(r->compat, subject))
        return BW_REG_OK;
    bw_buf path, body;
    long status;
    json_t *doc;
    bw_buf_init(&path);
    bw_buf_init(&body);
    subject_path(&path, subject, "/versions");
    bw_registry_status st = call_json(r, "GET", path.data, NULL, &status, &doc, err);
    json_decref(doc);
    if (status == 404) { /* a new subject: ours to set */
        bw_buf_reset(&path);
        bw_buf_puts(&path, "/config/");
        put_path_segment(&path, subject);
        bw_buf_printf(&body, "{\"compatibility\":\"%s\"}", level);
        st = call_json(r, "PUT", path.data, body.data, &status, &doc, err);
        json_decref(doc);
        if (st == BW_REG_OK)
            bw_info("schema registry: subject \"%s\" created with compatibility %s", subject,
                    level);
    }
    if (st == BW_REG_OK)
        json_object_set_new(r->compat, subject, json_true());
    bw_buf_free(&path);
    bw_buf_free(&body);
    return st;
}

bw_registry_status bw_registry_id(bw_registry *r, const char *subject, const char *schema,
                                  int32_t *id, bw_buf *err)
{
    bw_buf cache_key, path;
    bw_buf_init(&cache_key);
    bw_buf_printf(&cache_key, "%s\n%s", subject, schema);
    json_t *cached = json_object_get(r->ids, cache_key.data);
    if (json_is_integer(cached)) {
        *id = (int32_t) json_integer_value(cached);
        bw_buf_free(&cache_key);
        return BW_REG_OK;
    }
    bw_registry_status st = set_compatibility(r, subject, err);
    if (st != BW_REG_OK) {
        bw_buf_free(&cache_key);
        return st;
    }
    bw_buf_init(&path);
    subject_path(&path, subject, "/versions");
    json_t *req = json_pack("{s:s}", "schema", schema);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    long status;
    json_t *doc;
    if (body == NULL)
        abort(); /* out of memory: as bw_xmalloc */
    st = call_json(r, "POST", path.data, body, &status, &doc, err);
    json_t *jid = json_is_object(doc) ? json_object_get(doc, "id") : NULL;
    if (st == BW_REG_OK && json_is_integer(jid) && json_integer_value(jid) >= 0 &&
        json_integer_value(jid) <= INT32_MAX) {
        *id = (int32_t) json_integer_value(jid);
        json_object_set_new(r->ids, cache_key.data, json_integer(*id));
        r->registrations++;
        bw_info("schema registry: subject \"%s\" has schema id %" PRId32, subject, *id);
    } else if (st == BW_REG_OK) {
        bw_buf_reset(err);
        bw_buf_printf(err,
                      "POST %s%s: HTTP %ld without an \"id\" in the answer: ", r->urls[r->current],
                      path.data, status);
        put_reason(err, &r->resp);
        st = BW_REG_FAILED;
    }
    json_decref(doc);
    free(body);
    bw_buf_free(&path);
    bw_buf_free(&cache_key);
    return st;
}

bw_registry_status bw_registry_latest(bw_registry *r, const char *subject, char **schema,
                                      bw_buf *err)
{
    bw_buf path;
    long status = 0;
    bw_registry_status st;

    *schema = NULL;
    bw_buf_init(&path);
    subject_path(&path, subject, "/versions/latest");
    json_t *doc;
    st = call_json(r, "GET", path.data, NULL, &status, &doc, err);
    if (status == 404)
        st = BW_REG_OK; /* no version yet */
    json_t *s = json_is_object(doc) ? json_object_get(doc, "schema") : NULL;
    if (json_is_string(s))
        *schema = bw_xstrndup(json_string_value(s), json_string_length(s));
    json_decref(doc);
    bw_buf_free(&path);
    return st;
}

uint64_t bw_registry_registrations(const bw_registry *r)
{
    return r->registrations;
}
