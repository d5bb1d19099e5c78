"""Backfills end to end (`breakwater-relay backfill`, the breakwater.backfill message,
backfill.chunk_rows, relay.state_dir), on a real PostgreSQL and a real Kafka broker.

A backfill re-sends the current rows of one table (optionally one tenant's, optionally those
matching a SQL condition) while the relay keeps streaming. Per chunk the relay emits a low
watermark (a breakwater.watermark message), reads `backfill.chunk_rows` rows in key order, emits
a high watermark; a streamed change to a key of the chunk between the two drops
that key's row (the stream is newer); at the high watermark the rest goes out as op "read"
messages (xid 0, commit_lsn and lsn header = the high watermark's LSN). The properties tested:

- one tenant's backfill sends exactly that tenant's rows, each once, as reads shaped like the
  snapshot's; their LSNs are high watermarks; the log, --status and /metrics count them;
- under a concurrent load on the same tenant's keys (the relay run in slices, so that many
  changes land between the watermarks of a chunk): no row goes out after a streamed change of its
  key between its chunk's watermarks, the topic stays in LSN order, streaming goes on between the
  chunks, and a replay of the topic from offset 0 gives the tenant's rows as SELECT does;
- --where (with --tenant, quoting, and a condition whose precedence matters) and the SQL trigger
  (with and without an id, two requests queued at once) send exactly the rows asked for;
  --status shows the jobs done with their row counts;
- a --where cannot break out of its parentheses (an extra ")" or a comment): refused, or exactly
  the rows of the tenant that match it, never another tenant's, never a backfill without end;
- kill -9 in the middle of a backfill: the restart resumes after the last saved chunk, at most
  two chunks are read twice, the request is not run twice, the replay equals the table;
- bad requests (CLI: non-zero exit and a message; SQL: "refused" and status failed) send
  nothing, and a --where cannot smuggle in another statement.

The broker's topics have one partition (tests/lib/kafka.sh), so a topic's messages are totally
ordered and a replay is well defined.
"""

import collections
import json
import os
import random
import re
import signal
import subprocess
import threading
import time

import bwproto
import pytest

from conftest import Writer, insert_lsn, wait_for
from test_coalesce import lsn_int, wait_published
from test_e2e import free_port, metric
from test_snapshot import (HighWater, assert_read_message, messages, reads, replay, select_rows,
                           streamed)

KEY = ("tenant_id", "id")
DDL = ("DROP TABLE IF EXISTS {t}; CREATE TABLE {t} "
       "(tenant_id text, id int, v int, note text, PRIMARY KEY (tenant_id, id))")
# 20,000 rows over 5 tenants t0..t4, 4,000 each (tenant t<k> has the ids = k mod 5)
FILL = "INSERT INTO {t} SELECT 't' || (g % 5), g, g, 'n' || g FROM generate_series(1, 20000) g"
REQUESTED = re.compile(r"backfill (\S+) requested")


# ---- helpers -----------------------------------------------------------------------------------

def bf_relay(make_relay, kafka, tables, topics=(), **settings):
    """A relay (not started) on `tables`, with an HTTP endpoint on a free port (the CLI needs it:
    r.port), snapshot.mode=never, tenant signals off; r.topic_of(table) is a table's topic, and
    the topics of `topics` are created first (no first message waits for a topic creation)."""
    r = make_relay(decoder__tables=tables, http__listen=f"127.0.0.1:{free_port()}",
                   signals__enabled="false", **settings)
    r.port = int(r.settings["http.listen"].rsplit(":", 1)[1])
    r.topic_of = lambda table: f"{r.prefix}.public.{table}"
    for t in topics:
        kafka.create_topic(r.topic_of(t))
    return r


