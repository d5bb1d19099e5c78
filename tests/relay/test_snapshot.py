"""The initial snapshot end to end (snapshot.mode, snapshot.chunk_rows, relay.state_dir), on a real
PostgreSQL and a real Kafka broker.

When the relay creates its slot with snapshot.mode=initial, it reads every selected table in the
slot's exported snapshot, publishes each row as op "read" (same topic, key, headers and tenant as
a streamed row; commit_lsn and the lsn header are the snapshot's position, xid 0), then streams
from the slot's consistent point. The properties tested here:

- under a concurrent write load, the read messages are exactly the tables as of the snapshot
  (every row once), the streamed changes are exactly the transactions committed after it, and a
  consumer that applies every row topic from offset 0 (read/insert/update upsert, delete removes)
  ends equal to the tables;
- the decoder's filters apply to read rows: tables, exclude_tables, exclude_columns (a tenant
  column left out still tags the row, a key column is sent), the tenant column rules,
  missing_tenant=drop, names that need quoting; the key, value and headers are those an insert
  of the same row gives;
- every value is rendered as the plugin renders it in a streamed insert (char(n) padding, inet,
  floats, timestamps, intervals, bytea, json, arrays...), even when the relay's session has odd
  DateStyle, TimeZone, IntervalStyle, extra_float_digits and bytea_output settings;
- kill -9 in the middle of a snapshot: the restart streams from the slot's consistent point at
  once, and the unfinished tables continue as backfills after their last acknowledged chunk (a
  composite key with quotes and backslashes), reconciled with the stream by watermarks (later
  positions); the replay still equals the tables, and few rows are read twice; a slot dropped and created again gets a full new snapshot, not a resume;
- snapshot.mode=never reads nothing; initial-only reads, exits 0 and leaves no slot; a slot that
  already exists gets no snapshot;
- a table without key columns is read in one pass, its read messages without a key;
- value.format=avro: the envelope says op "read".

The broker's topics have one partition (tests/lib/kafka.sh), so a topic's messages are totally
ordered and a replay is well defined.
"""

import collections
import json
import os
import pathlib
import random
import re
import signal
import time

import pytest

from conftest import Writer, wait_for
from test_coalesce import hdrs, lsn_int, wait_published
from test_e2e import free_port, metric, topic_exists

EXPORTED = re.compile(r"snapshot: exported snapshot (\S+) at ([0-9A-Fa-f]+/[0-9A-Fa-f]+)")

Msg = collections.namedtuple("Msg", "raw key value h")
Msg.__doc__ = """One consumed message, decoded: raw (the Record), key (the JSON key as a dict, or
None), value (the JSON value as a dict, or None for a tombstone), h (headers as a dict)."""


# ---- helpers -----------------------------------------------------------------------------------

def snap_relay(make_relay, tables, **settings):
    """A relay (not started) on `tables` with snapshot.mode=initial unless told otherwise; tenant
    signals off (they are not what is tested here); r.topic_of(table) is a table's topic."""
    settings.setdefault("snapshot__mode", "initial")
    settings.setdefault("signals__enabled", "false")
    r = make_relay(decoder__tables=tables, **settings)
    r.topic_of = lambda table: f"{r.prefix}.public.{table}"
    return r


def decode(recs):
    return [Msg(x, json.loads(x.key) if x.key is not None else None,
                json.loads(x.value) if x.value is not None else None, hdrs(x.headers))
            for x in recs]


def messages(kafka, topic, idle_ms=1000):
    """Every message of `topic` from offset 0, decoded; [] when the topic does not exist."""
    if not topic_exists(kafka, topic):
        return []
    return decode(kafka.consume_all(topic, idle_ms=idle_ms, timeout=120))


def reads(msgs):
    return [m for m in msgs if m.value is not None and m.value["op"] == "read"]


def streamed(msgs):
    return [m for m in msgs if m.value is not None and m.value["op"] != "read"]


def exported(r):
    """(snapshot name, LSN text) of the log's "exported snapshot" lines, in order."""
    return EXPORTED.findall(r.log())


def logged_rows(r, table):
    """The row counts of the log's "snapshot: public.<table>: done, <n> rows" lines."""
    return [int(n) for n in re.findall(rf"snapshot: public\.{re.escape(table)}: done, (\d+) rows",
                                       r.log())]


def logged_total(r):
    return [int(n) for n in re.findall(r"snapshot: done: (\d+) rows", r.log())]


def wait_log_count(r, text, n, timeout=60):
    """Waits until `text` is in the relay's log at least n times (the log is appended to across
    restarts of one Relay)."""
    def check():
        if r.log().count(text) >= n:
            return True
        if r.proc is not None and r.proc.poll() is not None:
            pytest.fail(f"relay exited with {r.proc.returncode} before logging {text!r} "
                        f"{n} times:\n{r.log()[-3000:]}")
        return False
    wait_for(f"relay log line {text!r} x{n}", check, timeout=timeout)


def select_rows(conn, table, key_cols):
    """{key tuple: {column: value}} of the table, columns in table order."""
    cur = conn.execute(f"SELECT * FROM {table}")
    cols = [d.name for d in cur.description]
    return {tuple(r[cols.index(c)] for c in key_cols): dict(zip(cols, r)) for r in cur.fetchall()}


def replay(msgs, key_cols, what):
    """Applies a row topic's messages in order: read/insert/update upsert "new" (an update whose
    new key differs moves the row), delete removes the key; a tombstone must find no live row."""
    rows = {}
    for m in msgs:
        k = tuple(m.key[c] for c in key_cols)
        if m.value is None:
            if k in rows:
                pytest.fail(f"{what}: a tombstone for {k}, which the replay has as a live row")
            continue
        op = m.value["op"]
        if op == "delete":
            rows.pop(k, None)
        elif op in ("read", "insert", "update"):
            new = m.value["new"]
            if m.value.get("unchanged_toast"):
                pytest.fail(f"{what}: unexpected unchanged_toast in {m.value}")
            rows.pop(k, None)
            rows[tuple(new[c] for c in key_cols)] = dict(new)
        else:
            pytest.fail(f"{what}: unexpected op {op!r}: {m.value}")
    return rows


def assert_replay_equals(msgs, conn, table, key_cols):
    got = replay(msgs, key_cols, table)
    want = select_rows(conn, table, key_cols)
    if got != want:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        differ = sorted(k for k in set(got) & set(want) if got[k] != want[k])
        history = {k: [(m.value["op"] if m.value else "tombstone", m.h.get("lsn"))
                       for m in msgs if tuple(m.key[c] for c in key_cols) == k]
                   for k in (missing + extra + differ)[:5]}
        pytest.fail(f"replaying {len(msgs)} messages of {table} does not give the table:\n"
                    f"  missing from the replay ({len(missing)}): {missing[:10]}\n"
                    f"  in the replay, not in the table ({len(extra)}): {extra[:10]}\n"
                    f"  different ({len(differ)}): "
                    f"{[(k, got[k], want[k]) for k in differ[:5]]}\n"
                    f"  messages of some of those keys (op, lsn): {history}")


