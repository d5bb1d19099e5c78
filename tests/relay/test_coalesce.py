"""Row coalescing end to end (coalesce.tables, coalesce.window_ms, coalesce.max_held_bytes).

Per row key of a coalesced table: the first change in a calm period is published at once; further
changes within the window are held, merged (last writer wins) and published when the window ends.
The properties tested here, against a real PostgreSQL and a real Kafka broker:

- replaying the row topic in order (upsert "new", delete the key) gives exactly the table, for
  random workloads (fixed seeds), after a kill -9 in the middle of a storm too;
- the merge rules (insert+update, update+delete, delete+insert, insert+delete, unchanged TOAST);
- a storm on one key gives few messages, the last carrying the final value; calm changes are not
  delayed; updates that change the key are published at once, in order;
- a held change keeps the slot's confirmed position behind it (the LSN rule);
- at coalesce.max_held_bytes everything held goes out early; SIGTERM publishes what is held;
- tables outside coalesce.tables get every change as its own message.

The broker's topics have one partition (tests/lib/kafka.sh), so a topic's messages are totally
ordered and a replay across key changes is well defined.
"""

import collections
import contextlib
import itertools
import json
import os
import random
import secrets
import threading
import time

import pytest

from conftest import confirmed_at_least, insert_lsn, wait_for
from test_e2e import collect

DDL = ("DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (tenant_id text, id int, v int, note text, "
       "PRIMARY KEY (tenant_id, id))")
KEY_COLS = ("tenant_id", "id")

_ids = itertools.count()


# ---- helpers -----------------------------------------------------------------------------------

def lsn_int(text):
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def confirmed_lsn(conn, slot):
    row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                       "WHERE slot_name = %s", (slot,)).fetchone()
    return row[0] if row else None


def hdrs(headers):
    return {k: (v.decode() if v is not None else None) for k, v in headers}


def table_rows(conn, table):
    cur = conn.execute(f"SELECT tenant_id, id, v, note FROM {table}")
    cols = [d.name for d in cur.description]
    return {(r[0], r[1]): dict(zip(cols, r)) for r in cur.fetchall()}


def replay(recs, initial=None):
    """Applies row messages in topic order to `initial` (key tuple -> row): insert/update upsert
    "new" (columns in "unchanged_toast" taken from the row the message's key had), an update
    whose new key differs from the message key moves the row, delete removes the key."""
    rows = {k: dict(v) for k, v in (initial or {}).items()}
    for rec in recs:
        key = json.loads(rec.key)
        k = tuple(key[c] for c in KEY_COLS)
        if rec.value is None:       # a tombstone: after a delete, for compaction
            if k in rows:
                pytest.fail(f"a tombstone for {k}, which the replay has as a live row")
            continue
        value = json.loads(rec.value)
        op = value["op"]
        if op == "delete":
            rows.pop(k, None)
        elif op in ("insert", "update"):
            new = dict(value["new"])
            prev = rows.pop(k, None)
            for col in value.get("unchanged_toast") or []:
                if prev is None or col not in prev:
                    pytest.fail(f"{op} of {k} marks {col} unchanged, but the replay has no "
                                f"previous value for it: {short(value)}")
                new[col] = prev[col]
            rows[tuple(new[c] for c in KEY_COLS)] = new
        else:
            pytest.fail(f"unexpected op {op!r} on a row topic: {short(value)}")
    return rows


def short(x, n=300):
    s = repr(x)
    return s if len(s) <= n else s[:n] + f"...({len(s)} chars)"


def assert_replay_equals_table(recs, conn, table, initial=None, made=None):
    """`made`, when given: the changes made, as (transaction, op, key, v, new key) tuples, shown
    for the keys that differ."""
    got = replay(recs, initial)
    want = table_rows(conn, table)
    if got != want:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        differ = sorted(k for k in set(got) & set(want) if got[k] != want[k])
        history = {k: [(json.loads(r.value)["op"], (json.loads(r.value).get("new") or {}).get("v"))
                       if r.value is not None else ("tombstone", None)
                       for r in recs if tuple(json.loads(r.key)[c] for c in KEY_COLS) == k]
                   for k in (missing + extra + differ)[:5]}
        bad = set((missing + extra + differ)[:5])
        changes = [c for c in (made or []) if c[2] in bad or c[4] in bad]
        pytest.fail(f"replaying {len(recs)} messages does not give the table {table}:\n"
                    f"  missing from the replay: {missing[:10]}\n"
                    f"  in the replay, not in the table: {extra[:10]}\n"
                    f"  different: {[(k, short(got[k], 120), short(want[k], 120)) for k in differ[:5]]}\n"
                    f"  messages of some of those keys (op, new.v): {history}\n"
                    + (f"  changes made to them (transaction, op, key, v, new key): {changes}"
                       if made is not None else ""))


