"""value.format=avro end to end: a real PostgreSQL, a real Kafka broker, a real schema registry
(Apicurio, Confluent API) and a standard consumer (confluent_kafka's AvroDeserializer, which
fetches each message's writer schema from the registry by the id in its frame).

- every built-in type family round-trips, compared value by value with what PostgreSQL says;
  keys, the envelope (op, tenant, xid, commit_lsn, commit_time) and the schemas' types too;
- updates and deletes (old only under REPLICA IDENTITY FULL, the key, unchanged TOAST);
- truncates, and tables without key columns;
- coalescing merges Avro messages (op renamed, unchanged TOAST filled from the held change);
- column and table names that are not legal Avro names are mapped;
- DDL mid-stream under BACKWARD: each message decodes with its own writer schema, the subject
  gains a version per new shape, nothing is lost; an incompatible change stops the relay
  without confirming it, and goes through after the operator relaxes the subject and restarts;
- values and registries the relay cannot get past (NaN in numeric(p,s), a timestamp past year
  294246, a registry that is down or slow) stop it with a clear error and nothing confirmed; a
  registry that fails a few times and recovers only costs retries.

Infinite and BC dates and timestamps have no Python datetime: their rows are read with the same
writer schema, logical types left out, and compared as the integers on the wire.
"""

import datetime
import http.server
import io
import json
import math
import struct
import threading
import urllib.parse

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import confirmed_at_least, insert_lsn, wait_for
from test_coalesce import hdrs, lsn_int
from test_e2e import collect, free_port, started

ENVELOPE_FIELDS = ["op", "unchanged_toast", "xid", "commit_lsn", "commit_time", "tenant", "old",
                   "new", "truncate", "key"]
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
INT32 = (-2 ** 31, 2 ** 31 - 1)     # PostgreSQL's -infinity and infinity on the wire (date)
INT64 = (-2 ** 63, 2 ** 63 - 1)     # (timestamp, timestamptz)

# an odd writing session: none of these may show in what the relay sends
ODD_SESSION = ("-c TimeZone=Asia/Kathmandu -c DateStyle=SQL,DMY -c IntervalStyle=sql_standard "
               "-c extra_float_digits=0")


# ---- helpers -----------------------------------------------------------------------------------

def avro_relay(make_relay, url, tables, **settings):
    """A streaming relay in avro mode on `tables` (a decoder.tables pattern) with the registry
    at `url`; r.topic_of(table) is a table's default topic."""
    r = started(make_relay, value__format="avro", schema_registry__url=url,
                decoder__tables=tables, **settings)
    r.topic_of = lambda table, schema="public": f"{r.prefix}.{schema}.{table}"
    return r


def schema_id(data):
    assert data[:1] == b"\x00" and len(data) > 5, f"not Confluent-framed: {data[:16]!r}"
    return int.from_bytes(data[1:5], "big")


def without_logical_types(schema):
    """The schema with every logicalType left out: a reader of the integers on the wire."""
    if isinstance(schema, list):
        return [without_logical_types(s) for s in schema]
    if isinstance(schema, dict):
        if "logicalType" in schema and schema.get("type") in ("int", "long", "bytes", "string"):
            return schema["type"]
        return {k: without_logical_types(v) for k, v in schema.items()}
    return schema


class Avro:
    """Decodes the relay's messages as any Confluent consumer does."""

    def __init__(self, registry):
        self.registry = registry
        # a request time limit: without one a request the registry never answers hangs the test
        self.client = SchemaRegistryClient({"url": registry.url, "timeout": 10})
        self._values = AvroDeserializer(self.client)
        self._keys = AvroDeserializer(self.client)

    def value(self, topic, rec):
        return self._values(rec.value, SerializationContext(topic, MessageField.VALUE))

    def key(self, topic, rec):
        return self._keys(rec.key, SerializationContext(topic, MessageField.KEY))

    def writer_schema(self, data):
        return json.loads(self.client.get_schema(schema_id(data)).schema_str)

    def raw_value(self, rec):
        """The value read with its writer schema minus logical types (dates, times as integers)."""
        schema = fastavro.parse_schema(without_logical_types(self.writer_schema(rec.value)))
        return fastavro.schemaless_reader(io.BytesIO(rec.value[5:]), schema)

    def versions(self, subject):
        """[(version, schema id)] of a subject, oldest first."""
        quoted = urllib.parse.quote(subject, safe="")
        return [(v, self.registry.request("GET", f"/subjects/{quoted}/versions/{v}")["id"])
                for v in self.registry.request("GET", f"/subjects/{quoted}/versions")]


@pytest.fixture
def avro(registry):
    return Avro(registry)


def row_fields_list(schema):
    """The fields of the row record (Value) of an Envelope schema."""
    old = next(f for f in schema["fields"] if f["name"] == "old")
    return old["type"][1]["fields"]


def row_fields(schema):
    """{field name: type} of the row record (Value) of an Envelope schema."""
    return {f["name"]: f["type"] for f in row_fields_list(schema)}


def pg_row(conn, table, cols, where, args):
    """{column: value} of one row, each column through its SQL expression in `cols`."""
    sel = ", ".join(f'{expr} AS "{name}"' for name, expr in cols.items())
    row = conn.execute(f"SELECT {sel} FROM {table} WHERE {where}", args).fetchone()
    assert row is not None, f"no row of {table} where {where} {args}"
    return dict(zip(cols, row))


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def same(got, want, single=False):
    """Equal, floats bit for bit but NaN (any NaN is NaN) and -0.0 (not 0.0)."""
    if isinstance(want, float) and isinstance(got, float):
        if single:
            want = f32(want)
        if math.isnan(want) or math.isnan(got):
            return math.isnan(want) and math.isnan(got)
        return got == want and math.copysign(1, got) == math.copysign(1, want)
    return type(got) is type(want) and got == want