def assert_read_message(m, table, snap_lsn=None, tenant_col="tenant_id"):
    """A read message's envelope and headers agree with each other and with the contract."""
    v, h = m.value, m.h
    assert v["op"] == "read" and h["op"] == "read", (v["op"], h)
    assert v["xid"] == 0, f"a read has xid 0: {v}"
    assert v["schema"] == "public" and v["table"] == table, v
    assert h["table"] == f"public.{table}", h
    assert h["lsn"] == v["commit_lsn"], (h, v["commit_lsn"])
    if snap_lsn is not None:
        assert v["commit_lsn"] == snap_lsn, f"a read's commit_lsn is the snapshot's {snap_lsn}: {v}"
    tenant = v["new"].get(tenant_col)
    want = None if tenant is None else str(tenant)
    assert v["tenant"] == want and h.get("tenant") == want, \
        f"tenant from {tenant_col}: value {v['tenant']!r}, header {h.get('tenant')!r}, " \
        f"row {tenant!r}"
    assert v["key"] == m.key, "the value's key is the message key"


def one_export(r):
    """The LSN of the relay's one "exported snapshot" line."""
    found = exported(r)
    assert len(found) == 1, f"one \"snapshot: exported snapshot <name> at <lsn>\" line, not " \
                            f"{len(found)}:\n{r.log()[-3000:]}"
    return found[0][1]


def slot_exists(conn, slot):
    return conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
                        (slot,)).fetchone()[0] > 0


# ---- 1. a snapshot under a concurrent write load -----------------------------------------------

class Spec:
    def __init__(self, ddl, fill, cols, key, tenant="tenant_id"):
        self.ddl, self.fill, self.cols, self.key, self.tenant = ddl, fill, cols, key, tenant


# 100,000 rows over three tables, several tenants; keys of different shapes
LOAD_TABLES = {
    "snap_orders": Spec(
        "(tenant_id text, id int, v int, note text, PRIMARY KEY (tenant_id, id))",
        "SELECT 't' || (g % 5), g, g, 'order ' || g FROM generate_series(1, 50000) g",
        {"tenant_id": "text", "id": "int", "v": "int", "note": "text"}, ("tenant_id", "id")),
    "snap_items": Spec(
        "(id bigint PRIMARY KEY, tenant_id text, qty int, label text)",
        "SELECT g, 't' || (g % 3), g % 100, 'item ' || g FROM generate_series(1, 35000) g",
        {"id": "int", "tenant_id": "text", "qty": "int", "label": "text"}, ("id",)),
    "snap_events": Spec(
        "(tenant_id text, seq int, kind text, PRIMARY KEY (tenant_id, seq))",
        "SELECT 't' || (g % 7), g, 'k' || (g % 11) FROM generate_series(1, 15000) g",
        {"tenant_id": "text", "seq": "int", "kind": "text"}, ("tenant_id", "seq")),
}
TENANTS = [f"t{i}" for i in range(7)]


class Load(Writer):
    """Random single-table transactions (1 to 3 inserts, updates or deletes of existing rows) on
    the LOAD_TABLES, from a thread with its own connection, recorded with their xids so that the
    tables can be rebuilt as of any point in their commit order (one writer: commit order is the
    order they ran in)."""

    def __init__(self, cluster, initial, seed):
        super().__init__(cluster)
        self.rows = {t: {k: dict(v) for k, v in rows.items()} for t, rows in initial.items()}
        self.keys = {t: list(rows) for t, rows in initial.items()}
        self.rng = random.Random(seed)
        self.txns = []          # (xid, [(table, op, key, row or None)])
        self.n = 1_000_000

    def committed(self):
        return len(self.txns)

    def _value(self, typ):
        self.n += 1
        return self.n if typ == "int" else f"L{self.n}"

    def _existing(self, table):
        for _ in range(50):
            k = self.rng.choice(self.keys[table])
            if k in self.rows[table]:
                return k
        return None

    def _op(self, c, table):
        spec = LOAD_TABLES[table]
        x = self.rng.random()
        k = None if x < 0.4 else self._existing(table)
        if k is None:                                   # insert a new key
            row = {}
            for col, typ in spec.cols.items():
                row[col] = self.rng.choice(TENANTS) if col == spec.tenant else self._value(typ)
            k = tuple(row[col] for col in spec.key)
            cols = ", ".join(spec.cols)
            c.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join(['%s'] * len(row))})",
                      list(row.values()))
            self.keys[table].append(k)
            self.rows[table][k] = row
            return (table, "insert", k, dict(row))
        where = " AND ".join(f"{col} = %s" for col in spec.key)
        if x < 0.8:                                     # update the other columns
            row = dict(self.rows[table][k])
            sets = [col for col in spec.cols if col not in spec.key and col != spec.tenant]
            for col in sets:
                row[col] = self._value(spec.cols[col])
            c.execute(f"UPDATE {table} SET {', '.join(f'{col} = %s' for col in sets)} "
                      f"WHERE {where}", [row[col] for col in sets] + list(k))
            self.rows[table][k] = row
            return (table, "update", k, dict(row))
        c.execute(f"DELETE FROM {table} WHERE {where}", list(k))
        del self.rows[table][k]
        return (table, "delete", k, None)

    def turn(self, c):
        table = self.rng.choice(list(LOAD_TABLES))
        with c.transaction():
            xid = int(c.execute("SELECT pg_current_xact_id()::text").fetchone()[0])
            ops = [self._op(c, table) for _ in range(self.rng.randint(1, 3))]
        self.txns.append((xid % 2 ** 32, ops))

    @staticmethod
    def apply(initial, txns):
        rows = {t: {k: dict(v) for k, v in r.items()} for t, r in initial.items()}
        for _, ops in txns:
            for table, op, k, row in ops:
                if op == "delete":
                    del rows[table][k]
                else:
                    rows[table][k] = dict(row)
        return rows