def assert_order_per_key(recs):
    """Within a run without restarts, the commit LSNs of one key's messages never go back."""
    last = {}
    for rec in recs:
        lsn = lsn_int(hdrs(rec.headers)["lsn"])
        k = rec.key
        assert lsn >= last.get(k, 0), f"key {k!r}: a message of commit {lsn:X} after one of {last[k]:X}"
        last[k] = lsn


def wait_published(conn, r, timeout=30):
    """Everything committed so far is published and acknowledged: the slot's confirmed position
    reached the end of WAL (held changes keep it behind, so this also waits for the windows)."""
    end = insert_lsn(conn)
    wait_for(f"the slot to be confirmed up to {end}", lambda: confirmed_at_least(conn, r.slot, end),
             timeout=timeout)
    return end


def started(make_relay, kafka, table, **settings):
    """A relay on `table`, streaming, its row topic created first (so that no window depends on
    how long the broker takes to create it). Tenant signals are off unless asked for: a pending
    signal also keeps the confirmed position behind its changes, which would hide what coalescing
    does."""
    settings.setdefault("signals__enabled", "false")
    settings.setdefault("topic__tombstones", "false")  # the property test turns them on
    r = make_relay(decoder__tables=f"public.{table}", **settings)
    r.topic = f"{r.prefix}.public.{table}"
    kafka.create_topic(r.topic)
    r.start()
    r.wait_log("streaming slot")
    return r


def started_live(make_relay, live, table, **settings):
    """A relay on `table` whose row topic is created first and read by a LiveConsumer."""
    settings.setdefault("signals__enabled", "false")
    settings.setdefault("topic__tombstones", "false")
    r = make_relay(decoder__tables=f"public.{table}", **settings)
    r.topic = f"{r.prefix}.public.{table}"
    lc = live(r.topic)
    r.start()
    r.wait_log("streaming slot")
    return r, lc


Arrival = collections.namedtuple("Arrival", "at key value headers timestamp")


class LiveConsumer:
    """Reads one single-partition topic from its beginning in a thread and notes when each
    message arrived (time.time()). The topic must exist."""

    def __init__(self, kafka, topic):
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
        self.got = []
        self.errors = []
        self._stop = threading.Event()
        self._c = Consumer(kafka.config(**{"group.id": f"bw-coalesce-{os.getpid()}-{next(_ids)}",
                                           "enable.auto.commit": False,
                                           "enable.partition.eof": False,
                                           "fetch.wait.max.ms": 10}))
        self._c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                for m in self._c.consume(num_messages=100, timeout=0.01):
                    if m.error():
                        self.errors.append(str(m.error()))
                        continue
                    self.got.append(Arrival(time.time(), json.loads(m.key()), json.loads(m.value()),
                                            hdrs(m.headers() or []), m.timestamp()[1]))
        finally:
            self._c.close()

    def of(self, **key):
        return [a for a in list(self.got) if a.key == key]

    def wait_of(self, n, timeout=10, **key):
        return wait_for(f"{n} message(s) of {key}", lambda: (lambda x: x if len(x) >= n else None)(
            self.of(**key)), timeout=timeout, interval=0.005)

    def close(self):
        self._stop.set()
        self._t.join(timeout=10)


@pytest.fixture
def live(kafka):
    """live(topic) -> LiveConsumer, the topic created first (one partition); closed at teardown."""
    consumers = []

    def make(topic):
        kafka.create_topic(topic)
        c = LiveConsumer(kafka, topic)
        consumers.append(c)
        return c

    yield make
    for c in consumers:
        c.close()


