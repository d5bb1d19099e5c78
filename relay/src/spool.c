/*
 * spool.c — streamed transactions kept until they end (spool.h).
 *
 * One unlinked temporary file per in-progress transaction: nothing is left behind by a crash or
 * kill -9, and the slot sends an unfinished transaction again from its start after a reconnect.
 * In memory per transaction: the file's size, where each subtransaction's records start, and
 * which relation versions the file holds.
 *
 * A subtransaction abort drops the aborted subtransaction's records and those of every
 * subtransaction assigned after it (xids are assigned in order, and while a subtransaction is
 * open only it and its children write): the file is cut where the first of them starts.
 */
#include "spool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"

/* a replay step: about 10 ms of routing, so that the loop turns often while a large one runs */
#define READ_BATCH (256 * 1024)

typedef struct sub_mark {
    uint32_t subxid;
    int64_t offset; /* of its first record */
} sub_mark;

typedef struct rel_mark {
    uint32_t relid, generation;
} rel_mark;

typedef struct spool {
    uint32_t xid;
    FILE *f;
    int64_t size;
    sub_mark *subs;
    size_t nsubs;
    rel_mark *rels;
    size_t nrels;
    struct spool *next;
} spool;

struct bw_spools {
    char *dir;
    spool *list;
    spool *current; /* the transaction of the open block */
    int64_t bytes;
    size_t count;
};

/* xid a is b or was assigned after it (modulo 2^32, as PostgreSQL compares them) */
static bool follows_or_equals(uint32_t a, uint32_t b)
{
    return (int32_t) (a - b) >= 0;
}

bw_spools *bw_spools_new(const char *dir)
{
    bw_spools *s = bw_xcalloc(1, sizeof(*s));
    const char *tmp = getenv("TMPDIR");
    s->dir = bw_xstrdup(dir && dir[0] ? dir : tmp && tmp[0] ? tmp : "/tmp");
    return s;
}

static void spool_free(bw_spools *s, spool *sp)
{
    if (sp->f)
        fclose(sp->f);
    s->bytes -= sp->size;
    s->count--;
    free(sp->subs);
    free(sp->rels);
    free(sp);
}

static void drop(bw_spools *s, spool *sp)
{
    for (spool **p = &s->list; *p; p = &(*p)->next) {
        if (*p == sp) {
            *p = sp->next;
            break;
        }
    }
    if (s->current == sp)
        s->current = NULL;
    spool_free(s, sp);
}

void bw_spools_clear(bw_spools *s)
{
    while (s->list)
        drop(s, s->list);
}

void bw_spools_free(bw_spools *s)
{
    if (s == NULL)
        return;
    bw_spools_clear(s);
    free(s->dir);
    free(s);
}

static spool *find(bw_spools *s, uint32_t xid)
{
    for (spool *sp = s->list; sp; sp = sp->next)
        if (sp->xid == xid)
            return sp;
    return NULL;
}

