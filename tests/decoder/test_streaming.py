"""Streaming of large in-progress transactions (option streaming=on, docs/protocol.md "Streamed
transactions"): stream blocks S..E, subtransaction records X, stream aborts A and stream commits K,
read through the reference reader and put back together with bwproto.Reassembler.

PostgreSQL streams a transaction once the changes it holds in memory exceed
logical_decoding_work_mem; the tests set it to 64kB in the decoding session (a user-settable
setting: the reading connection for the SQL functions, the walsender's connection options for
pg_recvlogical)."""

import pytest

import bwproto
from test_walsender import recvlogical, stop, wait_for

LOW_MEM = "-c logical_decoding_work_mem=64kB"


@pytest.fixture
def lowmem(cluster):
    """A fresh session (cold caches) whose decoding streams anything above 64kB."""
    with cluster.connect(options=LOW_MEM) as c:
        yield c


@pytest.fixture
def other(cluster):
    """A second session, for a transaction kept open while `conn` commits others."""
    with cluster.connect() as c:
        yield c


def recreate(conn, table, columns):
    conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE; CREATE TABLE {table} ({columns})")


def content(item):
    """A reassembled transaction's records, without the framing sizes."""
    return [{k: v for k, v in r.items() if k != "size"} for r in item["records"]]


def transactions(records):
    return [i for i in bwproto.reassemble(records) if i["type"] == "transaction"]


def same_transactions(streamed, plain):
    """The transactions of a streaming read equal those of a plain one: same commits, same
    records in the same order."""
    a, b = transactions(streamed), transactions(plain)
    assert [(t["xid"], t["commit_lsn"], t["end_lsn"], t["commit_time"]) for t in a] == \
        [(t["xid"], t["commit_lsn"], t["end_lsn"], t["commit_time"]) for t in b]
    for ta, tb in zip(a, b):
        assert content(ta) == content(tb), f"transaction {ta['xid']} differs"
    return a


def ids(item, types=("insert",)):
    return [r["new"]["id"] for r in item["records"] if r["type"] in types]


def blocks(records, xid, still_open=False):
    """The stream blocks of `xid`: lists of records from S to E. A block still being received
    is an error unless `still_open` (it is then left out)."""
    out, cur = [], None
    for r in records:
        if r["type"] == "stream_start" and r["xid"] == xid:
            cur = [r]
        elif cur is not None:
            cur.append(r)
            if r["type"] == "stream_stop":
                out.append(cur)
                cur = None
    assert still_open or cur is None, "a stream block without E"
    return out


def chunk_records(chunks):
    reader = bwproto.Reader()
    return [reader.read_chunk(ch) for ch in chunks]


def check_chunks(chunked, limit):
    """E ends its chunk, A and K are chunks of their own, no chunk mixes two transactions or two
    blocks, and a chunk exceeds the bound by one record at most."""
    for recs in chunked:
        types = [r["type"] for r in recs]
        assert "stream_stop" not in types[:-1], f"E does not end its chunk: {types}"
        assert "stream_start" not in types[1:], f"a chunk holds two stream blocks: {types}"
        assert "begin" not in types[1:] and "commit" not in types[:-1], types
        for t in ("stream_abort", "stream_commit"):
            assert t not in types or types == [t], f"{t} is not a chunk of its own: {types}"
        assert 1 + sum(r["size"] for r in recs) - recs[-1]["size"] <= max(limit - 1, 1)


def lsn_int(text):
    hi, lo = text.split("/")
    return int(hi, 16) << 32 | int(lo, 16)


def xid_of(conn):
    """The top-level xid of conn's open transaction, as the protocol carries it (32 bits)."""
    return conn.execute("SELECT pg_current_xact_id()::text::int8").fetchone()[0] & 0xFFFFFFFF


# ---- a big transaction, streamed and not -----------------------------------------------------

