"""breakwater-relay end to end: a real PostgreSQL with the plugin, a real Kafka broker, a real
Kafka consumer. What is committed arrives, on the right topic with the right key, headers and
value, in order per key; nothing is confirmed to PostgreSQL before Kafka acknowledged it; kill -9,
broker and PostgreSQL restarts lose nothing."""

import collections
import json
import socket
import threading
import time
import urllib.request

import psycopg
import pytest

from conftest import confirmed_at_least, insert_lsn, wait_for

TABLE_DDL = ("DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (tenant_id text, id int, total numeric(10,2), "
             "note text, PRIMARY KEY (tenant_id, id))")


def topic_exists(kafka, topic):
    md = kafka.admin().list_topics(timeout=10)
    return topic in md.topics and md.topics[topic].error is None


def collect(kafka, topic, want, timeout=90):
    """Consumes `topic` from the beginning until at least `want` messages are there."""
    deadline = time.monotonic() + timeout
    got = []
    while time.monotonic() < deadline:
        if topic_exists(kafka, topic):
            got = kafka.consume_all(topic, idle_ms=500, timeout=timeout)
            if len(got) >= want:
                return got
        time.sleep(0.2)
    pytest.fail(f"topic {topic}: {len(got)} messages after {timeout}s, wanted {want}")


def headers(rec):
    return {k: (v.decode() if v is not None else None) for k, v in rec.headers}


def started(make_relay, **settings):
    r = make_relay(**settings).start()
    r.wait_log("streaming slot")
    return r


def test_changes_arrive_with_topic_key_headers_and_order(conn, kafka, make_relay):
    conn.execute(TABLE_DDL.format(t="e2e_orders"))
    r = started(make_relay, decoder__tables="public.e2e_orders")
    expected = collections.defaultdict(list)   # key -> [(op, new row or None)]
    for tenant in ("acme", "globex", "initech"):
        with conn.transaction():
            for i in range(1, 6):
                conn.execute("INSERT INTO e2e_orders VALUES (%s, %s, %s, %s)", (tenant, i, i * 1.5, "n"))
                expected[(tenant, i)].append(("insert", {"tenant_id": tenant, "id": i,
                                                         "total": f"{i * 1.5:.2f}", "note": "n"}))
        for rnd in range(2):
            conn.execute("UPDATE e2e_orders SET note = %s WHERE tenant_id = %s AND id <= 2",
                         (f"u{rnd}", tenant))
            for i in (1, 2):
                expected[(tenant, i)].append(("update", {"tenant_id": tenant, "id": i,
                                                         "total": f"{i * 1.5:.2f}", "note": f"u{rnd}"}))
        conn.execute("DELETE FROM e2e_orders WHERE tenant_id = %s AND id = 5", (tenant,))
        # the delete, then its tombstone (null value) for compaction (topic.tombstones)
        expected[(tenant, 5)] += [("delete", None), ("tombstone", None)]
    total = sum(len(v) for v in expected.values())

    recs = collect(kafka, f"{r.prefix}.public.e2e_orders", total)
    assert len(recs) == total, "every change exactly once (no restart happened)"
    seen = collections.defaultdict(list)
    for rec in recs:
        h = headers(rec)
        key = json.loads(rec.key)
        if rec.value is None:
            assert h["op"] == "tombstone" and h["tenant"] == key["tenant_id"], h
            seen[(key["tenant_id"], key["id"])].append(("tombstone", None))
            continue
        value = json.loads(rec.value)
        assert list(key) == ["tenant_id", "id"], "key = the primary key columns, in order"
        assert h["op"] == value["op"]
        assert h["tenant"] == key["tenant_id"] == value["tenant"]
        assert h["table"] == "public.e2e_orders"
        assert h["lsn"] == value["commit_lsn"] and int(h["xid"]) == value["xid"]
        assert int(h["commit_time_us"]) > 0
        assert value["schema"] == "public" and value["table"] == "e2e_orders"
        seen[(key["tenant_id"], key["id"])].append((value["op"], value.get("new")))
    assert dict(seen) == dict(expected), "values and per-key order"
    assert r.stop() == 0


def test_nothing_confirmed_before_kafka_acknowledges(conn, kafka, make_relay):
    conn.execute(TABLE_DDL.format(t="e2e_ack"))
    port = free_port()
    r = started(make_relay, decoder__tables="public.e2e_ack", http__listen=f"127.0.0.1:{port}",
                kafka__message__timeout__ms="600000")
    conn.execute("INSERT INTO e2e_ack VALUES ('acme', 0, 0, 'warm-up')")
    topic = f"{r.prefix}.public.e2e_ack"
    collect(kafka, topic, 1)
    warm = insert_lsn(conn)
    wait_for("the warm-up to be confirmed", lambda: confirmed_at_least(conn, r.slot, warm), timeout=30)

    kafka.stop()
    try:
        before = insert_lsn(conn)
        for i in range(1, 51):
            conn.execute("INSERT INTO e2e_ack VALUES ('acme', %s, 1, 'while kafka is down')", (i,))
        after = insert_lsn(conn)
        time.sleep(3)   # several status intervals: the relay has read them but cannot deliver
        first_write = conn.execute("SELECT %s::pg_lsn + 1", (before,)).fetchone()[0]
        assert not confirmed_at_least(conn, r.slot, str(first_write)), \
            f"the slot was confirmed past {before} while Kafka was down"
        assert r.alive()
        # the lag the relay reports covers what it could not deliver
        backlog = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (after, before)).fetchone()[0]
        wait_for("breakwater_lag_bytes to show the backlog", lambda: (
            metric(port, "breakwater_lag_bytes") or 0) >= backlog, timeout=15)
    finally:
        kafka.start()
    recs = collect(kafka, topic, 51)
    assert {json.loads(x.key)["id"] for x in recs} == set(range(51))
    wait_for("the slot to be confirmed past the writes",
             lambda: confirmed_at_least(conn, r.slot, after), timeout=30)
    assert r.stop() == 0


