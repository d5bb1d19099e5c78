"""decoder.streaming (on by default): PostgreSQL streams a transaction that outgrows
logical_decoding_work_mem while it runs; the relay spools it and sends it at its commit, as one
transaction, exactly as if it had been read at its commit. Checked on the real servers with
logical_decoding_work_mem=64kB on the relay's connection, so that a few thousand rows stream:

- the committed rows arrive once each; rows of a rolled-back savepoint never do;
- a small transaction committed while the large one runs arrives before the large one ends;
- an aborted streamed transaction sends nothing, and the slot still moves past it;
- DDL inside a streamed transaction: each change keeps the columns it was written with;
- kill -9 while a transaction is spooled: after a restart it arrives whole, once.
"""

import json

import psycopg
import pytest

from conftest import confirmed_at_least, insert_lsn, wait_for
from test_e2e import collect, started

DDL = ("DROP TABLE IF EXISTS {t}; "
       "CREATE TABLE {t} (id int PRIMARY KEY, tenant_id text, v int, note text)")
ROWS = 8000


def streaming_relay(make_relay, cluster, tables, **settings):
    """A relay on `tables` whose walsender streams above 64kB of changes in memory."""
    e = cluster.env
    conninfo = (f"host={e['PGHOST']} port={e['PGPORT']} user=postgres dbname=postgres "
                f"options='-c logical_decoding_work_mem=64kB'")
    return started(make_relay, pg__conninfo=conninfo, decoder__tables=tables, **settings)


def spooled(cluster, slot):
    """Has the walsender of `slot` streamed anything yet (pg_stat_replication_slots)?"""
    with psycopg.connect(cluster.conninfo(), autocommit=True) as c:
        row = c.execute("SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = %s",
                        (slot,)).fetchone()
    return row is not None and row[0] > 0


def published(kafka, topic):
    """What `topic` holds; [] while it does not exist (nothing was ever sent to it)."""
    try:
        return kafka.consume_all(topic, idle_ms=300)
    except pytest.fail.Exception:
        return []


def stream_rows(cluster, r, writer, table, note="x"):
    """Inserts ROWS rows in writer's open transaction and waits until the walsender streams."""
    writer.execute(f"INSERT INTO {table} SELECT g, 'acme', g, %s FROM generate_series(1, {ROWS}) g",
                   (note,))
    wait_for("the first blocks to be streamed", lambda: spooled(cluster, r.slot), timeout=30)


def ids(kafka, topic, want):
    """The new row ids of `topic`'s messages, in topic order (at least `want` of them)."""
    return [json.loads(m.value)["new"]["id"] for m in collect(kafka, topic, want)]


def test_streamed_transaction_arrives_once_without_its_rolled_back_savepoint(
        cluster, conn, kafka, make_relay):
    big, small = "st_big", "st_small"
    conn.execute(DDL.format(t=big))
    conn.execute(DDL.format(t=small))
    r = streaming_relay(make_relay, cluster, "public.st_*")
    with psycopg.connect(cluster.conninfo()) as writer:
        writer.execute(f"INSERT INTO {big} SELECT g, 'acme', g, 'row ' || g "
                       f"FROM generate_series(1, {ROWS}) g")
        writer.execute("SAVEPOINT a")
        writer.execute(f"INSERT INTO {big} SELECT g, 'acme', g, 'undone' "
                       f"FROM generate_series({ROWS + 1}, {ROWS + 3000}) g")
        writer.execute("ROLLBACK TO SAVEPOINT a")
        writer.execute(f"INSERT INTO {big} SELECT g, 'globex', g, 'kept' "
                       f"FROM generate_series({ROWS + 5001}, {ROWS + 6000}) g")
        # streamed while the transaction runs: the relay has it in a spool, not in Kafka
        wait_for("the first blocks to be streamed", lambda: spooled(cluster, r.slot), timeout=30)
        conn.execute(f"INSERT INTO {small} VALUES (1, 'initech', 1, 'meanwhile')")
        small_msgs = collect(kafka, f"{r.prefix}.public.{small}", 1)
        assert published(kafka, f"{r.prefix}.public.{big}") == [], \
            "nothing of a transaction in progress is published"
        writer.commit()
    want = list(range(1, ROWS + 1)) + list(range(ROWS + 5001, ROWS + 6001))
    got = ids(kafka, f"{r.prefix}.public.{big}", len(want))
    assert sorted(got) == want, "every committed row once, none of the rolled-back savepoint"
    assert got == want, "in the order they were written"
    first_big = collect(kafka, f"{r.prefix}.public.{big}", 1)[0]
    assert small_msgs[0].timestamp < first_big.timestamp, \
        "the small transaction did not wait for the large one"
    r.wait_log("committed after streaming")
    end = insert_lsn(conn)
    wait_for("the slot to be confirmed", lambda: confirmed_at_least(conn, r.slot, end))