def big_tables(conn):
    recreate(conn, "bw_st", "id int PRIMARY KEY, tenant_id text, v text, n numeric, ts timestamptz")
    recreate(conn, "bw_st_small", "id int PRIMARY KEY, tenant_id text")
    conn.execute("INSERT INTO bw_st_small VALUES (1, 'acme'), (2, 'acme')")


def fill_big(conn):
    with conn.transaction():
        conn.execute("INSERT INTO bw_st SELECT g, CASE WHEN g % 13 = 0 THEN NULL ELSE 't' || g % 7 END, "
                     "'row ' || g, g / 3.0, '2024-01-01'::timestamptz + g * interval '1 minute' "
                     "FROM generate_series(1, 20000) g")
        conn.execute("SELECT pg_logical_emit_message(true, 'bw', 'in the big one')")
        conn.execute("UPDATE bw_st SET v = v || '!' WHERE id % 10 = 0")
        conn.execute("TRUNCATE bw_st_small")
        conn.execute("DELETE FROM bw_st WHERE id % 100 = 0")


@pytest.mark.parametrize("options", [
    {},
    {"exclude_columns": "public.bw_st.v", "missing_tenant": "drop", "value_encoding": "text"},
], ids=["defaults", "filtered"])
def test_streamed_transaction_equals_the_plain_one(conn, lowmem, make_slot, options):
    big_tables(conn)
    slot = make_slot()
    fill_big(conn)
    streamed = slot.get(peek=True, conn=lowmem, streaming="on", message_prefixes="bw", **options)
    plain = slot.get(peek=True, conn=lowmem, message_prefixes="bw", **options)

    types = [r["type"] for r in streamed]
    assert "begin" not in types and "commit" not in types, "a streamed transaction has no B/C"
    (k,) = [r for r in streamed if r["type"] == "stream_commit"]
    assert streamed[-1] is k
    bl = blocks(streamed, k["xid"])
    assert len(bl) >= 5, f"only {len(bl)} stream blocks: did it stream?"
    assert types.count("stream_start") == types.count("stream_stop") == len(bl)
    assert [b[0]["first"] for b in bl] == [True] + [False] * (len(bl) - 1)
    assert all(b[1]["type"] in ("relation", "subxact") for b in bl)
    (c,) = [r for r in plain if r["type"] == "commit"]
    assert {x: k[x] for x in ("xid", "commit_lsn", "end_lsn", "commit_time")} == \
        {x: c[x] for x in ("xid", "commit_lsn", "end_lsn", "commit_time")}

    (txn,) = same_transactions(streamed, plain)
    assert txn["streamed"]
    kinds = [r["type"] for r in txn["records"]]
    dropped = len([g for g in range(1, 20001) if g % 13 == 0]) if options else 0
    assert kinds.count("insert") == 20000 - dropped
    assert kinds.count("message") == 1 and kinds.count("truncate") == 1
    assert kinds.count("delete") == 200
    if options:
        assert all("v" not in r["new"] for r in txn["records"] if r["type"] == "insert")
        assert all(isinstance(r["new"]["id"], str) for r in txn["records"] if r["type"] == "insert")


def test_stream_blocks_span_chunks(conn, lowmem, make_slot):
    big_tables(conn)
    slot = make_slot()
    fill_big(conn)
    for limit in (4096, 1):
        chunked = chunk_records(slot.chunks(peek=True, conn=lowmem, streaming="on", write_chunk_bytes=limit))
        check_chunks(chunked, limit)
        starts = [i for i, recs in enumerate(chunked) if recs[0]["type"] == "stream_start"]
        assert len(starts) >= 5 and all(b - a > 2 for a, b in zip(starts, starts[1:])), \
            f"write-chunk-bytes={limit}: blocks are not split into several chunks"
        assert chunked[-1][0]["type"] == "stream_commit"


# ---- subtransactions ---------------------------------------------------------------------------

