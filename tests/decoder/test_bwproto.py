"""Unit tests of the reference reader (tests/lib/bwproto.py) on chunks built by hand from
docs/protocol.md. No server needed."""

import datetime
import decimal
import struct
import uuid

import pytest

import bwproto
from bwproto import UNCHANGED, Interval, ProtocolError

UTC = datetime.timezone.utc


# ---- a tiny writer, straight from the spec ----------------------------------------------------

def name(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def rec(tag, body):
    return tag.encode() + struct.pack(">I", len(body)) + body


def chunk(*records, version=1):
    return bytes([version]) + b"".join(records)


def xact(tag, xid=700, commit_lsn=0x1000, end_lsn=0x1030, us=1_700_000_000_000_000):
    return rec(tag, struct.pack(">IQQq", xid, commit_lsn, end_lsn, us))


def relation(relid, cols, schema="public", table="t", ident=b"d", tenant=""):
    """cols: (name, type oid, format, flags) tuples."""
    body = struct.pack(">I", relid) + name(schema) + name(table) + ident + name(tenant)
    body += struct.pack(">H", len(cols))
    for cname, oid, fmt, flags in cols:
        body += bytes([flags]) + fmt.encode() + name(cname) + struct.pack(">Ii", oid, -1)
    return rec("R", body)


def val(kind, data=b""):
    if kind in ("n", "u"):
        return kind.encode()
    return kind.encode() + struct.pack(">I", len(data)) + data


def tup(*values):
    return struct.pack(">H", len(values)) + b"".join(values)


def change(tag, relid, tenant, old_kind, old=None, new=None):
    body = struct.pack(">I", relid) + tenant + old_kind.encode()
    if old is not None:
        body += old
    if new is not None:
        body += new
    return rec(tag, body)


COLS = [("id", bwproto.INT4, "b", 1), ("tenant_id", 25, "t", 2), ("v", 25, "t", 0)]


def sample():
    return chunk(
        xact("B"),
        relation(16384, COLS, tenant="tenant_id"),
        change("I", 16384, val("t", b"acme"), "X",
               new=tup(val("b", struct.pack(">i", 1)), val("t", b"acme"), val("t", "h\u00e9".encode()))),
        change("U", 16384, val("t", b"acme"), "K", old=tup(val("b", struct.pack(">i", 1))),
               new=tup(val("b", struct.pack(">i", 2)), val("t", b"acme"), val("u"))),
        change("D", 16384, val("n"), "K", old=tup(val("b", struct.pack(">i", 2)))),
        xact("C"))


# ---- records ----------------------------------------------------------------------------------

def test_transaction_records():
    recs = bwproto.decode_chunks([sample()])
    assert [r["type"] for r in recs] == ["begin", "relation", "insert", "update", "delete", "commit"]
    b, r, i, u, d, c = recs
    assert b["xid"] == c["xid"] == 700
    assert (b["commit_lsn"], b["end_lsn"]) == (0x1000, 0x1030)
    assert b["commit_time"] == datetime.datetime.fromtimestamp(1_700_000_000, UTC)
    assert r["columns"][0] == {"name": "id", "type_oid": 23, "typmod": -1, "format": "b",
                               "key": True, "tenant": False}
    assert r["columns"][1]["tenant"] and r["tenant_column"] == "tenant_id" and r["replident"] == "d"
    assert i == {"type": "insert", "relid": 16384, "schema": "public", "table": "t", "tenant": "acme",
                 "old_kind": "X", "old": None, "new": {"id": 1, "tenant_id": "acme", "v": "h\u00e9"},
                 "size": i["size"]}
    assert u["old"] == {"id": 1} and u["new"] == {"id": 2, "tenant_id": "acme", "v": UNCHANGED}
    assert d["tenant"] is None and d["old"] == {"id": 2} and d["new"] is None


def test_sizes_add_up():
    data = sample()
    assert 1 + sum(r["size"] for r in bwproto.decode_chunks([data])) == len(data)


def test_relation_map_spans_chunks_and_latest_wins():
    reader = bwproto.Reader()
    reader.read_chunk(chunk(xact("B"), relation(5, [("a", 23, "b", 0)])))
    recs = reader.read_chunk(chunk(change("I", 5, val("n"), "X", new=tup(val("b", b"\0\0\0\7")))))
    assert recs[0]["new"] == {"a": 7}
    reader.read_chunk(chunk(relation(5, [("a", 23, "b", 0), ("b", 25, "t", 0)])))
    recs = reader.read_chunk(chunk(change("I", 5, val("n"), "X",
                                          new=tup(val("b", b"\0\0\0\7"), val("t", b"x")))))
    assert recs[0]["new"] == {"a": 7, "b": "x"}


def test_full_old_row():
    data = chunk(relation(1, COLS, ident=b"f"),
                 change("D", 1, val("t", b"x"), "O",
                        old=tup(val("b", b"\0\0\0\1"), val("t", b"x"), val("n"))))
    (_, d) = bwproto.decode_chunks([data])
    assert d["old_kind"] == "O" and d["old"] == {"id": 1, "tenant_id": "x", "v": None}


def test_truncate_and_messages():
    data = chunk(xact("B"), relation(1, COLS), relation(2, COLS, table="u"),
                 rec("T", bytes([3]) + struct.pack(">HII", 2, 1, 2)),
                 rec("M", bytes([1]) + struct.pack(">Q", 99) + name("bw") + struct.pack(">I", 3) + b"a\0b"),
                 xact("C"))
    recs = bwproto.decode_chunks([data])
    t, m = recs[3], recs[4]
    assert t["cascade"] and t["restart_identity"] and t["tables"] == [("public", "t"), ("public", "u")]
    assert m == {"type": "message", "transactional": True, "lsn": 99, "prefix": "bw", "content": b"a\0b",
                 "size": m["size"]}


def test_unknown_tags_are_skipped_and_appended_bytes_ignored():
    begin = struct.pack(">IQQq", 1, 2, 3, 4)
    data = chunk(rec("Z", b"whatever"), rec("B", begin + b"future fields"), rec("z", b""), xact("C"))
    reader = bwproto.Reader()
    recs = reader.read_chunk(data)
    assert [r["type"] for r in recs] == ["begin", "commit"] and reader.skipped == 2
    assert recs[0]["xid"] == 1 and recs[0]["size"] == 5 + len(begin) + len(b"future fields")


# ---- streamed transactions ----------------------------------------------------------------------

def s_rec(xid, first):
    return rec("S", struct.pack(">IB", xid, first))


def x_rec(subxid):
    return rec("X", struct.pack(">I", subxid))


def a_rec(xid, subxid, lsn=0x2000):
    return rec("A", struct.pack(">IIQ", xid, subxid, lsn))


def ins(relid, i):
    return change("I", relid, val("n"), "X", new=tup(val("b", struct.pack(">i", i)), val("n"), val("n")))


def test_stream_records():
    recs = bwproto.decode_chunks([chunk(s_rec(800, 1), relation(1, COLS), x_rec(801), ins(1, 5), rec("E", b"")),
                                  chunk(a_rec(800, 801, 0x1234)),
                                  chunk(xact("K", xid=800, commit_lsn=0x3000, end_lsn=0x3040))])
    s, r, x, i, e, a, k = recs
    assert s == {"type": "stream_start", "xid": 800, "first": True, "size": 10}
    assert x == {"type": "subxact", "xid": 801, "size": 9} and e == {"type": "stream_stop", "size": 5}
    assert a == {"type": "stream_abort", "xid": 800, "subxid": 801, "abort_lsn": 0x1234, "size": 21}
    assert k["type"] == "stream_commit" and (k["xid"], k["commit_lsn"], k["end_lsn"]) == (800, 0x3000, 0x3040)
    assert k["commit_time"] == datetime.datetime.fromtimestamp(1_700_000_000, UTC)
    with pytest.raises(ProtocolError, match="first flag 2"):
        bwproto.decode_chunks([chunk(s_rec(800, 2))])


def feed_all(*chunks):
    r = bwproto.Reassembler()
    out = [item for rec in bwproto.decode_chunks(chunks) for item in r.feed(rec)]
    return r, out


def inserted(item):
    return [rec["new"]["id"] for rec in item["records"]]


def test_reassembly_of_a_streamed_commit_between_plain_transactions():
    r, out = feed_all(
        chunk(s_rec(800, 1), relation(1, COLS), x_rec(800), ins(1, 1), x_rec(801), ins(1, 2), rec("E", b"")),
        chunk(xact("B", xid=802), ins(1, 100), xact("C", xid=802)),
        chunk(s_rec(800, 0), x_rec(801), ins(1, 3)),     # a block spans chunks
        chunk(x_rec(800), ins(1, 4), rec("E", b"")),
        chunk(rec("M", bytes([0]) + struct.pack(">Q", 9) + name("bw") + struct.pack(">I", 0))),
        chunk(xact("K", xid=800)))
    assert [(i["type"], i.get("xid"), i.get("streamed")) for i in out] == \
        [("transaction", 802, False), ("message", None, None), ("transaction", 800, True)]
    assert inserted(out[0]) == [100] and inserted(out[2]) == [1, 2, 3, 4]
    assert out[2]["commit_lsn"] == 0x1000 and out[2]["end_lsn"] == 0x1030
    assert r.spooled == {}


def test_reassembly_of_aborts():
    # 801 and 803 roll back; 802, assigned after 801, is one of 801's subtransactions and goes
    # with it even though its own abort is not seen; 804 was assigned after 803 rolled back
    r, out = feed_all(
        chunk(s_rec(800, 1), relation(1, COLS), x_rec(800), ins(1, 1), x_rec(801), ins(1, 2), x_rec(802),
              ins(1, 3), rec("E", b"")),
        chunk(a_rec(800, 801)),
        chunk(s_rec(800, 0), x_rec(800), ins(1, 4), x_rec(803), ins(1, 5), rec("E", b"")),
        chunk(a_rec(800, 803)),
        chunk(s_rec(800, 0), x_rec(804), ins(1, 6), rec("E", b"")),
        chunk(s_rec(900, 1), x_rec(900), ins(1, 7), rec("E", b"")),
        chunk(a_rec(900, 900)),
        chunk(xact("K", xid=800)))
    (txn,) = out
    assert inserted(txn) == [1, 4, 6]
    assert r.aborted == [(800, 801, 0x2000), (800, 803, 0x2000), (900, 900, 0x2000)] and r.spooled == {}


def test_reassembly_compares_xids_modulo_2_32():
    top, sub1, sub2 = 2**32 - 2, 2**32 - 1, 3          # the counter wrapped inside the transaction
    _, out = feed_all(
        chunk(s_rec(top, 1), relation(1, COLS), x_rec(top), ins(1, 1), x_rec(sub1), ins(1, 2), x_rec(sub2),
              ins(1, 3), rec("E", b"")),
        chunk(a_rec(top, sub2)),
        chunk(xact("K", xid=top)))
    assert inserted(out[0]) == [1, 2]
    assert bwproto.xid_follows_or_equals(3, 2**32 - 1) and not bwproto.xid_follows_or_equals(2**32 - 1, 3)


def test_first_block_starts_the_transaction_again():
    r, out = feed_all(chunk(s_rec(800, 1), relation(1, COLS), x_rec(800), ins(1, 1), rec("E", b"")),
                      chunk(s_rec(800, 1), x_rec(800), ins(1, 2), rec("E", b"")),
                      chunk(xact("K", xid=800)))
    assert inserted(out[0]) == [2]


def test_reassembly_errors():
    head = chunk(relation(1, COLS))
    bad = [
        [chunk(s_rec(800, 0), rec("E", b""))],                           # continues nothing
        [chunk(s_rec(800, 1), ins(1, 1))],                                # change before any X
        [chunk(s_rec(800, 1), xact("B", xid=1))],                         # B inside a block
        [chunk(a_rec(800, 800))],                                         # abort of nothing
        [chunk(xact("K", xid=800))],                                      # commit of nothing
        [chunk(xact("B", xid=1), s_rec(800, 1))],                         # S inside B..C
        [chunk(x_rec(800))],                                              # X outside a block
        [chunk(ins(1, 1))],                                               # change outside
    ]
    for chunks in bad:
        with pytest.raises(ProtocolError):
            bwproto.reassemble(bwproto.decode_chunks([head, *chunks]))
    with pytest.raises(ProtocolError, match="end inside"):
        bwproto.reassemble(bwproto.decode_chunks([chunk(s_rec(800, 1), x_rec(800))]))


# ---- malformed input ------------------------------------------------------------------------------

def test_unknown_version_stops():
    with pytest.raises(ProtocolError, match="version 2"):
        bwproto.decode_chunks([chunk(xact("B"), version=2)])


def test_empty_chunk():
    with pytest.raises(ProtocolError):
        bwproto.decode_chunks([b""])
    with pytest.raises(ProtocolError, match="no record"):
        bwproto.decode_chunks([b"\x01"])


def test_every_cut_inside_a_record_is_an_error():
    data = sample()
    boundaries, pos = {1}, 1
    while pos < len(data):
        pos += 5 + struct.unpack(">I", data[pos + 1:pos + 5])[0]
        boundaries.add(pos)
    for cut in range(2, len(data)):
        if cut in boundaries:
            bwproto.decode_chunks([data[:cut]])
        else:
            with pytest.raises(ProtocolError):
                bwproto.decode_chunks([data[:cut]])


def test_body_shorter_than_its_fields():
    with pytest.raises(ProtocolError, match="truncated"):
        bwproto.decode_chunks([chunk(rec("B", struct.pack(">IQQ", 1, 2, 3)))])


def test_bad_content():
    with pytest.raises(ProtocolError, match="relid 9"):
        bwproto.decode_chunks([chunk(change("I", 9, val("n"), "X", new=tup()))])
    rel = relation(1, COLS)
    bad = [
        change("I", 1, val("n"), "Q", new=tup()),                                   # old kind
        change("I", 1, val("n"), "X", new=tup(val("n"))),                           # nvalues
        change("I", 1, val("n"), "X", new=tup(val("t", b"1"), val("n"), val("n"))),  # format
        change("I", 1, val("n"), "X", new=tup(val("n"), val("x"), val("n"))),       # kind
        change("I", 1, val("b", b"xy"), "X", new=tup(val("n"), val("n"), val("n"))),  # tenant
        change("I", 1, val("n"), "X", new=tup(val("b", b"\0\0\1"), val("n"), val("n"))),  # int4 size
    ]
    for c in bad:
        with pytest.raises(ProtocolError):
            bwproto.decode_chunks([chunk(rel, c)])


# ---- values -------------------------------------------------------------------------------------

def numeric(sign, weight, dscale, *digits):
    return struct.pack(f">HhHH{len(digits)}H", len(digits), weight, sign, dscale, *digits)


@pytest.mark.parametrize("raw,expected", [
    (numeric(0, 0, 0), "0"),
    (numeric(0, 0, 2), "0.00"),
    (numeric(0, 0, 2, 1, 5000), "1.50"),
    (numeric(0, 1, 0, 1), "10000"),
    (numeric(0x4000, 1, 3, 1, 2345, 6780), "-12345.678"),
    (numeric(0, -1, 4, 1), "0.0001"),
    (numeric(0, -3, 10, 1200), "0.0000000012"),
    (numeric(0, 3, 0, 9999, 9999, 9999, 9999), "9999999999999999"),
    (numeric(0, 0, 1, 3, 1000), "3.1"),          # zero digits beyond dscale are dropped
])
def test_numeric(raw, expected):
    got = bwproto.decode_binary(bwproto.NUMERIC, raw)
    assert got.as_tuple() == decimal.Decimal(expected).as_tuple()  # value and scale


def test_numeric_specials_and_errors():
    d = bwproto.decode_binary
    assert d(bwproto.NUMERIC, numeric(0xC000, 0, 0)).is_nan()
    assert d(bwproto.NUMERIC, numeric(0xD000, 0, 0)) == decimal.Decimal("Infinity")
    assert d(bwproto.NUMERIC, numeric(0xF000, 0, 0)) == decimal.Decimal("-Infinity")
    for raw in (numeric(0x1234, 0, 0), numeric(0, 0, 0, 10000), numeric(0, 0, 0, 1)[:-1],
                numeric(0, 0, 0, 1, 5000), numeric(0, 0, 1, 3, 1400), b"\0\0"):
        with pytest.raises(ProtocolError):
            d(bwproto.NUMERIC, raw)


def test_scalar_values():
    d = bwproto.decode_binary
    assert d(bwproto.BOOL, b"\x01") is True and d(bwproto.BOOL, b"\x00") is False
    assert d(bwproto.INT2, struct.pack(">h", -32768)) == -32768
    assert d(bwproto.INT4, struct.pack(">i", -5)) == -5
    assert d(bwproto.INT8, struct.pack(">q", -(2**63))) == -(2**63)
    assert d(bwproto.OID, struct.pack(">I", 2**32 - 1)) == 2**32 - 1
    assert d(bwproto.FLOAT4, struct.pack(">f", 1.5)) == 1.5
    assert str(d(bwproto.FLOAT8, struct.pack(">d", -0.0))) == "-0.0"
    u = uuid.uuid4()
    assert d(bwproto.UUID, u.bytes) == u
    assert d(bwproto.BYTEA, b"\0\xff") == b"\0\xff"
    assert d(3802, b"\x01{}") == b"\x01{}"        # jsonb under value-encoding=send: raw bytes
    with pytest.raises(ProtocolError):
        d(bwproto.BOOL, b"\x02")
    with pytest.raises(ProtocolError):
        d(bwproto.UUID, b"\0" * 15)


def test_dates_and_times():
    d = bwproto.decode_binary
    assert d(bwproto.DATE, struct.pack(">i", 0)) == datetime.date(2000, 1, 1)
    assert d(bwproto.DATE, struct.pack(">i", -1)) == datetime.date(1999, 12, 31)
    assert d(bwproto.DATE, struct.pack(">i", 2**31 - 1)) == "infinity"
    assert d(bwproto.DATE, struct.pack(">i", -(2**31))) == "-infinity"
    with pytest.raises(ValueError):
        d(bwproto.DATE, struct.pack(">i", 5_000_000))
    us = ((13 * 60 + 14) * 60 + 15) * 10**6 + 16
    assert d(bwproto.TIME, struct.pack(">q", us)) == datetime.time(13, 14, 15, 16)
    tz = d(bwproto.TIMETZ, struct.pack(">qi", us, -5400))      # west of UTC: -5400 is +01:30
    assert tz.replace(tzinfo=None) == datetime.time(13, 14, 15, 16)
    assert tz.utcoffset() == datetime.timedelta(hours=1, minutes=30)
    assert d(bwproto.TIMESTAMP, struct.pack(">q", 10**6)) == datetime.datetime(2000, 1, 1, 0, 0, 1)
    ts = d(bwproto.TIMESTAMPTZ, struct.pack(">q", -1))
    assert ts == datetime.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) and ts.tzinfo == UTC
    assert d(bwproto.TIMESTAMPTZ, struct.pack(">q", 2**63 - 1)) == "infinity"
    assert d(bwproto.TIMESTAMP, struct.pack(">q", -(2**63))) == "-infinity"
    assert d(bwproto.INTERVAL, struct.pack(">qii", -3, 2, 14)) == Interval(14, 2, -3)
    with pytest.raises(ValueError):
        d(bwproto.TIME, struct.pack(">q", 86400 * 10**6))