def test_snapshot_under_concurrent_load_replays_to_the_tables(conn, cluster, kafka, make_relay):
    for name, spec in LOAD_TABLES.items():
        conn.execute(f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} {spec.ddl}")
        conn.execute(f"INSERT INTO {name} {spec.fill}")
    initial = {name: select_rows(conn, name, spec.key) for name, spec in LOAD_TABLES.items()}
    assert sum(len(x) for x in initial.values()) == 100_000
    port = free_port()
    r = snap_relay(make_relay, ", ".join(f"public.{t}" for t in LOAD_TABLES),
                   http__listen=f"127.0.0.1:{port}")
    for name in LOAD_TABLES:
        kafka.create_topic(r.topic_of(name))

    load = Load(cluster, initial, seed=20240)
    load.start()
    try:
        wait_for("the load to commit", lambda: load.committed() >= 20 or load.error, timeout=30)
        r.start()
        r.wait_log("snapshot: exported snapshot", timeout=60)
        at_export = load.committed()
        r.wait_log("snapshot: done", timeout=120)
        at_done = load.committed()
        r.wait_log("streaming slot", timeout=30)
        time.sleep(1.0)                     # the load goes on a little while the relay streams
    finally:
        load.stop()
    print(f"load: {load.committed()} transactions, {at_done - at_export} while the snapshot ran")
    assert at_done > at_export, "the load committed transactions while the snapshot ran"
    wait_published(conn, r, timeout=90)

    snap_lsn = one_export(r)
    msgs = {name: messages(kafka, r.topic_of(name)) for name in LOAD_TABLES}
    log = r.log()
    assert log.index("snapshot: done") < log.index("streaming slot"), \
        "the snapshot, then the stream"

    # the streamed changes are exactly the load's transactions after the snapshot: a suffix of
    # them in commit order, each after the snapshot's position
    streamed_xids = set()
    for name, ms in msgs.items():
        for m in streamed(ms):
            assert lsn_int(m.value["commit_lsn"]) > lsn_int(snap_lsn), \
                f"{name}: a streamed change at {m.value['commit_lsn']}, not after the snapshot " \
                f"at {snap_lsn}: {m.value}"
            streamed_xids.add(m.value["xid"])
    flags = [xid in streamed_xids for xid, _ in load.txns]
    first = flags.index(True) if True in flags else len(flags)
    assert 0 < first < len(flags), \
        f"the load ran before and after the snapshot ({first} of {len(flags)} before it)"
    late = [i for i, f in enumerate(flags) if f != (i >= first)]
    assert not late, ("the load's transactions streamed are not exactly those after the snapshot "
                      f"(first streamed: #{first}; out of place: {late[:10]})")
    at_snapshot = Load.apply(initial, load.txns[:first])

    total = 0
    for name, spec in LOAD_TABLES.items():
        rd = reads(msgs[name])
        for m in rd:
            assert_read_message(m, name, snap_lsn)
        keys = [tuple(m.key[c] for c in spec.key) for m in rd]
        dup = [k for k, n in collections.Counter(keys).items() if n > 1]
        assert not dup, f"{name}: rows read more than once without a restart: {dup[:10]}"
        got = {k: m.value["new"] for k, m in zip(keys, rd)}
        want = at_snapshot[name]
        if got != want:
            differ = [(k, got[k], want[k]) for k in set(got) & set(want) if got[k] != want[k]]
            pytest.fail(f"{name}: the read rows are not the table as of the snapshot:\n"
                        f"  not read: {sorted(set(want) - set(got))[:10]}\n"
                        f"  read, not in the table then: {sorted(set(got) - set(want))[:10]}\n"
                        f"  different: {differ[:5]}")
        assert logged_rows(r, name) == [len(rd)], f"the log's row count of {name}"
        # the replay: reads, then the stream, give the table as it is now
        assert_replay_equals(msgs[name], conn, name, spec.key)
        total += len(rd)
    assert logged_total(r) == [total]
    assert metric(port, "breakwater_snapshot_rows_total") == total
    assert r.stop() == 0


# ---- 2. the decoder's filters apply to read rows -----------------------------------------------

FILTER_DDL = """
DROP TABLE IF EXISTS flt_orders, flt_accounts, flt_hidden, "flt_Mixed Case", flt_excluded,
    flt_notenant;
CREATE TABLE flt_orders (id int PRIMARY KEY, tenant_id text, secret text, v int);
CREATE TABLE flt_accounts (account_id int, id int, name text, PRIMARY KEY (account_id, id));
CREATE TABLE flt_hidden (id int PRIMARY KEY, org text, v int);
CREATE TABLE "flt_Mixed Case" ("Id" int PRIMARY KEY, tenant_id text, "Some Col" text);
CREATE TABLE flt_excluded (tenant_id text, id int PRIMARY KEY);
CREATE TABLE flt_notenant (id int PRIMARY KEY, v int);
INSERT INTO flt_orders SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE 'ten' || (g % 4) END,
    'pw' || g, g FROM generate_series(1, 2000) g;
INSERT INTO flt_accounts SELECT g % 7, g, 'acct ' || g FROM generate_series(1, 700) g;
INSERT INTO flt_hidden SELECT g, 'org' || (g % 3), g FROM generate_series(1, 300) g;
INSERT INTO "flt_Mixed Case" SELECT g, 'mx', 'val ' || g FROM generate_series(1, 50) g;
INSERT INTO flt_excluded SELECT 'acme', g FROM generate_series(1, 100) g;
INSERT INTO flt_notenant SELECT g, g FROM generate_series(1, 100) g;
"""