def test_rolled_back_savepoints_are_discarded(conn, lowmem, make_slot):
    recreate(conn, "bw_sp", "id int PRIMARY KEY, tenant_id text, v text")
    slot = make_slot()

    def rows(lo, hi, v):
        conn.execute(f"INSERT INTO bw_sp SELECT g, 'acme', '{v}' FROM generate_series({lo}, {hi}) g")

    def message(text):
        conn.execute("SELECT pg_logical_emit_message(true, 'bw', %s)", (text,))

    with conn.transaction():
        rows(1, 3000, "top")
        conn.execute("SAVEPOINT s1")
        rows(3001, 6000, "s1")
        message("in-s1")
        conn.execute("ROLLBACK TO s1")
        conn.execute("SAVEPOINT s2")
        rows(6001, 9000, "s2")
        message("in-s2")
        conn.execute("RELEASE s2")
        message("after-release")
        conn.execute("SAVEPOINT m")        # a message is this subtransaction's first record
        message("first-in-m")
        rows(9001, 12000, "m")
        conn.execute("ROLLBACK TO m")
        conn.execute("SAVEPOINT s3")
        rows(12001, 13000, "s3")
        conn.execute("SAVEPOINT s4")       # nested: ROLLBACK TO s3 aborts both
        rows(13001, 16000, "s4")
        conn.execute("ROLLBACK TO s3")
        rows(16001, 17000, "top2")
    streamed = slot.get(peek=True, conn=lowmem, streaming="on", message_prefixes="bw")
    plain = slot.get(peek=True, conn=lowmem, message_prefixes="bw")

    # the rolled-back rows and messages were streamed, and then aborted
    raw_ids = {r["new"]["id"] for r in streamed if r["type"] == "insert"}
    for lo, hi in ((3001, 6000), (9001, 12000), (13001, 16000)):
        assert raw_ids & set(range(lo, hi + 1)), f"rows {lo}..{hi} were not streamed: the test means nothing"
    assert b"first-in-m" in [r["content"] for r in streamed if r["type"] == "message"]
    aborts = [r for r in streamed if r["type"] == "stream_abort"]
    assert len(aborts) >= 3 and all(a["subxid"] != a["xid"] for a in aborts)
    assert len({r["xid"] for r in streamed if r["type"] == "subxact"}) >= 5

    (txn,) = same_transactions(streamed, plain)
    assert txn["streamed"]
    assert ids(txn) == [*range(1, 3001), *range(6001, 9001), *range(16001, 17001)]
    assert [r["content"] for r in txn["records"] if r["type"] == "message"] == [b"in-s2", b"after-release"]


def test_error_inside_a_stream_block_drops_the_half_written_record(conn, lowmem, make_slot):
    """Streaming a subtransaction that later rolled back, PostgreSQL stops the block at the first
    catalog lookup (here: the text of an enum value the fresh decoding session has not seen yet)
    and carries on. The record being written then must not reach the client."""
    conn.execute("DROP TABLE IF EXISTS bw_ca; DROP TYPE IF EXISTS bw_ca_mood; "
                 "CREATE TYPE bw_ca_mood AS ENUM ('a', 'b', 'c'); "
                 "CREATE TABLE bw_ca (id int PRIMARY KEY, tenant_id text, m bw_ca_mood)")
    slot = make_slot()
    with conn.transaction():
        conn.execute("INSERT INTO bw_ca SELECT g, 'acme', 'a' FROM generate_series(1, 1000) g")
        conn.execute("SAVEPOINT s")
        conn.execute("INSERT INTO bw_ca SELECT g, 'acme', 'b' FROM generate_series(1001, 6000) g")
        sub = int(conn.execute("SELECT xmin::text FROM bw_ca WHERE id = 1001").fetchone()[0])
        conn.execute("ROLLBACK TO s")
        conn.execute("INSERT INTO bw_ca SELECT g, 'acme', 'c' FROM generate_series(6001, 7000) g")
    streamed = slot.get(peek=True, conn=lowmem, streaming="on")      # raises on a broken record
    plain = slot.get(peek=True, conn=lowmem)
    # the block that reached the subtransaction ends right after its X record
    cut = [b for b in blocks(streamed, streamed[0]["xid"])
           if [r["type"] for r in b[-2:]] == ["subxact", "stream_stop"] and b[-2]["xid"] == sub]
    assert cut, "no stream block was cut short: the test means nothing"
    assert any(a["subxid"] == sub for a in streamed if a["type"] == "stream_abort")
    (txn,) = same_transactions(streamed, plain)
    assert ids(txn) == [*range(1, 1001), *range(6001, 7001)]
    assert {r["new"]["m"] for r in txn["records"]} == {"a", "c"}