def cli(r, *args, timeout=60):
    """`breakwater-relay --config=<r's file> backfill ARGS` to completion: (rc, stdout, stderr)."""
    r.write_config()
    done = subprocess.run([r.binary, f"--config={r.config_path}", "backfill", *args],
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def request(r, *args):
    """A backfill requested through the CLI, which must say so and exit 0; returns its id."""
    rc, out, err = cli(r, *args)
    found = REQUESTED.findall(out + err)
    assert rc == 0 and len(found) == 1, \
        f"backfill {' '.join(args)}: exit {rc}, wanted 0 and one \"backfill <id> requested\" " \
        f"line:\n{out}{err}\nrelay log:\n{r.log()[-2000:]}"
    return found[0]


def signal_request(conn, **body):
    """A backfill requested through SQL (the breakwater.backfill message); returns its LSN."""
    return conn.execute("SELECT pg_logical_emit_message(true, 'breakwater.backfill', %s)::text",
                        (json.dumps(body),)).fetchone()[0]


def status(r):
    """The jobs of `backfill --status` (a JSON array on stdout, exit 0)."""
    rc, out, err = cli(r, "--status")
    assert rc == 0, f"backfill --status: exit {rc}:\n{out}{err}"
    try:
        jobs = json.loads(out)
    except ValueError as e:
        pytest.fail(f"backfill --status does not print a JSON array ({e}):\n{out}")
    assert isinstance(jobs, list), f"backfill --status: not an array: {jobs!r}"
    for j in jobs:
        missing = {"id", "schema", "table", "tenant", "where", "status", "rows", "estimate",
                   "error"} - set(j)
        assert not missing, f"backfill --status: a job without {sorted(missing)}: {j}"
        assert j["status"] in ("queued", "running", "done", "failed"), j
    return jobs


def job(jobs, bid):
    found = [j for j in jobs if str(j["id"]) == str(bid)]
    assert len(found) == 1, f"backfill --status: {len(found)} jobs with id {bid}: {jobs}"
    return found[0]


def wait_started(r, bid, table, timeout=60):
    """Waits (polling every 2 ms) for "backfill <id>: public.<table> ... started"."""
    pat = re.compile(rf"backfill {re.escape(bid)}: public\.{re.escape(table)}\b[^\n]*started")
    wait_for(f"backfill {bid} to start", lambda: pat.search(r.log())
             or (r.proc.poll() is not None and pytest.fail(
                 f"relay exited with {r.proc.returncode}:\n{r.log()[-3000:]}")),
             timeout=timeout, interval=0.002)


def done_rows(r, bid):
    """The row counts of the log's "backfill <id>: done, <n> rows" lines."""
    return [int(n) for n in re.findall(rf"backfill {re.escape(bid)}: done, (\d+) rows", r.log())]


def wait_done(r, bid, timeout=90):
    """Waits for "backfill <id>: done, <n> rows" (once) and returns n."""
    r.wait_log(f"backfill {bid}: done, ", timeout=timeout)
    rows = done_rows(r, bid)
    assert len(rows) == 1, f"one \"backfill {bid}: done, <n> rows\" line, not {rows}"
    return rows[0]


def in_slices(r, until, what, run_s=0.005, stop_s=0.02, timeout=120):
    """The relay, stopped (SIGSTOP) on entry, runs in slices of run_s every run_s + stop_s until
    until() is true (checked while it is stopped); it is left stopped. Changes committed by other
    threads meanwhile land between the relay's steps: inside a chunk's watermarks, for sure."""
    pid = r.proc.pid
    deadline = time.monotonic() + timeout
    while not until():
        if r.proc.poll() is not None:
            pytest.fail(f"relay exited with {r.proc.returncode} before {what}:\n{r.log()[-3000:]}")
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGCONT)
            pytest.fail(f"not {what} after {timeout}s of slices:\n{r.log()[-3000:]}")
        os.kill(pid, signal.SIGCONT)
        time.sleep(run_s)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(stop_s)


Watermark = collections.namedtuple("Watermark", "lsn pos")
Watermark.__doc__ = """One breakwater.watermark message: lsn (int), the message's own LSN (what
pg_logical_emit_message returns, and what a read's commit_lsn names), and pos (int), where it is
in the stream's commit order: its transaction's commit LSN for a transactional message, its own
LSN for a non-transactional one."""


def watermarks(slot):
    """The breakwater.watermark messages in the WAL since `slot` was made, in stream order.
    (Transactional or not: either is decoded in its place in the stream; the relay uses
    transactional ones, which PostgreSQL 15 flushes at their commit.)"""
    recs = slot.get(peek=True, message_prefixes="breakwater.watermark",
                    tables="public.bf_no_table_has_this_name")
    out = []
    for item in bwproto.reassemble(recs):
        if item["type"] == "message":
            out.append(Watermark(item["lsn"], item["lsn"]))
        else:
            out += [Watermark(rec["lsn"], item["commit_lsn"]) for rec in item["records"]
                    if rec["type"] == "message"]
    return out


def backfill_messages(slot):
    """Contents of the breakwater.backfill messages in the WAL since `slot` was made."""
    recs = slot.get(peek=True, message_prefixes="breakwater.backfill",
                    tables="public.bf_no_table_has_this_name")
    return [bytes(rec["content"]).decode() for rec in recs if rec["type"] == "message"]


def tenant_rows(conn, table, tenant):
    cur = conn.execute(f"SELECT * FROM {table} WHERE tenant_id = %s", (tenant,))
    cols = [d.name for d in cur.description]
    return {(r[0], r[1]): dict(zip(cols, r)) for r in cur.fetchall()}


def key_of(m):
    return tuple(m.key[c] for c in KEY)


def assert_replay_equals_rows(msgs, want, what):
    got = replay(msgs, KEY, what)
    if got != want:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        differ = sorted(k for k in set(got) & set(want) if got[k] != want[k])
        history = {k: [(m.value["op"] if m.value else "tombstone", m.h.get("lsn"),
                        (m.value or {}).get("new", {}) and m.value["new"].get("v"))
                       for m in msgs if key_of(m) == k]
                   for k in (missing + extra + differ)[:5]}
        pytest.fail(f"{what}: replaying {len(msgs)} messages does not give the rows of SELECT:\n"
                    f"  missing from the replay ({len(missing)}): {missing[:10]}\n"
                    f"  in the replay, not in the table ({len(extra)}): {extra[:10]}\n"
                    f"  different ({len(differ)}): {[(k, got[k], want[k]) for k in differ[:5]]}\n"
                    f"  messages of some of those keys (op, lsn, new.v): {history}")


def assert_no_reads(kafka, r, tables):
    for t in tables:
        rd = reads(messages(kafka, t, idle_ms=300))
        assert not rd, f"{t}: {len(rd)} read messages, none wanted: {[m.value for m in rd[:3]]}"


# ---- 1. one tenant ------------------------------------------------------------------------------