def warm_up(conn, table, lc, key=("warm", 0)):
    """A first message through the relay and the topic, so that later timings do not include the
    topic's first metadata look-up."""
    conn.execute(f"INSERT INTO {table} VALUES (%s, %s, 0, 'warm-up')", key)
    lc.wait_of(1, tenant_id=key[0], id=key[1], timeout=30)


# ---- 1. random workloads: the replay equals the table ------------------------------------------

TENANTS = ("acme", "globex", "initech")
KEYS = [(t, i) for t in TENANTS for i in range(1, 18)]      # 51 keys
HOT = KEYS[::9]                                             # 6 keys that see most of the churn


class Workload:
    """Random single-row changes that always succeed, tracked in a model of the table."""

    def __init__(self, conn, table, rng, keys=KEYS, hot=HOT):
        self.conn, self.table, self.rng = conn, table, rng
        self.keys, self.hot = keys, hot
        self.rows = {}          # key -> (v, note)
        self.changes = 0
        self.counter = itertools.count(1)
        self.made = []          # (transaction, op, key, v, new key)
        self.txn = 0
        self.in_txn = False

    @contextlib.contextmanager
    def transaction(self):
        self.txn += 1
        self.in_txn = True
        try:
            with self.conn.transaction():
                yield
        finally:
            self.in_txn = False

    def _made(self, op, k, v, to=None):
        if not self.in_txn:     # autocommit: each change is a transaction
            self.txn += 1
        self.changes += 1
        self.made.append((self.txn, op, k, v, to))

    def note(self):
        return self.rng.choice([None, "a", "b", f"n{self.rng.randint(0, 999)}"])

    def pick(self):
        return self.rng.choice(self.hot) if self.rng.random() < 0.5 else self.rng.choice(self.keys)

    def insert(self, k):
        v, note = next(self.counter), self.note()
        self.conn.execute(f"INSERT INTO {self.table} VALUES (%s, %s, %s, %s)", (*k, v, note))
        self.rows[k] = (v, note)
        self._made("insert", k, v)

    def update(self, k):
        v, note = self.rows[k]
        v = next(self.counter)
        if self.rng.random() < 0.3:
            note = self.note()
        self.conn.execute(f"UPDATE {self.table} SET v = %s, note = %s WHERE tenant_id = %s AND id = %s",
                          (v, note, *k))
        self.rows[k] = (v, note)
        self._made("update", k, v)

    def delete(self, k):
        self.conn.execute(f"DELETE FROM {self.table} WHERE tenant_id = %s AND id = %s", k)
        del self.rows[k]
        self._made("delete", k, None)

    def move(self, k):
        """An update that changes the key (to an absent key); returns the new key or None."""
        free = [x for x in self.keys if x not in self.rows]
        if not free:
            return None
        to = self.rng.choice(free)
        v = next(self.counter)
        self.conn.execute(f"UPDATE {self.table} SET tenant_id = %s, id = %s, v = %s "
                          f"WHERE tenant_id = %s AND id = %s", (*to, v, *k))
        self.rows[to] = (v, self.rows.pop(k)[1])
        self._made("move", k, v, to)
        return to

    def change(self, k, moves=True):
        """One change to key k: an insert when absent, else mostly updates; returns the key the
        row has afterwards (a move changes it)."""
        if k not in self.rows:
            self.insert(k)
            return k
        x = self.rng.random()
        if x < 0.6:
            self.update(k)
        elif x < 0.9 or not moves:
            self.delete(k)
        else:
            return self.move(k) or k
        return k


