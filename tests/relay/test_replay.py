"""Topics a consumer can replay: each delete is followed by a tombstone, so that a compacted row
topic read from offset 0 holds exactly the table's live rows. Checked on the real broker with a
topic whose compaction is forced (tiny segments, any dirty ratio, no delete retention) and a log
cleaner that looks every half second (tests/lib/kafka.sh)."""

import json

from conftest import wait_for
from test_coalesce import assert_replay_equals_table, wait_published

DDL = ("DROP TABLE IF EXISTS {t}; "
       "CREATE TABLE {t} (tenant_id text, id int, v int, note text, PRIMARY KEY (tenant_id, id))")


def test_compacted_topic_replays_to_the_live_rows(conn, kafka, make_relay):
    t = "rp_orders"
    conn.execute(DDL.format(t=t))
    topic_config = {"cleanup.policy": "compact", "segment.ms": "100",
                    "min.cleanable.dirty.ratio": "0.001", "delete.retention.ms": "0",
                    "min.compaction.lag.ms": "0"}
    r = make_relay(decoder__tables=f"public.{t}", signals__enabled="false")
    r.topic = f"{r.prefix}.public.{t}"
    kafka.create_topic(r.topic, config=topic_config)
    r.start()
    r.wait_log("streaming slot")
    for tenant in ("acme", "globex"):
        conn.execute(f"INSERT INTO {t} SELECT %s, g, 0, 'n' FROM generate_series(1, 50) g",
                     (tenant,))
    for v in range(1, 4):
        conn.execute(f"UPDATE {t} SET v = %s WHERE id <= 30", (v,))
    conn.execute(f"DELETE FROM {t} WHERE id > 40")                # 20 rows gone
    conn.execute(f"DELETE FROM {t} WHERE tenant_id = 'globex' AND id <= 5")
    wait_published(conn, r)
    produced = len(kafka.consume_all(r.topic, idle_ms=300))
    assert produced == 100 + 3 * 60 + 25 * 2, "every change, and a tombstone per delete"

    def compacted():
        # a change after segment.ms rolls the segment, so that the rest can be cleaned
        conn.execute(f"UPDATE {t} SET note = note || '.' WHERE tenant_id = 'acme' AND id = 1")
        wait_published(conn, r)
        recs = kafka.consume_all(r.topic, idle_ms=300)
        deleted = [x for x in recs if x.value is None or json.loads(x.value)["op"] == "delete"]
        return recs if len(recs) < 100 and not deleted else None

    recs = wait_for("the log cleaner to compact the topic", compacted, timeout=90, interval=1)
    assert_replay_equals_table(recs, conn, t)
    keys = [x.key for x in recs]
    assert len(recs) - len(set(keys)) <= 2, \
        "one message per live row (the active segment may hold the last few twice)"
    assert r.stop() == 0