def test_backfill_one_tenant_sends_its_rows_once(conn, kafka, make_relay, make_slot):
    table = "bf_tenant"
    conn.execute(DDL.format(t=table))
    conn.execute(FILL.format(t=table))
    want = tenant_rows(conn, table, "t2")
    assert len(want) == conn.execute(f"SELECT count(*) FROM {table} WHERE tenant_id = 't2'"
                                     ).fetchone()[0] == 4000
    side = make_slot()                      # sees every watermark the relay emits
    r = bf_relay(make_relay, kafka, f"public.{table}", topics=[table])
    r.start()
    r.wait_log("streaming slot")
    before = lsn_int(insert_lsn(conn))
    bid = request(r, f"--table=public.{table}", "--tenant=t2")
    wait_started(r, bid, table)
    n = wait_done(r, bid)
    after = lsn_int(insert_lsn(conn))
    # a streamed insert of the same tenant: what a read must look like, apart from op/xid/lsn
    conn.execute(f"INSERT INTO {table} VALUES ('t2', 100002, 1, 'streamed')")
    wait_published(conn, r)

    ms = messages(kafka, r.topic_of(table))
    rd = reads(ms)
    others = collections.Counter(m.value["tenant"] for m in rd if m.value["tenant"] != "t2")
    assert not others, f"reads of other tenants: {dict(others)}"
    keys = [key_of(m) for m in rd]
    dup = [k for k, c in collections.Counter(keys).items() if c > 1]
    assert not dup, f"rows read more than once: {dup[:10]}"
    got = {key_of(m): m.value["new"] for m in rd}
    differ = [(k, got[k], want[k]) for k in set(got) & set(want) if got[k] != want[k]]
    assert got == want, f"{len(rd)} reads for the {len(want)} rows of t2: not read " \
                        f"{sorted(set(want) - set(got))[:10]}, different {differ[:3]}"
    assert n == len(want), f"the log says done, {n} rows; {len(want)} were sent"
    for m in rd:
        assert_read_message(m, table)
    assert keys == sorted(keys), "reads go out in key order (chunks read in key order, in turn)"

    # each read carries its chunk's high watermark: emitted after the request, one per chunk of
    # backfill.chunk_rows (default 2000) rows, each the second of a low/high pair
    lsns = [lsn_int(m.value["commit_lsn"]) for m in rd]
    assert lsns == sorted(lsns), "chunks go out one after the other"
    highs = sorted(set(lsns))
    assert all(before < h <= after for h in highs), \
        f"read LSNs {[hex(h) for h in highs]} not between the request ({before:X}) and " \
        f"done ({after:X})"
    assert [sum(1 for x in lsns if x == h) for h in highs] == [2000, 2000], \
        f"rows per high watermark: {[sum(1 for x in lsns if x == h) for h in highs]}, " \
        f"wanted two chunks of 2000 (backfill.chunk_rows default)"
    wm = watermarks(side)
    by_lsn = {w.lsn: i for i, w in enumerate(wm)}
    not_high = [hex(h) for h in highs if by_lsn.get(h, 0) == 0]
    assert not not_high, f"read LSNs {not_high} are not watermarks that follow another (the " \
                         f"low): watermarks {[hex(w.lsn) for w in wm]}"
    assert len(wm) >= 4, f"{len(wm)} watermarks for 2 chunks: a low and a high each"

    # same topic, key, headers and JSON shape as a streamed insert of the tenant
    ins = [m for m in streamed(ms) if m.value["op"] == "insert"]
    assert len(ins) == 1 and ins[0].key == {"tenant_id": "t2", "id": 100002}, [m.value for m in ins]
    read = rd[0]
    assert list(read.value) == list(ins[0].value), \
        f"read fields {list(read.value)} vs an insert's {list(ins[0].value)}"
    assert list(read.key) == list(ins[0].key), (read.key, ins[0].key)
    assert set(read.h) == set(ins[0].h), \
        f"read headers {list(read.h)}, an insert's {list(ins[0].h)}"
    txn_h = ("op", "lsn", "xid", "commit_time_us")
    assert {k: v for k, v in read.h.items() if k not in txn_h} == \
        {k: v for k, v in ins[0].h.items() if k not in txn_h}
    if "xid" in read.h:
        assert read.h["xid"] == "0"

    j = job(status(r), bid)
    assert (j["schema"], j["table"], j["tenant"], j["where"], j["status"], j["rows"]) == \
        ("public", table, "t2", None, "done", len(want)), j
    assert not j["error"], j
    assert metric(r.port, "breakwater_backfill_rows_total") == len(want)
    assert metric(r.port, "breakwater_backfills_running") == 0
    assert r.stop() == 0


# ---- 2. concurrent changes to the keys being backfilled ---------------------------------------

class TenantLoad(Writer):
    """Random transactions (1 to 3 inserts into gaps, updates and deletes) on tenants t2 (mostly)
    and t3, from a thread with its own connection, as fast as it can (1 ms pause)."""

    pause = 0.001

    def __init__(self, cluster, table, present, seed):
        super().__init__(cluster)
        self.table = table
        self.present = {t: set(ids) for t, ids in present.items()}
        self.ids = {t: list(ids) for t, ids in present.items()}
        self.rng = random.Random(seed)
        self.committed = 0
        self.n = 1_000_000

    def _op(self, c):
        tenant = "t2" if self.rng.random() < 0.8 else "t3"
        have, ids = self.present[tenant], self.ids[tenant]
        x = self.rng.random()
        self.n += 1
        if x < 0.25:                                # a new key, in the range being read
            i = self.rng.randint(1, 20000)
            if i not in have:
                c.execute(f"INSERT INTO {self.table} VALUES (%s, %s, %s, %s)",
                          (tenant, i, self.n, f"ins {self.n}"))
                have.add(i)
                ids.append(i)
            return
        i = self.rng.choice(ids)
        if i not in have:
            return
        if x < 0.8:
            c.execute(f"UPDATE {self.table} SET v = %s, note = %s WHERE tenant_id = %s AND id = %s",
                      (self.n, f"upd {self.n}", tenant, i))
        else:
            c.execute(f"DELETE FROM {self.table} WHERE tenant_id = %s AND id = %s", (tenant, i))
            have.discard(i)

    def turn(self, c):
        with c.transaction():
            for _ in range(self.rng.randint(1, 3)):
                self._op(c)
        self.committed += 1