def test_filters_apply_to_read_rows(conn, kafka, make_relay):
    conn.execute(FILTER_DDL)
    orders = select_rows(conn, "flt_orders", ("id",))
    accounts = select_rows(conn, "flt_accounts", ("account_id", "id"))
    hidden = select_rows(conn, "flt_hidden", ("id",))
    mixed = select_rows(conn, '"flt_Mixed Case"', ("Id",))
    # secret: a plain column left out; org: the tenant column, left out of the row but still the
    # tenant (a pattern with a wildcard); flt_accounts.id: a key column, sent all the same
    r = snap_relay(make_relay, "public.flt_*", decoder__exclude_tables="public.flt_excluded",
                   decoder__exclude_columns="public.flt_orders.secret, *.flt_hidden.org, "
                                            "public.flt_accounts.id",
                   decoder__tenant_columns="public.flt_accounts=account_id, public.flt_hidden=org",
                   decoder__missing_tenant="drop", snapshot__chunk_rows="300")
    r.start()
    r.wait_log("snapshot: done", timeout=60)
    r.wait_log("streaming slot")
    # the same rows again, as streamed inserts: their messages are what a read must look like
    conn.execute("DELETE FROM flt_orders WHERE id = 7")
    conn.execute("INSERT INTO flt_orders VALUES (7, 'ten3', 'pw7', 7)")
    conn.execute("DELETE FROM flt_accounts WHERE account_id = 3 AND id = 10")
    conn.execute("INSERT INTO flt_accounts VALUES (3, 10, 'acct 10')")
    conn.execute("DELETE FROM flt_hidden WHERE id = 5")
    conn.execute("INSERT INTO flt_hidden VALUES (5, 'org2', 5)")
    conn.execute('DELETE FROM "flt_Mixed Case" WHERE "Id" = 3')
    conn.execute('INSERT INTO "flt_Mixed Case" VALUES (3, \'mx\', \'val 3\')')
    # neither is sent: an excluded table, a table without the tenant column under drop
    conn.execute("INSERT INTO flt_excluded VALUES ('acme', 1000)")
    conn.execute("INSERT INTO flt_notenant VALUES (1000, 1)")
    wait_published(conn, r)

    # flt_orders: rows without a tenant dropped, the secret column left out
    ms = messages(kafka, r.topic_of("flt_orders"))
    rd = reads(ms)
    want = {k: {c: v for c, v in row.items() if c != "secret"}
            for k, row in orders.items() if row["tenant_id"] is not None}
    got = {(m.key["id"],): m.value["new"] for m in rd}
    assert len(rd) == len(got), "each row read once"
    null_read = [k for k in got if k in orders and orders[k]["tenant_id"] is None]
    assert got == want, (f"read rows of flt_orders: {len(got)} read, {len(want)} with a tenant; "
                         f"NULL-tenant rows read: {null_read[:5]}")
    assert all(list(m.value["new"]) == ["id", "tenant_id", "v"] for m in rd), \
        "exclude_columns: the secret column is not in a read row"
    for m in rd:
        assert_read_message(m, "flt_orders")

    # flt_accounts: the tenant from account_id (a tenant_columns rule), as text; the excluded
    # key column is sent
    ms2 = messages(kafka, r.topic_of("flt_accounts"))
    rd2 = reads(ms2)
    got2 = {(m.key["account_id"], m.key["id"]): m.value["new"] for m in rd2}
    assert len(rd2) == len(got2) == len(accounts) and got2 == accounts, "read rows of flt_accounts"
    for m in rd2:
        assert_read_message(m, "flt_accounts", tenant_col="account_id")
    assert {m.h["tenant"] for m in rd2} == {str(i) for i in range(7)}

    # flt_hidden: the tenant column is out of the row, the rows are still tagged with it
    ms3 = messages(kafka, r.topic_of("flt_hidden"))
    rd3 = reads(ms3)
    got3 = {(m.key["id"],): m.value["new"] for m in rd3}
    assert len(rd3) == len(got3) == len(hidden), f"{len(rd3)} reads of {len(hidden)} rows"
    assert got3 == {k: {"id": row["id"], "v": row["v"]} for k, row in hidden.items()}, \
        "flt_hidden: the excluded tenant column is not in a read row"
    for m in rd3:
        want_tenant = hidden[(m.key["id"],)]["org"]
        assert m.value["tenant"] == m.h.get("tenant") == want_tenant, \
            f"flt_hidden: tenant {m.value['tenant']!r} / header {m.h.get('tenant')!r}, " \
            f"org {want_tenant!r}"

    # "flt_Mixed Case": names that need quoting; the topic sanitises them, the value does not
    ms4 = messages(kafka, f"{r.prefix}.public.flt_Mixed_Case")
    rd4 = reads(ms4)
    got4 = {(m.key["Id"],): m.value["new"] for m in rd4}
    assert len(rd4) == len(got4) == len(mixed) and got4 == mixed, "read rows of flt_Mixed Case"
    for m in rd4:
        assert_read_message(m, "flt_Mixed Case")

    # a read and a streamed insert of the same row: same Kafka key, same value but for the
    # transaction's fields, same headers but for the transaction's
    for table, topic_msgs, key in (("flt_orders", ms, {"id": 7}),
                                   ("flt_accounts", ms2, {"account_id": 3, "id": 10}),
                                   ("flt_hidden", ms3, {"id": 5}),
                                   ("flt_Mixed Case", ms4, {"Id": 3})):
        read = next(m for m in reads(topic_msgs) if m.key == key)
        ins = next(m for m in streamed(topic_msgs) if m.key == key and m.value["op"] == "insert")
        assert read.raw.key == ins.raw.key, \
            f"{table}: Kafka key {read.raw.key!r}, an insert's {ins.raw.key!r}"
        assert list(read.value) == list(ins.value), f"{table}: value fields {list(read.value)} " \
                                                    f"vs an insert's {list(ins.value)}"
        txn = ("op", "xid", "commit_lsn", "commit_time")
        assert {k: v for k, v in read.value.items() if k not in txn} == \
            {k: v for k, v in ins.value.items() if k not in txn}, f"{table}: read vs insert"
        assert set(read.h) == set(ins.h), \
            f"{table}: headers {list(read.h)}, an insert's {list(ins.h)}"
        txn_h = ("op", "lsn", "xid", "commit_time_us")
        assert {k: v for k, v in read.h.items() if k not in txn_h} == \
            {k: v for k, v in ins.h.items() if k not in txn_h}, f"{table}: headers"
        if "xid" in read.h:
            assert read.h["xid"] == "0"

    # an excluded table and a table without a tenant column (drop): nothing at all
    for table in ("flt_excluded", "flt_notenant"):
        assert messages(kafka, r.topic_of(table), idle_ms=300) == [], f"{table}: no messages"
        assert logged_rows(r, table) in ([], [0]), f"{table} is not read: {logged_rows(r, table)}"
    assert logged_total(r) == [len(rd) + len(rd2) + len(rd3) + len(rd4)]
    assert r.stop() == 0


# ---- 2b. read values are rendered as a streamed insert's ------------------------------------

# an odd session for the relay's own connections: a snapshot read in it must still render every
# value as the plugin does (it pins DateStyle, IntervalStyle, TimeZone, extra_float_digits and
# bytea_output while it decodes)
ODD_SESSION = ("-c TimeZone=Asia/Kathmandu -c DateStyle=SQL,DMY -c IntervalStyle=sql_standard "
               "-c extra_float_digits=0 -c bytea_output=escape")

