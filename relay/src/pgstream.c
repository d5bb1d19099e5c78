/*
 * pgstream.c — the replication connection (see pgstream.h), in the manner of pg_recvlogical:
 * every message's length is checked before its fields are read, keepalives that ask for a reply
 * get one, and the flush position sent is only ever what the caller says Kafka has acknowledged.
 */
#include "pgstream.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "buf.h"
#include "log.h"
#include "proto.h"

/* microseconds between the Unix epoch and PostgreSQL's (2000-01-01) */
#define PG_EPOCH_OFFSET_US 946684800000000LL

struct bw_pgstream {
    PGconn *conn;
    PGconn *status; /* ordinary connection for pg_current_wal_lsn() */
    char *copybuf;  /* from PQgetCopyData, freed on the next read */
};

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t) (v & 0xff);
        v >>= 8;
    }
}

static int64_t pg_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t) tv.tv_sec * 1000000 + tv.tv_usec - PG_EPOCH_OFFSET_US;
}

bw_pgstream *bw_pgstream_new(void)
{
    return bw_xcalloc(1, sizeof(bw_pgstream));
}

void bw_pgstream_close(bw_pgstream *s)
{
    if (s->copybuf) {
        PQfreemem(s->copybuf);
        s->copybuf = NULL;
    }
    if (s->conn) {
        PQfinish(s->conn);
        s->conn = NULL;
    }
}

void bw_pgstream_free(bw_pgstream *s)
{
    if (s == NULL)
        return;
    bw_pgstream_close(s);
    if (s->status)
        PQfinish(s->status);
    free(s);
}

int bw_pgstream_socket(const bw_pgstream *s)
{
    return s->conn ? PQsocket(s->conn) : -1;
}

/* libpq messages end with a newline; drop it so ours read as one line */
static void set_err(char *err, size_t errlen, const char *what, const char *libpq)
{
    size_t n = strlen(libpq);
    while (n > 0 && (libpq[n - 1] == '\n' || libpq[n - 1] == ' '))
        n--;
    snprintf(err, errlen, "%s: %.*s", what, (int) n, libpq);
}

static void quote_ident(bw_buf *b, const char *s)
{
    bw_buf_putc(b, '"');
    for (; *s; s++) {
        if (*s == '"')
            bw_buf_putc(b, '"');
        bw_buf_putc(b, *s);
    }
    bw_buf_putc(b, '"');
}

static void quote_literal(bw_buf *b, const char *s)
{
    bw_buf_putc(b, '\'');
    for (; *s; s++) {
        if (*s == '\'')
            bw_buf_putc(b, '\'');
        bw_buf_putc(b, *s);
    }
    bw_buf_putc(b, '\'');
}

static bool is_sqlstate(const PGresult *res, const char *code)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    return state && strcmp(state, code) == 0;
}

static bw_pg_status hook_status(int rc, char *err, size_t errlen)
{
    if (rc == 0)
        return BW_PG_OK;
    if (rc > 0) {
        snprintf(err, errlen, "stopped");
        return BW_PG_RETRY;
    }
    return BW_PG_FATAL;
}

