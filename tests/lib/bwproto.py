"""Reference reader of the Breakwater binary protocol, version 1, written from docs/protocol.md.

It owns four things and nothing else:
  * splitting a chunk (version byte + framed records) into records, skipping unknown tags and
    ignoring bytes appended to known bodies, as the spec asks of a version-1 reader;
  * the relid -> relation map a reader keeps for one decoding session (`Reader.relations`);
  * turning records into plain dicts, and 'b' values of the spec's value table into Python values;
  * putting streamed transactions back together (`Reassembler`, `reassemble`), as the spec's
    "Streamed transactions" section says.

Records come out as dicts with a "type" key: begin, commit, relation, insert, update, delete,
truncate, message, and for streamed transactions stream_start, stream_stop, subxact,
stream_abort, stream_commit. Tuples are dicts column name -> value in relation-record order; NULL is None,
an unchanged TOASTed value is the `UNCHANGED` sentinel, a 't' value is a str. 'b' values map to
bool, int, float, decimal.Decimal (NaN and +-Infinity included), datetime.date / time / datetime
(timestamptz as an aware UTC datetime), `Interval`, uuid.UUID and bytes; infinite dates and
timestamps are the strings 'infinity' / '-infinity'. A 'b' value of a type outside the table
(value-encoding=send) is returned as its raw bytes. Truncated or malformed input raises
`ProtocolError`; a value Python cannot hold (a date after 9999, time 24:00) raises ValueError.
"""

import datetime
import decimal
import struct
import uuid
from typing import NamedTuple

PROTOCOL_VERSION = 1


class ProtocolError(Exception):
    """The bytes do not follow docs/protocol.md (truncated, bad kind, unknown relid, ...)."""


class _Unchanged:
    def __repr__(self):
        return "UNCHANGED"


UNCHANGED = _Unchanged()


class Interval(NamedTuple):
    """PostgreSQL interval, exact: months and days are not folded into time."""

    months: int
    days: int
    microseconds: int


# type oids of the spec's value table
BOOL, BYTEA, INT8, INT2, INT4, OID = 16, 17, 20, 21, 23, 26
FLOAT4, FLOAT8 = 700, 701
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ = 1082, 1083, 1114, 1184, 1186, 1266
NUMERIC, UUID = 1700, 2950

UNIX_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
PG_EPOCH = datetime.datetime(2000, 1, 1)
PG_EPOCH_DATE = datetime.date(2000, 1, 1)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


_STRUCTS = {}


class _Buf:
    """Bounds-checked big-endian reads over bytes[pos:end]."""

    def __init__(self, data, pos=0, end=None, what="chunk"):
        self.data, self.pos = data, pos
        self.end = len(data) if end is None else end
        self.what = what

    def take(self, n, field):
        if self.pos + n > self.end:
            raise ProtocolError(
                f"{self.what} truncated at byte {self.pos}: {field} needs {n} bytes, "
                f"{self.end - self.pos} left")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return bytes(b)

    def unpack(self, fmt, field):
        s = _STRUCTS.get(fmt) or _STRUCTS.setdefault(fmt, struct.Struct(">" + fmt))
        v = s.unpack(self.take(s.size, field))
        return v[0] if len(v) == 1 else v

    def u8(self, f): return self.unpack("B", f)
    def u16(self, f): return self.unpack("H", f)
    def u32(self, f): return self.unpack("I", f)
    def u64(self, f): return self.unpack("Q", f)
    def i32(self, f): return self.unpack("i", f)
    def i64(self, f): return self.unpack("q", f)

    def name(self, field):
        raw = self.take(self.u16(field + " length"), field)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"{self.what}: {field} is not UTF-8: {raw!r}") from e

    def left(self):
        return self.end - self.pos


# ---- values -----------------------------------------------------------------------------------

