"""Topics a consumer can replay: each delete is followed by a tombstone, so that a compacted row
topic read from offset 0 holds exactly the table's live rows. Checked on the real broker with a
topic whose compaction is forced (tiny segments, any dirty ratio, no delete retention) and a log
cleaner that looks every half second (tests/lib/kafka.sh)."""

import json

from conftest import wait_for
from test_coalesce import assert_replay_equals_table, hdrs, wait_published

DDL = ("DROP TABLE IF EXISTS {t}; "
       "CREATE TABLE {t} (tenant_id text, id int, v int, note text, PRIMARY KEY (tenant_id, id))")
KEYLESS_DDL = "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (tenant_id text, id int, note text)"


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


def topic_settings(kafka, topic):
    """(partition count, cleanup.policy) of a topic, as the broker describes it."""
    from confluent_kafka.admin import ConfigResource
    admin = kafka.admin()
    md = admin.list_topics(topic, timeout=10).topics[topic]
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([res])[res].result(timeout=10)
    return len(md.partitions), configs["cleanup.policy"].value


def test_row_topics_are_created_compacted_and_existing_ones_checked(conn, kafka, make_relay):
    t, other, loose = "rp_made", "rp_given", "rp_given_loose"
    conn.execute(DDL.format(t=t))
    conn.execute(DDL.format(t=other))
    conn.execute(KEYLESS_DDL.format(t=loose))
    r = make_relay(decoder__tables="public.rp_*", topic__partitions="3")
    given = f"{r.prefix}.public.{other}"
    given_loose = f"{r.prefix}.public.{loose}"
    kafka.create_topic(given, config={"cleanup.policy": "delete"})   # made by someone else
    kafka.create_topic(given_loose, config={"cleanup.policy": "delete"})
    r.start()
    r.wait_log("streaming slot")
    # checked at startup, before any change of the tables
    startup = r.log()
    assert f"topic {given} has cleanup.policy=delete" in startup, startup[-2000:]
    assert f"created topic {r.prefix}.public.{t}" in startup, startup[-2000:]
    conn.execute(f"INSERT INTO {t} VALUES ('acme', 1, 1, 'n')")
    conn.execute(f"INSERT INTO {other} VALUES ('acme', 1, 1, 'n')")
    conn.execute(f"INSERT INTO {loose} VALUES ('acme', 1, 'n')")
    wait_published(conn, r)
    made = f"{r.prefix}.public.{t}"
    r.wait_log(f"created topic {made}")
    assert topic_settings(kafka, made) == (3, "compact")
    r.wait_log(f"topic {given} has cleanup.policy=delete")
    assert "set cleanup.policy=compact on it" in r.log()
    assert topic_settings(kafka, given) == (1, "delete"), "an existing topic is left as it is"
    assert f"created topic {given}" not in r.log()
    # a table without key columns: compaction could not keep its rows, so no warning
    assert f"topic {given_loose} has cleanup.policy" not in r.log()
    assert [x.key for x in kafka.consume_all(given_loose, idle_ms=300)] == [None]
    assert f"{r.prefix}.keyless" not in r.log(), "nothing had to go elsewhere"
    assert r.stop() == 0


def test_keyless_rows_and_truncates_survive_compacted_topics(conn, kafka, make_relay):
    """Kafka refuses a message without a key on a compacted topic. The topic of a table without
    key columns is created with cleanup.policy=delete; a message without a key that still meets a
    compacted topic (a truncate; rows of a keyless table whose topic someone made compacted) goes
    to {prefix}.keyless, keyed by the table's name, with a warning once per topic."""
    keyed, loose, squeezed = "rp_k_orders", "rp_k_log", "rp_k_squeezed"
    conn.execute(DDL.format(t=keyed))
    conn.execute(KEYLESS_DDL.format(t=loose))
    conn.execute(KEYLESS_DDL.format(t=squeezed))
    r = make_relay(decoder__tables="public.rp_k_*", signals__enabled="false")
    topic = {x: f"{r.prefix}.public.{x}" for x in (keyed, loose, squeezed)}
    keyless = f"{r.prefix}.keyless"
    kafka.create_topic(topic[squeezed], config={"cleanup.policy": "compact"})  # someone else's
    r.start()
    r.wait_log("streaming slot")
    conn.execute(f"INSERT INTO {keyed} VALUES ('acme', 1, 1, 'n'), ('acme', 2, 1, 'n')")
    conn.execute(f"INSERT INTO {loose} VALUES ('acme', 1, 'a'), ('acme', 2, 'b')")
    conn.execute(f"DELETE FROM {loose} WHERE id = 1")                 # a keyless delete
    conn.execute(f"INSERT INTO {squeezed} VALUES ('acme', 1, 's')")
    conn.execute(f"TRUNCATE {keyed}")
    conn.execute(f"INSERT INTO {keyed} VALUES ('acme', 3, 1, 'n')")
    conn.execute(f"TRUNCATE {keyed}, {loose}")
    wait_published(conn, r)
    assert r.alive(), r.log()[-3000:]
    log = r.log()
    assert "did not accept" not in log

    # the keyed table's topic is compacted and holds only its keyed rows
    assert topic_settings(kafka, topic[keyed]) == (1, "compact")
    rows = kafka.consume_all(topic[keyed], idle_ms=300)
    assert [json.loads(x.key)["id"] for x in rows] == [1, 2, 3]

    # the keyless table's topic was created for history, and takes its truncate as it is
    assert topic_settings(kafka, topic[loose]) == (1, "delete")
    assert (f"topic {topic[loose]} has cleanup.policy=delete, not compact "
            f"(topic.cleanup_policy): table public.{loose} has no key columns") in log
    recs = kafka.consume_all(topic[loose], idle_ms=300)
    assert [(x.key, hdrs(x.headers)["op"]) for x in recs] == \
        [(None, "insert"), (None, "insert"), (None, "delete"), (None, "truncate")], \
        "no key, and no tombstone after the keyless delete"
    assert f"topic {topic[loose]} has cleanup.policy=delete:" not in log, "no warning for it"

    # what had no key and met a compacted topic went to {prefix}.keyless, keyed by its table
    assert topic_settings(kafka, keyless)[1] == "delete"
    recs = kafka.consume_all(keyless, idle_ms=300)
    got = [(x.key.decode(), hdrs(x.headers)["op"], hdrs(x.headers)["table"]) for x in recs]
    assert got == [(f"public.{squeezed}", "insert", f"public.{squeezed}"),
                   (f"public.{keyed}", "truncate", f"public.{keyed}"),
                   (f"public.{keyed}", "truncate", f"public.{keyed}")], got
    truncate = json.loads(recs[1].value)
    assert (truncate["op"], truncate["schema"], truncate["table"]) == ("truncate", "public", keyed)
    assert hdrs(recs[1].headers)["xid"] == str(truncate["xid"]), "its headers came along"
    assert kafka.consume_all(topic[squeezed], idle_ms=300) == []
    assert f"topic {topic[squeezed]} has cleanup.policy" not in log

    # one warning per topic, naming the table, the topic and where the message went
    for t, op in ((keyed, "truncate"), (squeezed, "insert")):
        warning = (f"topic {topic[t]} is compacted, and Kafka refuses messages without a key "
                   f"there: the {op} of table public.{t} went to topic {keyless} instead, "
                   f'keyed by "public.{t}"')
        assert log.count(warning) == 1, log[-3000:]
    assert log.count(f"topic {topic[keyed]} is compacted") == 1
    assert r.stop() == 0