@pytest.mark.parametrize("seed", [11, 2024, 31337])
def test_replay_equals_table(seed, conn, kafka, make_relay):
    table = f"co_replay_{seed}"
    conn.execute(DDL.format(t=table))
    # signals on: coalescing and signals together (signals never touch the row topic)
    r = started(make_relay, kafka, table, coalesce__tables=f"public.{table}",
                coalesce__window_ms="300", signals__enabled="true", topic__tombstones="true")
    rng = random.Random(seed)
    w = Workload(conn, table, rng)

    with w.transaction():                   # a bulk start: 20 rows in one transaction
        for k in rng.sample(KEYS, 20):
            w.insert(k)
    with w.transaction():                   # one key three times in one transaction: the update
        k = rng.choice([x for x in KEYS if x not in w.rows])    # pair is merged, whatever the seed
        w.insert(k)
        w.update(k)
        w.update(k)
    for _ in range(40):                     # ~40 small transactions over ~3 s
        with w.transaction():
            if rng.random() < 0.35:         # several changes to one key in one transaction
                k = w.pick()
                for _ in range(rng.randint(2, 4)):
                    k = w.change(k)
            else:
                for _ in range(rng.randint(1, 3)):
                    w.change(w.pick())
        time.sleep(rng.uniform(0, 0.15))

    wait_published(conn, r)
    recs = collect(kafka, r.topic, 1)
    changes = [x for x in recs if x.value is not None]
    print(f"seed {seed}: {w.changes} changes made, {len(changes)} row messages")
    assert_replay_equals_table(recs, conn, table, made=w.made)
    assert_order_per_key(recs)
    assert len(changes) <= w.changes, f"{len(changes)} messages for {w.changes} changes"
    assert len(changes) < w.changes, \
        f"{len(changes)} messages for {w.changes} changes: nothing was coalesced"
    assert all(hdrs(x.headers)["op"] == json.loads(x.value)["op"] for x in changes), \
        "the op header matches the value's op"
    # every published delete, held or not, is followed by its key's tombstone
    for i, x in enumerate(recs):
        if x.value is not None and json.loads(x.value)["op"] == "delete":
            after = next((y for y in recs[i + 1:] if y.key == x.key), None)
            assert after is not None and after.value is None, f"no tombstone after {x.key!r}"
            assert hdrs(after.headers)["op"] == "tombstone"
    assert r.stop() == 0


# ---- the merge rules ---------------------------------------------------------------------------

def test_merge_rules(conn, kafka, make_relay):
    """Each key's changes, each in its own transaction, all within one window (the first one
    published at once): the messages are what the merge rules say, and the replay is the table."""
    table = "co_merge"
    conn.execute(DDL.format(t=table))
    big_a, big_c = secrets.token_hex(8000), secrets.token_hex(8000)   # stored out of line (TOAST)
    for name in "BDEFG":
        conn.execute(f"INSERT INTO {table} VALUES ('m', %s, 0, 'before')", (ord(name),))
    for name in ("T", "U"):
        conn.execute(f"INSERT INTO {table} VALUES ('m', %s, 0, %s)", (ord(name), big_a))
    initial = table_rows(conn, table)

    def ins(v, note="x"):
        return ("INSERT INTO {t} VALUES ('m', {id}, %s, %s)", (v, note))

    def upd(v):
        return ("UPDATE {t} SET v = %s WHERE tenant_id = 'm' AND id = {id}", (v,))

    def upd_note(v, note):
        return ("UPDATE {t} SET v = %s, note = %s WHERE tenant_id = 'm' AND id = {id}", (v, note))

    dele = ("DELETE FROM {t} WHERE tenant_id = 'm' AND id = {id}", ())
    # key: (its changes, the messages expected, as (op, new.v)). G and I: the held insert came
    # from delete+insert and the consumer still has the row, so a delete after it is a delete.
    script = {
        "A": ([ins(1), upd(2), upd(3)], [("insert", 1), ("update", 3)]),        # update+update
        "B": ([upd(2), upd(3), upd(4)], [("update", 2), ("update", 4)]),
        "C": ([ins(1), upd(2), dele], [("insert", 1), ("delete", None)]),       # update+delete
        "D": ([dele, ins(5), upd(6)], [("delete", None), ("insert", 6)]),       # insert+update
        # delete+insert of a row consumers have: an update (they never saw the delete)
        "E": ([upd(2), dele, ins(7)], [("update", 2), ("update", 7)]),
        "F": ([dele, ins(8), dele], [("delete", None)]),                        # insert+delete
        "G": ([upd(2), dele, ins(9), dele], [("update", 2), ("delete", None)]),
        "H": ([ins(1), dele, ins(3)], [("insert", 1), ("update", 3)]),
        "I": ([ins(1), upd(2), dele, ins(4), dele], [("insert", 1), ("delete", None)]),
        # TOAST: a held update that changed the big column, then one that did not
        "T": ([upd(2), upd_note(3, big_c), upd(4)], [("update", 2), ("update", 4)]),
        "U": ([upd(2), upd(3), upd(4)], [("update", 2), ("update", 4)]),
    }
    r = started(make_relay, kafka, table, coalesce__tables=f"public.{table}",
                coalesce__window_ms="1500")
    t0 = time.monotonic()
    for step in range(max(len(s[0]) for s in script.values())):
        for name, (changes, _) in script.items():
            if step < len(changes):
                sql, args = changes[step]
                conn.execute(sql.format(t=table, id=ord(name)), args)
    took = time.monotonic() - t0
    assert took < 0.8, f"the script took {took:.2f}s: not within one window"

    wait_published(conn, r)
    recs = collect(kafka, r.topic, 1)
    by_key = collections.defaultdict(list)
    for x in recs:
        value = json.loads(x.value)
        assert hdrs(x.headers)["op"] == value["op"], "the op header matches the value's op"
        by_key[chr(json.loads(x.key)["id"])].append(value)
    got = {name: [(v["op"], (v.get("new") or {}).get("v")) for v in by_key.get(name, [])]
           for name in script}
    want = {name: expected for name, (_, expected) in script.items()}
    assert got == want, "messages per key (op, new.v)"
    assert by_key["T"][0].get("unchanged_toast") == ["note"], "the TOAST case is exercised"
    t_last = by_key["T"][-1]
    assert t_last["new"].get("note") == big_c and "note" not in (t_last.get("unchanged_toast") or []), \
        "a merged update carries the big value a held update had changed"
    assert by_key["U"][-1].get("unchanged_toast") == ["note"], \
        "merged updates that all left the big value unchanged still say so"
    assert_replay_equals_table(recs, conn, table, initial)
    assert r.stop() == 0