/* Looks the slot up; creates it when missing and allowed; runs o->hooks around that. */
static bw_pg_status ensure_slot(bw_pgstream *s, const bw_pgstream_opts *o, uint64_t *confirmed,
                                char *err, size_t errlen)
{
    /* a replication connection speaks only the simple query protocol: no parameters */
    char *lit = PQescapeLiteral(s->conn, o->slot, strlen(o->slot));
    bw_buf q;
    bw_buf_init(&q);
    /*
     * The last column: a relay running the slot's initial snapshot (snapshot.c) holds an
     * advisory lock; the slot is not active meanwhile, but it is taken.
     */
    bw_buf_printf(&q,
                  "SELECT plugin, slot_type, database = current_database(), "
                  "confirmed_flush_lsn, active_pid, "
                  "(SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                  " AND classid = " BW_SNAPSHOT_LOCK_CLASS
                  " AND objid = (hashtext(slot_name) & 2147483647)::oid AND objsubid = 2"
                  " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                  " LIMIT 1) FROM pg_replication_slots WHERE slot_name = %s",
                  lit ? lit : "NULL");
    PQfreemem(lit);
    PGresult *res = PQexec(s->conn, q.data);
    bw_buf_free(&q);
    bw_pg_status st = BW_PG_OK;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        set_err(err, errlen, "could not look up the replication slot", PQerrorMessage(s->conn));
        st = BW_PG_RETRY;
        goto done;
    }
    if (PQntuples(res) == 0) {
        if (!o->create_slot) {
            snprintf(err, errlen,
                     "replication slot \"%s\" does not exist: create it with "
                     "SELECT pg_create_logical_replication_slot('%s', 'breakwater'), or set "
                     "slot.create=true",
                     o->slot, o->slot);
            st = BW_PG_FATAL;
            goto done;
        }
        PQclear(res);
        res = NULL;
        const bw_slot_hooks *h = o->hooks;
        bool export = h && h->creating;
        if (export && (st = hook_status(h->creating(h->arg, err, errlen), err, errlen)) != BW_PG_OK)
            goto done;
        bw_buf cmd;
        bw_buf_init(&cmd);
        bw_buf_puts(&cmd, "CREATE_REPLICATION_SLOT ");
        quote_ident(&cmd, o->slot);
        bw_buf_printf(&cmd, " LOGICAL breakwater (SNAPSHOT '%s')", export ? "export" : "nothing");
        res = PQexec(s->conn, cmd.data);
        bw_buf_free(&cmd);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            set_err(err, errlen, "could not create the replication slot", PQerrorMessage(s->conn));
            /* e.g. the plugin is not installed or not in output_plugin_libraries */
            st = BW_PG_FATAL;
            goto done;
        }
        if (bw_lsn_parse(PQgetvalue(res, 0, 1), confirmed) != 0)
            *confirmed = 0;
        bw_info("created replication slot \"%s\" at %s", o->slot, PQgetvalue(res, 0, 1));
        if (export && h->created && !PQgetisnull(res, 0, 2))
            st = hook_status(h->created(h->arg, PQgetvalue(res, 0, 2), *confirmed, err, errlen),
                             err, errlen);
        goto done;
    }
    if (strcmp(PQgetvalue(res, 0, 1), "logical") != 0 ||
        strcmp(PQgetvalue(res, 0, 0), "breakwater") != 0) {
        snprintf(err, errlen,
                 "replication slot \"%s\" uses plugin \"%s\" (%s), not breakwater: name another "
                 "slot in slot.name",
                 o->slot, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
        st = BW_PG_FATAL;
        goto done;
    }
    if (strcmp(PQgetvalue(res, 0, 2), "t") != 0) {
        snprintf(err, errlen,
                 "replication slot \"%s\" belongs to another database: connect to its database "
                 "in pg.conninfo",
                 o->slot);
        st = BW_PG_FATAL;
        goto done;
    }
    if (!PQgetisnull(res, 0, 4)) {
        snprintf(err, errlen, "replication slot \"%s\" is in use by process %s", o->slot,
                 PQgetvalue(res, 0, 4));
        st = BW_PG_BUSY;
        goto done;
    }
    if (PQgetisnull(res, 0, 3) || bw_lsn_parse(PQgetvalue(res, 0, 3), confirmed) != 0)
        *confirmed = 0;
    if (!PQgetisnull(res, 0, 5)) { /* whatever this relay's snapshot.mode */
        snprintf(err, errlen,
                 "replication slot \"%s\" is taken: its initial snapshot runs in process %s",
                 o->slot, PQgetvalue(res, 0, 5));
        st = BW_PG_BUSY;
        goto done;
    }
    if (o->hooks && o->hooks->found)
        st = hook_status(o->hooks->found(o->hooks->arg, *confirmed, err, errlen), err, errlen);
done:
    PQclear(res);
    return st;
}