def assert_same_row(got, want, what, single=()):
    assert got is not None, f"{what}: no row"
    assert list(got) == list(want), f"{what}: fields {list(got)}, columns {list(want)}"
    bad = [(c, got[c], want[c]) for c in want if not same(got[c], want[c], c in single)]
    assert not bad, f"{what}: (column, got, PostgreSQL) differ: {bad}"


def assert_envelope(value, rec, op, table, xid=None, lsns=None):
    """The envelope agrees with the headers and with PostgreSQL: `xid` the transaction's,
    `lsns` (before, after) the insert positions around its commit."""
    h = hdrs(rec.headers)
    assert value["op"] == op == h["op"]
    assert h["table"] == table
    assert value["tenant"] == h.get("tenant")
    assert value["commit_lsn"] == lsn_int(h["lsn"]), (value["commit_lsn"], h["lsn"])
    assert value["xid"] == int(h["xid"])
    micros = (value["commit_time"] - EPOCH) // datetime.timedelta(microseconds=1)
    assert micros == int(h["commit_time_us"])
    if xid is not None:
        assert value["xid"] == xid
    if lsns is not None:
        assert lsn_int(lsns[0]) < value["commit_lsn"] < lsn_int(lsns[1])


def wait_confirmed(conn, r, lsn, timeout=30):
    """Waits until the slot is confirmed up to `lsn` (so all before it is in Kafka); fails at once
    if the relay exits meanwhile."""
    def check():
        if not r.alive():
            pytest.fail(f"the relay exited before confirming {lsn}:\n{r.log()[-3000:]}")
        return confirmed_at_least(conn, r.slot, lsn)
    wait_for(f"the slot to be confirmed up to {lsn}", check, timeout=timeout)


def assert_stopped_unconfirmed(conn, r, before, *needles):
    """The relay exits with status 1 (a failure after streaming started; a sanitizer report
    would give another), its log holds every needle, and the slot is not confirmed past
    `before` (an insert position taken before the change it could not send)."""
    rc = r.wait_exit(timeout=60)
    log = r.log()
    assert rc == 1, log[-3000:]
    missing = [n for n in needles if n not in log]
    assert not missing, f"the log lacks {missing}:\n{log[-3000:]}"
    first_write = conn.execute("SELECT %s::pg_lsn + 1", (before,)).fetchone()[0]
    assert not confirmed_at_least(conn, r.slot, str(first_write)), "confirmed an undelivered change"
    return log


# ---- 1. every built-in type family -------------------------------------------------------------

# (column, SQL type, Avro type of its non-null values); key columns first
TYPE_COLUMNS = [
    ("id", "int", "int"),
    ("code", "text", "string"),
    ("tenant_id", "text", "string"),
    ("b", "bool", "boolean"),
    ("i2", "int2", "int"),
    ("i4", "int4", "int"),
    ("i8", "int8", "long"),
    ("o", "oid", "long"),
    ("f4", "float4", "float"),
    ("f8", "float8", "double"),
    ("n124", "numeric(12,4)", {"type": "bytes", "logicalType": "decimal", "precision": 12,
                               "scale": 4}),
    ("n", "numeric", "string"),
    ("n35", "numeric(3,5)", "string"),      # no Avro decimal: scale > precision
    ("nneg", "numeric(5,-2)", "string"),    # nor a negative scale
    ("t", "text", "string"),
    ("vc", "varchar(20)", "string"),
    ("c", "char(5)", "string"),
    ("by", "bytea", "bytes"),
    ("d", "date", {"type": "int", "logicalType": "date"}),
    ("tm", "time", {"type": "long", "logicalType": "time-micros"}),
    ("ttz", "timetz", "string"),
    ("ts", "timestamp", {"type": "long", "logicalType": "local-timestamp-micros"}),
    ("tstz", "timestamptz", {"type": "long", "logicalType": "timestamp-micros"}),
    ("iv", "interval", "string"),
    ("u", "uuid", {"type": "string", "logicalType": "uuid"}),
    ("j", "json", "string"),
    ("jb", "jsonb", "string"),
    ("ai", "int[]", "string"),
    ("at", "text[]", "string"),
    ("e", "avro_mood", "string"),
    ("dom", "avro_posint", "int"),     # a domain: as its base type
]