TYPES_DDL = r"""
DROP TABLE IF EXISTS typ_rows, typ_src, typ_ctenant, typ_csrc;
DROP TYPE IF EXISTS typ_mood;
CREATE TYPE typ_mood AS ENUM ('sad', 'happy');
CREATE TABLE typ_src (id int PRIMARY KEY, tenant_id text, b bool, i2 smallint, i8 bigint,
    f4 real, f8 double precision, f8b double precision, n numeric(10,2), nn numeric, t text,
    c char(4), u uuid, by bytea, d date, tm time, ttz timetz, ts timestamp, tstz timestamptz,
    iv interval, j json, jb jsonb, ai int[], ats timestamptz[], r int4range, e typ_mood, ip inet,
    pt point, big text);
CREATE TABLE typ_rows (LIKE typ_src INCLUDING ALL);
INSERT INTO typ_src VALUES
  (1, 'acme', true, -32768, -9223372036854775808, 1.1, 0.1, 1e300, 1.50,
   123456789012345678901234567890.123456789,
   E'quote " backslash \\ newline \n tab \t bell \x07 unicode é 😀', 'ab',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\xdeadbeef00', '2024-02-29', '13:14:15.123456',
   '13:14:15+05:30', '2024-02-29 13:14:15.5', '2024-02-29 13:14:15.5+05:30',
   '1 year 2 months 3 days 04:05:06.7', '{"k": [1, 2.50, "x"], "n": null}',
   '{"k": [1, 2.50, "x"], "n": null}', '{1,NULL,3}', '{"2024-01-01 00:00:00+00"}', '[1,10)',
   'happy', '192.168.0.1/24', '(1.5,2)', repeat('big', 3000)),
  (2, 'globex', false, 7, 9223372036854775807, 'NaN', '-Infinity', 5e-324, -0.5, 'NaN', '',
   'abcd', NULL, '', 'infinity', '00:00', '23:59:59.999999-08', '-infinity', 'infinity',
   '-1 day', '[]', '{}', '{}', '{}', 'empty', 'sad', '::1', '(0,0)', ''),
  (3, 'acme', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (4, 'initech', true, 0, 0, '-0', 0.1::float8 + 0.2::float8, 'NaN', 0, 1e-20, 'x', 'x', NULL,
   '\x00', '0001-01-01 BC', '24:00', '00:00+14', '0001-01-01 00:00:00 BC',
   '0001-01-01 00:00:00+00 BC', 'P1Y', '"s"', '[1, {"a": 2}]', '{{1,2},{3,4}}', NULL, '(,5]',
   NULL, '10.0.0.0/8', '(-1,1e300)', 'é');
-- a char(n) tenant: the tenant is the column's text form, padding included
CREATE TABLE typ_csrc (tenant_id char(6), id int PRIMARY KEY, v int);
CREATE TABLE typ_ctenant (LIKE typ_csrc INCLUDING ALL);
INSERT INTO typ_csrc VALUES ('ac', 1, 1), ('globex', 2, 2);
"""


def from_schema_on(value):
    """A JSON value's bytes from its "schema" field on: schema, table, tenant, key and the row,
    everything that does not depend on the transaction."""
    at = value.index(b',"schema":')
    return value[at:]


def test_read_values_render_as_an_inserts(conn, cluster, kafka, make_relay):
    conn.execute(TYPES_DDL)
    pairs = {"typ_rows": "typ_src", "typ_ctenant": "typ_csrc"}       # table: its rows
    for table, src in pairs.items():
        conn.execute(f"INSERT INTO {table} SELECT * FROM {src}")
    r = snap_relay(make_relay, ", ".join(f"public.{t}" for t in pairs),
                   pg__conninfo=cluster.conninfo(options=ODD_SESSION))
    r.start()
    r.wait_log("snapshot: done", timeout=60)
    r.wait_log("streaming slot")
    # the same rows again, streamed: the plugin renders them
    for table, src in pairs.items():
        conn.execute(f"DELETE FROM {table}")
        conn.execute(f"INSERT INTO {table} SELECT * FROM {src}")
    wait_published(conn, r)
    bad = []
    for table, src in pairs.items():
        ms = messages(kafka, r.topic_of(table))
        rd = {m.key["id"]: m for m in reads(ms)}
        ins = {m.key["id"]: m for m in streamed(ms) if m.value["op"] == "insert"}
        n = conn.execute(f"SELECT count(*) FROM {src}").fetchone()[0]
        assert sorted(rd) == sorted(ins) == list(range(1, n + 1)), (table, sorted(rd), sorted(ins))
        for i in sorted(rd):
            a, b = rd[i].raw, ins[i].raw
            assert a.key == b.key
            assert rd[i].value["op"] == "read" and rd[i].value["xid"] == 0
            if from_schema_on(a.value) == from_schema_on(b.value) and \
                    rd[i].h.get("tenant") == ins[i].h.get("tenant"):
                continue
            # numbers kept as text: 0.1 and 0.10000000000000001 are not the same rendering
            got, want = (json.loads(v, parse_float=str, parse_int=str) for v in (a.value, b.value))
            cols = [c for c in want["new"] if got["new"].get(c, "<absent>") != want["new"][c]]
            cols += [c for c in got["new"] if c not in want["new"]]
            bad += [f"  {table} row {i}, {c}: read {got['new'].get(c, '<absent>')!r}, "
                    f"insert {want['new'].get(c, '<absent>')!r}" for c in cols]
            bad += [f"  {table} row {i}, field {f}: read {got.get(f)!r}, insert {want.get(f)!r}"
                    for f in ("schema", "table", "tenant", "key") if got.get(f) != want.get(f)]
            if rd[i].h.get("tenant") != ins[i].h.get("tenant"):
                bad.append(f"  {table} row {i}, tenant header: read {rd[i].h.get('tenant')!r}, "
                           f"insert {ins[i].h.get('tenant')!r}")
    assert not bad, "reads render differently from streamed inserts of the same rows:\n" + \
        "\n".join(bad)
    assert r.stop() == 0


# ---- 3. kill -9 in the middle of a snapshot ----------------------------------------------------

CHUNK = 500
# table: (rows, key). Tables are read one after the other; kil_big first (the relay reads them
# in name order), so the kill falls in it: its resume point is a composite key whose text part
# needs escaping in the state file and in SQL
KILL_TABLES = {"kil_big": (50000, ("tenant_id", "id")), "kil_more": (10000, ("id",))}
KILL_TENANTS = "ARRAY['o''brien', 'ac \"me\"', 'ünï\\', 'zz']"
PAD = "x" * 200


class HighWater:
    """The number of messages in single-partition topics (their high watermarks), read with one
    consumer connection."""

    def __init__(self, kafka, topics):
        from confluent_kafka import Consumer, TopicPartition
        self.tps = [TopicPartition(t, 0) for t in topics]
        self.c = Consumer(kafka.config(**{"group.id": f"bw-snap-{os.getpid()}"}))

    def __call__(self):
        return sum(self.c.get_watermark_offsets(tp, timeout=10)[1] for tp in self.tps)

    def close(self):
        self.c.close()