# ---- other transactions while a big one is open ------------------------------------------------

def test_small_transactions_between_stream_blocks(conn, other, lowmem, make_slot):
    recreate(conn, "bw_il", "id int PRIMARY KEY, tenant_id text, v text")
    slot = make_slot()
    other.execute("BEGIN")
    other.execute("INSERT INTO bw_il SELECT g, 'big', 'big' FROM generate_series(1, 10000) g")
    conn.execute("INSERT INTO bw_il VALUES (100001, 'small', 'one')")
    other.execute("INSERT INTO bw_il SELECT g, 'big', 'big' FROM generate_series(10001, 20000) g")
    with conn.transaction():
        conn.execute("INSERT INTO bw_il VALUES (100002, 'small', 'two')")
        conn.execute("UPDATE bw_il SET v = 'one!' WHERE id = 100001")
    other.execute("COMMIT")
    streamed = slot.get(peek=True, conn=lowmem, streaming="on")
    plain = slot.get(peek=True, conn=lowmem)

    small1, small2, big = same_transactions(streamed, plain)
    assert not small1["streamed"] and not small2["streamed"] and big["streamed"]
    assert [(r["type"], r["new"]) for r in small1["records"]] == \
        [("insert", {"id": 100001, "tenant_id": "small", "v": "one"})]
    assert [(r["type"], r["new"]) for r in small2["records"]] == \
        [("insert", {"id": 100002, "tenant_id": "small", "v": "two"}),
         ("update", {"id": 100001, "tenant_id": "small", "v": "one!"})]
    assert ids(big) == list(range(1, 20001))
    # decoding order: the big one's first blocks come before the small ones' commits
    types = [(r["type"], r.get("xid")) for r in streamed]
    first_s = types.index(("stream_start", big["xid"]))
    assert first_s < types.index(("begin", small1["xid"])) < types.index(("begin", small2["xid"]))
    assert ("stream_start", big["xid"]) in types[types.index(("commit", small1["xid"])):
                                                 types.index(("begin", small2["xid"]))]


# ---- filters ----------------------------------------------------------------------------------

def test_filtered_out_streamed_transaction_sends_nothing(conn, lowmem, make_slot):
    recreate(conn, "bw_fs_in", "id int PRIMARY KEY, tenant_id text")
    recreate(conn, "bw_fs_out", "id int PRIMARY KEY, tenant_id text, v text")
    slot = make_slot()
    conn.execute("INSERT INTO bw_fs_out SELECT g, 'acme', 'filtered' FROM generate_series(1, 20000) g")
    # the same transaction, unfiltered, streams: the filters are what leave it out
    assert any(r["type"] == "stream_start" for r in slot.get(peek=True, conn=lowmem, streaming="on"))
    assert slot.get(peek=True, conn=lowmem, streaming="on", tables="public.bw_fs_in") == []
    assert slot.get(peek=True, conn=lowmem, streaming="on", exclude_tables="public.bw_fs_out") == []
    assert slot.get(peek=True, conn=lowmem, streaming="on", actions="update,delete") == []
    assert slot.get(peek=True, conn=lowmem, streaming="on", missing_tenant="drop",
                    tenant_column="no_such_column") == []

    # only the blocks with a change that passes get S..E; the first of them says first=1
    with conn.transaction():
        conn.execute("INSERT INTO bw_fs_out SELECT g, 'acme', 'filtered' FROM generate_series(20001, 40000) g")
        conn.execute("INSERT INTO bw_fs_in SELECT g, 'acme' FROM generate_series(1, 50) g")
        conn.execute("INSERT INTO bw_fs_out SELECT g, 'acme', 'filtered' FROM generate_series(40001, 60000) g")
    records = slot.get(peek=True, conn=lowmem, streaming="on", tables="public.bw_fs_in")
    all_blocks = slot.get(peek=True, conn=lowmem, streaming="on")
    xid = records[0]["xid"]
    bl = blocks(records, xid)
    assert 1 <= len(bl) < len(blocks(all_blocks, xid)) / 4
    assert [b[0]["first"] for b in bl] == [True] + [False] * (len(bl) - 1)
    assert records[-1]["type"] == "stream_commit" and records[-1]["xid"] == xid
    (txn,) = transactions(records)
    assert ids(txn) == list(range(1, 51))