def _numeric(b):
    if len(b) < 8:
        raise ProtocolError(f"numeric value of {len(b)} bytes, need at least 8")
    ndigits, weight, sign, dscale = struct.unpack(">HhHH", b[:8])
    if sign == 0xC000:
        return decimal.Decimal("NaN")
    if sign == 0xD000:
        return decimal.Decimal("Infinity")
    if sign == 0xF000:
        return decimal.Decimal("-Infinity")
    if sign not in (0x0000, 0x4000):
        raise ProtocolError(f"numeric sign 0x{sign:04x} is not one the spec defines")
    if len(b) != 8 + 2 * ndigits:
        raise ProtocolError(f"numeric with {ndigits} digits has {len(b)} bytes, expected {8 + 2 * ndigits}")
    groups = struct.unpack(f">{ndigits}H", b[8:])
    if any(g > 9999 for g in groups):
        raise ProtocolError(f"numeric digit out of base-10000 range in {groups}")
    digits = "".join(f"{g:04d}" for g in groups) or "0"
    exp = (weight - ndigits + 1) * 4 if ndigits else 0
    # present it with exactly dscale decimals, as PostgreSQL prints it
    if exp > -dscale:
        digits += "0" * (exp + dscale)
    elif exp < -dscale:
        cut = -dscale - exp
        if digits[-cut:].strip("0"):
            raise ProtocolError(f"numeric has nonzero digits beyond its display scale {dscale}")
        digits = digits[:-cut] or "0"
    return decimal.Decimal((1 if sign == 0x4000 else 0, tuple(int(c) for c in digits), -dscale))


def _fixed(fmt, b, typ):
    size = struct.calcsize(">" + fmt)
    if len(b) != size:
        raise ProtocolError(f"{typ} value of {len(b)} bytes, expected {size}")
    v = struct.unpack(">" + fmt, b)
    return v[0] if len(v) == 1 else v


def _time(us):
    if not 0 <= us < 86400 * 10**6:
        raise ValueError(f"time of {us} microseconds since midnight does not fit datetime.time")
    s, us = divmod(us, 10**6)
    return datetime.time(s // 3600, s // 60 % 60, s % 60, us)


def _timestamp(us, tz):
    if us == INT64_MIN:
        return "-infinity"
    if us == INT64_MAX:
        return "infinity"
    try:
        ts = PG_EPOCH + datetime.timedelta(microseconds=us)
    except OverflowError as e:
        raise ValueError(f"timestamp {us} us from 2000-01-01 is out of Python's range") from e
    return ts.replace(tzinfo=datetime.timezone.utc) if tz else ts


def _date(days):
    if days == INT32_MIN:
        return "-infinity"
    if days == INT32_MAX:
        return "infinity"
    try:
        return PG_EPOCH_DATE + datetime.timedelta(days=days)
    except OverflowError as e:
        raise ValueError(f"date {days} days from 2000-01-01 is out of Python's range") from e


def decode_binary(typoid, b):
    """Decode one 'b' value of type `typoid`; types outside the spec's table stay bytes."""
    if typoid == BOOL:
        v = _fixed("B", b, "bool")
        if v > 1:
            raise ProtocolError(f"bool value {v}, expected 0 or 1")
        return bool(v)
    if typoid == INT2:
        return _fixed("h", b, "int2")
    if typoid == INT4:
        return _fixed("i", b, "int4")
    if typoid == INT8:
        return _fixed("q", b, "int8")
    if typoid == OID:
        return _fixed("I", b, "oid")
    if typoid == FLOAT4:
        return _fixed("f", b, "float4")
    if typoid == FLOAT8:
        return _fixed("d", b, "float8")
    if typoid == NUMERIC:
        return _numeric(b)
    if typoid == DATE:
        return _date(_fixed("i", b, "date"))
    if typoid == TIME:
        return _time(_fixed("q", b, "time"))
    if typoid == TIMETZ:
        us, west = _fixed("qi", b, "timetz")
        return _time(us).replace(tzinfo=datetime.timezone(datetime.timedelta(seconds=-west)))
    if typoid in (TIMESTAMP, TIMESTAMPTZ):
        return _timestamp(_fixed("q", b, "timestamp"), typoid == TIMESTAMPTZ)
    if typoid == INTERVAL:
        us, days, months = _fixed("qii", b, "interval")
        return Interval(months, days, us)
    if typoid == UUID:
        if len(b) != 16:
            raise ProtocolError(f"uuid value of {len(b)} bytes, expected 16")
        return uuid.UUID(bytes=bytes(b))
    return bytes(b)             # bytea, and any type value-encoding=send adds


def _value(buf, field, typoid=None, fmt=None):
    """One value; `fmt` is the column's format from the relation record (None: any)."""
    kind = chr(buf.u8(field + " kind"))
    if kind == "n":
        return None
    if kind == "u":
        return UNCHANGED
    if kind not in "bt":
        raise ProtocolError(f"{field}: value kind {kind!r} is not one of n, u, b, t")
    if fmt is not None and kind != fmt:
        raise ProtocolError(f"{field}: value kind {kind!r} but the relation record says {fmt!r}")
    raw = buf.take(buf.u32(field + " length"), field)
    if kind == "t":
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"{field}: text value is not UTF-8: {raw[:40]!r}") from e
    return decode_binary(typoid, raw)