def kill_mid_snapshot(r, kafka, topics, at_least, when_exported=None):
    """Starts `r` and kills it (-9) in the middle of its snapshot, once Kafka holds at_least
    messages on `topics`; returns the LSN of the exported snapshot. The relay runs in 10 ms
    slices (SIGSTOP/SIGCONT) from the moment the snapshot is exported, and is killed while
    stopped: mid-snapshot for sure, not by a lucky sleep. when_exported() runs once, while the
    relay is stopped right after the export."""
    hw = HighWater(kafka, topics)
    r.start()
    pid = r.proc.pid
    try:
        wait_for("the exported snapshot", lambda: "snapshot: exported snapshot" in r.log()
                 or r.proc.poll() is not None, timeout=60, interval=0.002)
        os.kill(pid, signal.SIGSTOP)
        assert r.proc.poll() is None, f"the relay exited:\n{r.log()[-3000:]}"
        lsn = one_export(r)
        if when_exported is not None:
            when_exported()
        deadline = time.monotonic() + 60
        while True:
            if "snapshot: done" in r.log():
                pytest.fail("the snapshot finished before the kill: make the tables larger")
            if hw() >= at_least:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"not {at_least} messages in Kafka after 60 s:\n{r.log()[-3000:]}")
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.01)
            os.kill(pid, signal.SIGSTOP)
    finally:
        hw.close()
        r.kill9()                       # SIGKILL ends a stopped process too
    assert "snapshot: done" not in r.log()
    return lsn


def kill_changes(conn, tag):
    """Changes to rows the first run read (low ids), rows it had not read (high ids), new rows
    and deleted rows, in both tables. Each tag changes its own rows: a change made only while
    the first snapshot ran must reach the replay through the stream, not through a later one."""
    k = len(tag)
    for table, (n, _) in KILL_TABLES.items():
        conn.execute(f"UPDATE {table} SET v = v + 1, note = %s WHERE id IN (%s, %s, %s, %s) "
                     f"OR id %% 997 = %s", (tag, k, k + 1, 250 + k, 499 + k, k))
        conn.execute(f"DELETE FROM {table} WHERE id %% 1009 = %s", (500 + k,))
        base = n + 1000 * k
        conn.execute(f"INSERT INTO {table} SELECT g, 'acme', g, %s "
                     f"FROM generate_series(%s::int, %s::int) g", (tag, base, base + 99))


def test_kill9_mid_snapshot_resumes_after_the_last_acknowledged_chunk(conn, kafka, make_relay):
    for table, (n, key) in KILL_TABLES.items():
        conn.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} "
                     f"(id int, tenant_id text, v int, note text, PRIMARY KEY ({', '.join(key)}))")
        conn.execute(f"INSERT INTO {table} SELECT g, ({KILL_TENANTS})[g %% 4 + 1], g, %s "
                     f"FROM generate_series(1, %s::int) g", (PAD, n))
    r = snap_relay(make_relay, ", ".join(f"public.{t}" for t in KILL_TABLES),
                   snapshot__chunk_rows=str(CHUNK))
    topics = [r.topic_of(t) for t in KILL_TABLES]
    for t in topics:
        kafka.create_topic(t)
    state = os.path.join(r.settings["relay.state_dir"], f"{r.slot}.snapshot.json")

    snap1 = kill_mid_snapshot(r, kafka, topics, 3 * CHUNK,
                              # committed after the consistent point while the snapshot runs:
                              # the stream carries them
                              lambda: kill_changes(conn, "during"))
    assert "snapshot: done" not in r.log()
    assert os.path.exists(state), f"no state file {state} after chunks were acknowledged"
    before_kill = {t: messages(kafka, t, idle_ms=500) for t in topics}
    first = {t: len(ms) for t, ms in before_kill.items()}
    # rows read before the kill and changed after the first snapshot: only the stream from the
    # slot's consistent point brings those changes
    big_key = KILL_TABLES["kil_big"][1]
    read_first = {tuple(m.key[c] for c in big_key) for m in reads(before_kill[topics[0]])}
    changed = set(conn.execute("SELECT tenant_id, id FROM kil_big WHERE note = 'during'")
                  .fetchall())
    assert read_first & changed, \
        "a row changed while the first snapshot ran was read before the kill"
    total_rows = sum(n for n, _ in KILL_TABLES.values())
    assert 3 * CHUNK <= sum(first.values()) < total_rows, f"killed mid-snapshot: {first}"
    assert slot_exists(conn, r.slot), "the slot was created before the snapshot"

    kill_changes(conn, "while-down")                # between the kill and the restart
    r.start()
    # the exported snapshot died with the relay: the unfinished (keyed) tables continue as
    # backfills, reconciled with the stream by watermarks, and streaming starts at once
    r.wait_log("snapshot: resuming", timeout=60)
    r.wait_log("streaming slot", timeout=30)
    kill_changes(conn, "streamed-after")
    unfinished = [t for t in KILL_TABLES if f"snapshot: public.{t}: done" not in r.log()]
    assert unfinished, "the kill came before the snapshot was done"
    for t in unfinished:
        r.wait_log(f"backfill snapshot-{snap1}-public.{t}: done", timeout=120)
    wait_published(conn, r, timeout=90)

    snap2 = set()
    for (table, (_, key)), topic in zip(KILL_TABLES.items(), topics):
        ms = messages(kafka, topic)
        before, after = ms[:first[topic]], ms[first[topic]:]
        assert all(m.value is not None and m.value["op"] == "read" for m in before), \
            f"{table}: only reads before the kill (nothing is streamed before the snapshot ends)"
        for m in reads(before):
            assert_read_message(m, table, snap1)
        for m in reads(after):
            assert_read_message(m, table)
            snap2.add(m.value["commit_lsn"])
        # a row read twice: in a chunk not yet recorded as acknowledged at the kill. The state
        # moves only after a chunk's acknowledgement, so the resumed read starts again after
        # the last recorded chunk: at most the chunk in flight and one acknowledged but not yet
        # recorded, i.e. 2 chunks per table
        counts = collections.Counter(tuple(m.key[c] for c in key) for m in reads(ms))
        twice = [k for k, n in counts.items() if n > 1]
        more = [k for k, n in counts.items() if n > 2]
        print(f"{table}: {first[topic]} messages before the kill, {len(twice)} rows read twice")
        assert not more, f"{table}: rows read more than twice: {more[:10]}"
        assert len(twice) <= 2 * CHUNK, \
            f"{table}: {len(twice)} rows read twice (at most 2 chunks of {CHUNK}): the resume " \
            f"did not continue after the last acknowledged chunk"
        assert_replay_equals(ms, conn, table, key)
    assert snap2, "the rest of the tables was read after the restart"
    assert all(lsn_int(x) > lsn_int(snap1) for x in snap2), \
        f"the resumed reads are at {sorted(snap2)}, not after the first snapshot at {snap1}"
    assert r.stop() == 0