# ---- over the replication protocol ----------------------------------------------------------

def chunks_so_far(path):
    """The complete chunks pg_recvlogical has written so far (each is followed by a newline)."""
    data = path.read_bytes() if path.exists() else b""
    chunks, pos = [], 0
    while pos < len(data):
        start, pos = pos, pos + 1
        while pos < len(data) and data[pos] != 0x0A:
            if pos + 5 > len(data):
                return chunks
            pos += 5 + int.from_bytes(data[pos + 1:pos + 5], "big")
        if pos >= len(data):
            return chunks
        chunks.append(data[start:pos])
        pos += 1
    return chunks


def test_streaming_over_the_walsender(cluster, conn, other, make_slot, tmp_path):
    """Live: the blocks of an open transaction arrive while it is open, a small transaction
    committed meanwhile arrives before it ends, a rollback arrives as A, a commit as K."""
    recreate(conn, "bw_ws", "id int PRIMARY KEY, tenant_id text, v text")
    slot = make_slot()
    out = tmp_path / "out.bin"
    proc = recvlogical(cluster, slot.name, out, "-o", "format=binary", "-o", "streaming=on",
                       "-s", "1", "-F", "1", conn_options=LOW_MEM)
    try:
        def records():
            return bwproto.decode_chunks(chunks_so_far(out))

        def seen(pred):
            return lambda: any(pred(r) for r in records())

        wait_for("pg_recvlogical to connect", lambda: conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot.name,)).fetchone()[0],
            proc=proc)
        other.execute("BEGIN")
        other.execute("INSERT INTO bw_ws SELECT g, 'big', 'aborted' FROM generate_series(1, 10000) g")
        aborted = xid_of(other)
        wait_for("stream blocks of the open transaction",
                 lambda: len(blocks(records(), aborted, still_open=True)) >= 3, proc=proc)

        conn.execute("INSERT INTO bw_ws VALUES (100001, 'small', 'while open')")
        wait_for("the small transaction's commit",
                 seen(lambda r: r["type"] == "insert" and r["new"]["id"] == 100001), proc=proc)
        assert not any(r["type"] in ("stream_abort", "stream_commit") for r in records())

        other.execute("ROLLBACK")
        wait_for("the stream abort", seen(lambda r: r["type"] == "stream_abort"), proc=proc)

        with other.transaction():
            other.execute("INSERT INTO bw_ws SELECT g, 'big', 'kept' FROM generate_series(1, 10000) g")
            committed = xid_of(other)
            wait_for("stream blocks of the second transaction",
                     lambda: len(blocks(records(), committed, still_open=True)) >= 3, proc=proc)
            other.execute("SAVEPOINT sp")
            other.execute("INSERT INTO bw_ws SELECT g, 'big', 'rolled back' FROM generate_series(10001, 15000) g")
            other.execute("ROLLBACK TO sp")
            other.execute("INSERT INTO bw_ws SELECT g, 'big', 'kept' FROM generate_series(15001, 15100) g")
        end = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
        wait_for("the stream commit", seen(lambda r: r["type"] == "stream_commit"), proc=proc)
    finally:
        stop(proc)

    recs = records()
    r = bwproto.Reassembler()
    done = [item for rec in recs for item in r.feed(rec)]
    assert r.spooled == {}
    small, big = done
    assert not small["streamed"] and [x["new"]["id"] for x in small["records"]] == [100001]
    assert big["streamed"] and big["xid"] == committed
    assert ids(big) == [*range(1, 10001), *range(15001, 15101)]
    assert {x["new"]["v"] for x in big["records"]} == {"kept"}
    assert big["end_lsn"] <= lsn_int(end)
    assert [(x, s) for x, s, _ in r.aborted if x == aborted] == [(aborted, aborted)]
    assert all(lsn > 0 for _, _, lsn in r.aborted)
    # the table's relation record came in the aborted transaction's first block: later
    # transactions rely on it (the reader keeps R records of aborted blocks)
    rels = [i for i, x in enumerate(recs) if x["type"] == "relation" and x["table"] == "bw_ws"]
    first_block = blocks(recs, aborted)[0]
    assert rels and any(x is recs[rels[0]] for x in first_block)
    assert len(rels) == 1, "sent again: this test no longer shows what it is meant to"