# ---- records ----------------------------------------------------------------------------------

def _time_us(us):
    return UNIX_EPOCH + datetime.timedelta(microseconds=us)


class Reader:
    """Reads the chunks of one decoding session in order; keeps the relation map across them."""

    def __init__(self):
        self.relations = {}     # relid -> relation record dict
        self.skipped = 0        # records of unknown tags skipped

    def read_chunk(self, chunk):
        """Decode one chunk into a list of record dicts (each also has its framed "size")."""
        buf = _Buf(memoryview(chunk))
        version = buf.u8("protocol version")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(f"protocol version {version}, this reader knows only {PROTOCOL_VERSION}")
        if buf.left() == 0:
            raise ProtocolError("chunk holds no record")
        out = []
        while buf.left():
            start = buf.pos
            tag = chr(buf.u8("record tag"))
            length = buf.u32(f"{tag!r} record length")
            if length > buf.left():
                raise ProtocolError(
                    f"{tag!r} record at byte {start} has body length {length}, only {buf.left()} bytes left")
            body = _Buf(buf.data, buf.pos, buf.pos + length, f"{tag!r} record at byte {start}")
            buf.pos += length
            parse = self._parsers.get(tag)
            if parse is None:
                self.skipped += 1
                continue
            rec = parse(self, body)
            rec["size"] = 5 + length
            out.append(rec)
        return out

    def read_chunks(self, chunks):
        return [rec for chunk in chunks for rec in self.read_chunk(chunk)]

    def _xact(self, buf, typ):
        return {"type": typ, "xid": buf.u32("xid"), "commit_lsn": buf.u64("commit_lsn"),
                "end_lsn": buf.u64("end_lsn"), "commit_time": _time_us(buf.i64("commit_time"))}

    def _begin(self, buf):
        return self._xact(buf, "begin")

    def _commit(self, buf):
        return self._xact(buf, "commit")

    def _relation(self, buf):
        rel = {"type": "relation", "relid": buf.u32("relid"), "schema": buf.name("schema"),
               "table": buf.name("table")}
        ident = chr(buf.u8("replica identity"))
        if ident not in "dnfi":
            raise ProtocolError(f"replica identity {ident!r} is not one of d, n, f, i")
        rel["replident"] = ident
        rel["tenant_column"] = buf.name("tenant column")
        cols = []
        for i in range(buf.u16("ncolumns")):
            flags = buf.u8(f"column {i} flags")
            fmt = chr(buf.u8(f"column {i} value format"))
            if fmt not in "bt":
                raise ProtocolError(f"column {i} value format {fmt!r} is not 'b' or 't'")
            cols.append({"name": buf.name(f"column {i} name"), "type_oid": buf.u32(f"column {i} type oid"),
                         "typmod": buf.i32(f"column {i} typmod"), "format": fmt,
                         "key": bool(flags & 1), "tenant": bool(flags & 2)})
        rel["columns"] = cols
        self.relations[rel["relid"]] = rel
        return rel

    def _tuple(self, buf, cols, what):
        n = buf.u16(what + " nvalues")
        if n != len(cols):
            raise ProtocolError(f"{what} has {n} values, the relation record gives {len(cols)} columns")
        return {c["name"]: _value(buf, f"{what} column {c['name']!r}", c["type_oid"], c["format"])
                for c in cols}

    def _change(self, buf, typ):
        relid = buf.u32("relid")
        rel = self.relations.get(relid)
        if rel is None:
            raise ProtocolError(f"{typ} for relid {relid} before any relation record for it")
        tenant = _value(buf, "tenant")
        if tenant is UNCHANGED or not (tenant is None or isinstance(tenant, str)):
            raise ProtocolError(f"tenant must be 't' or 'n', got {tenant!r}")
        old_kind = chr(buf.u8("old kind"))
        if old_kind not in "KOX":
            raise ProtocolError(f"old kind {old_kind!r} is not one of K, O, X")
        old = None
        if old_kind == "K":
            old = self._tuple(buf, [c for c in rel["columns"] if c["key"]], "old key")
        elif old_kind == "O":
            old = self._tuple(buf, rel["columns"], "old row")
        new = self._tuple(buf, rel["columns"], "new row") if typ != "delete" else None
        return {"type": typ, "relid": relid, "schema": rel["schema"], "table": rel["table"],
                "tenant": tenant, "old_kind": old_kind, "old": old, "new": new}

    def _insert(self, buf):
        return self._change(buf, "insert")

    def _update(self, buf):
        return self._change(buf, "update")

    def _delete(self, buf):
        return self._change(buf, "delete")

    def _truncate(self, buf):
        options = buf.u8("options")
        relids = [buf.u32("relid") for _ in range(buf.u16("nrelids"))]
        for r in relids:
            if r not in self.relations:
                raise ProtocolError(f"truncate of relid {r} before any relation record for it")
        return {"type": "truncate", "cascade": bool(options & 1), "restart_identity": bool(options & 2),
                "relids": relids, "tables": [(self.relations[r]["schema"], self.relations[r]["table"])
                                             for r in relids]}

    def _message(self, buf):
        transactional = buf.u8("transactional")
        if transactional > 1:
            raise ProtocolError(f"message transactional flag {transactional}, expected 0 or 1")
        return {"type": "message", "transactional": bool(transactional), "lsn": buf.u64("lsn"),
                "prefix": buf.name("prefix"), "content": buf.take(buf.u32("content length"), "content")}

    def _stream_start(self, buf):
        xid, first = buf.u32("xid"), buf.u8("first")
        if first > 1:
            raise ProtocolError(f"stream start first flag {first}, expected 0 or 1")
        return {"type": "stream_start", "xid": xid, "first": bool(first)}

    def _stream_stop(self, buf):
        return {"type": "stream_stop"}

    def _subxact(self, buf):
        return {"type": "subxact", "xid": buf.u32("xid")}

    def _stream_abort(self, buf):
        return {"type": "stream_abort", "xid": buf.u32("xid"), "subxid": buf.u32("subxid"),
                "abort_lsn": buf.u64("abort_lsn")}

    def _stream_commit(self, buf):
        return self._xact(buf, "stream_commit")

    _parsers = {"B": _begin, "C": _commit, "R": _relation, "I": _insert, "U": _update,
                "D": _delete, "T": _truncate, "M": _message, "S": _stream_start, "E": _stream_stop,
                "X": _subxact, "A": _stream_abort, "K": _stream_commit}