# ---- 2. a storm on one key ---------------------------------------------------------------------

def test_storm_is_coalesced(conn, kafka, make_relay):
    table = "co_storm"
    conn.execute(DDL.format(t=table))
    conn.execute(f"INSERT INTO {table} VALUES ('acme', 1, 0, 'storm')")
    r = started(make_relay, kafka, table, coalesce__tables=f"public.{table}",
                coalesce__window_ms="500")
    t0 = time.monotonic()
    for i in range(1, 201):
        conn.execute(f"UPDATE {table} SET v = %s WHERE tenant_id = 'acme' AND id = 1", (i,))
    took = time.monotonic() - t0
    wait_published(conn, r)
    # the slot is confirmed past the last update, so its message is acknowledged: it is there now
    recs = kafka.consume_all(r.topic, idle_ms=500)
    values = [json.loads(x.value) for x in recs]
    vs = [v["new"]["v"] for v in values]
    print(f"200 updates in {took:.2f}s -> {len(recs)} messages: v = {vs}")
    assert values and values[-1]["new"]["v"] == 200, "the last message carries the final value"
    assert len(recs) < 20, f"{len(recs)} messages for 200 updates of one key"
    assert all(v["op"] == "update" for v in values), "update+update is an update"
    assert vs[0] == 1, "the first change of a calm key is published at once, unmerged"
    assert vs == sorted(vs) and len(set(vs)) == len(vs), "in order, each version once"
    assert r.stop() == 0


# ---- 3. calm changes are not delayed -----------------------------------------------------------