def test_a_slot_created_again_gets_a_full_snapshot(conn, kafka, make_relay):
    """The state file of an interrupted snapshot belongs to the slot it was taken for: when the
    slot is gone and the relay creates it again, every row is read again under the new slot's
    exported snapshot (a resume would skip rows whose changes the old slot alone carried)."""
    table = "again_t"
    conn.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} "
                 f"(id int PRIMARY KEY, tenant_id text, v int, note text)")
    conn.execute(f"INSERT INTO {table} SELECT g, 'acme', g, %s FROM generate_series(1, 20000) g",
                 (PAD,))
    r = snap_relay(make_relay, f"public.{table}", snapshot__chunk_rows=str(CHUNK))
    topic = r.topic_of(table)
    kafka.create_topic(topic)
    snap1 = kill_mid_snapshot(r, kafka, [topic], 2 * CHUNK)
    first = len(messages(kafka, topic, idle_ms=500))
    assert 0 < first < 20000
    wait_for("the slot to be released", lambda: conn.execute(
        "SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name = %s AND active",
        (r.slot,)).fetchone()[0], timeout=30)
    conn.execute("SELECT pg_drop_replication_slot(%s)", (r.slot,))
    # changes the dropped slot would have carried, to rows the first run read
    conn.execute(f"UPDATE {table} SET v = -v, note = 'while no slot' "
                 f"WHERE id <= 300 OR id % 97 = 0")
    conn.execute(f"DELETE FROM {table} WHERE id % 101 = 0")
    at_restart = select_rows(conn, table, ("id",))

    r.start()
    wait_log_count(r, "snapshot: exported snapshot", 2)
    r.wait_log("snapshot: done", timeout=60)
    r.wait_log("streaming slot")
    assert "snapshot: resuming" not in r.log(), "a new slot: a new snapshot, not a resume"
    snap2 = exported(r)[1][1]
    assert lsn_int(snap2) > lsn_int(snap1)
    conn.execute(f"UPDATE {table} SET v = 0 WHERE id = 1")
    wait_published(conn, r)

    ms = messages(kafka, topic)[first:]
    rd = reads(ms)
    got = {(m.key["id"],): m.value["new"] for m in rd}
    assert len(rd) == len(got), "each row read once by the new snapshot"
    assert got == at_restart, \
        f"the new slot's snapshot is the whole table: {len(got)} rows read, {len(at_restart)} " \
        f"in the table; not read: {sorted(set(at_restart) - set(got))[:10]}"
    for m in rd:
        assert_read_message(m, table, snap2)
    # from the new slot's snapshot on, a replay gives the table (from offset 0 it need not: a row
    # the first run read and deleted while there was no slot has no delete message anywhere)
    assert_replay_equals(ms, conn, table, ("id",))
    assert r.stop() == 0


# ---- 4. modes, and a slot that exists already --------------------------------------------------

MODE_DDL = ("DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (tenant_id text, id int, v int, "
            "PRIMARY KEY (tenant_id, id)); "
            "INSERT INTO {t} SELECT 't' || (g % 3), g, g FROM generate_series(1, 1000) g")


def stream_one(conn, r, table):
    """One streamed insert after the relay streams, published: the topic exists then."""
    conn.execute(f"INSERT INTO {table} VALUES ('late', 1, 1)")
    wait_published(conn, r)


def test_mode_never_reads_nothing(conn, kafka, make_relay):
    conn.execute(MODE_DDL.format(t="mode_never"))
    r = snap_relay(make_relay, "public.mode_never", snapshot__mode="never")
    r.start()
    r.wait_log("streaming slot")
    stream_one(conn, r, "mode_never")
    ms = messages(kafka, r.topic_of("mode_never"))
    assert [m.value["op"] for m in ms] == ["insert"], "the streamed insert only, no read"
    assert "snapshot: exported" not in r.log() and "snapshot: done" not in r.log()
    assert r.stop() == 0


def test_initial_only_reads_and_exits_without_a_slot(conn, kafka, make_relay):
    conn.execute(MODE_DDL.format(t="mode_only"))
    rows = select_rows(conn, "mode_only", ("tenant_id", "id"))
    r = snap_relay(make_relay, "public.mode_only", snapshot__mode="initial-only")
    r.start()
    rc = r.wait_exit(timeout=120)
    assert rc == 0, f"initial-only exits 0 after the snapshot, not {rc}:\n{r.log()[-3000:]}"
    assert "snapshot: done" in r.log()
    assert "streaming slot" not in r.log()
    assert not slot_exists(conn, r.slot), "initial-only leaves no slot"
    # everything was acknowledged before the exit: it is all in the topic
    rd = reads(messages(kafka, r.topic_of("mode_only")))
    got = {(m.key["tenant_id"], m.key["id"]): m.value["new"] for m in rd}
    assert len(rd) == len(got) == len(rows) and got == rows, \
        f"{len(rd)} reads ({len(got)} keys) for {len(rows)} rows"
    for m in rd:
        assert_read_message(m, "mode_only")
    assert logged_total(r) == [len(rows)]


def test_existing_slot_gets_no_snapshot(conn, kafka, make_relay):
    conn.execute(MODE_DDL.format(t="mode_exists"))
    r = snap_relay(make_relay, "public.mode_exists")
    conn.execute("SELECT pg_create_logical_replication_slot(%s, 'breakwater')", (r.slot,))
    r.start()
    r.wait_log("streaming slot")
    assert "no initial snapshot" in r.log()
    stream_one(conn, r, "mode_exists")
    ms = messages(kafka, r.topic_of("mode_exists"))
    assert [m.value["op"] for m in ms] == ["insert"], "the streamed insert only, no read"
    assert "snapshot: exported" not in r.log()
    assert r.stop() == 0


# ---- 5. a table without key columns ------------------------------------------------------------

def test_keyless_table_is_read_in_one_pass_without_keys(conn, kafka, make_relay):
    table = "nokey_log"
    conn.execute(f"DROP TABLE IF EXISTS {table}; "
                 f"CREATE TABLE {table} (tenant_id text, v int, note text)")
    # 3000 rows, each one 60 times over: only a multiset comparison tells them apart
    conn.execute(f"INSERT INTO {table} SELECT 't' || (g % 2), g % 50, 'same' "
                 f"FROM generate_series(1, 3000) g")
    want = collections.Counter(conn.execute(f"SELECT tenant_id, v, note FROM {table}").fetchall())
    r = snap_relay(make_relay, f"public.{table}", snapshot__chunk_rows="500")
    r.start()
    r.wait_log("snapshot: done", timeout=60)
    r.wait_log("streaming slot")
    conn.execute(f"INSERT INTO {table} VALUES ('t9', -1, 'streamed')")
    wait_published(conn, r)
    ms = messages(kafka, r.topic_of(table))
    rd = reads(ms)
    assert all(m.raw.key is None for m in rd), "a keyless table's reads have no Kafka key"
    assert all(m.value["key"] is None for m in rd), "a keyless read's value has key null"
    got = collections.Counter(tuple(m.value["new"][c] for c in ("tenant_id", "v", "note"))
                              for m in rd)
    assert got == want, f"{len(rd)} reads for {sum(want.values())} rows: missing " \
                        f"{list((want - got).items())[:5]}, extra {list((got - want).items())[:5]}"
    for m in rd:
        assert_read_message(m, table, one_export(r))
    ins = [m for m in streamed(ms)]
    assert [m.value["op"] for m in ins] == ["insert"] and ins[0].raw.key is None
    assert list(rd[0].value) == list(ins[0].value), "a read has the fields of an insert"
    assert logged_rows(r, table) == [3000]

    # a restart of a finished snapshot: the slot exists, nothing is read again
    assert r.stop() == 0
    r.start()
    wait_log_count(r, "streaming slot", 2)
    assert "no initial snapshot" in r.log()
    conn.execute(f"INSERT INTO {table} VALUES ('t9', -2, 'streamed again')")
    wait_published(conn, r)
    ms = messages(kafka, r.topic_of(table))
    assert len(reads(ms)) == 3000, "a finished snapshot is not read again after a restart"
    assert [m.value["new"]["v"] for m in streamed(ms)] == [-1, -2]
    assert r.stop() == 0