def test_aborted_streamed_transaction_sends_nothing(cluster, conn, kafka, make_relay):
    t = "st_abort"
    conn.execute(DDL.format(t=t))
    r = streaming_relay(make_relay, cluster, f"public.{t}")
    with psycopg.connect(cluster.conninfo()) as writer:
        stream_rows(cluster, r, writer, t)
        writer.rollback()
    conn.execute(f"INSERT INTO {t} VALUES ({ROWS + 1}, 'acme', 1, 'after')")
    end = insert_lsn(conn)
    assert ids(kafka, f"{r.prefix}.public.{t}", 1) == [ROWS + 1]
    wait_for("the slot to move past the aborted transaction",
             lambda: confirmed_at_least(conn, r.slot, end))
    assert [json.loads(m.value)["new"]["id"]
            for m in kafka.consume_all(f"{r.prefix}.public.{t}", idle_ms=500)] == [ROWS + 1]


def test_ddl_inside_a_streamed_transaction(cluster, conn, kafka, make_relay):
    t = "st_ddl"
    conn.execute(DDL.format(t=t))
    r = streaming_relay(make_relay, cluster, f"public.{t}")
    with psycopg.connect(cluster.conninfo()) as writer:
        stream_rows(cluster, r, writer, t, "before")
        writer.execute(f"ALTER TABLE {t} ADD COLUMN extra int DEFAULT 7, DROP COLUMN note")
        writer.execute(f"INSERT INTO {t} SELECT g, 'acme', g FROM generate_series({ROWS + 1}, "
                       f"{2 * ROWS}) g")
    news = [json.loads(m.value)["new"] for m in collect(kafka, f"{r.prefix}.public.{t}", 2 * ROWS)]
    assert len(news) == 2 * ROWS
    assert all(set(n) == {"id", "tenant_id", "v", "note"} and n["note"] == "before"
               for n in news[:ROWS]), news[0]
    assert all(set(n) == {"id", "tenant_id", "v", "extra"} and n["extra"] == 7
               for n in news[ROWS:]), news[-1]
    r.wait_log("committed after streaming")


def test_kill9_while_spooled_then_whole_once(cluster, conn, kafka, make_relay):
    t = "st_kill"
    conn.execute(DDL.format(t=t))
    r = streaming_relay(make_relay, cluster, f"public.{t}")
    with psycopg.connect(cluster.conninfo()) as writer:
        stream_rows(cluster, r, writer, t)
        r.kill9()
        writer.execute(f"INSERT INTO {t} SELECT g, 'acme', g, 'y' "
                       f"FROM generate_series({ROWS + 1}, {ROWS + 100}) g")
    end = insert_lsn(conn)
    r.start()
    got = ids(kafka, f"{r.prefix}.public.{t}", ROWS + 100)
    assert sorted(got) == list(range(1, ROWS + 101)), "whole, and once: nothing went out early"
    wait_for("the slot to be confirmed", lambda: confirmed_at_least(conn, r.slot, end))
    assert len(kafka.consume_all(f"{r.prefix}.public.{t}", idle_ms=500)) == ROWS + 100


def test_signals_do_not_wait_for_a_streamed_transaction_being_sent(cluster, conn, kafka,
                                                                    make_relay):
    """While a large streamed transaction goes out from its spool, what is read behind it waits
    for its rows (order per key holds) but not for its signals: a tenant that commits right after
    the storm is signalled, and an application event published, while the storm's rows are still
    being sent."""
    t, big = "st_fair", 150000
    conn.execute(DDL.format(t=t))
    r = streaming_relay(make_relay, cluster, f"public.{t}", decoder__message_prefixes="app.*")
    with psycopg.connect(cluster.conninfo()) as writer:
        writer.execute(f"INSERT INTO {t} SELECT g, 'storm', g, 'x' "
                       f"FROM generate_series(1, {big}) g")
    conn.execute(f"INSERT INTO {t} VALUES ({big + 1}, 'calm', 1, 'after the storm')")
    conn.execute("SELECT pg_logical_emit_message(true, 'app.paid', "
                 "'{\"tenant\": \"events\", \"invoice\": 7}')")
    end = insert_lsn(conn)
    rows = collect(kafka, f"{r.prefix}.public.{t}", big + 1, timeout=180)
    news = [json.loads(m.value)["new"] for m in rows]
    assert [n["id"] for n in news] == list(range(1, big + 2)), "rows in commit order, once each"
    signals = {}
    for m in collect(kafka, f"{r.prefix}.signals", 3):
        signals.setdefault(json.loads(m.value)["tenant"], []).append(m.timestamp)
    wait_for("the slot to be confirmed", lambda: confirmed_at_least(conn, r.slot, end))
    assert "calm" in signals, signals
    assert min(signals["calm"]) < rows[-2].timestamp, \
        "the calm tenant's signal went out before the storm's last row"
    assert len(signals["events"]) == 1 and signals["events"][0] < rows[-2].timestamp, \
        "an application event read behind the storm goes out at once too, once"
    r.wait_log("committed after streaming")