# rows in Python's range, read with the standard deserializer: (id, code, {column: SQL value})
TYPE_ROWS = [
    (1, "a", dict(tenant_id="'acme'", b="true", i2="32767", i4="-2147483648",
                  i8="9223372036854775807", o="4294967295", f4="1.1", f8="0.1", n124="1.5",
                  n="'123456789012345678901234567890.123456789'",
                  t=r"E'quote \" backslash \\ newline \n tab \t bell \007 unicode é 😀'",
                  vc="'varchar'", c="'ab'", by=r"'\xdeadbeef00'", d="'2024-02-29'",
                  tm="'13:14:15.123456'", ttz="'13:14:15.5'", ts="'2024-02-29 13:14:15.5'",
                  tstz="'2024-02-29 13:14:15.5'", iv="'1 year 2 months 3 days 04:05:06.7'",
                  u="'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
                  j="""'{"k": [1, 2.50, "x"], "n": null,  "k": 2}'""",
                  jb="""'{"k": [1, 2.50, "x"], "n": null,  "k": 2}'""", ai="'{1,NULL,3}'",
                  at="""'{"a b","",NULL,"é","quo\\"te"}'""", e="'happy'", dom="7")),
    (2, "", dict(tenant_id="'ünï 😀'", b="false", i2="-32768", i4="2147483647",
                 i8="-9223372036854775808", o="0", f4="'NaN'", f8="'Infinity'",
                 n124="99999999.9999", n="'NaN'", t="''", vc="''", c="''", by=r"'\x'",
                 d="'0001-01-01'", tm="'00:00:00'", ttz="'00:00:00+14'",
                 ts="'0001-01-01 00:00:00'", tstz="'0001-01-02 00:00:00'", iv="'0'",
                 u="'00000000-0000-0000-0000-000000000000'", j="'null'", jb="'[]'", ai="'{}'",
                 at="'{}'", e="'sad'", dom="2147483647")),
    (3, "ß", dict(f4="'-Infinity'", f8="'NaN'", n124="-99999999.9999", n="'Infinity'",
                  t="repeat('é', 1000)", c="'abcde'", by=r"'\x00'", d="'9999-12-31'",
                  tm="'23:59:59.999999'", ttz="'23:59:59.999999-15:59'",
                  ts="'9999-12-31 23:59:59.999999'", tstz="'9999-12-31 18:00:00'",
                  iv="'-1 day -00:00:01'", u="'ffffffff-ffff-ffff-ffff-ffffffffffff'",
                  ai="'{{1,2},{3,4}}'", e="'ok'", dom="1")),
    (4, "d", dict(f4="'-0'", f8="'-0'", n124="0", n="'-Infinity'", by=r"'\x0000ff00'",
                  d="'1969-12-31'", ts="'1969-12-31 23:59:59.999999'",
                  tstz="'1970-01-01 05:44:59.999999'", iv="'178000000 years'")),
    (5, "e", dict(f4="1.4e-45", f8="5e-324", n124="0.0001", n="'1e100'", d="'1970-01-01'",
                  ts="'1970-01-01 00:00:00'", tstz="'1970-01-01 00:00:00+00'")),
    (6, "f", dict(f4="3.4028235e38", f8="1.7976931348623157e308", n124="-0.0001",
                  n="'-0.000000001'")),
    (7, "g", dict(f4="-1.17549435e-38", f8="-2.2250738585072014e-308", n124="-1.5",
                  n="'1.50'")),
    (8, "nulls", {}),
    # unscaled values at the edges of a byte: the shortest two's complement
    (9, "h", dict(n124="0.0128", n35="0.00123", nneg="1234567")),
    (10, "i", dict(n124="-0.0128", n35="-0.00999", nneg="-50")),
    (11, "j", dict(n124="-0.0129")),
    (12, "k", dict(n124="0.0255")),
    (13, "l", dict(n124="-0.0256")),
]

# rows outside Python's range, read as integers on the wire: infinities, BC, 24:00
EDGE_ROWS = [
    (101, "inf", dict(d="'infinity'", ts="'infinity'", tstz="'-infinity'", tm="'24:00:00'")),
    (102, "-inf", dict(d="'-infinity'", ts="'-infinity'", tstz="'infinity'")),
    (103, "bc", dict(d="'0044-03-15 BC'", ts="'0001-01-01 00:00:00 BC'",
                     tstz="'4713-11-24 12:00:00+00 BC'", tm="'00:00:00.000001'")),
]
WIRE = {  # column -> (SQL giving the value on the wire when finite, its infinities)
    "d": ("{c} - date '1970-01-01'", INT32),
    "tm": ("(extract(epoch FROM {c}) * 1000000)::bigint", None),
    "ts": ("(extract(epoch FROM {c}) * 1000000)::bigint", INT64),
    "tstz": ("(extract(epoch FROM {c}) * 1000000)::bigint", INT64),
}


# Avro strings in the JSON format's rendering, not in PostgreSQL's text output ("+14:00", not "+14")
JSON_RENDERED = ("ttz", "iv")


def expected_expr(name, sql_type, avro_type):
    """What the standard deserializer must give, as PostgreSQL says it: the text output for
    columns Avro carries as strings (psycopg gives char(n)'s as it is: a cast to text would trim
    its padding), psycopg's value for the others (a domain's as its base type's). JSON_RENDERED
    columns are taken from the plugin's JSON format instead."""
    if avro_type == "string" and not sql_type.startswith("char("):
        return f"{name}::text"
    return f"{name}::int" if name == "dom" else name


def wire_expected(conn, table, rid):
    """{column: the integer its value must be on the wire} of the WIRE columns of row `rid`."""
    exprs = []
    for c, (sql, inf) in WIRE.items():
        finite = sql.format(c=c)
        if inf is not None:
            finite = f"CASE WHEN isfinite({c}) THEN {finite} END"
        exprs += [finite, f"{c}::text"]
    row = conn.execute(f"SELECT {', '.join(exprs)} FROM {table} WHERE id = %s", (rid,)).fetchone()
    out = {}
    for i, (c, (_, inf)) in enumerate(WIRE.items()):
        finite, text = row[2 * i], row[2 * i + 1]
        out[c] = inf[text == "infinity"] if text in ("infinity", "-infinity") else finite
    return out


def insert_rows(c, table, rows):
    """Inserts rows in one transaction; returns (32-bit xid, insert positions before and after)."""
    before = insert_lsn(c)
    with c.transaction():
        for rid, code, values in rows:
            cols = ", ".join(["id", "code", *values])
            c.execute(f"INSERT INTO {table} ({cols}) VALUES (%s, %s{', ' if values else ''}"
                      f"{', '.join(values.values())})", (rid, code))
        xid = int(c.execute("SELECT pg_current_xact_id()::text").fetchone()[0]) & 0xFFFFFFFF
    return xid, (before, insert_lsn(c))