def test_calm_changes_are_not_delayed(conn, cluster, kafka, make_relay, live):
    table = "co_calm"
    conn.execute(DDL.format(t=table))
    conn.execute(f"INSERT INTO {table} SELECT 'calm', g, 0, 'x' FROM generate_series(1, 6) g")
    conn.execute(f"INSERT INTO {table} VALUES ('storm', 1, 0, 'x')")
    r, lc = started_live(make_relay, live, table, coalesce__tables=f"public.{table}",
                         coalesce__window_ms="2000")
    warm_up(conn, table, lc)

    # meanwhile another key storms: that must not delay the calm keys
    stop = threading.Event()
    storm_n = [0]

    def storm():
        with cluster.connect() as c:
            while not stop.is_set():
                storm_n[0] += 1
                c.execute(f"UPDATE {table} SET v = %s WHERE tenant_id = 'storm'", (storm_n[0],))
                time.sleep(0.005)

    th = threading.Thread(target=storm)
    th.start()
    try:
        lat = {}
        committed = {}
        for i in range(1, 7):
            conn.execute(f"UPDATE {table} SET v = 1 WHERE tenant_id = 'calm' AND id = %s", (i,))
            committed[i] = time.time()
            time.sleep(0.3)
        for i in range(1, 7):
            a = lc.wait_of(1, tenant_id="calm", id=i, timeout=10)[0]
            lat[i] = a.at - committed[i]
        # key 1's window (2 s from its publication) has passed: its next update is calm again
        time.sleep(max(0.0, committed[1] + 2.6 - time.time()))
        conn.execute(f"UPDATE {table} SET v = 2 WHERE tenant_id = 'calm' AND id = 1")
        again = time.time()
        a = lc.wait_of(2, tenant_id="calm", id=1, timeout=10)[1]
        lat_again = a.at - again
    finally:
        stop.set()
        th.join()
    print(f"latencies of calm updates (s): {[round(x, 3) for x in lat.values()]}, "
          f"after the window: {lat_again:.3f}; storm: {storm_n[0]} updates -> "
          f"{len(lc.of(tenant_id='storm', id=1))} messages so far")
    assert all(x < 0.5 for x in lat.values()), f"calm updates delayed: {lat}"
    assert a.value["new"]["v"] == 2
    assert lat_again < 0.5, f"the first update after the window took {lat_again:.3f}s"
    assert len(lc.of(tenant_id="storm", id=1)) < storm_n[0] / 5, "the storm key was coalesced"
    wait_published(conn, r)
    assert r.stop() == 0


# ---- the LSN rule ------------------------------------------------------------------------------

def test_held_change_keeps_confirmed_position_behind(conn, kafka, make_relay, live):
    table = "co_lsn"
    conn.execute(DDL.format(t=table))
    conn.execute(f"INSERT INTO {table} VALUES ('acme', 1, 0, 'x')")
    r, lc = started_live(make_relay, live, table, coalesce__tables=f"public.{table}",
                         coalesce__window_ms="2000", relay__status_interval_ms="100")
    warm_up(conn, table, lc)

    conn.execute(f"UPDATE {table} SET v = 1 WHERE tenant_id = 'acme' AND id = 1")
    lc.wait_of(1, tenant_id="acme", id=1)
    conn.execute(f"UPDATE {table} SET v = 2 WHERE tenant_id = 'acme' AND id = 1")
    held_at = time.time()
    samples = []
    for delay in (0.3, 0.6, 0.9):           # the window ends ~2 s after the first publication
        time.sleep(max(0.0, held_at + delay - time.time()))
        samples.append((confirmed_lsn(conn, r.slot), len(lc.of(tenant_id="acme", id=1))))
    assert all(n == 1 for _, n in samples), f"the second update was not held: {samples}"

    second = lc.wait_of(2, tenant_id="acme", id=1, timeout=10)[1]
    commit_lsn = second.headers["lsn"]
    assert second.value["new"]["v"] == 2 and second.value["commit_lsn"] == commit_lsn
    assert second.at - held_at >= 1.0, f"published {second.at - held_at:.2f}s after commit: not held"
    assert second.at - held_at < 3.5, f"published {second.at - held_at:.2f}s after commit: late"
    for conf, _ in samples:
        assert lsn_int(conf) <= lsn_int(commit_lsn), \
            f"confirmed {conf} past the commit {commit_lsn} of a held change"
    wait_published(conn, r)
    assert r.stop() == 0


# ---- updates that change the key ---------------------------------------------------------------

