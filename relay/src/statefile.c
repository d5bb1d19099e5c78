/*
 * statefile.c — atomic JSON state files (see statefile.h).
 */
#include "statefile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"

char *bw_state_path(const char *dir, const char *slot, const char *what)
{
    bw_buf b;
    bw_buf_init(&b);
    bw_buf_printf(&b, "%s/%s.%s.json", dir, slot, what);
    return b.data;
}

int bw_state_read(const char *path, json_t **doc, char *err, size_t errlen)
{
    json_error_t je;
    *doc = NULL;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen,
                 "cannot read the state file %s: %s (relay.state_dir must be a directory the "
                 "relay can write, or a path where it can make one)",
                 path, strerror(errno));
        return -1;
    }
    *doc = json_loadf(f, 0, &je);
    fclose(f);
    if (*doc == NULL) {
        snprintf(err, errlen,
                 "state file %s is not one the relay wrote (%s, line %d): move it away to start "
                 "without it",
                 path, je.text, je.line);
        return -1;
    }
    return 0;
}

int bw_state_write(const char *dir, const char *path, const json_t *doc, char *err, size_t errlen)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create relay.state_dir %s: %s", dir, strerror(errno));
        return -1;
    }
    bw_buf tmp;
    bw_buf_init(&tmp);
    bw_buf_printf(&tmp, "%s.tmp", path);
    char *text = json_dumps(doc, JSON_INDENT(1));
    size_t len = text ? strlen(text) : 0;
    int fd = text ? open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
    errno = text ? 0 : ENOMEM;
    ssize_t written = fd >= 0 ? write(fd, text, len) : -1;
    bool ok = fd >= 0 && written == (ssize_t) len && fsync(fd) == 0;
    int saved_errno = errno ? errno : ENOSPC; /* a short write sets no errno: the disk is full */
    if (fd >= 0)
        close(fd);
    if (ok && rename(tmp.data, path) != 0) {
        ok = false;
        saved_errno = errno;
    }
    if (!ok) {
        snprintf(err, errlen,
                 "cannot write the state file %s: %s (relay.state_dir must be a writable "
                 "directory)",
                 path, strerror(saved_errno));
        unlink(tmp.data);
    } else {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    free(text);
    bw_buf_free(&tmp);
    return ok ? 0 : -1;
}