def json_changes(slot):
    """{(id, code): change} of the changes in a breakwater slot, in the plugin's JSON format."""
    changes = {}
    for chunk in slot.chunks(format="json"):
        change = json.loads(chunk)
        changes[(change["key"]["id"], change["key"]["code"])] = change
    return changes


def test_every_type_round_trips(conn, cluster, kafka, registry, avro, make_relay, make_slot):
    table = "avro_types"
    conn.execute(f"DROP TABLE IF EXISTS {table}; DROP DOMAIN IF EXISTS avro_posint; "
                 "DROP TYPE IF EXISTS avro_mood; "
                 "CREATE TYPE avro_mood AS ENUM ('sad', 'ok', 'happy'); "
                 "CREATE DOMAIN avro_posint AS int CHECK (VALUE > 0); "
                 f"CREATE TABLE {table} ("
                 + ", ".join(f"{n} {t}" for n, t, _ in TYPE_COLUMNS) + ", PRIMARY KEY (id, code))")
    r = avro_relay(make_relay, registry.url, f"public.{table}")
    json_slot = make_slot()
    with cluster.connect(options=ODD_SESSION) as odd:
        xid, lsns = insert_rows(odd, table, TYPE_ROWS)
        edge_xid, edge_lsns = insert_rows(odd, table, EDGE_ROWS)
    topic = r.topic_of(table)
    recs = collect(kafka, topic, len(TYPE_ROWS) + len(EDGE_ROWS))
    assert len(recs) == len(TYPE_ROWS) + len(EDGE_ROWS)

    # the schemas: the registered latest versions, and what each message was written with
    key_versions, value_versions = avro.versions(f"{topic}-key"), avro.versions(f"{topic}-value")
    assert len(key_versions) == 1 and len(value_versions) == 1
    assert {schema_id(x.key) for x in recs} == {key_versions[0][1]}
    assert {schema_id(x.value) for x in recs} == {value_versions[0][1]}
    vschema = avro.writer_schema(recs[0].value)
    assert (vschema["name"], vschema["namespace"]) == ("Envelope", f"breakwater.public.{table}")
    assert [f["name"] for f in vschema["fields"]] == ENVELOPE_FIELDS
    assert row_fields(vschema) == {n: ["null", t] for n, _, t in TYPE_COLUMNS}
    kschema = avro.writer_schema(recs[0].key)
    assert kschema["name"] == "Key"
    assert kschema["fields"] == [{"name": "id", "type": "int"}, {"name": "code", "type": "string"}]

    cols = {n: expected_expr(n, s, t) for n, s, t in TYPE_COLUMNS}
    plugin = json_changes(json_slot)
    by_id = {}
    for rec in recs[:len(TYPE_ROWS)]:
        value = avro.value(topic, rec)
        key = avro.key(topic, rec)
        want = pg_row(conn, table, cols, "id = %s AND code = %s", (key["id"], key["code"]))
        said = plugin[(key["id"], key["code"])]
        want.update({c: said["new"][c] for c in JSON_RENDERED})
        assert_envelope(value, rec, "insert", f"public.{table}", xid, lsns)
        assert value["commit_lsn"] == lsn_int(said["commit_lsn"])
        assert value["commit_time"] == datetime.datetime.fromisoformat(said["commit_time"])
        assert value["tenant"] == want["tenant_id"]
        assert value["old"] is None and value["truncate"] is None and value["unchanged_toast"] == []
        assert key == value["key"] == {"id": want["id"], "code": want["code"]}
        assert_same_row(value["new"], want, f"row {key}", single={"f4"})
        by_id[key["id"]] = value["new"]
    assert list(by_id) == [rid for rid, _, _ in TYPE_ROWS], "each row once, in commit order"
    assert [v for k, v in by_id[8].items() if k not in ("id", "code")] == [None] * (
        len(TYPE_COLUMNS) - 2), "NULL in every column"

    sentinels = set()
    for rec in recs[len(TYPE_ROWS):]:
        value = avro.raw_value(rec)
        rid = value["key"]["id"]
        assert value["xid"] == edge_xid
        assert lsn_int(edge_lsns[0]) < value["commit_lsn"] < lsn_int(edge_lsns[1])
        want = wire_expected(conn, table, rid)
        got = {c: value["new"][c] for c in want}
        assert got == want, f"row {rid}: on the wire {got}, from PostgreSQL {want}"
        sentinels |= set(want.values()) & set(INT32 + INT64)
        others = [v for k, v in value["new"].items() if k not in WIRE and k not in ("id", "code")]
        assert others == [None] * len(others)
    assert sentinels == set(INT32 + INT64), "every infinity is exercised"
    assert r.stop() == 0


# ---- 2. updates, deletes, unchanged TOAST ------------------------------------------------------

UD_DDL = ("DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (id int PRIMARY KEY, tenant_id text, v int, "
          "note text); ALTER TABLE {t} ALTER COLUMN note SET STORAGE EXTERNAL")