def decode_chunks(chunks):
    """Decode a whole session's chunks with a fresh Reader."""
    return Reader().read_chunks(chunks)


# ---- streamed transactions --------------------------------------------------------------------

def xid_follows_or_equals(a, b):
    """PostgreSQL's xid order, modulo 2**32: a is b or was assigned after it."""
    return (a - b) & 0xFFFFFFFF < 0x80000000


_CONTENT = ("insert", "update", "delete", "truncate", "message")


class Reassembler:
    """Turns the decoded records of one decoding session, fed in order, into whole transactions,
    as docs/protocol.md ("Streamed transactions") says a reader does.

    feed(record) returns what the record completes: [] mostly; a transaction at C or K; a
    non-transactional message at once. A transaction is a dict: "type": "transaction", "xid",
    "commit_lsn", "end_lsn", "commit_time", "streamed" (True when it came as stream blocks + K)
    and "records": its insert/update/delete/truncate/message records in order. Relation records
    are not part of any transaction: the Reader applied them to its relation map on arrival.

    `spooled` maps the xid of each streamed transaction still open to its [(subxid, record)];
    `aborted` lists the (xid, subxid, abort_lsn) of every A seen. A new decoding session needs a
    new Reassembler: what is spooled does not carry over (the spec's rule)."""

    def __init__(self):
        self.spooled = {}
        self.aborted = []
        self._txn = None        # the open B..C transaction
        self._block = None      # xid of the open S..E block
        self._subxid = None     # the block's current subtransaction (last X)

    def feed(self, rec):
        t = rec["type"]
        if t == "relation":
            return []
        if self._block is not None:
            return self._in_block(rec, t)
        if self._txn is not None:
            if t in _CONTENT:
                self._txn["records"].append(rec)
                return []
            if t != "commit":
                raise ProtocolError(f"{t} record inside a B..C transaction")
            if rec["xid"] != self._txn["xid"]:
                raise ProtocolError(f"commit of xid {rec['xid']} inside transaction {self._txn['xid']}")
            txn, self._txn = self._txn, None
            return [txn]
        if t == "begin":
            self._txn = self._transaction(rec, False, [])
            return []
        if t == "message" and not rec["transactional"]:
            return [rec]
        if t == "stream_start":
            if rec["first"]:
                self.spooled[rec["xid"]] = []
            elif rec["xid"] not in self.spooled:
                raise ProtocolError(f"stream block of xid {rec['xid']} with first=0, but nothing spooled")
            self._block, self._subxid = rec["xid"], None
            return []
        if t == "stream_abort":
            spool = self._spool(rec["xid"], "stream abort")
            self.aborted.append((rec["xid"], rec["subxid"], rec["abort_lsn"]))
            if rec["subxid"] == rec["xid"]:
                del self.spooled[rec["xid"]]
            else:
                spool[:] = [(sub, r) for sub, r in spool if not xid_follows_or_equals(sub, rec["subxid"])]
            return []
        if t == "stream_commit":
            spool = self._spool(rec["xid"], "stream commit")
            del self.spooled[rec["xid"]]
            return [self._transaction(rec, True, [r for _, r in spool])]
        raise ProtocolError(f"{t} record outside a transaction")

    def _in_block(self, rec, t):
        if t == "stream_stop":
            self._block = self._subxid = None
        elif t == "subxact":
            self._subxid = rec["xid"]
        elif t in _CONTENT and (t != "message" or rec["transactional"]):
            if self._subxid is None:
                raise ProtocolError(f"{t} in the stream block of xid {self._block} before any X record")
            self.spooled[self._block].append((self._subxid, rec))
        else:
            raise ProtocolError(f"{t} record inside the stream block of xid {self._block}")
        return []

    def _spool(self, xid, what):
        if xid not in self.spooled:
            raise ProtocolError(f"{what} for xid {xid}, which has no stream block in this session")
        return self.spooled[xid]

    @staticmethod
    def _transaction(rec, streamed, records):
        return {"type": "transaction", "xid": rec["xid"], "commit_lsn": rec["commit_lsn"],
                "end_lsn": rec["end_lsn"], "commit_time": rec["commit_time"], "streamed": streamed,
                "records": records}


def reassemble(records):
    """What a Reassembler makes of one session's records, in order: transactions and
    non-transactional messages. Raises ProtocolError if a B..C or S..E is left open."""
    r = Reassembler()
    out = [item for rec in records for item in r.feed(rec)]
    if r._txn is not None or r._block is not None:
        raise ProtocolError("the records end inside a transaction or a stream block")
    return out