# ---- 6. Avro -----------------------------------------------------------------------------------

def test_avro_envelope_says_read(conn, kafka, registry, make_relay):
    from test_avro import Avro
    avro = Avro(registry)
    table = "avro_snap"
    conn.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} "
                 f"(tenant_id text, id int, amount int, PRIMARY KEY (tenant_id, id))")
    conn.execute(f"INSERT INTO {table} SELECT 't' || (g % 3), g, g * 10 "
                 f"FROM generate_series(1, 300) g")
    rows = select_rows(conn, table, ("tenant_id", "id"))
    r = snap_relay(make_relay, f"public.{table}", value__format="avro",
                   schema_registry__url=registry.url)
    r.start()
    r.wait_log("streaming slot", timeout=90)
    snap_lsn = one_export(r)
    conn.execute(f"INSERT INTO {table} VALUES ('t0', 1000, 1)")
    wait_published(conn, r)
    topic = r.topic_of(table)
    recs = kafka.consume_all(topic, idle_ms=1000)
    values = [avro.value(topic, x) for x in recs]
    assert [v["op"] for v in values] == ["read"] * 300 + ["insert"]
    got = {}
    for rec, v in zip(recs[:300], values):
        h = hdrs(rec.headers)
        assert h["op"] == "read" and h["lsn"] == snap_lsn and h.get("tenant") == v["tenant"]
        assert v["xid"] == 0 and v["commit_lsn"] == lsn_int(snap_lsn), (v["xid"], v["commit_lsn"])
        key = avro.key(topic, rec)
        assert v["tenant"] == v["new"]["tenant_id"] == key["tenant_id"]
        got[(key["tenant_id"], key["id"])] = v["new"]
    assert got == rows
    assert r.stop() == 0


# ---- a standby relay during the snapshot -------------------------------------------------------

def test_a_standby_waits_while_the_snapshot_runs(conn, kafka, make_relay):
    """The walsender releases a slot it created with an exported snapshot: for the snapshot's
    whole length, the slot is not active. A second relay on the slot must still wait as a
    standby (the snapshot holds an advisory lock), or its stream would be overwritten by older
    snapshot rows."""
    table = "sb_rows"
    conn.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} "
                 "(tenant_id text, id int, v int, PRIMARY KEY (tenant_id, id))")
    conn.execute(f"INSERT INTO {table} SELECT 't' || (g % 3), g, 0 FROM generate_series(1, 3000) g")
    a = snap_relay(make_relay, f"public.{table}", snapshot__chunk_rows="100")
    b = snap_relay(make_relay, f"public.{table}", snapshot__chunk_rows="100")
    a.start()
    wait_for("the snapshot to be exported", lambda: EXPORTED.search(a.log()), interval=0.002)
    os.kill(a.proc.pid, signal.SIGSTOP)            # mid-snapshot, its lock held
    try:
        assert conn.execute("SELECT NOT active FROM pg_replication_slots WHERE slot_name = %s",
                            (a.slot,)).fetchone()[0], "the slot is inactive during the snapshot"
        b.start()
        b.wait_log("its initial snapshot runs in process")
        b.wait_log("waiting to take over (standby)")
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    a.wait_log("snapshot: done")
    a.wait_log("streaming slot")
    conn.execute(f"UPDATE {table} SET v = 1 WHERE id = 7")
    wait_for("the update to be confirmed", lambda: "streaming slot" not in b.log() and
             conn.execute("SELECT confirmed_flush_lsn >= pg_current_wal_insert_lsn() "
                          "FROM pg_replication_slots WHERE slot_name = %s",
                          (a.slot,)).fetchone()[0], timeout=30)
    assert "streaming slot" not in b.log(), "the standby streamed while the snapshot ran"
    assert "snapshot:" not in b.log(), "the standby ran a snapshot of its own"
    assert a.stop() == 0
    assert b.stop() == 0


# ---- bad input ---------------------------------------------------------------------------------

def test_an_unwritable_state_dir_stops_before_the_slot_exists(conn, kafka, make_relay, tmp_path):
    """The state file is written before the slot is created: a relay.state_dir that cannot be a
    directory stops the relay with an error naming it, and leaves no slot (so no snapshot is
    ever skipped)."""
    conn.execute("DROP TABLE IF EXISTS bad_sd; CREATE TABLE bad_sd (tenant_id text, id int PRIMARY KEY)")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the directory should be")
    r = snap_relay(make_relay, "public.bad_sd", relay__state_dir=str(blocker / "state"))
    rc, out = r.run(timeout=60)
    assert rc == 2, out
    assert str(blocker / "state") in out and "relay.state_dir must be a directory" in out, out
    assert not slot_exists(conn, r.slot), "a slot without its snapshot"


def test_missing_tenant_error_stops_the_snapshot_naming_the_table(conn, kafka, make_relay):
    """decoder.missing_tenant=error applies to the snapshot as to the stream: a selected table
    without its tenant column stops the relay with the table's name and the ways out; nothing is
    confirmed past the slot's start, and the state file stays for the next start."""
    conn.execute("DROP TABLE IF EXISTS mt_ok, mt_none; "
                 "CREATE TABLE mt_ok (tenant_id text, id int, PRIMARY KEY (tenant_id, id)); "
                 "CREATE TABLE mt_none (id int PRIMARY KEY); "
                 "INSERT INTO mt_ok VALUES ('a', 1); INSERT INTO mt_none VALUES (1)")
    r = snap_relay(make_relay, "public.mt_*", decoder__missing_tenant="error")
    r.start()
    assert r.wait_exit(timeout=60) != 0
    log = r.log()
    assert 'table "public.mt_none" has no tenant column "tenant_id"' in log, log[-2000:]
    assert "decoder.tenant_columns" in log and "decoder.exclude_tables" in log, log[-2000:]
    assert (pathlib.Path(r.settings["relay.state_dir"]) / f"{r.slot}.snapshot.json").exists()