/* Server notices (e.g. the plugin's warnings) as one log line each, not raw on stderr. */
static void log_notice(void *arg, const char *message)
{
    bw_buf line;
    (void) arg;
    bw_buf_init(&line);
    for (const char *p = message; *p; p++) {
        if (*p == '\n') {
            if (p[1] != '\0')
                bw_buf_puts(&line, " | ");
        } else
            bw_buf_putc(&line, *p);
    }
    bw_warn("postgresql: %s", line.len ? line.data : "");
    bw_buf_free(&line);
}

bw_pg_status bw_pgstream_start(bw_pgstream *s, const bw_pgstream_opts *o, uint64_t *confirmed,
                               char *err, size_t errlen)
{
    const char *keys[] = {"dbname", "replication", "fallback_application_name", NULL};
    const char *vals[] = {o->conninfo, "database", "breakwater-relay", NULL};
    bw_pg_status st;
    PGresult *res = NULL;
    bw_buf cmd;

    bw_pgstream_close(s);
    bw_buf_init(&cmd);
    s->conn = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(s->conn) != CONNECTION_OK) {
        set_err(err, errlen, "could not connect to PostgreSQL", PQerrorMessage(s->conn));
        st = BW_PG_RETRY;
        goto fail;
    }
    PQsetNoticeProcessor(s->conn, log_notice, NULL);
    const char *enc = PQparameterStatus(s->conn, "server_encoding");
    if (enc == NULL || strcmp(enc, "UTF8") != 0) {
        snprintf(err, errlen,
                 "database encoding is %s: breakwater-relay needs UTF8 (Kafka consumers expect "
                 "UTF-8 text)",
                 enc ? enc : "unknown");
        st = BW_PG_FATAL;
        goto fail;
    }
    st = ensure_slot(s, o, confirmed, err, errlen);
    if (st != BW_PG_OK)
        goto fail;

    char lsn[18];
    bw_buf_puts(&cmd, "START_REPLICATION SLOT ");
    quote_ident(&cmd, o->slot);
    bw_buf_printf(&cmd, " LOGICAL %s", bw_lsn_str(*confirmed, lsn));
    for (size_t i = 0; i < o->nopts; i++) {
        bw_buf_puts(&cmd, i == 0 ? " (" : ", ");
        quote_ident(&cmd, o->opt_names[i]);
        bw_buf_putc(&cmd, ' ');
        quote_literal(&cmd, o->opt_values[i]);
    }
    if (o->nopts > 0)
        bw_buf_putc(&cmd, ')');
    res = PQexec(s->conn, cmd.data);
    if (PQresultStatus(res) != PGRES_COPY_BOTH) {
        set_err(err, errlen, "could not start streaming", PQerrorMessage(s->conn));
        if (is_sqlstate(res, "55006"))
            st = BW_PG_BUSY; /* object in use: another relay holds the slot */
        else if (is_sqlstate(res, "22023") || is_sqlstate(res, "0A000") ||
                 is_sqlstate(res, "42601") || is_sqlstate(res, "42704") ||
                 is_sqlstate(res, "42501") || is_sqlstate(res, "58P01"))
            st = BW_PG_FATAL; /* the plugin rejected an option, or the slot is gone */
        else
            st = BW_PG_RETRY;
        goto fail;
    }
    PQclear(res);
    bw_buf_free(&cmd);
    return BW_PG_OK;

fail:
    PQclear(res);
    bw_buf_free(&cmd);
    bw_pgstream_close(s);
    return st;
}

bw_pg_status bw_pgstream_consume(bw_pgstream *s, char *err, size_t errlen)
{
    if (!PQconsumeInput(s->conn)) {
        set_err(err, errlen, "connection to PostgreSQL lost", PQerrorMessage(s->conn));
        return BW_PG_RETRY;
    }
    return BW_PG_OK;
}

