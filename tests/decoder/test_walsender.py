"""The plugin over the real replication protocol, with pg_recvlogical as the client: keepalives
while a big transaction is filtered out, and draining to a file in binary and JSON."""

import json
import pathlib
import subprocess
import time

import pytest

import bwproto

BINDIR = pathlib.Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                     check=True).stdout.strip())
RECVLOGICAL = str(BINDIR / "pg_recvlogical")


def wait_for(what, check, timeout=60, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"pg_recvlogical exited with {proc.returncode} while waiting for {what}: "
                        f"{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def recvlogical(cluster, slot, outfile, *args, conn_options=None, **kwargs):
    """pg_recvlogical --start for `slot` writing to `outfile`; args are extra flags."""
    dsn = cluster.conninfo(**({"options": conn_options} if conn_options else {}))
    cmd = [RECVLOGICAL, "-d", dsn, "--slot", slot, "--start", "--no-loop", "-f", str(outfile), *args]
    return subprocess.Popen(cmd, env=cluster.client_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def stop(proc):
    if proc.poll() is None:
        proc.terminate()            # SIGTERM: pg_recvlogical flushes and exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def wal_sender_timeout(cluster, conn):
    """Sets the server's wal_sender_timeout for new walsenders; restores it afterwards."""
    def set_timeout(value):
        conn.execute(f"ALTER SYSTEM SET wal_sender_timeout = '{value}'")
        conn.execute("SELECT pg_reload_conf()")

        def applied():
            with cluster.connect() as c:
                return c.execute("SELECT setting::int FROM pg_settings WHERE name = 'wal_sender_timeout'"
                                 ).fetchone()[0] == int(value.removesuffix("ms"))
        wait_for("the new wal_sender_timeout", applied, timeout=10)

    yield set_timeout
    conn.execute("ALTER SYSTEM RESET wal_sender_timeout")
    conn.execute("SELECT pg_reload_conf()")


def test_filtered_big_transaction_does_not_time_out(cluster, conn, make_slot, wal_sender_timeout, tmp_path):
    """A transaction whose changes are all filtered out sends nothing while the walsender replays
    it; the plugin must let the walsender keep its keepalives going (OutputPluginUpdateProgress),
    or a client that only answers keepalives (-s 30) is cut off after wal_sender_timeout."""
    conn.execute("DROP TABLE IF EXISTS bw_ws_in, bw_ws_other; "
                 "CREATE TABLE bw_ws_in (id int PRIMARY KEY, tenant_id text, v text); "
                 "CREATE TABLE bw_ws_other (id int, tenant_id text, v text)")
    # The replay of the filtered transaction must outlast the timeout by far; a tiny
    # logical_decoding_work_mem makes the walsender spill it to disk and read it back, which is
    # slow enough with a million rows (about 1.5 s here, against a 500 ms timeout).
    timeout_ms, nrows = 500, 1_000_000
    wal_sender_timeout(f"{timeout_ms}ms")
    slot = make_slot()
    log_start = cluster.log.stat().st_size if cluster.log and cluster.log.exists() else 0
    out = tmp_path / "out.json"
    proc = recvlogical(cluster, slot.name, out, "-s", "30", "-o", "format=json", "-o", "tables=public.bw_ws_in",
                       conn_options="-c logical_decoding_work_mem=64kB")
    try:
        def received(marker):
            return lambda: out.exists() and marker in out.read_text(errors="replace")

        conn.execute("INSERT INTO bw_ws_in VALUES (1, 'acme', 'before-the-big-one')")
        wait_for("the first included change", received("before-the-big-one"), proc=proc)
        conn.execute("INSERT INTO bw_ws_other SELECT g, 'acme', 'filtered' FROM generate_series(1, %s) g",
                     (nrows,))
        committed = time.monotonic()
        conn.execute("INSERT INTO bw_ws_in VALUES (2, 'acme', 'after-the-big-one')")
        wait_for("the included change after the filtered transaction", received("after-the-big-one"),
                 proc=proc, timeout=120)
        replay = time.monotonic() - committed
        assert proc.poll() is None, f"pg_recvlogical exited: {proc.stderr.read()}"
    finally:
        stop(proc)
    log = cluster.log.read_bytes()[log_start:].decode(errors="replace") if log_start else ""
    assert "replication timeout" not in log, log
    assert "filtered" not in out.read_text(), "a change of the filtered table came through"
    # the test means something only if the replay outlasted the timeout
    assert replay > timeout_ms / 1000, (
        f"the filtered transaction was replayed in {replay:.2f}s, within wal_sender_timeout: "
        "make it bigger for this test to mean anything")


def split_recvlogical(data):
    """pg_recvlogical writes each message followed by a newline. Binary chunks are split by
    walking their records: a newline where a record tag would come ends the chunk (0x0A is no
    version-1 tag)."""
    chunks, pos = [], 0
    while pos < len(data):
        start = pos
        assert data[pos] == bwproto.PROTOCOL_VERSION, f"chunk at byte {pos} starts with {data[pos]}"
        pos += 1
        while data[pos] != 0x0A:
            pos += 5 + int.from_bytes(data[pos + 1:pos + 5], "big")
        chunks.append(data[start:pos])
        pos += 1
    return chunks


def workload(conn):
    conn.execute("DROP TABLE IF EXISTS bw_drain; "
                 "CREATE TABLE bw_drain (id int PRIMARY KEY, tenant_id text, v text, n numeric)")
    with conn.transaction():
        for i in range(200):
            conn.execute("INSERT INTO bw_drain VALUES (%s, 'acme', %s, %s)", (i, TRICKY[i % len(TRICKY)], i / 7))
    conn.execute("UPDATE bw_drain SET v = v || '!' WHERE id % 3 = 0")
    conn.execute("SELECT pg_logical_emit_message(true, 'bw', 'line\nbreak')")
    conn.execute("DELETE FROM bw_drain WHERE id >= 150")
    conn.execute("INSERT INTO bw_drain SELECT g, 't' || g % 5, repeat('x', g), g FROM generate_series(1000, 6000) g")
    conn.execute("TRUNCATE bw_drain")
    return conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]


TRICKY = ["plain", "", "new\nline", "tab\tquote\"back\\slash", "\u00e9\u2713\U0001F600", "\x01\x1f control",
          "{\"not\": \"json\"}", "\u2028\u2029"]


def test_drain_binary_matches_sql_interface(cluster, conn, make_slot, tmp_path):
    slot = make_slot()
    end = workload(conn)
    want = slot.peek(message_prefixes="bw", write_chunk_bytes="1000")
    out = tmp_path / "out.bin"
    proc = recvlogical(cluster, slot.name, out, "-E", end, "-o", "format=binary", "-o", "message-prefixes=bw",
                       "-o", "write-chunk-bytes=1000")
    try:
        proc.wait(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 0, proc.stderr.read()
    chunks = split_recvlogical(out.read_bytes())
    assert len(chunks) > 10
    got = bwproto.decode_chunks(chunks)
    assert got == want
    assert sum(r["type"] == "insert" for r in got) == 200 + 5001


def test_drain_json_is_ndjson(cluster, conn, make_slot, tmp_path):
    slot = make_slot()
    end = workload(conn)
    out = tmp_path / "out.json"
    proc = recvlogical(cluster, slot.name, out, "-E", end, "-o", "format=json", "-o", "message-prefixes=bw")
    try:
        proc.wait(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 0, proc.stderr.read()
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "", "the file ends with a newline"
    objects = []
    for n, line in enumerate(lines[:-1]):
        assert line, f"line {n + 1} is empty"
        objects.append(json.loads(line))
    strings = set()

    def walk(v):
        if isinstance(v, str):
            strings.add(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(k)
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    for o in objects:
        walk(o)
    for s in TRICKY:
        assert s in strings and s + "!" in strings, f"{s!r} did not come through intact"
    # one line per change: 200 + 5001 inserts, 67 updates, 50 deletes; plus the message and truncate
    assert len(objects) >= 200 + 5001 + 67 + 50


@pytest.mark.parametrize("option, message", [
    ("format", 'option "format" needs a value'),
    ("format=csv", 'invalid value "csv" for option "format"'),
    ("tables=nodot", 'invalid pattern "nodot" in option "tables"'),
    ("no-such-option=1", 'unrecognized option "no-such-option"'),
])
def test_bad_option_over_replication(cluster, conn, make_slot, tmp_path, option, message):
    """START_REPLICATION with a bad option: the client gets the plugin's error and hint, exits non-zero."""
    slot = make_slot()
    proc = recvlogical(cluster, slot.name, tmp_path / "out", "-o", option)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode != 0
    assert message in err, err
    assert "HINT" in err or "needs a value" in err, err


def test_json_ignores_the_client_session_settings(cluster, conn, make_slot, tmp_path):
    """The walsender session's DateStyle, TimeZone, IntervalStyle and extra_float_digits come from
    the client; text values (arrays here) must not depend on them."""
    conn.execute("DROP TABLE IF EXISTS bw_settings; CREATE TABLE bw_settings "
                 "(id int PRIMARY KEY, tenant_id int, a timestamptz[], f float8[], i interval[], t timestamptz)")
    slot = make_slot()
    conn.execute("INSERT INTO bw_settings VALUES (1, 1, ARRAY['2024-01-01 10:00+00'::timestamptz], "
                 "ARRAY[0.1::float8], ARRAY['1 day 02:00'::interval], '2024-01-01 10:00+00')")
    end = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
    out = tmp_path / "out.json"
    proc = recvlogical(cluster, slot.name, out, "-E", str(end), "-o", "format=json",
                       conn_options="-c DateStyle=German -c TimeZone=Asia/Kolkata "
                                    "-c extra_float_digits=0 -c IntervalStyle=sql_standard")
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 0, err
    (row,) = [json.loads(line)["new"] for line in out.read_text().splitlines() if line.strip()]
    assert row == {"id": 1, "tenant_id": 1, "a": '{"2024-01-01 10:00:00+00"}', "f": "{0.1}",
                   "i": "{P1DT2H}", "t": "2024-01-01T10:00:00+00:00"}
