/*
 * fake_registry.c — the scripted registry of the unit tests (fake_registry.h). Request bodies are
 * gathered across libmicrohttpd's upload callbacks, then answered in one go.
 */
#include "fake_registry.h"

#include <microhttpd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

typedef struct upload {
    char data[16384];
    size_t len;
} upload;

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned int status, const char *body)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *) body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/vnd.schemaregistry.v1+json");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *data,
                              size_t *size, void **state)
{
    fake_registry *f = cls;
    upload *u = *state;
    char body[512];
    (void) version;

    if (u == NULL) {
        *state = calloc(1, sizeof(upload));
        return MHD_YES;
    }
    if (*size > 0) {
        size_t n = *size < sizeof(u->data) - 1 - u->len ? *size : sizeof(u->data) - 1 - u->len;
        memcpy(u->data + u->len, data, n);
        u->len += n;
        *size = 0;
        return MHD_YES;
    }
    if (f->delay_ms > 0) {
        struct timespec ts = {f->delay_ms / 1000, (long) (f->delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&f->lock);
    f->requests++;
    snprintf(f->last_path, sizeof(f->last_path), "%s %s", method, url);
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    snprintf(f->last_auth, sizeof(f->last_auth), "%s", auth ? auth : "");
    snprintf(f->last_body, sizeof(f->last_body), "%.*s", (int) u->len, u->data);
    unsigned int status = 200;
    if (f->fail_next > 0) {
        f->fail_next--;
        status = (unsigned int) f->fail_status;
        snprintf(body, sizeof(body), "{\"error_code\":%d,\"message\":\"scripted failure\"}",
                 f->fail_status);
    } else if (strcmp(method, "PUT") == 0 && strncmp(url, "/config/", 8) == 0) {
        f->configs++;
        snprintf(body, sizeof(body), "%.*s", (int) u->len, u->data);
    } else if (strcmp(method, "GET") == 0 && strstr(url, "/versions/latest")) {
        if (f->latest == NULL) {
            status = 404;
            snprintf(body, sizeof(body),
                     "{\"error_code\":40401,\"message\":\"Subject not found\"}");
        } else {
            json_t *doc = json_pack("{s:s}", "schema", f->latest);
            char *s = json_dumps(doc, JSON_COMPACT);
            json_decref(doc);
            pthread_mutex_unlock(&f->lock);
            enum MHD_Result ret = answer(conn, 200, s);
            free(s);
            return ret;
        }
    } else if (strcmp(method, "GET") == 0 && strncmp(url, "/subjects/", 10) == 0 &&
               strstr(url, "/versions")) {
        bool known = false;
        for (int i = 0; i < f->nsubjects && !known; i++)
            known = strncmp(url + 10, f->subjects[i], strlen(f->subjects[i])) == 0 &&
                    strcmp(url + 10 + strlen(f->subjects[i]), "/versions") == 0;
        status = known ? 200 : 404;
        snprintf(body, sizeof(body), "%s",
                 known ? "[1]" : "{\"error_code\":40401,\"message\":\"Subject not found\"}");
    } else if (strcmp(method, "POST") == 0 && strstr(url, "/versions")) {
        if (f->reject) {
            status = 409;
            snprintf(body, sizeof(body),
                     "{\"error_code\":409,\"message\":\"Schema being registered is incompatible "
                     "with an earlier schema\"}");
        } else {
            json_error_t e;
            json_t *doc = json_loadb(u->data, u->len, 0, &e);
            const char *schema = json_string_value(json_object_get(doc, "schema"));
            int id = 0;
            for (int i = 0; schema && i < f->nschemas && id == 0; i++)
                if (strcmp(f->schemas[i], schema) == 0)
                    id = i + 1;
            if (schema && id == 0 && f->nschemas < 16) {
                snprintf(f->schemas[f->nschemas], sizeof(f->schemas[0]), "%s", schema);
                id = ++f->nschemas;
            }
            json_decref(doc);
            f->registrations++;
            const char *subject = url + strlen("/subjects/");
            size_t sublen = strcspn(subject, "/");
            bool known = false;
            for (int i = 0; i < f->nsubjects && !known; i++)
                known = strlen(f->subjects[i]) == sublen &&
                        strncmp(f->subjects[i], subject, sublen) == 0;
            if (id != 0 && !known && f->nsubjects < 16)
                snprintf(f->subjects[f->nsubjects++], sizeof(f->subjects[0]), "%.*s", (int) sublen,
                         subject);
            if (id == 0) {
                status = 422;
                snprintf(body, sizeof(body), "{\"error_code\":42201,\"message\":\"bad schema\"}");
            } else
                snprintf(body, sizeof(body), "{\"id\":%d}", id);
        }
    } else {
        status = 404;
        snprintf(body, sizeof(body), "{\"error_code\":404,\"message\":\"no such route\"}");
    }
    pthread_mutex_unlock(&f->lock);
    return answer(conn, status, body);
}

static void done(void *cls, struct MHD_Connection *conn, void **state,
                 enum MHD_RequestTerminationCode code)
{
    (void) cls;
    (void) conn;
    (void) code;
    free(*state);
    *state = NULL;
}

fake_registry *fake_registry_start(void)
{
    fake_registry *f = calloc(1, sizeof(*f));
    pthread_mutex_init(&f->lock, NULL);
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
                         NULL, handle, f, MHD_OPTION_NOTIFY_COMPLETED, done, f, MHD_OPTION_END);
    if (d == NULL) {
        free(f);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%u", (unsigned) info->port);
    f->daemon = d;
    return f;
}

void fake_registry_stop(fake_registry *f)
{
    if (f == NULL)
        return;
    MHD_stop_daemon(f->daemon);
    pthread_mutex_destroy(&f->lock);
    free(f);
}