bw_pg_status bw_pgstream_next(bw_pgstream *s, bw_pgmsg *m, char *err, size_t errlen)
{
    m->type = BW_PGMSG_NONE;
    if (s->copybuf) {
        PQfreemem(s->copybuf);
        s->copybuf = NULL;
    }
    int n = PQgetCopyData(s->conn, &s->copybuf, 1);
    if (n == 0)
        return BW_PG_OK;
    if (n == -1) {
        PGresult *res = PQgetResult(s->conn);
        set_err(err, errlen, "the server ended the replication stream",
                res && PQresultStatus(res) == PGRES_FATAL_ERROR ? PQresultErrorMessage(res)
                                                                : "end of stream");
        bool fatal = res && (is_sqlstate(res, "22023") || is_sqlstate(res, "23502") ||
                             is_sqlstate(res, "42703") || is_sqlstate(res, "0A000"));
        PQclear(res);
        /* the plugin stopped on a change (e.g. missing-tenant=error): retrying repeats it */
        return fatal ? BW_PG_FATAL : BW_PG_RETRY;
    }
    if (n < 0) {
        set_err(err, errlen, "could not read from the replication stream", PQerrorMessage(s->conn));
        return BW_PG_RETRY;
    }
    const uint8_t *p = (const uint8_t *) s->copybuf;
    if (p[0] == 'w') {
        if (n < 25) {
            snprintf(err, errlen, "XLogData message too short (%d bytes)", n);
            return BW_PG_RETRY;
        }
        m->type = BW_PGMSG_DATA;
        m->wal_start = get_be64(p + 1);
        m->wal_end = get_be64(p + 9);
        m->data = p + 25;
        m->len = (size_t) n - 25;
    } else if (p[0] == 'k') {
        if (n < 18) {
            snprintf(err, errlen, "keepalive message too short (%d bytes)", n);
            return BW_PG_RETRY;
        }
        m->type = BW_PGMSG_KEEPALIVE;
        m->wal_end = get_be64(p + 1);
        m->reply_requested = p[17] != 0;
    } else {
        snprintf(err, errlen, "unexpected replication message type 0x%02x", p[0]);
        return BW_PG_RETRY;
    }
    return BW_PG_OK;
}

bw_pg_status bw_pgstream_feedback(bw_pgstream *s, uint64_t received, uint64_t flushed, char *err,
                                  size_t errlen)
{
    uint8_t msg[34];
    msg[0] = 'r';
    put_be64(msg + 1, received);
    put_be64(msg + 9, flushed);
    put_be64(msg + 17, flushed);
    put_be64(msg + 25, (uint64_t) pg_now());
    msg[33] = 0;
    if (PQputCopyData(s->conn, (const char *) msg, sizeof(msg)) <= 0 || PQflush(s->conn) != 0) {
        set_err(err, errlen, "could not send a status update to PostgreSQL",
                PQerrorMessage(s->conn));
        return BW_PG_RETRY;
    }
    return BW_PG_OK;
}

int bw_pgstream_server_lsn(bw_pgstream *s, const char *conninfo, uint64_t *lsn)
{
    if (s->status && PQstatus(s->status) != CONNECTION_OK) {
        PQfinish(s->status);
        s->status = NULL;
    }
    if (s->status == NULL) {
        const char *keys[] = {"dbname", "connect_timeout", "options", "fallback_application_name",
                              NULL};
        const char *vals[] = {conninfo, "2", "-c statement_timeout=1000", "breakwater-relay status",
                              NULL};
        s->status = PQconnectdbParams(keys, vals, 1);
        if (PQstatus(s->status) != CONNECTION_OK) {
            bw_debug("server WAL position not read: %s", PQerrorMessage(s->status));
            PQfinish(s->status);
            s->status = NULL;
            return -1;
        }
    }
    PGresult *res = PQexec(s->status, "SELECT pg_current_wal_lsn()");
    int rc = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        bw_lsn_parse(PQgetvalue(res, 0, 0), lsn) == 0)
        rc = 0;
    else
        bw_debug("server WAL position not read: %s", PQerrorMessage(s->status));
    PQclear(res);
    return rc;
}