def squeeze(x):
    """x with long strings shortened, for messages."""
    if isinstance(x, dict):
        return {k: squeeze(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(squeeze(v) for v in x)
    return f"<{len(x)} chars: {x[:8]}...>" if isinstance(x, str) and len(x) > 40 else x


def test_updates_deletes_and_unchanged_toast(conn, kafka, registry, avro, make_relay):
    plain, full, nothing = "avro_ud", "avro_ud_full", "avro_ud_nothing"
    for t in (plain, full, nothing):
        conn.execute(UD_DDL.format(t=t))
    conn.execute(f"ALTER TABLE {full} REPLICA IDENTITY FULL; "
                 f"ALTER TABLE {nothing} REPLICA IDENTITY NOTHING")
    r = avro_relay(make_relay, registry.url, "public.avro_ud*")
    conn.execute(f"INSERT INTO {nothing} VALUES (1, 'acme', 1, 'n'); DELETE FROM {nothing}")
    cols = {c: c for c in ("id", "tenant_id", "v", "note")}
    want = {}
    for t in (plain, full):
        conn.execute(f"INSERT INTO {t} VALUES (1, 'acme', 1, repeat('x', 100000))")
        inserted = pg_row(conn, t, cols, "id = 1", ())
        conn.execute(f"UPDATE {t} SET v = 2 WHERE id = 1")        # the big note is unchanged
        updated = pg_row(conn, t, cols, "id = 1", ())
        conn.execute(f"UPDATE {t} SET id = 10, note = 'small' WHERE id = 1")      # a new key
        moved = pg_row(conn, t, cols, "id = 10", ())
        conn.execute(f"DELETE FROM {t} WHERE id = 10")
        is_full = t == full
        # (op, key, old, new, unchanged_toast, tenant); the key of an update or delete is the
        # old one; a delete's tenant comes from the old row, which only FULL sends whole
        want[t] = [("insert", {"id": 1}, None, inserted, [], "acme"),
                   ("update", {"id": 1}, inserted if is_full else None, {**updated, "note": None},
                    ["note"], "acme"),
                   ("update", {"id": 1}, updated if is_full else None, moved, [], "acme"),
                   ("delete", {"id": 10}, moved if is_full else None, None, [],
                    "acme" if is_full else None)]
    for t in (plain, full):
        topic = r.topic_of(t)
        recs = collect(kafka, topic, 5)
        # the delete is followed by its tombstone: the Avro key, a null value
        assert recs[-1].value is None and hdrs(recs[-1].headers)["op"] == "tombstone"
        assert avro.key(topic, recs[-1]) == {"id": 10}
        recs = recs[:-1]
        got = []
        for rec in recs:
            value = avro.value(topic, rec)
            assert_envelope(value, rec, value["op"], f"public.{t}")
            assert avro.key(topic, rec) == value["key"]
            assert value["truncate"] is None
            got.append((value["op"], value["key"], value["old"], value["new"],
                        value["unchanged_toast"], value["tenant"]))
        assert got == want[t], f"{t}:\n{squeeze(got)}\n!=\n{squeeze(want[t])}"

    # a delete without key information: no key in the envelope, and none for Kafka, whose
    # compacted row topic would refuse it: it goes to topic.keyless, keyed by the table's name
    topic = r.topic_of(nothing)
    recs = collect(kafka, topic, 1)
    assert [avro.value(topic, x)["key"] for x in recs] == [{"id": 1}]
    keyless = f"{r.prefix}.keyless"
    recs = collect(kafka, keyless, 1)
    assert recs[0].key == f"public.{nothing}".encode()
    delete = avro.value(keyless, recs[0])
    assert (delete["op"], delete["key"], delete["old"], delete["new"], delete["tenant"]) == \
        ("delete", None, None, None, None)
    assert r.stop() == 0


def test_coalescing_merges_avro_messages(conn, kafka, registry, avro, make_relay):
    """Coalescing works on Avro messages as on JSON: a merge renames the op (in the value and the
    op header) and fills a column the later change left as unchanged TOAST from the held one."""
    t = "avro_co"
    conn.execute(UD_DDL.format(t=t))
    r = avro_relay(make_relay, registry.url, f"public.{t}", coalesce__tables=f"public.{t}",
                   coalesce__window_ms=3000)
    cols = {c: c for c in ("id", "tenant_id", "v", "note")}
    # every first change of a key goes out at once; the rest waits for the window's end
    conn.execute(f"INSERT INTO {t} VALUES (1, 'acme', 1, 'short'), (2, 'acme', 1, 'two')")
    conn.execute(f"UPDATE {t} SET v = 2, note = repeat('y', 100000) WHERE id = 1")
    conn.execute(f"UPDATE {t} SET v = 3 WHERE id = 1")           # note: unchanged TOAST
    conn.execute(f"DELETE FROM {t} WHERE id = 2")
    conn.execute(f"INSERT INTO {t} VALUES (2, 'acme', 7, 'again')")  # delete + insert: update
    topic = r.topic_of(t)
    recs = collect(kafka, topic, 4)
    got = {}
    for rec in recs:
        value = avro.value(topic, rec)
        assert hdrs(rec.headers)["op"] == value["op"], "the op header follows a merged op"
        got.setdefault(value["new"]["id"], []).append(
            (value["op"], value["new"], value["unchanged_toast"]))
    final = {i: pg_row(conn, t, cols, "id = %s", (i,)) for i in (1, 2)}
    assert got[1] == [("insert", {"id": 1, "tenant_id": "acme", "v": 1, "note": "short"}, []),
                      ("update", final[1], [])], squeeze(got[1])
    assert got[2] == [("insert", {"id": 2, "tenant_id": "acme", "v": 1, "note": "two"}, []),
                      ("update", final[2], [])], squeeze(got[2])
    assert len(kafka.consume_all(topic, idle_ms=300)) == 4, "merged: nothing more"


# ---- 3. truncate, and a table without key columns ----------------------------------------------

def test_truncate_and_keyless_table(conn, kafka, registry, avro, make_relay):
    conn.execute("DROP TABLE IF EXISTS avro_tr_b, avro_tr_a, avro_tr_log; "
                 "CREATE TABLE avro_tr_a (id serial PRIMARY KEY, tenant_id text); "
                 "CREATE TABLE avro_tr_b (id int PRIMARY KEY, a_id int REFERENCES avro_tr_a); "
                 "CREATE TABLE avro_tr_log (tenant_id text, msg text)")
    r = avro_relay(make_relay, registry.url, "public.avro_tr_*")
    conn.execute("INSERT INTO avro_tr_a (tenant_id) VALUES ('acme'); "
                 "INSERT INTO avro_tr_b VALUES (1, 1); "
                 "INSERT INTO avro_tr_log VALUES ('acme', 'no key')")
    conn.execute("TRUNCATE avro_tr_a CASCADE")      # cascades to avro_tr_b
    conn.execute("TRUNCATE avro_tr_log RESTART IDENTITY")
    flags = {"avro_tr_a": {"cascade": True, "restart_identity": False},
             "avro_tr_b": {"cascade": True, "restart_identity": False},
             "avro_tr_log": {"cascade": False, "restart_identity": True}}
    # a truncate has no key: the keyed tables' compacted topics would refuse it, so theirs go to
    # topic.keyless, keyed by the table's name; the keyless table's topic is not compacted
    keyless = {x.key.decode(): x for x in collect(kafka, f"{r.prefix}.keyless", 2)}
    assert sorted(keyless) == ["public.avro_tr_a", "public.avro_tr_b"]
    for t, truncate in flags.items():
        topic, keyed = r.topic_of(t), t != "avro_tr_log"
        recs = collect(kafka, topic, 1 if keyed else 2)
        if keyed:
            recs.append(keyless[f"public.{t}"])
        assert len(recs) == 2
        insert, trunc = (avro.value(topic, x) for x in recs)
        assert insert["op"] == "insert" and insert["new"] is not None
        assert_envelope(trunc, recs[1], "truncate", f"public.{t}")
        assert recs[1].key == (f"public.{t}".encode() if keyed else None)
        assert trunc["truncate"] == truncate
        assert (trunc["tenant"], trunc["old"], trunc["new"], trunc["unchanged_toast"]) == \
            (None, None, None, [])
        assert trunc.get("key") is None
    # a table without key columns: no key field, no Kafka key, no key subject
    topic = r.topic_of("avro_tr_log")
    recs = kafka.consume_all(topic, idle_ms=300)
    assert recs[0].key is None
    assert "key" not in [f["name"] for f in avro.writer_schema(recs[0].value)["fields"]]
    assert avro.value(topic, recs[0])["new"] == {"tenant_id": "acme", "msg": "no key"}
    subjects = registry.subjects()
    assert f"{topic}-value" in subjects and f"{topic}-key" not in subjects
    assert f"{r.topic_of('avro_tr_a')}-key" in subjects
    assert r.stop() == 0


# ---- 4. names that are not legal Avro names ----------------------------------------------------

# column -> its Avro field name: "__" + the name, bytes outside [A-Za-z0-9] as "_" + 2 hex digits
MAPPED = {"order-id": "__order_2did", "id": "id", "Ünits": "___c3_9cnits", "a__b": "__a_5f_5fb",
          "1st": "__1st", "Big Text": "__Big_20Text", "tenant_id": "tenant_id"}


def test_illegal_names_are_mapped(conn, kafka, registry, avro, make_relay):
    table = "Avro-Names"
    conn.execute(f'DROP TABLE IF EXISTS "{table}"; CREATE TABLE "{table}" ("order-id" int, id int, '
                 '"Ünits" text, "a__b" int, "1st" int, "Big Text" text, tenant_id text, '
                 'PRIMARY KEY ("order-id", id)); '
                 f'ALTER TABLE "{table}" ALTER COLUMN "Big Text" SET STORAGE EXTERNAL')
    r = avro_relay(make_relay, registry.url, f"public.{table}", avro__namespace="acme.cdc")
    conn.execute(f"""INSERT INTO "{table}" VALUES (7, 1, '3 kg', 2, 3, repeat('y', 100000), """
                 "'acme')")
    inserted = pg_row(conn, f'"{table}"', {c: f'"{c}"' for c in MAPPED}, "id = 1", ())
    conn.execute(f"""UPDATE "{table}" SET "Ünits" = '4 kg'""")
    updated = pg_row(conn, f'"{table}"', {c: f'"{c}"' for c in MAPPED}, "id = 1", ())
    topic = r.topic_of(table)
    assert topic.endswith(".public.Avro-Names")
    recs = collect(kafka, topic, 2)
    schema = avro.writer_schema(recs[0].value)
    assert schema["namespace"] == "acme.cdc.public.__Avro_2dNames"
    assert list(row_fields(schema)) == list(MAPPED.values())
    assert [f["name"] for f in avro.writer_schema(recs[0].key)["fields"]] == ["__order_2did", "id"]
    ins, upd = (avro.value(topic, x) for x in recs)
    assert avro.key(topic, recs[0]) == ins["key"] == {"__order_2did": 7, "id": 1}
    assert ins["new"] == {MAPPED[c]: v for c, v in inserted.items()}
    assert upd["unchanged_toast"] == ["__Big_20Text"], "Avro field names"
    assert upd["new"] == {MAPPED[c]: v for c, v in updated.items()} | {"__Big_20Text": None}
    assert r.stop() == 0


# ---- 5. DDL mid-stream under BACKWARD ----------------------------------------------------------

DDL_STEPS = [  # (DDL before the insert, the insert, whether the row's shape changed)
    (None, "INSERT INTO avro_ddl (id, tenant_id, a, b) VALUES (1, 'acme', 10, 'b1')", True),
    ("ALTER TABLE avro_ddl ADD COLUMN c int",
     "INSERT INTO avro_ddl (id, tenant_id, a, b, c) VALUES (2, 'acme', 20, 'b2', 22)", True),
    # DDL that leaves the columns as they are: the same schema, no new version
    ("ALTER TABLE avro_ddl ALTER COLUMN c SET STATISTICS 500; COMMENT ON TABLE avro_ddl IS 'x'",
     "INSERT INTO avro_ddl (id, tenant_id, a, b, c) VALUES (3, 'acme', 30, 'b3', 33)", False),
    ("ALTER TABLE avro_ddl DROP COLUMN b",
     "INSERT INTO avro_ddl (id, tenant_id, a, c) VALUES (4, 'acme', 40, 44)", True),
    ("ALTER TABLE avro_ddl RENAME COLUMN a TO a2",
     "INSERT INTO avro_ddl (id, tenant_id, a2, c) VALUES (5, 'acme', 50, 55)", True),
]


def select_row(conn, table, rid):
    cur = conn.execute(f"SELECT * FROM {table} WHERE id = %s", (rid,))
    return dict(zip([d.name for d in cur.description], cur.fetchone()))


def backward_relay(conn, make_relay, registry, table, columns):
    """A fresh `table` (id int PRIMARY KEY, tenant_id text, `columns`) and a streaming relay on
    it that sets BACKWARD on its subjects; returns (relay, topic, value subject)."""
    conn.execute(f"DROP TABLE IF EXISTS {table}; "
                 f"CREATE TABLE {table} (id int PRIMARY KEY, tenant_id text, {columns})")
    r = avro_relay(make_relay, registry.url, f"public.{table}",
                   schema_registry__compatibility="BACKWARD")
    return r, r.topic_of(table), f"{r.topic_of(table)}-value"


def test_ddl_mid_stream_under_backward(conn, kafka, registry, avro, make_relay):
    table = "avro_ddl"
    r, topic, subject = backward_relay(conn, make_relay, registry, table, "a int, b text")
    want = []
    for ddl, insert, _ in DDL_STEPS:
        if ddl:
            conn.execute(ddl)
        conn.execute(insert)
        want.append(select_row(conn, table, len(want) + 1))
    end = insert_lsn(conn)
    recs = collect(kafka, topic, len(DDL_STEPS))
    assert len(recs) == len(DDL_STEPS), "every change once"
    assert [avro.value(topic, x)["new"] for x in recs] == want, \
        "each message decodes with its own writer schema"
    versions = [i for _, i in avro.versions(subject)]
    assert len(versions) == len(set(versions)) == sum(new for _, _, new in DDL_STEPS), \
        "a new version for each new shape, and only then"
    written = [schema_id(x.value) for x in recs]
    assert [i for i, (_, _, new) in zip(written, DDL_STEPS) if new] == versions, \
        "each message written with the version of its shape"
    assert written[2] == written[1]
    assert len(avro.versions(f"{topic}-key")) == 1, "the key did not change"
    assert registry.request("GET", f"/config/{subject}")["compatibilityLevel"] == "BACKWARD"
    wait_confirmed(conn, r, end)

    # an incompatible change: the relay stops before it, says why, confirms nothing of it
    log = retype_and_stop(conn, r, table, "a2", len(DDL_STEPS) + 1)
    # what the registry says of that change when asked itself
    latest = json.loads(registry.request("GET", f"/subjects/{subject}/versions/latest")["schema"])
    for field in row_fields_list(latest):
        if field["name"] == "a2":
            field["type"] = ["null", "string"]
    with pytest.raises(registry.Error) as refused:
        registry.register(subject, latest)
    assert refused.value.status == 409
    assert refused.value.body["message"] in log, refused.value.body["message"]


def retype_and_stop(conn, r, table, column, rid):
    """Changes `column` from int to text and inserts row `rid`: the relay must stop, naming the
    table, the column and the subject, without confirming the insert. Returns its log."""
    conn.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE text USING {column}::text")
    before = insert_lsn(conn)
    conn.execute(f"INSERT INTO {table} (id, tenant_id, {column}) VALUES (%s, 'acme', 'text')",
                 (rid,))
    return assert_stopped_unconfirmed(conn, r, before, f'"public.{table}"', f'"{column}"',
                                      f"{r.topic_of(table)}-value")


def test_relaxed_compatibility_lets_a_restart_through(conn, kafka, registry, avro, make_relay):
    """The way on that avro.md gives after a refused change: the operator relaxes the subject's
    level and restarts; the relay must not set schema_registry.compatibility again on a subject
    that already has versions."""
    table = "avro_relax"
    r, topic, subject = backward_relay(conn, make_relay, registry, table, "a int")
    conn.execute(f"INSERT INTO {table} VALUES (1, 'acme', 1)")
    wait_confirmed(conn, r, insert_lsn(conn))
    retype_and_stop(conn, r, table, "a", 2)

    registry.set_compatibility(subject, "NONE")
    r.start()
    wait_confirmed(conn, r, insert_lsn(conn))
    recs = kafka.consume_all(topic, idle_ms=300)
    assert len(recs) == 2, "the change once, nothing before it again"
    assert avro.value(topic, recs[-1])["new"] == select_row(conn, table, 2)
    assert registry.request("GET", f"/config/{subject}")["compatibilityLevel"] == "NONE", \
        "the operator's level stays"
    assert r.stop() == 0


# ---- values and registries the relay cannot get past -------------------------------------------

SMALL_DDL = ("DROP TABLE IF EXISTS {t}; "
             "CREATE TABLE {t} (id int PRIMARY KEY, tenant_id text, amount {type})")


@pytest.mark.parametrize("sql_type, good, bad, needle", [
    ("numeric(6,2)", "1.5", "'NaN'", "NaN"),
    # past year 294246, microseconds since 1970 overflow a long
    ("timestamptz", "'2024-02-29 13:14:15+00'", "'294270-01-01 00:00:00+00'", "timestamp"),
], ids=["nan-in-numeric(6,2)", "timestamp-past-294246"])
def test_a_value_avro_cannot_hold_stops_the_relay(sql_type, good, bad, needle, conn, kafka,
                                                   registry, avro, make_relay):
    table = "avro_unfit"
    conn.execute(SMALL_DDL.format(t=table, type=sql_type))
    r = avro_relay(make_relay, registry.url, f"public.{table}")
    conn.execute(f"INSERT INTO {table} VALUES (1, 'acme', {good})")
    wait_confirmed(conn, r, insert_lsn(conn))
    before = insert_lsn(conn)
    conn.execute(f"INSERT INTO {table} VALUES (2, 'acme', {bad})")
    assert_stopped_unconfirmed(conn, r, before, '"amount"', f'"public.{table}"', needle)
    topic = r.topic_of(table)
    recs = kafka.consume_all(topic, idle_ms=300)
    first = pg_row(conn, table, {"amount": "amount"}, "id = 1", ())["amount"]
    assert [avro.value(topic, x)["new"]["amount"] for x in recs] == [first], "the row before only"


class FakeRegistry:
    """A stand-in for a schema registry's Confluent API on a free loopback port: every answer
    comes after `delay` seconds; the first `failures` POSTs get HTTP 500, later ones {"id": 1};
    anything else 404. `requests` lists (method, path, body) as they came."""

    def __init__(self, delay=0.0, failures=0):
        self.delay, self.failures = delay, failures
        self.requests = []
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/apis/ccompat/v7"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posts(self):
        with self.lock:
            return [(path, body) for method, path, body in self.requests if method == "POST"]

    def _answer(self, method, path, body):
        with self.lock:
            self.requests.append((method, path, body))
            n = sum(1 for m, _, _ in self.requests if m == "POST")
        if method != "POST":
            return 404, {"error_code": 40401, "message": "not here"}
        if n <= self.failures:
            return 500, {"error_code": 50001, "message": f"store unavailable ({n})"}
        return 200, {"id": 1}

    def _handler(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, doc = fake._answer(self.command, self.path, body)
                threading.Event().wait(fake.delay)
                data = json.dumps(doc).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass    # the client gave up waiting

            do_GET = do_POST = do_PUT = _serve

        return Handler

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_registry():
    made = []

    def make(**kwargs):
        made.append(FakeRegistry(**kwargs))
        return made[-1]

    yield make
    for f in made:
        f.close()


def insert_and_stop(conn, r, table, *needles):
    """Inserts a row the relay cannot register a schema for: it must stop, its log holding the
    needles, and confirm nothing of the row. Returns the log."""
    conn.execute(SMALL_DDL.format(t=table, type="int"))
    before = insert_lsn(conn)
    conn.execute(f"INSERT INTO {table} VALUES (1, 'acme', 1)")
    return assert_stopped_unconfirmed(conn, r, before, *needles)


def test_registry_down_stops_without_confirming(conn, make_relay):
    table = "avro_down"
    url = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"
    r = avro_relay(make_relay, url, f"public.{table}", schema_registry__retry_max_ms="1500")
    log = insert_and_stop(conn, r, table, url, f'"{r.topic_of(table)}-key"', "retry_max_ms")
    assert "retrying" in log, "retried before giving up"


def test_slow_registry_times_out(conn, make_relay, fake_registry):
    table = "avro_slow"
    fake = fake_registry(delay=1.0)
    r = avro_relay(make_relay, fake.url, f"public.{table}", schema_registry__timeout_ms="300",
                   schema_registry__retry_max_ms="1500")
    insert_and_stop(conn, r, table, fake.url, f'"{r.topic_of(table)}-key"', "timed out")
    assert len(fake.posts()) >= 2, "retried before giving up"


def test_registry_errors_are_retried(conn, kafka, make_relay, fake_registry):
    table = "avro_flaky"
    conn.execute(SMALL_DDL.format(t=table, type="int"))
    fake = fake_registry(failures=2)
    r = avro_relay(make_relay, fake.url, f"public.{table}")
    topic = r.topic_of(table)
    conn.execute(f"INSERT INTO {table} VALUES (1, 'acme', 1)")
    wait_confirmed(conn, r, insert_lsn(conn))
    posts = fake.posts()
    prefix = f"/apis/ccompat/v7/subjects/{topic}"
    assert [p for p, _ in posts] == [f"{prefix}-key/versions"] * 3 + [f"{prefix}-value/versions"]
    assert "HTTP 500" in r.log() and "store unavailable (2)" in r.log() and "retrying" in r.log()
    recs = kafka.consume_all(topic, idle_ms=300)
    assert len(recs) == 1
    framed = b"\x00" + (1).to_bytes(4, "big")
    assert recs[0].key.startswith(framed) and recs[0].value.startswith(framed)
    # id 1 is what the fake answered for both: the bodies read with the schemas the relay sent
    schema = fastavro.parse_schema(json.loads(json.loads(posts[-1][1])["schema"]))
    value = fastavro.schemaless_reader(io.BytesIO(recs[0].value[5:]), schema)
    assert value["op"] == "insert" and value["new"]["id"] == 1
    assert r.stop() == 0
