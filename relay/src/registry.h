/*
 * registry.h — a client of the Confluent Schema Registry API over libcurl: registers schemas
 * under subjects and caches their ids; reads a subject's latest schema to explain a rejection.
 *
 * Only the Confluent API is used (POST and GET /subjects/{s}/versions, PUT /config/{s},
 * GET /subjects/{s}/versions/latest), so Confluent Schema Registry, Apicurio's ccompat API and
 * Karapace all serve it. Calls block: schemas are registered on a relation's first use and after
 * DDL, never per message.
 */
#ifndef BW_REGISTRY_H
#define BW_REGISTRY_H

#include <stdint.h>

#include "buf.h"
#include "config.h"

typedef struct bw_registry bw_registry;

typedef enum bw_registry_status {
    BW_REG_OK = 0,
    BW_REG_INCOMPATIBLE, /* 409: the subject's compatibility rules refuse the schema */
    BW_REG_INVALID,      /* 422: the registry finds the schema invalid */
    BW_REG_FAILED,       /* anything else, after retrying what may pass on a retry */
} bw_registry_status;

/* Called between retries with the milliseconds to wait: the caller keeps serving Kafka. */
typedef void (*bw_registry_wait_cb)(void *arg, int ms);

/* Reads the schema_registry.* keys. NULL with err set when libcurl cannot be set up. */
bw_registry *bw_registry_new(const bw_config *cfg, bw_registry_wait_cb wait, void *wait_arg,
                             char *err, size_t errlen);
void bw_registry_free(bw_registry *r);

/*
 * The id of schema (Avro JSON text) under subject: cached, else registered (after setting the
 * compatibility of a subject that has no version yet, when schema_registry.compatibility is set).
 * Connection failures, timeouts, 408, 429 and 5xx are retried with doubling waits for up to
 * schema_registry.retry_max_ms. On failure, err holds the URL, the HTTP status and the registry's
 * own message.
 */
bw_registry_status bw_registry_id(bw_registry *r, const char *subject, const char *schema,
                                  int32_t *id, bw_buf *err);

/* The subject's latest schema text (malloc'd) into *schema, or NULL when it has none. */
bw_registry_status bw_registry_latest(bw_registry *r, const char *subject, char **schema,
                                      bw_buf *err);

/* How many registrations (HTTP calls that returned an id) were made. */
uint64_t bw_registry_registrations(const bw_registry *r);

#endif
