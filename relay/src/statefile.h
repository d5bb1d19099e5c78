/*
 * statefile.h — the relay's small JSON state files in relay.state_dir (the snapshot's and the
 * backfills' progress): read whole, written whole, atomically (a temporary file synced, renamed
 * over the old one, the directory synced), so that a crash leaves the old file or the new one.
 */
#ifndef BW_STATEFILE_H
#define BW_STATEFILE_H

#include <stddef.h>

#include <jansson.h>

/* "<dir>/<slot>.<what>.json", malloc'd */
char *bw_state_path(const char *dir, const char *slot, const char *what);
/* 0 with *doc (NULL when the file does not exist), or -1 with err set. */
int bw_state_read(const char *path, json_t **doc, char *err, size_t errlen);
/* Creates dir when missing. 0, or -1 with err naming the file and the reason. */
int bw_state_write(const char *dir, const char *path, const json_t *doc, char *err, size_t errlen);

#endif