def test_concurrent_changes_win_over_the_backfill(conn, cluster, kafka, make_relay, make_slot):
    table = "bf_conc"
    chunk = 200
    conn.execute(DDL.format(t=table))
    conn.execute(FILL.format(t=table))
    present = {t: [i for (_, i) in select_rows(conn, f"{table} WHERE tenant_id = '{t}'", KEY)]
               for t in ("t2", "t3")}
    # the table is filled before the relay starts (snapshot.mode=never): the topic holds the
    # backfill's reads and the streamed changes only
    side = make_slot()
    r = bf_relay(make_relay, kafka, f"public.{table}", topics=[table],
                 backfill__chunk_rows=str(chunk))
    r.start()
    r.wait_log("streaming slot")
    load = TenantLoad(cluster, table, present, seed=4242)
    load.start()
    probe = {}
    try:
        wait_for("the load to commit", lambda: load.committed >= 20 or load.error, timeout=30)
        bid = request(r, f"--table=public.{table}", "--tenant=t2")
        wait_started(r, bid, table)
        os.kill(r.proc.pid, signal.SIGSTOP)
        at_start = load.committed
        if f"backfill {bid}: done" in r.log():
            os.kill(r.proc.pid, signal.SIGCONT)
            pytest.fail("the backfill was done before the load could overlap it: make it larger")

        def probe_metric():             # answered in one of the relay's slices, mid-backfill
            value = None
            deadline = time.monotonic() + 30
            while value is None and time.monotonic() < deadline:
                value = metric(r.port, "breakwater_backfills_running")
            probe["running"], probe["done"] = value, f"backfill {bid}: done" in r.log()
        t = threading.Thread(target=probe_metric, daemon=True)
        t.start()
        in_slices(r, lambda: f"backfill {bid}: done" in r.log(), f"backfill {bid} done")
        os.kill(r.proc.pid, signal.SIGCONT)
        during = load.committed - at_start
        t.join(timeout=30)
        time.sleep(0.5)                 # the load goes on a little after the backfill
    finally:
        if r.proc is not None:
            os.kill(r.proc.pid, signal.SIGCONT)
        load.stop()
    n = wait_done(r, bid)
    wait_published(conn, r, timeout=60)
    print(f"load: {load.committed} transactions, {during} while the backfill ran; "
          f"breakwater_backfills_running mid-backfill: {probe}")
    assert during >= 20, f"only {during} transactions committed while the backfill ran"
    if not probe.get("done"):
        assert probe.get("running") == 1, \
            f"breakwater_backfills_running mid-backfill: {probe.get('running')}, wanted 1"

    ms = messages(kafka, r.topic_of(table))
    rd = reads(ms)
    assert rd, "no reads"
    for m in rd:
        assert_read_message(m, table)
    assert {m.value["tenant"] for m in rd} == {"t2"}, "reads of t2 only"
    dup = [k for k, c in collections.Counter(key_of(m) for m in rd).items() if c > 1]
    assert not dup, f"rows read more than once without a restart: {dup[:10]}"
    assert n == len(rd), f"the log says done, {n} rows; {len(rd)} reads were sent"

    # the topic is in stream (LSN) order: the reads of a chunk go out at its high watermark
    lsns = [lsn_int(m.h["lsn"]) for m in ms if m.value is not None]
    back = [(i, hex(a), hex(b)) for i, (a, b) in enumerate(zip(lsns, lsns[1:])) if b < a]
    assert not back, f"the topic goes back in LSN order at (index, lsn, next lsn): {back[:5]}"
    # streaming went on while the backfill ran: changes between its first and last chunk
    first = next(i for i, m in enumerate(ms) if m.value is not None and m.value["op"] == "read")
    last = max(i for i, m in enumerate(ms) if m.value is not None and m.value["op"] == "read")
    between = [m for m in streamed(ms[first:last])]
    assert between, "no streamed change went out between the backfill's first and last chunk"
    highs = sorted({lsn_int(m.value["commit_lsn"]) for m in rd})
    assert len(highs) >= (4000 // chunk) // 2, f"{len(highs)} chunks of {chunk} for ~4000 rows"

    # the DBLog rule, chunk by chunk: no row goes out after a streamed change of its key that
    # came between its chunk's low and high watermark
    wm = watermarks(side)
    pos = {w.lsn: i for i, w in enumerate(wm)}
    not_high = [hex(h) for h in highs if pos.get(h, 0) == 0]
    assert not not_high, f"read LSNs that are not watermarks after a low one: {not_high[:5]}"
    # a chunk's window: from its low watermark (the one just before its high) to its high, in
    # the stream's commit order
    window = {h: (wm[pos[h] - 1].pos, wm[pos[h]].pos) for h in highs}
    changes = collections.defaultdict(list)     # key -> LSNs of its streamed changes
    for m in streamed(ms):
        changes[key_of(m)].append(lsn_int(m.value["commit_lsn"]))
    stale = []
    by_high = collections.defaultdict(list)
    for m in rd:
        h = lsn_int(m.value["commit_lsn"])
        by_high[h].append(key_of(m))
        lo, hi = window[h]
        hit = [c for c in changes[key_of(m)] if lo < c < hi]
        if hit:
            stale.append((key_of(m), hex(lo), hex(hi), [hex(c) for c in hit]))
    assert not stale, f"{len(stale)} rows went out although their key changed between the " \
                      f"chunk's watermarks (key, low, high, changes): {stale[:5]}"
    dropped = 0                                 # rows the rule dropped: the test exercised it
    for h, ks in by_high.items():
        (lo, hi), lo_key, hi_key = window[h], min(ks), max(ks)
        read_here = set(ks)
        dropped += sum(1 for k, cs in changes.items()
                       if k[0] == "t2" and lo_key < k < hi_key and k not in read_here
                       and any(lo < c < hi for c in cs))
    print(f"{len(rd)} reads in {len(highs)} chunks, {dropped} rows dropped for newer changes")
    assert dropped > 0, "no change landed between a chunk's watermarks: the rule was not exercised"

    # the replay: reads and the stream give t2 as SELECT gives it
    t2 = [m for m in ms if m.key["tenant_id"] == "t2"]
    assert_replay_equals_rows(t2, tenant_rows(conn, table, "t2"), f"{table}, tenant t2")
    j = job(status(r), bid)
    assert (j["status"], j["rows"], j["tenant"]) == ("done", n, "t2"), j
    assert metric(r.port, "breakwater_backfills_running") == 0
    assert r.stop() == 0


# ---- 3. --where, the SQL trigger, --status -----------------------------------------------------

def test_where_and_sql_trigger_and_status(conn, kafka, make_relay):
    table = "bf_where"
    conn.execute(DDL.format(t=table))
    conn.execute(f"INSERT INTO {table} SELECT 't' || (g % 3), g, g, 'n' || g "
                 f"FROM generate_series(1, 3000) g")
    conn.execute(f"UPDATE {table} SET note = 'it''s \"q\" \\ x' WHERE id % 14 = 0")
    r = bf_relay(make_relay, kafka, f"public.{table}", topics=[table], backfill__chunk_rows="100")
    r.start()
    r.wait_log("streaming slot")
    topic = r.topic_of(table)
    seen = 0

    def new_reads():
        nonlocal seen
        ms = messages(kafka, topic)
        out, seen = ms[seen:], len(ms)
        assert all(m.value is not None and m.value["op"] == "read" for m in out), \
            "nothing but reads (nothing is changed in this test)"
        return out

    def check(bid, where_sql, what):
        n = wait_done(r, bid)
        want = {k: row for k, row in select_rows(conn, f"{table} WHERE {where_sql}", KEY).items()}
        got_ms = new_reads()
        got = {key_of(m): m.value["new"] for m in got_ms}
        assert len(got_ms) == len(got), f"{what}: rows read more than once"
        assert got == want, f"{what}: {len(got)} rows read, {len(want)} match: read but not " \
                            f"matching {sorted(set(got) - set(want))[:10]}, not read " \
                            f"{sorted(set(want) - set(got))[:10]}"
        assert n == len(want), f"{what}: the log says done, {n} rows; {len(want)} match"
        for m in got_ms:
            assert_read_message(m, table)
        return n

    # a. --where alone
    a = request(r, f"--table=public.{table}", "--where=id > 2500")
    na = check(a, "id > 2500", "--where=id > 2500")
    assert na == 500
    # b. --tenant and a --where with quotes, a backslash, and an OR that binds looser than the
    # tenant's AND: the rows are t1's that match the whole condition, nothing else
    where_b = "v % 7 = 0 AND note <> 'it''s \"q\" \\ x' OR id <= 30"
    b = request(r, f"--table=public.{table}", "--tenant=t1", f"--where={where_b}")
    nb = check(b, f"tenant_id = 't1' AND ({where_b})", f"--tenant=t1 --where={where_b}")
    assert 50 < nb < 1000, nb              # the where matters, the tenant too
    # c and d. the SQL trigger, without and with an id, two requests at once: they queue and run
    # one after the other
    known = {a, b}
    signal_request(conn, table=f"public.{table}", where="id <= 100")
    signal_request(conn, table=f"public.{table}", tenant="t2", where="id <= 60", id="sql-d")
    pat = re.compile(rf"backfill (\S+): public\.{table}\b[^\n]*started")
    c = wait_for("the SQL-triggered backfill to start",
                 lambda: next((x for x in pat.findall(r.log()) if x not in known), None))
    assert c != "sql-d", "requests run in the order they were made"
    d = "sql-d"
    nc, nd = wait_done(r, c), wait_done(r, d)
    want_c = select_rows(conn, f"{table} WHERE id <= 100", KEY)
    want_d = select_rows(conn, f"{table} WHERE tenant_id = 't2' AND id <= 60", KEY)
    got = collections.Counter(key_of(m) for m in new_reads())
    assert got == collections.Counter(list(want_c)) + collections.Counter(list(want_d)), \
        f"SQL-triggered backfills: {sum(got.values())} reads of {len(got)} rows; wanted the " \
        f"{len(want_c)} rows with id <= 100 and the {len(want_d)} of t2 with id <= 60 " \
        f"(read twice, once by each)"
    assert (nc, nd) == (len(want_c), len(want_d)) == (100, 20), (nc, nd)

    jobs = status(r)
    assert len(jobs) == 4, f"four jobs: {jobs}"
    for bid, tenant, where, rows in ((a, None, "id > 2500", na), (b, "t1", where_b, nb),
                                     (c, None, "id <= 100", nc), (d, "t2", "id <= 60", nd)):
        j = job(jobs, bid)
        assert (j["schema"], j["table"], j["tenant"], j["where"], j["status"], j["rows"]) == \
            ("public", table, tenant, where, "done", rows), j
        assert not j["error"], j
        assert j["estimate"] is None or isinstance(j["estimate"], (int, float)), j
    assert metric(r.port, "breakwater_backfill_rows_total") == na + nb + nc + nd
    assert r.stop() == 0


# ---- 4. kill -9 in the middle of a backfill ----------------------------------------------------

KILL_CHUNK = 200
KILL_TENANTS = "ARRAY['o''brien', 'ac \"me\"', 'ünï\\', 'zz']"


def kill_changes(conn, table, tag):
    """Updates to rows read early and late in key order, deletes, new rows; each tag its own."""
    k = len(tag)
    conn.execute(f"UPDATE {table} SET v = -v, note = %s WHERE id %% 97 = %s OR id IN (%s, %s)",
                 (tag, k, k, 19990 - k))
    conn.execute(f"DELETE FROM {table} WHERE id %% 1009 = %s", (k,))
    base = 30000 + 1000 * k
    conn.execute(f"INSERT INTO {table} SELECT ({KILL_TENANTS})[g %% 4 + 1], g, g, %s "
                 f"FROM generate_series(%s::int, %s::int) g", (tag, base, base + 99))


def test_kill9_mid_backfill_resumes_after_the_last_saved_chunk(conn, kafka, make_relay):
    table = "bf_kill"
    conn.execute(DDL.format(t=table))
    conn.execute(f"INSERT INTO {table} SELECT ({KILL_TENANTS})[g % 4 + 1], g, g, 'n' "
                 f"FROM generate_series(1, 20000) g")
    r = bf_relay(make_relay, kafka, f"public.{table}", topics=[table],
                 backfill__chunk_rows=str(KILL_CHUNK))
    topic = r.topic_of(table)
    state = os.path.join(r.settings["relay.state_dir"], f"{r.slot}.backfills.json")
    r.start()
    r.wait_log("streaming slot")
    bid = request(r, f"--table=public.{table}")
    wait_started(r, bid, table)
    os.kill(r.proc.pid, signal.SIGSTOP)
    hw = HighWater(kafka, [topic])
    try:
        in_slices(r, lambda: hw() >= 1000, "1000 messages in Kafka")
        kill_changes(conn, table, "during")        # streamed while the backfill runs
        in_slices(r, lambda: hw() >= 4000, "4000 messages in Kafka")
    finally:
        hw.close()
        r.kill9()                                   # SIGKILL ends a stopped process too
    assert f"backfill {bid}: done" not in r.log(), "killed mid-backfill: make the table larger"
    assert os.path.exists(state), f"no state file {state} after chunks were acknowledged"
    with open(state) as f:
        json.load(f)
    before = messages(kafka, topic, idle_ms=500)
    first = len(before)
    read_before = len(reads(before))
    assert 2 * KILL_CHUNK < read_before < 20000, f"{read_before} reads before the kill"

    kill_changes(conn, table, "while-down")
    r.start()
    # "backfill <id>: resuming after <n> rows" ("<schema>.<table>: " before "resuming" allowed)
    resuming = re.compile(rf"backfill {re.escape(bid)}: (?:public\.{table}: )?resuming after "
                          rf"(\d+) rows")
    wait_for("the backfill to resume", lambda: resuming.search(r.log()) or (
        r.proc.poll() is not None and pytest.fail(f"relay exited:\n{r.log()[-3000:]}")))
    resumed = [int(x) for x in resuming.findall(r.log())]
    assert len(resumed) == 1, f"one \"resuming after <n> rows\" line: {resumed}"
    n_done = wait_done(r, bid, timeout=120)
    kill_changes(conn, table, "after")
    wait_published(conn, r, timeout=90)

    ms = messages(kafka, topic)
    assert len(ms) >= first and [m.raw.value for m in ms[:first]] == [m.raw.value for m in before]
    after = ms[first:]
    resumed_n = resumed[0]
    print(f"{read_before} reads before the kill, resumed after {resumed_n} rows, done {n_done}")
    assert read_before - 2 * KILL_CHUNK <= resumed_n <= read_before, \
        f"resumed after {resumed_n} rows, {read_before} were in Kafka at the kill: the saved " \
        f"progress is not the last acknowledged chunk (at most 2 chunks of {KILL_CHUNK} behind)"
    last_before = max(lsn_int(m.h["lsn"]) for m in before if m.value is not None)
    for m in reads(after):
        assert_read_message(m, table)
        assert lsn_int(m.value["commit_lsn"]) > last_before, \
            f"a read after the restart at {m.value['commit_lsn']}, not after the first run"
    counts = collections.Counter(key_of(m) for m in reads(ms))
    twice = [k for k, c in counts.items() if c == 2]
    more = [k for k, c in counts.items() if c > 2]
    print(f"{len(twice)} rows read twice")
    assert not more, f"rows read more than twice: {more[:10]} (the request was run again?)"
    assert len(twice) <= 2 * KILL_CHUNK, \
        f"{len(twice)} rows read twice: at most 2 chunks of {KILL_CHUNK}"
    # rows counted over both runs (the saved progress, then what the restart sent); a count of
    # the restart's rows alone is accepted too (the contract does not say which)
    assert n_done in (resumed_n + len(reads(after)), len(reads(after))), \
        f"done, {n_done} rows: resumed after {resumed_n}, {len(reads(after))} reads after " \
        f"the restart"
    assert_replay_equals_rows(ms, select_rows(conn, table, KEY), table)
    jobs = status(r)
    assert len(jobs) == 1 and str(jobs[0]["id"]) == bid, f"one job, {bid}: {jobs}"
    assert (jobs[0]["status"], jobs[0]["rows"]) == ("done", n_done), jobs[0]
    assert r.stop() == 0


# ---- 5. bad requests ---------------------------------------------------------------------------

BAD_DDL = """
DROP TABLE IF EXISTS bf_bad, bf_bad_notenant, bf_bad_nokey, bf_bad_unselected, bf_bad_victim;
CREATE TABLE bf_bad (tenant_id text, id int, v int, PRIMARY KEY (tenant_id, id));
CREATE TABLE bf_bad_notenant (id int PRIMARY KEY, v int);
CREATE TABLE bf_bad_nokey (tenant_id text, v int);
CREATE TABLE bf_bad_unselected (tenant_id text, id int PRIMARY KEY);
CREATE TABLE bf_bad_victim (id int);
INSERT INTO bf_bad SELECT 't' || (g % 3), g, g FROM generate_series(1, 300) g;
INSERT INTO bf_bad_notenant SELECT g, g FROM generate_series(1, 50) g;
INSERT INTO bf_bad_nokey SELECT 't1', g FROM generate_series(1, 50) g;
INSERT INTO bf_bad_unselected SELECT 't1', g FROM generate_series(1, 50) g;
"""

INJECTION = "id = 1); DROP TABLE bf_bad_victim; SELECT (1"

BAD_CLI = [
    # (arguments, texts the output must contain)
    (("--table=public.bf_nosuch",), ["public.bf_nosuch", "does not exist"]),
    (("--table=public.bf_bad_unselected",), ["not selected"]),
    (("--table=public.bf_bad_notenant", "--tenant=acme"), ["no tenant column"]),
    (("--table=public.bf_bad_nokey",), ["no key"]),
    (("--table=public.bf_bad", "--where=id >"), ["--where", "id >", "syntax error"]),
    (("--table=public.bf_bad", "--where=nosuch = 1"),
     ["--where", 'column "nosuch" does not exist']),
    (("--table=public.bf_bad", f"--where={INJECTION}"), ["--where"]),
    (("--tenant=t1",), ["--table"]),
]


def test_bad_requests_are_refused_and_send_nothing(conn, kafka, make_relay, make_slot):
    conn.execute(BAD_DDL)
    side = make_slot()
    r = bf_relay(make_relay, kafka, "public.bf_bad, public.bf_bad_notenant, public.bf_bad_nokey")
    topics = [r.topic_of(t) for t in ("bf_bad", "bf_bad_notenant", "bf_bad_nokey",
                                      "bf_bad_unselected")] + [f"{r.prefix}.keyless"]
    r.start()
    r.wait_log("streaming slot")

    bad = []
    for args, texts in BAD_CLI:
        rc, out, err = cli(r, *args)
        text = out + err
        if rc == 0 or not all(t in text for t in texts) or REQUESTED.search(text):
            bad.append(f"  backfill {' '.join(args)}: exit {rc}, wanted non-zero and "
                       f"{texts}, no \"requested\":\n    {text.strip()!r}")
    assert not bad, "bad requests not refused as they should be:\n" + "\n".join(bad)
    assert conn.execute("SELECT to_regclass('public.bf_bad_victim') IS NOT NULL").fetchone()[0], \
        "a --where ran another statement: bf_bad_victim was dropped"
    assert backfill_messages(side) == [], "a refused CLI request reached the WAL"

    # bad SQL requests: refused in the log, failed in --status; the relay goes on
    bodies = [{"table": "public.bf_nosuch"}, {"table": "public.bf_bad", "where": "id >"},
              {"table": "public.bf_bad", "where": INJECTION},
              {"table": "public.bf_bad", "tenant": "t1", "where": "id <= 10) OR (true"}]
    for body in bodies:
        signal_request(conn, **body)
    conn.execute("SELECT pg_logical_emit_message(true, 'breakwater.backfill', '{\"table\": ')")
    refused = wait_for("5 refused requests", lambda: (lambda x: x if len(x) >= 5 else None)(
        re.findall(r"backfill (\S+) refused: ([^\n]+)", r.log())), timeout=30)
    assert len(refused) == 5, refused
    assert "bf_nosuch" in refused[0][1], f"the refusal names the table: {refused[0]}"
    assert r.alive(), "the relay keeps running after bad requests"
    assert conn.execute("SELECT to_regclass('public.bf_bad_victim') IS NOT NULL").fetchone()[0], \
        "a SQL-signal where ran another statement: bf_bad_victim was dropped"
    jobs = status(r)
    for bid, why in refused:
        j = job(jobs, bid)
        assert j["status"] == "failed" and j["error"], f"refused {bid} ({why}): {j}"

    # a good request after the bad ones: its rows and nothing else
    good = request(r, "--table=public.bf_bad", "--where=id <= 5")
    assert wait_done(r, good) == 5
    wait_published(conn, r)
    rd = reads(messages(kafka, r.topic_of("bf_bad")))
    assert sorted(key_of(m) for m in rd) == \
        sorted(select_rows(conn, "bf_bad WHERE id <= 5", KEY)), \
        f"reads of bf_bad: {[m.key for m in rd][:20]}"
    assert_no_reads(kafka, r, topics[1:])
    assert len(backfill_messages(side)) == 6, "the 5 SQL requests and the good CLI one"
    assert [j["status"] for j in status(r)].count("done") == 1

    # no relay running: refused before anything is sent
    assert r.stop() == 0
    rc, out, err = cli(r, "--table=public.bf_bad")
    assert rc != 0 and "no relay answers" in out + err, f"exit {rc}:\n{out}{err}"
    assert len(backfill_messages(side)) == 6, "a request with no relay running reached the WAL"


# ---- 6. a --where stays inside its parentheses -------------------------------------------------

@pytest.mark.parametrize("where, inside, session", [
    # a condition with a parenthesis too many: as one expression it is all of t1's rows; pasted
    # as "AND (<where>)" its OR would escape the tenant and the resume condition
    ("id <= 10) OR (true", "(id <= 10) OR (true)", None),
    # a comment would swallow what the relay writes after the condition (ORDER BY, LIMIT)
    ("id <= 300) --", "id <= 300", None),
    # where the relay's role has standard_conforming_strings off, a backslash escapes a quote in
    # a plain string: read with the rule of the other setting, the ") OR (" looks quoted
    ("note = '\\'') OR (true) OR (note = '\\''", "true",
     "-c standard_conforming_strings=off -c escape_string_warning=off"),
], ids=["or-escapes", "comment", "backslash-quote"])
def test_where_stays_inside_its_parentheses(where, inside, session, conn, cluster, kafka,
                                            make_relay):
    """Refused (non-zero exit, nothing sent), or the rows of t1 that match it, each once; never
    another tenant's rows, never a backfill that goes round in circles."""
    table = "bf_paren"
    conn.execute(DDL.format(t=table))
    conn.execute(f"INSERT INTO {table} SELECT 't' || (g % 3), g, g, 'n' || g "
                 f"FROM generate_series(1, 600) g")
    extra = {"pg__conninfo": cluster.conninfo(options=session)} if session else {}
    r = bf_relay(make_relay, kafka, f"public.{table}", topics=[table], backfill__chunk_rows="50",
                 **extra)
    r.start()
    r.wait_log("streaming slot")
    rc, out, err = cli(r, f"--table=public.{table}", "--tenant=t1", f"--where={where}")
    if rc != 0:
        assert "--where" in out + err and not REQUESTED.search(out + err), f"exit {rc}:\n{out}{err}"
        conn.execute(f"UPDATE {table} SET v = v WHERE tenant_id = 't0' AND id = 3")
        wait_published(conn, r)
        assert_no_reads(kafka, r, [r.topic_of(table)])
        assert r.stop() == 0
        return
    bid = REQUESTED.findall(out + err)[0]
    deadline = time.monotonic() + 20
    while f"backfill {bid}: done" not in r.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    finished = f"backfill {bid}: done" in r.log()
    if not finished:
        r.kill9()                       # it may never end: do not wait for a drain
    rd = reads(messages(kafka, r.topic_of(table)))
    others = collections.Counter(m.value["tenant"] for m in rd if m.value["tenant"] != "t1")
    counts = collections.Counter(key_of(m) for m in rd)
    dup = sum(1 for c in counts.values() if c > 1)
    want = select_rows(conn, f"{table} WHERE tenant_id = 't1' AND ({inside})", KEY)
    assert finished and not others and not dup and set(counts) == set(want), \
        f"--tenant=t1 --where={where!r} accepted (exit 0), then: " \
        f"{'done' if finished else 'not done after 20 s'}; {len(rd)} reads, " \
        f"{len(counts)} distinct rows ({dup} read more than once), reads of other tenants " \
        f"{dict(others)}; wanted the {len(want)} rows of t1 where {inside}, or a refusal"
    assert r.stop() == 0


# ---- 6. a request that fails while it runs, and requests of the wrong shape ----------------------

def test_a_failing_condition_fails_its_backfill_and_the_next_one_runs(conn, kafka, make_relay):
    """A condition that is valid SQL but fails on the data (a division by zero) cannot succeed
    by retrying: its backfill fails with PostgreSQL's error, and the one queued behind it runs.
    Requests whose members are misspelt or not strings are refused, not widened to every tenant."""
    table = "bf_fails"
    conn.execute(DDL.format(t=table))
    conn.execute(f"INSERT INTO {table} SELECT 't' || (g % 2), g, g % 7, 'n' FROM "
                 "generate_series(1, 300) g")
    r = bf_relay(make_relay, kafka, f"public.{table}", topics=[table])
    r.start()
    r.wait_log("streaming slot")
    bad = request(r, f"--table=public.{table}", "--where=100 / v > 1")   # v = 0 on some rows
    good = request(r, f"--table=public.{table}", "--tenant=t1")
    signal_request(conn, table=f"public.{table}", tennant="t1", id="misspelt")
    signal_request(conn, table=f"public.{table}", tenant=1, id="numeric")
    assert wait_done(r, good) == 150
    r.wait_log(f"backfill {bad} failed: ")
    assert "division by zero" in r.log()
    jobs = status(r)
    assert job(jobs, bad)["status"] == "failed" and "division by zero" in job(jobs, bad)["error"]
    assert job(jobs, good)["status"] == "done"
    for bid, why in (("misspelt", "other than id, schema, table, tenant and where"),
                     ("numeric", "must be strings")):
        j = job(jobs, bid)
        assert j["status"] == "failed" and why in j["error"], j
    rd = reads(messages(kafka, r.topic_of(table)))
    assert len(rd) == 150 and {m.value["tenant"] for m in rd} == {"t1"}, \
        "only the good backfill's rows went out"
    assert r.stop() == 0
