"""Bad input gets a clear error naming what was wrong, a non-zero exit, and loses nothing:
bad configuration, unreachable PostgreSQL, unreachable Kafka, settings that would weaken the
delivery guarantee, options the plugin rejects."""

import psycopg

from conftest import confirmed_at_least, insert_lsn, wait_for
from test_e2e import TABLE_DDL, free_port


def test_unknown_key_in_file(make_relay):
    r = make_relay(relay__bogus_key="1")
    rc, out = r.run("--check-config")
    assert rc != 0
    assert "relay.bogus_key" in out and "relay.conf:" in out, out


def test_bad_value_names_key_value_and_accepted(make_relay):
    rc, out = make_relay(relay__status_interval_ms="5").run("--check-config")
    assert rc != 0
    assert "relay.status_interval_ms" in out and '"5"' in out and "100" in out, out


def test_missing_config_file(make_relay, tmp_path):
    r = make_relay()
    rc, out = r.run("--check-config", f"--config={tmp_path / 'nope.conf'}")
    assert rc != 0 and "nope.conf" in out, out


def test_check_config_accepts_a_good_file_and_hides_the_password(make_relay):
    r = make_relay(pg__conninfo="host=127.0.0.1 dbname=x password=s3cret")
    rc, out = r.run("--check-config")
    assert rc == 0, out
    assert "configuration OK" in out and "s3cret" not in out


def test_unreachable_postgres(make_relay):
    r = make_relay(pg__conninfo=f"host=127.0.0.1 port={free_port()} dbname=postgres connect_timeout=3")
    rc, out = r.run(timeout=60)
    assert rc != 0
    assert "could not connect to PostgreSQL" in out, out


def test_plugin_rejects_an_option(make_relay):
    rc, out = make_relay(decoder__tables="no_schema").run(timeout=60)
    assert rc != 0
    assert 'invalid pattern "no_schema" in option "tables"' in out, out


def test_weakening_the_guarantee_is_refused(make_relay):
    for key, value in (("kafka__acks", "1"), ("kafka__enable__idempotence", "false")):
        rc, out = make_relay(**{key: value}).run(timeout=60)
        assert rc != 0, out
        assert "requires" in out, out


def test_unreachable_kafka_fails_without_confirming(conn, make_relay):
    conn.execute(TABLE_DDL.format(t="bad_kafka"))
    r = make_relay(decoder__tables="public.bad_kafka",
                   kafka__bootstrap__servers=f"127.0.0.1:{free_port()}",
                   kafka__message__timeout__ms="3000").start()
    r.wait_log("streaming slot")
    before = insert_lsn(conn)
    conn.execute("INSERT INTO bad_kafka VALUES ('acme', 1, 1, 'nowhere to go')")
    rc = r.wait_exit(timeout=60)
    assert rc != 0
    assert "Kafka did not accept a message" in r.log() and "stopping without confirming" in r.log()
    first_write = conn.execute("SELECT %s::pg_lsn + 1", (before,)).fetchone()[0]
    assert not confirmed_at_least(conn, r.slot, str(first_write)), "confirmed an undelivered change"


def test_oversized_row_stops_with_a_clear_error(conn, make_relay):
    """A value Kafka cannot take (over message.max.bytes) is never skipped: the relay stops,
    says which topic and why, and confirms nothing past it."""
    conn.execute(TABLE_DDL.format(t="bad_big"))
    r = make_relay(decoder__tables="public.bad_big").start()
    r.wait_log("streaming slot")
    before = insert_lsn(conn)
    conn.execute("INSERT INTO bad_big SELECT 'acme', 1, 1, string_agg(md5(g::text), '') "
                 "FROM generate_series(1, 40000) g")   # ~1.3 MB of text
    rc = r.wait_exit(timeout=60)
    assert rc == 1, r.log()
    log = r.log()
    assert f"{r.prefix}.public.bad_big" in log and "too large" in log.lower(), log[-2000:]
    first_write = conn.execute("SELECT %s::pg_lsn + 1", (before,)).fetchone()[0]
    assert not confirmed_at_least(conn, r.slot, str(first_write))