def test_bad_streaming_option_over_replication(cluster, make_slot, tmp_path):
    slot = make_slot()
    proc = recvlogical(cluster, slot.name, tmp_path / "out", "-o", "streaming=on")
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode != 0
    assert 'option "streaming" is "on" but "format" is "json"' in err, err
    assert "HINT:  Add format=binary" in err, err


def test_relation_after_a_streamed_transaction_that_altered_it_and_aborted(cluster, conn, other, make_slot,
                                                                           tmp_path):
    """A streamed transaction adds a column and rolls back: its blocks describe the table with
    the column, the next transaction must get the table's real description again."""
    recreate(conn, "bw_wd", "id int PRIMARY KEY, tenant_id text")
    slot = make_slot()
    out = tmp_path / "out.bin"
    proc = recvlogical(cluster, slot.name, out, "-o", "format=binary", "-o", "streaming=on",
                       "-s", "1", "-F", "1", conn_options=LOW_MEM)
    try:
        wait_for("pg_recvlogical to connect", lambda: conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot.name,)).fetchone()[0],
            proc=proc)
        conn.execute("INSERT INTO bw_wd VALUES (0, 'before')")
        other.execute("BEGIN")
        other.execute("ALTER TABLE bw_wd ADD COLUMN extra text")
        other.execute("INSERT INTO bw_wd SELECT g, 'big', 'x' FROM generate_series(1, 10000) g")
        aborted = xid_of(other)
        wait_for("stream blocks", lambda: len(blocks(bwproto.decode_chunks(chunks_so_far(out)), aborted,
                                                still_open=True)) >= 2,
                 proc=proc)
        other.execute("ROLLBACK")
        conn.execute("INSERT INTO bw_wd VALUES (100000, 'after')")
        wait_for("the insert after the rollback", lambda: any(
            r["type"] == "insert" and r["new"]["id"] == 100000
            for r in bwproto.decode_chunks(chunks_so_far(out))), proc=proc)
    finally:
        stop(proc)
    recs = bwproto.decode_chunks(chunks_so_far(out))      # raises if a tuple does not fit its relation
    streamed = [r for r in recs if r["type"] == "insert" and r["new"]["tenant_id"] == "big"]
    assert streamed and all(list(r["new"]) == ["id", "tenant_id", "extra"] for r in streamed)
    (after,) = [r for r in recs if r["type"] == "insert" and r["new"]["id"] == 100000]
    assert after["new"] == {"id": 100000, "tenant_id": "after"}
    i = recs.index(after)
    assert [r["type"] for r in recs[i - 2:i]] == ["begin", "relation"]
    assert [c["name"] for c in recs[i - 1]["columns"]] == ["id", "tenant_id"]
    done = bwproto.reassemble(recs)
    assert [ids(t) for t in done] == [[0], [100000]]