def test_key_change_is_published_at_once_and_in_order(conn, kafka, make_relay, live):
    table = "co_move"
    conn.execute(DDL.format(t=table))
    conn.execute(f"INSERT INTO {table} VALUES ('acme', 1, 0, 'x'), ('acme', 3, 0, 'x'), "
                 f"('acme', 5, 0, 'x')")
    initial = table_rows(conn, table)
    r, lc = started_live(make_relay, live, table, coalesce__tables=f"public.{table}",
                         coalesce__window_ms="2000")
    warm_up(conn, table, lc)

    def run(sql):
        conn.execute(sql.format(t=table))
        return time.time()

    # a held update of the old key, then the key changes
    run("UPDATE {t} SET v = 10 WHERE tenant_id = 'acme' AND id = 1")     # at once
    held1 = run("UPDATE {t} SET v = 11 WHERE tenant_id = 'acme' AND id = 1")     # held
    time.sleep(0.3)
    moved1 = run("UPDATE {t} SET id = 2, v = 12 WHERE tenant_id = 'acme' AND id = 1")
    # a held delete of the new key, then a row moves to it
    run("UPDATE {t} SET v = 30 WHERE tenant_id = 'acme' AND id = 3")     # at once
    run("DELETE FROM {t} WHERE tenant_id = 'acme' AND id = 3")           # held
    time.sleep(0.3)
    moved2 = run("UPDATE {t} SET id = 3, v = 50 WHERE tenant_id = 'acme' AND id = 5")

    def move_of(old_id, new_id):
        return wait_for(f"the move {old_id} -> {new_id}", lambda: next(
            (a for a in lc.of(tenant_id="acme", id=old_id)
             if a.value["op"] == "update" and a.value["new"]["id"] == new_id), None), timeout=10)

    lat1 = move_of(1, 2).at - moved1
    lat2 = move_of(5, 3).at - moved2
    print(f"key changes published after {lat1:.3f}s and {lat2:.3f}s")
    assert lat1 < 0.5 and lat2 < 0.5, "an update that changes the key is published at once"
    # the held update of the old key was not published at once, and not merged into the move:
    # it went out just before it
    old = lc.of(tenant_id="acme", id=1)
    v11 = [a for a in old if a.value["new"]["v"] == 11]
    assert len(v11) == 1 and v11[0].at - held1 >= 0.25, \
        f"the update v=11 was not held: {[(a.value['new']['v'], round(a.at - held1, 3)) for a in old]}"
    assert [a.value["new"]["v"] for a in old][-2:] == [11, 12], "what was held goes before the move"

    wait_published(conn, r)
    recs = collect(kafka, r.topic, 1)
    assert_replay_equals_table(recs, conn, table, initial)
    assert r.stop() == 0


# ---- 4. kill -9 in the middle of a storm -------------------------------------------------------

def test_kill9_mid_storm_converges(conn, cluster, kafka, make_relay):
    table = "co_kill"
    conn.execute(DDL.format(t=table))
    r = started(make_relay, kafka, table, coalesce__tables=f"public.{table}",
                coalesce__window_ms="500")
    keys = [("acme", i) for i in range(10)] + [("globex", i) for i in range(10)]
    half = threading.Event()
    done = {}

    def storm():
        rng = random.Random(7)
        try:
            with cluster.connect() as c:
                w = Workload(c, table, rng, keys=keys, hot=keys)
                with w.transaction():
                    for k in keys:
                        w.insert(k)
                t0 = time.monotonic()
                # ~1 s over all 20 keys, then ~1 s over the globex keys only: the acme keys'
                # last changes are likely held when the relay dies
                for phase, ks in ((0, keys), (1, keys[10:])):
                    while time.monotonic() - t0 < 1.0 * (phase + 1):
                        k = rng.choice(ks)
                        if k in w.rows and rng.random() < 0.85:
                            w.update(k)
                        else:
                            w.change(k, moves=False)
                        time.sleep(0.001)
                    half.set()
                done["changes"] = w.changes
                done["made"] = w.made
        except Exception as e:      # noqa: BLE001 - reported by the test
            done["error"] = e
            half.set()

    th = threading.Thread(target=storm)
    th.start()
    half.wait(timeout=30)
    r.kill9()
    r.start()
    th.join()
    assert "error" not in done, f"the workload failed: {done.get('error')!r}"

    wait_published(conn, r)
    assert r.log().count("streaming slot") >= 2, "the relay streamed again after kill -9"
    recs = collect(kafka, r.topic, 1)
    print(f"kill -9 mid-storm: {done['changes']} changes made, {len(recs)} row messages "
          f"(duplicates included)")
    assert len(recs) < done["changes"] / 2, "the storm was coalesced"
    assert_replay_equals_table(recs, conn, table, made=done["made"])
    assert r.stop() == 0


