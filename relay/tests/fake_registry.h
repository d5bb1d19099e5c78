/*
 * fake_registry.h — a scripted Confluent Schema Registry API for unit tests (libmicrohttpd on a
 * free loopback port): registers schemas with ids from 1 up, can fail the next N requests, reject
 * registrations as incompatible, or answer slowly.
 */
#ifndef BW_FAKE_REGISTRY_H
#define BW_FAKE_REGISTRY_H

#include <pthread.h>

typedef struct fake_registry {
    char url[64];
    /* the script, set before requests */
    int fail_next;      /* answer this many requests with fail_status */
    int fail_status;    /* e.g. 500 */
    int reject;         /* answer registrations with 409 */
    const char *latest; /* GET .../versions/latest: this schema text (NULL: 404) */
    int delay_ms;       /* before each answer */
    /* what happened */
    pthread_mutex_t lock;
    int requests, registrations, configs;
    char last_path[256];
    char last_auth[256]; /* the Authorization header, "" when none */
    char last_body[8192];
    char schemas[16][4096]; /* registered texts; the id of schemas[i] is i + 1 */
    int nschemas;
    char subjects[16][128]; /* subjects with a version */
    int nsubjects;
    void *daemon;
} fake_registry;

fake_registry *fake_registry_start(void);
void fake_registry_stop(fake_registry *f);

#endif