def insert_batches(cluster, table, batches, rows, start=0, pause=0.0):
    with psycopg.connect(cluster.conninfo(), autocommit=True) as c:
        for b in range(batches):
            base = start + b * rows
            c.execute(f"INSERT INTO {table} SELECT 't' || (g %% 7), g, g, 'x' "
                      f"FROM generate_series(%s::int, %s::int) g", (base, base + rows - 1))
            time.sleep(pause)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(port, name):
    """A metric's value from the relay's /metrics, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_kill9_mid_run_loses_nothing(conn, cluster, kafka, make_relay):
    conn.execute(TABLE_DDL.format(t="e2e_kill"))
    port = free_port()
    r = started(make_relay, decoder__tables="public.e2e_kill", http__listen=f"127.0.0.1:{port}")
    writer = threading.Thread(target=insert_batches, args=(cluster, "e2e_kill", 100, 1000),
                              kwargs={"pause": 0.03})
    writer.start()
    delivered = wait_for("the relay to be mid-run", lambda: (lambda v: v if v and v >= 20_000 else None)(
        metric(port, "breakwater_messages_delivered_total")), timeout=120, interval=0.01)
    r.kill9()
    assert delivered < 80_000, f"killed too late to test anything: {delivered} delivered"
    writer.join()
    r.start()
    topic = f"{r.prefix}.public.e2e_kill"
    recs = collect(kafka, topic, 100_000, timeout=180)
    ids = collections.Counter(json.loads(x.key)["id"] for x in recs)
    missing = set(range(100_000)) - set(ids)
    assert not missing, f"{len(missing)} committed changes never arrived"
    dups = sum(n - 1 for n in ids.values())
    print(f"kill -9 after {int(delivered)} deliveries: {len(recs)} messages for 100000 changes, "
          f"{dups} duplicates")
    assert r.stop() == 0


def test_broker_restart_loses_nothing(conn, cluster, kafka, make_relay):
    conn.execute(TABLE_DDL.format(t="e2e_broker"))
    r = started(make_relay, decoder__tables="public.e2e_broker")
    writer = threading.Thread(target=insert_batches, args=(cluster, "e2e_broker", 40, 500))
    writer.start()
    time.sleep(0.3)
    kafka.restart()
    writer.join()
    recs = collect(kafka, f"{r.prefix}.public.e2e_broker", 20_000, timeout=180)
    assert set(json.loads(x.key)["id"] for x in recs) == set(range(20_000))
    assert r.stop() == 0


def test_postgres_restart_reconnects_and_loses_nothing(conn, cluster, kafka, make_relay):
    conn.execute(TABLE_DDL.format(t="e2e_pg"))
    r = started(make_relay, decoder__tables="public.e2e_pg")
    insert_batches(cluster, "e2e_pg", 5, 200)
    cluster.restart()
    insert_batches(cluster, "e2e_pg", 5, 200, start=1000)
    recs = collect(kafka, f"{r.prefix}.public.e2e_pg", 2000, timeout=120)
    assert set(json.loads(x.key)["id"] for x in recs) == set(range(2000))
    assert "reconnecting" in r.log()
    assert r.stop() == 0


def test_second_relay_waits_then_takes_over(conn, kafka, make_relay):
    conn.execute(TABLE_DDL.format(t="e2e_ha"))
    first = started(make_relay, decoder__tables="public.e2e_ha")
    second = make_relay(decoder__tables="public.e2e_ha").start()
    second.wait_log("waiting to take over")
    assert second.alive()
    conn.execute("INSERT INTO e2e_ha VALUES ('acme', 1, 1, 'to the first')")
    topic = f"{first.prefix}.public.e2e_ha"
    collect(kafka, topic, 1)
    assert first.stop() == 0
    second.wait_log("streaming slot", timeout=30)
    conn.execute("INSERT INTO e2e_ha VALUES ('acme', 2, 1, 'to the second')")
    recs = collect(kafka, topic, 2)
    assert {json.loads(x.key)["id"] for x in recs} == {1, 2}
    assert second.stop() == 0


def test_sigterm_flushes_and_confirms(conn, kafka, make_relay):
    conn.execute(TABLE_DDL.format(t="e2e_term"))
    r = started(make_relay, decoder__tables="public.e2e_term", relay__status_interval_ms="60000")
    conn.execute("INSERT INTO e2e_term SELECT 'acme', g, g, 'x' FROM generate_series(1, 5000) g")
    after = insert_lsn(conn)
    collect(kafka, f"{r.prefix}.public.e2e_term", 5000)
    assert r.stop() == 0
    assert confirmed_at_least(conn, r.slot, after), "the final feedback confirmed what was delivered"
    assert "confirmed" in r.log()