# ---- 5. tables outside coalesce.tables ---------------------------------------------------------

def test_uncoalesced_tables_unchanged(conn, kafka, make_relay):
    tables = ("co5_hot", "co5_warm_x", "co5_cold", "co5_hotter")
    for t in tables:
        conn.execute(DDL.format(t=t))
        conn.execute(f"INSERT INTO {t} VALUES ('acme', 1, 0, 'x')")
    # an exact name and a pattern; co5_hotter matches neither
    r = make_relay(decoder__tables="public.co5_*", coalesce__tables="public.co5_hot,public.co5_warm*",
                   coalesce__window_ms="500", signals__enabled="false")
    for t in tables:
        kafka.create_topic(f"{r.prefix}.public.{t}")
    r.start()
    r.wait_log("streaming slot")
    for i in range(1, 51):
        for t in tables:
            conn.execute(f"UPDATE {t} SET v = %s WHERE tenant_id = 'acme' AND id = 1", (i,))
    for t in tables:
        conn.execute(f"DELETE FROM {t} WHERE tenant_id = 'acme' AND id = 1")
    wait_published(conn, r)

    got = {}
    for t in tables:
        recs = kafka.consume_all(f"{r.prefix}.public.{t}", idle_ms=300)
        got[t] = [(json.loads(x.value)["op"], (json.loads(x.value).get("new") or {}).get("v"))
                  if x.value is not None else ("tombstone", None) for x in recs]
    print({t: len(v) for t, v in got.items()})
    every = [("update", i) for i in range(1, 51)] + [("delete", None), ("tombstone", None)]
    assert got["co5_cold"] == every, "a table not in coalesce.tables: every change, in order"
    assert got["co5_hotter"] == every, "public.co5_hot is not a prefix pattern"
    for t in ("co5_hot", "co5_warm_x"):
        assert len(got[t]) < 20 and got[t][-2:] == [("delete", None), ("tombstone", None)], \
            f"{t} is coalesced, its held delete followed by a tombstone: {got[t]}"
    assert r.stop() == 0


# ---- the memory bound, and SIGTERM -------------------------------------------------------------

def test_memory_bound_flushes_held_changes_early(conn, kafka, make_relay, live):
    table = "co_bound"
    conn.execute(DDL.format(t=table))
    # every held update is more than 1000 bytes; the bound also counts the keys' open windows
    # (a few hundred bytes each): 600 of them fit in 256 KiB, 600 held updates do not
    n, bound, note = 600, 262144, "y" * 1000
    r, lc = started_live(make_relay, live, table, coalesce__tables=f"public.{table}",
                         coalesce__window_ms="60000", coalesce__max_held_bytes=str(bound))
    conn.execute(f"INSERT INTO {table} SELECT 'acme', g, 0, %s FROM generate_series(1, %s) g",
                 (note, n))
    wait_for("the inserts, published at once", lambda: len(lc.got) >= n, timeout=30)
    conn.execute(f"UPDATE {table} SET v = -1 WHERE id = 1")     # a key's second change: held
    time.sleep(0.5)
    assert not [a for a in list(lc.got) if a.value["op"] == "update"], "the update is held"
    conn.execute(f"UPDATE {table} SET v = 1")     # and every key's: 600 kB in all

    most = n - bound // 1000
    updates = lambda: [a for a in list(lc.got) if a.value["op"] == "update"  # noqa: E731
                       and a.value["new"]["v"] == 1]
    wait_for(f"at least {most} of {n} held updates to go out long before the 60 s window",
             lambda: len(updates()) >= most, timeout=15)
    print(f"{len(updates())} of {n} updates out before the window ended")

    end = insert_lsn(conn)
    assert r.stop() == 0, "SIGTERM: what is held is published and confirmed"
    assert confirmed_at_least(conn, r.slot, end), "the final confirmation covers the held changes"
    recs = kafka.consume_all(r.topic, idle_ms=500)
    assert_replay_equals_table(recs, conn, table)
    assert {json.loads(x.key)["id"] for x in recs if json.loads(x.value)["op"] == "update"} == \
        set(range(1, n + 1)), "every held update was published"