static spool *create(bw_spools *s, uint32_t xid, char *err, size_t errlen)
{
    bw_buf path;
    bw_buf_init(&path);
    bw_buf_printf(&path, "%s/breakwater-spool-XXXXXX", s->dir);
    int fd = mkstemp(path.data);
    if (fd < 0) {
        snprintf(err, errlen,
                 "cannot create a spool file for streamed transaction %u in \"%s\": %s (set "
                 "relay.spool_dir to a writable directory)",
                 xid, s->dir, strerror(errno));
        bw_buf_free(&path);
        return NULL;
    }
    unlink(path.data); /* gone with the process, whatever happens */
    bw_buf_free(&path);
    FILE *f = fdopen(fd, "w+");
    if (f == NULL) {
        snprintf(err, errlen, "spool file: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    spool *sp = bw_xcalloc(1, sizeof(*sp));
    sp->xid = xid;
    sp->f = f;
    sp->next = s->list;
    s->list = sp;
    s->count++;
    return sp;
}

static int put(bw_spools *s, spool *sp, const void *data, size_t len, char *err, size_t errlen)
{
    if (fwrite(data, 1, len, sp->f) != len) {
        snprintf(err, errlen, "writing the spool file of streamed transaction %u in \"%s\": %s",
                 sp->xid, s->dir, strerror(errno));
        return -1;
    }
    sp->size += (int64_t) len;
    s->bytes += (int64_t) len;
    return 0;
}

/* The relation's record goes first when the file lacks this version of it. */
static int put_relation(bw_spools *s, spool *sp, const bw_relation *rel, char *err, size_t errlen)
{
    size_t i;
    for (i = 0; i < sp->nrels; i++) {
        if (sp->rels[i].relid == rel->relid) {
            if (sp->rels[i].generation == rel->generation)
                return 0;
            break;
        }
    }
    if (rel->raw == NULL) {
        snprintf(err, errlen, "relation %u has no record to spool", rel->relid);
        return -1;
    }
    if (put(s, sp, rel->raw, rel->raw_len, err, errlen) < 0)
        return -1;
    if (i == sp->nrels)
        sp->rels = bw_xrealloc(sp->rels, (++sp->nrels) * sizeof(*sp->rels));
    sp->rels[i] = (rel_mark){rel->relid, rel->generation};
    return 0;
}

/* Cuts the file where the first subtransaction at or after subxid starts. */
static int abort_sub(bw_spools *s, spool *sp, uint32_t subxid, char *err, size_t errlen)
{
    size_t i = 0;
    while (i < sp->nsubs && !follows_or_equals(sp->subs[i].subxid, subxid))
        i++;
    if (i == sp->nsubs)
        return 0; /* nothing of it was spooled */
    int64_t at = sp->subs[i].offset;
    if (fflush(sp->f) != 0 || ftruncate(fileno(sp->f), at) != 0 || fseeko(sp->f, at, SEEK_SET)) {
        snprintf(err, errlen, "cutting the spool file of streamed transaction %u: %s", sp->xid,
                 strerror(errno));
        return -1;
    }
    s->bytes -= sp->size - at;
    sp->size = at;
    sp->nsubs = i;
    sp->nrels = 0; /* relation records may have been cut: write them again when needed */
    return 0;
}

int bw_spools_take(bw_spools *s, const bw_record *rec, char *err, size_t errlen)
{
    spool *sp = s->current;
    switch (rec->type) {
    case BW_REC_STREAM_START:
        if (sp) {
            snprintf(err, errlen, "stream start of xid %u inside the block of xid %u",
                     rec->u.stream.xid, sp->xid);
            return -1;
        }
        sp = find(s, rec->u.stream.xid);
        if (sp && rec->u.stream.first) {
            drop(s, sp); /* sent again from its start */
            sp = NULL;
        }
        if (sp == NULL && (sp = create(s, rec->u.stream.xid, err, errlen)) == NULL)
            return -1;
        s->current = sp;
        return 1;
    case BW_REC_STREAM_STOP:
        if (sp == NULL) {
            snprintf(err, errlen, "stream stop outside a block");
            return -1;
        }
        s->current = NULL;
        return 1;
    case BW_REC_SUBXACT:
        if (sp == NULL) {
            snprintf(err, errlen, "subtransaction %u outside a block", rec->u.subxid);
            return -1;
        }
        for (size_t i = 0; i < sp->nsubs; i++)
            if (sp->subs[i].subxid == rec->u.subxid)
                return 1;
        sp->subs = bw_xrealloc(sp->subs, (sp->nsubs + 1) * sizeof(*sp->subs));
        sp->subs[sp->nsubs++] = (sub_mark){rec->u.subxid, sp->size};
        return 1;
    case BW_REC_STREAM_ABORT: {
        spool *ab = find(s, rec->u.abort.xid);
        if (ab == NULL)
            return 1;
        if (rec->u.abort.subxid == rec->u.abort.xid) {
            drop(s, ab);
            return 1;
        }
        return abort_sub(s, ab, rec->u.abort.subxid, err, errlen) < 0 ? -1 : 1;
    }
    case BW_REC_INSERT:
    case BW_REC_UPDATE:
    case BW_REC_DELETE:
        if (sp == NULL)
            return 0;
        if (put_relation(s, sp, rec->u.change.rel, err, errlen) < 0)
            return -1;
        break;
    case BW_REC_TRUNCATE:
        if (sp == NULL)
            return 0;
        for (uint16_t i = 0; i < rec->u.truncate.nrels; i++)
            if (put_relation(s, sp, rec->u.truncate.rels[i], err, errlen) < 0)
                return -1;
        break;
    case BW_REC_MESSAGE:
        if (sp == NULL || !rec->u.message.transactional)
            return 0;
        break;
    default:
        return 0; /* relation records update the parser, commits are the caller's */
    }
    return put(s, sp, rec->raw, rec->size, err, errlen) < 0 ? -1 : 1;
}

struct bw_replay {
    bw_spools *owner;
    spool *sp; /* NULL: nothing was spooled (only the BEGIN and the COMMIT) */
    bw_xact commit;
    bw_parser *parser;
    bw_buf batch;
    int64_t left;
    bool begun;
};

bw_replay *bw_spools_replay_start(bw_spools *s, const bw_xact *commit,
                                  bw_relation_free_cb free_user, void *free_arg, char *err,
                                  size_t errlen)
{
    spool *sp = find(s, commit->xid);
    if (s->current) {
        snprintf(err, errlen, "stream commit of xid %u inside the block of xid %u", commit->xid,
                 s->current->xid);
        return NULL;
    }
    if (sp && (fflush(sp->f) != 0 || fseeko(sp->f, 0, SEEK_SET) != 0)) {
        snprintf(err, errlen, "reading back the spool of transaction %u: %s", sp->xid,
                 strerror(errno));
        return NULL;
    }
    if (sp) { /* the job's now: out of the list, still counted until done */
        for (spool **p = &s->list; *p; p = &(*p)->next) {
            if (*p == sp) {
                *p = sp->next;
                break;
            }
        }
    }
    bw_replay *j = bw_xcalloc(1, sizeof(*j));
    j->owner = s;
    j->sp = sp;
    j->commit = *commit;
    j->parser = bw_parser_new(free_user, free_arg);
    j->left = sp ? sp->size : 0;
    bw_buf_init(&j->batch);
    return j;
}

int bw_replay_step(bw_replay *j, bw_record_cb cb, void *arg, char *err, size_t errlen)
{
    bw_record rec;
    int rc;

    memset(&rec, 0, sizeof(rec));
    rec.u.xact = j->commit;
    if (!j->begun) {
        j->begun = true;
        rec.type = BW_REC_BEGIN;
        return (rc = cb(arg, &rec)) != 0 ? rc : 0;
    }
    if (j->left == 0) {
        rec.type = BW_REC_COMMIT;
        return (rc = cb(arg, &rec)) != 0 ? rc : 1;
    }
    /* whole records, up to about READ_BATCH bytes, behind a version byte */
    bw_buf_reset(&j->batch);
    bw_buf_putc(&j->batch, BW_PROTO_VERSION);
    while (j->left > 0 && j->batch.len < READ_BATCH) {
        uint8_t head[5];
        if (fread(head, 1, 5, j->sp->f) != 5)
            goto short_read;
        uint32_t body = bw_rd32(head + 1);
        if ((int64_t) body + 5 > j->left)
            goto short_read;
        bw_buf_append(&j->batch, head, 5);
        bw_buf_reserve(&j->batch, body);
        if (fread(j->batch.data + j->batch.len, 1, body, j->sp->f) != body)
            goto short_read;
        j->batch.len += body;
        j->left -= (int64_t) body + 5;
    }
    return bw_parse_chunk(j->parser, (const uint8_t *) j->batch.data, j->batch.len, cb, arg, err,
                          errlen);
short_read:
    snprintf(err, errlen, "the spool file of transaction %u is shorter than written", j->sp->xid);
    return -1;
}

void bw_replay_free(bw_replay *j)
{
    if (j == NULL)
        return;
    if (j->sp)
        spool_free(j->owner, j->sp);
    bw_parser_free(j->parser);
    bw_buf_free(&j->batch);
    free(j);
}

int64_t bw_spools_bytes(const bw_spools *s)
{
    return s->bytes;
}

size_t bw_spools_count(const bw_spools *s)
{
    return s->count;
}
