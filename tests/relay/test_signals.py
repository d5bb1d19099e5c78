"""Tenant signals end to end: a storm on one tenant gives at most one signal per interval, whose
counts add up to the changes; the last change is always covered by a signal; a calm tenant's
change in the middle of the storm is signalled at once."""

import collections
import json
import time

from conftest import wait_for
from test_e2e import TABLE_DDL, collect


def test_storm_signals_are_rate_limited_counted_and_final(conn, kafka, make_relay):
    conn.execute(TABLE_DDL.format(t="sig_orders"))
    conn.execute("INSERT INTO sig_orders SELECT 'storm', g, 0, 'x' FROM generate_series(1, 300) g")
    conn.execute("INSERT INTO sig_orders VALUES ('calm', 1, 0, 'x')")
    r = make_relay(decoder__tables="public.sig_orders", signals__interval_ms="500").start()
    r.wait_log("streaming slot")
    storm_changes = 0
    calm_commit = None
    for i in range(10):   # 10 transactions x 300 rows over ~2 s
        if i == 9:
            before_last = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
        conn.execute("UPDATE sig_orders SET total = total + 1 WHERE tenant_id = 'storm'")
        storm_changes += 300
        if i == 5:
            conn.execute("UPDATE sig_orders SET note = 'once' WHERE tenant_id = 'calm'")
            calm_commit = time.time()
        time.sleep(0.2)

    topic = f"{r.prefix}.signals"

    def covered():
        recs = kafka.consume_all(topic, idle_ms=300) if kafka.admin().list_topics(topic).topics.get(topic) else []
        storm = [json.loads(x.value) for x in recs if x.key == b"storm"]
        if storm and sum(sum(s["counts"].values()) for s in storm) >= storm_changes:
            return recs
        return None

    recs = wait_for("signals covering every storm change", covered, timeout=30, interval=0.3)
    by_tenant = collections.defaultdict(list)
    for x in recs:
        by_tenant[x.key.decode()].append((x.timestamp, json.loads(x.value), dict(x.headers)))
    storm = by_tenant["storm"]
    assert sum(sum(v["counts"].values()) for _, v, _ in storm) == storm_changes, "each change counted once"
    assert all(v["table"] == "sig_orders" and v["counts"]["update"] > 0 for _, v, _ in storm)
    gaps = [b[0] - a[0] for a, b in zip(storm, storm[1:])]
    assert all(g >= 450 for g in gaps), f"more than one signal per interval: gaps {gaps} ms"
    assert len(storm) <= 2 * 10 * 0.2 / 0.5 + 2, f"{len(storm)} signals for a 2 s storm"
    # the final signal covers the last storm transaction, committed after before_last
    assert conn.execute("SELECT %s::pg_lsn > %s::pg_lsn",
                        (storm[-1][1]["last_lsn"], before_last)).fetchone()[0], \
        f"final signal's last_lsn {storm[-1][1]['last_lsn']} does not cover the last change"
    # ~1500 changes/s against the default signals.storm_rate of 1000: storm detected
    assert any(v["storm"] for _, v, _ in storm), [v["counts"] for _, v, _ in storm]
    calm = by_tenant["calm"]
    assert len(calm) == 1 and calm[0][1]["counts"] == {"insert": 0, "update": 1, "delete": 0}
    assert calm[0][1]["storm"] is False
    assert calm[0][1]["sample_keys"] == [{"tenant_id": "calm", "id": 1}]
    assert calm[0][0] / 1000 - calm_commit < 0.4, "the calm tenant's signal went at once"
    assert calm[0][2]["op"] == b"signal" and calm[0][2]["tenant"] == b"calm"
    assert r.stop() == 0


def test_application_events_naming_a_tenant_go_to_the_signal_topic(conn, kafka, make_relay):
    conn.execute(TABLE_DDL.format(t="sig_events"))
    r = make_relay(decoder__tables="public.sig_events", decoder__message_prefixes="app.*").start()
    r.wait_log("streaming slot")
    with conn.transaction():
        conn.execute("INSERT INTO sig_events VALUES ('acme', 1, 10, 'invoice')")
        conn.execute("SELECT pg_logical_emit_message(true, 'app.invoice', "
                     "'{\"tenant\":\"acme\",\"event\":\"invoice.paid\",\"invoice\":1}')")
        conn.execute("SELECT pg_logical_emit_message(true, 'app.audit', '{\"who\":\"batch\"}')")
        conn.execute("SELECT pg_logical_emit_message(true, 'app.raw', 'not json')")
        conn.execute("SELECT pg_logical_emit_message(true, 'other', '{\"tenant\":\"acme\"}')")
    signals = collect(kafka, f"{r.prefix}.signals", 2)     # the change's signal and the event
    events = [x for x in signals if dict(x.headers).get("op") == b"event"]
    assert len(events) == 1
    ev = events[0]
    assert ev.key == b"acme" and dict(ev.headers)["prefix"] == b"app.invoice"
    body = json.loads(ev.value)
    assert body["tenant"] == "acme" and body["prefix"] == "app.invoice" and body["transactional"]
    assert body["event"] == {"tenant": "acme", "event": "invoice.paid", "invoice": 1}
    others = collect(kafka, f"{r.prefix}.messages", 2)
    assert sorted(x.key for x in others) == [b"app.audit", b"app.raw"], "no tenant: the messages topic"
    assert r.stop() == 0
