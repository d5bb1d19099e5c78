"""The plugin's binary format (docs/protocol.md), read through the reference reader and compared
with what PostgreSQL itself holds."""

import datetime
import decimal
import math

import psycopg
import pytest

import bwproto
from bwproto import UNCHANGED, Interval

UTC = datetime.timezone.utc


def data_changes(records, table=None):
    return [r for r in records if r["type"] in ("insert", "update", "delete")
            and (table is None or r["table"] == table)]


def recreate(conn, table, columns, extra=""):
    conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE; CREATE TABLE {table} ({columns}); {extra}")


def pg_columns(conn, table):
    """(name, type oid, typmod) of the table's live columns, as a relation record lists them."""
    return [tuple(r) for r in conn.execute(
        "SELECT attname::text, atttypid::int8, atttypmod FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,))]


def rel_columns(rel):
    return [(c["name"], c["type_oid"], c["typmod"]) for c in rel["columns"]]


def relations(records, table):
    return [r for r in records if r["type"] == "relation" and r["table"] == table]


def relation(records, table):
    """The table's relation record; it may be sent again (harmless invalidations), but the same."""
    rels = relations(records, table)
    assert rels, f"no relation record for {table}"
    assert all({**r, "size": 0} == {**rels[0], "size": 0} for r in rels), f"{table} changed description"
    return rels[0]


def same(got, want):
    """Value equality that also tells -0.0 from 0.0, NaN from NaN, 1.50 from 1.5 and offsets apart."""
    if isinstance(want, float):
        return isinstance(got, float) and (
            (math.isnan(got) and math.isnan(want))
            or (got == want and math.copysign(1, got) == math.copysign(1, want)))
    if isinstance(want, decimal.Decimal):
        return isinstance(got, decimal.Decimal) and got.as_tuple() == want.as_tuple()
    if isinstance(want, datetime.time):
        return (isinstance(got, datetime.time) and got.replace(tzinfo=None) == want.replace(tzinfo=None)
                and got.utcoffset() == want.utcoffset())
    if isinstance(want, datetime.datetime):
        return (isinstance(got, datetime.datetime) and got == want
                and (got.tzinfo is None) == (want.tzinfo is None)
                and (got.tzinfo is None or got.utcoffset() == datetime.timedelta(0)))
    return type(got) is type(want) and got == want


def assert_rows(got_rows, want_rows, what):
    assert len(got_rows) == len(want_rows), what
    for got, want in zip(got_rows, want_rows):
        for col, w in want.items():
            g = got[col]
            assert same(g, w), f"{what}: row {want.get('id')} column {col}: got {g!r}, PostgreSQL has {w!r}"


def check_transactions(records):
    """Begin/commit framing: every change inside B..C with matching fields."""
    open_begin = None
    for r in records:
        if r["type"] == "begin":
            assert open_begin is None, "begin inside a transaction"
            open_begin = r
            assert r["end_lsn"] > r["commit_lsn"] > 0
            now = datetime.datetime.now(UTC)
            assert now - datetime.timedelta(minutes=10) < r["commit_time"] <= now + datetime.timedelta(seconds=5)
        elif r["type"] == "commit":
            assert open_begin is not None, "commit without begin"
            for k in ("xid", "commit_lsn", "end_lsn", "commit_time"):
                assert r[k] == open_begin[k], f"commit {k} differs from begin"
            open_begin = None
        elif r["type"] != "message" or r["transactional"]:
            assert open_begin is not None, f"{r['type']} outside a transaction"
    assert open_begin is None, "transaction without commit"


def insert_lsn(conn):
    hi, lo = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0].split("/")
    return int(hi, 16) << 32 | int(lo, 16)


# ---- basic changes --------------------------------------------------------------------------

def test_insert_update_delete_truncate(conn, make_slot):
    recreate(conn, "bw_basic", "id int PRIMARY KEY, tenant_id text, v text")
    recreate(conn, "bw_basic2", "id serial PRIMARY KEY, tenant_id text")
    slot = make_slot()
    lsn0, t0 = insert_lsn(conn), datetime.datetime.now(UTC)
    with conn.transaction():
        conn.execute("INSERT INTO bw_basic VALUES (1, 'acme', 'a'), (2, 'acme', 'b')")
    lsn1, t1 = insert_lsn(conn), datetime.datetime.now(UTC)
    conn.execute("UPDATE bw_basic SET v = 'a2' WHERE id = 1")
    conn.execute("UPDATE bw_basic SET id = 3 WHERE id = 2")
    conn.execute("DELETE FROM bw_basic WHERE id = 1")
    conn.execute("INSERT INTO bw_basic2 (tenant_id) VALUES ('t2')")
    conn.execute("TRUNCATE bw_basic, bw_basic2 RESTART IDENTITY CASCADE")
    conn.execute("TRUNCATE bw_basic")
    records = slot.get()
    check_transactions(records)

    relid = conn.execute("SELECT 'bw_basic'::regclass::oid::int8").fetchone()[0]
    rel = relation(records, "bw_basic")
    assert rel["relid"] == relid and rel["schema"] == "public" and rel["replident"] == "d"
    assert rel["tenant_column"] == "tenant_id"
    assert rel_columns(rel) == pg_columns(conn, "bw_basic")
    assert [(c["key"], c["tenant"], c["format"]) for c in rel["columns"]] == \
        [(True, False, "b"), (False, True, "t"), (False, False, "t")]

    got = [(r["type"], r["tenant"], r["old_kind"], r["old"], r["new"]) for r in data_changes(records, "bw_basic")]
    assert got == [
        ("insert", "acme", "X", None, {"id": 1, "tenant_id": "acme", "v": "a"}),
        ("insert", "acme", "X", None, {"id": 2, "tenant_id": "acme", "v": "b"}),
        ("update", "acme", "X", None, {"id": 1, "tenant_id": "acme", "v": "a2"}),
        ("update", "acme", "K", {"id": 2}, {"id": 3, "tenant_id": "acme", "v": "b"}),
        ("delete", None, "K", {"id": 1}, None),         # tenant not in the replica identity
    ]
    # both inserts in one transaction, whose commit lies between the positions and times around it
    begins = [i for i, r in enumerate(records) if r["type"] == "begin"]
    first = records[begins[0]]
    assert lsn0 < first["commit_lsn"] < first["end_lsn"] <= lsn1
    slack = datetime.timedelta(seconds=1)
    assert t0 - slack <= first["commit_time"] <= t1 + slack
    assert records[begins[0] + 1]["type"] == "relation"
    assert [r["type"] for r in records[begins[0]:begins[1]]] == ["begin", "relation", "insert", "insert", "commit"]

    truncates = [r for r in records if r["type"] == "truncate"]
    assert len(truncates) == 2
    relid2 = conn.execute("SELECT 'bw_basic2'::regclass::oid::int8").fetchone()[0]
    assert sorted(truncates[0]["relids"]) == sorted([relid, relid2])
    assert truncates[0]["cascade"] and truncates[0]["restart_identity"]
    assert truncates[1]["relids"] == [relid]
    assert not truncates[1]["cascade"] and not truncates[1]["restart_identity"]


def test_tenants(conn, make_slot):
    recreate(conn, "bw_ten_pk", "tenant_id text, id int, v text, PRIMARY KEY (tenant_id, id)")
    recreate(conn, "bw_ten_none", "id int PRIMARY KEY, v text")
    recreate(conn, "bw_ten_int", "id int PRIMARY KEY, org int")
    slot = make_slot()
    conn.execute("INSERT INTO bw_ten_pk VALUES ('\u00e9cole \u2713', 1, 'x')")
    conn.execute("UPDATE bw_ten_pk SET v = 'y'")
    conn.execute("DELETE FROM bw_ten_pk")
    conn.execute("INSERT INTO bw_ten_none VALUES (1, 'x')")
    conn.execute("INSERT INTO bw_ten_int VALUES (1, 7), (2, NULL)")
    records = slot.peek()
    got = [(r["type"], r["tenant"], r["old"]) for r in data_changes(records, "bw_ten_pk")]
    assert got == [("insert", "\u00e9cole \u2713", None), ("update", "\u00e9cole \u2713", None),
                   ("delete", "\u00e9cole \u2713", {"tenant_id": "\u00e9cole \u2713", "id": 1})]
    rel = relation(records, "bw_ten_pk")
    assert [(c["name"], c["key"], c["tenant"]) for c in rel["columns"]] == \
        [("tenant_id", True, True), ("id", True, False), ("v", False, False)]
    (none,) = data_changes(records, "bw_ten_none")
    assert none["tenant"] is None and relation(records, "bw_ten_none")["tenant_column"] == ""

    # another tenant column, of type int: the tenant is its text form; NULL is no tenant
    records = slot.get(tenant_column="org")
    assert [r["tenant"] for r in data_changes(records, "bw_ten_int")] == ["7", None]
    rel = relation(records, "bw_ten_int")
    assert rel["tenant_column"] == "org" and [c["tenant"] for c in rel["columns"]] == [False, True]


def test_filters_shape_the_records(conn, make_slot):
    recreate(conn, "bw_f_a", "id int PRIMARY KEY, tenant_id text, secret text, v text")
    recreate(conn, "bw_f_b", "id int PRIMARY KEY, tenant_id text")
    slot = make_slot()
    conn.execute("INSERT INTO bw_f_b VALUES (1, 'acme')")
    with conn.transaction():
        conn.execute("INSERT INTO bw_f_a VALUES (1, 'acme', 's', 'v'), (2, NULL, 's', 'v')")
        conn.execute("INSERT INTO bw_f_b VALUES (2, 'acme')")
    conn.execute("UPDATE bw_f_a SET v = 'w'")
    conn.execute("DELETE FROM bw_f_a WHERE id = 1")
    conn.execute("TRUNCATE bw_f_a, bw_f_b")

    records = slot.peek(tables="public.bw_f_a")
    check_transactions(records)
    assert {r["table"] for r in records if r["type"] == "relation"} == {"bw_f_a"}
    assert len([r for r in records if r["type"] == "begin"]) == 4, "the bw_f_b-only transaction has no begin"
    (t,) = [r for r in records if r["type"] == "truncate"]
    assert t["tables"] == [("public", "bw_f_a")]

    records = slot.peek(exclude_tables="public.bw_f_b", exclude_columns="public.bw_f_a.secret")
    rel = relation(records, "bw_f_a")
    assert [c["name"] for c in rel["columns"]] == ["id", "tenant_id", "v"]
    assert [r["new"] for r in data_changes(records) if r["type"] == "insert"] == \
        [{"id": 1, "tenant_id": "acme", "v": "v"}, {"id": 2, "tenant_id": None, "v": "v"}]

    records = slot.peek(tables="public.bw_f_a", actions="insert,delete")
    assert [r["type"] for r in data_changes(records)] == ["insert", "insert", "delete"]
    assert not [r for r in records if r["type"] == "truncate"]

    records = slot.peek(tables="public.bw_f_a", missing_tenant="drop")
    # NULL-tenant rows are dropped; the delete is sent untagged: its replica identity cannot carry
    # the tenant, and dropping it would hide the delete from consumers
    assert [(r["type"], r["tenant"]) for r in data_changes(records)] == \
        [("insert", "acme"), ("update", "acme"), ("delete", None)]

    records = slot.peek(tenant_columns="public.bw_f_a=secret", tables="public.bw_f_a")
    assert relation(records, "bw_f_a")["tenant_column"] == "secret"
    assert {r["tenant"] for r in data_changes(records) if r["type"] != "delete"} == {"s"}


def test_protocol_version_option(conn, make_slot):
    slot = make_slot()
    assert slot.peek(protocol_version="1") == []
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        slot.peek(protocol_version="2")


# ---- values ---------------------------------------------------------------------------------

# column -> (type, values). A value is a literal, or an SQL expression after '='. Row i holds the
# i-th value of each column (NULL past the end of a list); row 0 is all NULLs.
FAMILIES = {
    "b": ("bool", ["true", "false"]),
    "i2": ("int2", ["12", "-32768", "32767", "0"]),
    "i4": ("int4", ["1234", "-2147483648", "2147483647", "-1"]),
    "i8": ("int8", ["123456789012", "-9223372036854775808", "9223372036854775807"]),
    "o": ("oid", ["4000000000", "0", "4294967295"]),
    "f4": ("float4", ["1.1", "-0", "NaN", "Infinity", "-Infinity", "3.4028235e38", "1e-45", "-1.5"]),
    "f8": ("float8", ["3.141592653589793", "-0", "NaN", "Infinity", "-Infinity", "1.7976931348623157e308",
                      "5e-324", "0.1"]),
    "n": ("numeric", ["12345.6789", "NaN", "Infinity", "-Infinity", "0", "0.00", "1.50",
                      "-0.000000000000000000001", "1e1000", "10000", "-12345678901234567890.123456789",
                      "=repeat('9', 131072)::numeric",
                      "=('-' || repeat('9', 1000) || '.' || repeat('1', 16383))::numeric",
                      "0.0001", "99999999.99999999"]),
    "d": ("date", ["2024-02-29", "infinity", "-infinity", "1999-12-31", "0001-01-01", "9999-12-31",
                   "2000-01-01", "1970-01-01"]),
    "t": ("time", ["13:14:15.123456", "00:00", "23:59:59.999999"]),
    "tz": ("timetz", ["13:14:15.5+05:30", "00:00:00-15:59", "23:59:59.999999+15:59", "12:00:00-03",
                      "12:00:00+00"]),
    "ts": ("timestamp", ["2024-02-29 13:14:15.654321", "infinity", "-infinity", "1970-01-01",
                         "0001-01-01 00:00", "9999-12-31 23:59:59.999999", "1999-12-31 23:59:59.999999",
                         "2000-01-01"]),
    "tstz": ("timestamptz", ["2024-02-29 13:14:15.654321+02", "infinity", "-infinity", "1970-01-01 00:00+00",
                             "1999-12-31 23:59:59.999999+00", "0001-01-01 00:00+00",
                             "9999-12-31 23:59:59.999999+00"]),
    "iv": ("interval", ["1 year 2 mons 3 days 04:05:06.789", "-1 mon +2 days -03:00:00.000001", "0",
                        "178000000 years", "-178000000 years", "-2147483648 days", "2562047788 hours",
                        "-2562047788 hours"]),
    "u": ("uuid", ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "00000000-0000-0000-0000-000000000000",
                   "ffffffff-ffff-ffff-ffff-ffffffffffff"]),
    "by": ("bytea", ["\\x00ff10", "\\x", "=decode(repeat('00ff', 5000), 'hex')"]),
}


def sql_value(typ, v):
    return v[1:] if v.startswith("=") else f"{quote(v)}::{typ}"


def fill(conn, table, families):
    """Create `table`: id + one column per family, REPLICA IDENTITY FULL. Returns (table, row count)."""
    recreate(conn, table, "id int PRIMARY KEY, " + ", ".join(f"{c} {t}" for c, (t, _) in families.items()),
             f"ALTER TABLE {table} REPLICA IDENTITY FULL")
    nrows = 1 + max(len(vals) for _, vals in families.values())
    return table, nrows


def insert_rows(conn, table, families, nrows):
    with conn.transaction():
        for i in range(nrows):
            vals = [str(i)] + [sql_value(t, vals[i - 1]) if 0 < i <= len(vals) else "NULL"
                               for t, vals in families.values()]
            conn.execute(f"INSERT INTO {table} VALUES ({', '.join(vals)})")


def expected_rows(conn, table, families):
    """Per row, {column: the Python value the reader must produce}, read back from PostgreSQL."""
    rows = [{"id": i} for (i,) in conn.execute(f"SELECT id FROM {table} ORDER BY id")]
    for col, (typ, _) in families.items():
        if typ == "float4":
            sql = f"{col}::float8"
        elif typ in ("date", "timestamp", "timestamptz"):
            sql = f"CASE WHEN isfinite({col}) THEN {col} END, CASE WHEN NOT isfinite({col}) THEN {col}::text END"
        elif typ == "interval":
            sql = (f"(extract(year FROM {col}) * 12 + extract(month FROM {col}))::int, "
                   f"extract(day FROM {col})::int, "
                   f"(extract(epoch FROM {col} - date_trunc('day', {col})) * 1000000)::int8")
        else:
            sql = col
        for row, vals in zip(rows, conn.execute(f"SELECT {sql} FROM {table} ORDER BY id")):
            if typ == "interval":
                row[col] = None if vals[0] is None else Interval(*vals)
            elif typ in ("date", "timestamp", "timestamptz"):
                row[col] = vals[0] if vals[1] is None else vals[1]
            else:
                row[col] = vals[0]
    return rows


def test_binary_values_match_postgres(conn, make_slot):
    table, nrows = fill(conn, "bw_types", FAMILIES)
    slot = make_slot()
    insert_rows(conn, table, FAMILIES, nrows)
    want = expected_rows(conn, table, FAMILIES)
    conn.execute(f"DELETE FROM {table}")      # REPLICA IDENTITY FULL: old rows carry every value
    records = slot.get()

    rel = relation(records, table)
    assert rel_columns(rel) == pg_columns(conn, table)
    assert all(c["format"] == "b" for c in rel["columns"]), "every type of the spec table is 'b' under auto"
    assert rel["replident"] == "f" and [c["name"] for c in rel["columns"] if c["key"]] == ["id"]
    changes = data_changes(records, table)
    inserts = [r["new"] for r in changes if r["type"] == "insert"]
    deletes = [r for r in changes if r["type"] == "delete"]
    assert_rows(inserts, want, "insert")
    assert all(d["old_kind"] == "O" for d in deletes)
    assert_rows(sorted((d["old"] for d in deletes), key=lambda r: r["id"]), want, "delete old row")
    assert all(v is None for k, v in inserts[0].items() if k != "id"), "row 0 is all NULLs"
    ts = [r["tstz"] for r in inserts if isinstance(r["tstz"], datetime.datetime)]
    assert ts and all(t.tzinfo is not None and t.utcoffset() == datetime.timedelta(0) for t in ts)


# text-form types: the value must be the type's output under the plugin's pinned settings
TEXT_FAMILIES = {
    "tx": ("text", ["h\u00e9llo w\u00f6rld \u2713 \U0001F600", "", "quote ' \" back \\ slash\nnew\tline",
                    "=repeat('\u00e9', 3000)"]),
    "vc": ("varchar(10)", ["", "\u65e5\u672c\u8a9e"]),
    "bp": ("char(5)", ["ab", "", "abcde"]),
    "nm": ("name", ["a_name", ""]),
    "js": ("json", ['{ "a" :  [1, 2.50, "\u00e9"] }', "null", '""']),
    "jb": ("jsonb", ['{ "b": 1, "a" :  [1, 2.50, "\\u00e9"] }', "null", "{}", '"\u2713"']),
    "ai": ("int[]", ["{1,2,NULL,-3}", "{}", "{{1,2},{3,4}}"]),
    "at": ("text[]", ['{"a b","","NULL",NULL,"q\\"uote",\u00e9}', "{}"]),
    "af": ("float8[]", ["{0.1,-0,NaN,Infinity,1e300}"]),
    "ats": ("timestamptz[]", ['{"2024-02-29 13:14:15.5+02",infinity}']),
    "adt": ("date[]", ["{2024-02-29,-infinity}"]),
    "aiv": ("interval[]", ['{"1 year 2 mons 3 days 04:05:06.789","-1 day"}']),
    "aby": ("bytea[]", ['{"\\\\x00ff"}']),
    "en": ("bw_mood", ["happy", "sad \u2639"]),
    "rg": ("int4range", ["[1,10)", "empty"]),
    "tsr": ("tstzrange", ['["2024-01-01 00:00+05",)']),
    "pt": ("point", ["(1.5,-2)"]),
    "ip": ("inet", ["192.168.0.1/24", "::1"]),
    "mo": ("money", ["12.34"]),
}


def text_families(conn):
    conn.execute("DROP TYPE IF EXISTS bw_mood CASCADE; CREATE TYPE bw_mood AS ENUM ('happy', 'sad \u2639')")
    return TEXT_FAMILIES


def expected_text(conn, table, families):
    """Per row, {column: the type's text output}, from a session with the plugin's pinned settings."""
    cols = ", ".join(f"CASE WHEN {c} IS NOT NULL THEN concat({c}) END" for c in families)
    return [dict(zip(["id", *families], row))
            for row in conn.execute(f"SELECT id, {cols} FROM {table} ORDER BY id")]


def test_text_values(cluster, conn, make_slot):
    families = text_families(conn)
    table, nrows = fill(conn, "bw_text", families)
    slot = make_slot()
    insert_rows(conn, table, families, nrows)
    want = expected_text(conn, table, families)
    assert want[1]["bp"] == "ab   " and want[2]["tx"] == "" and want[2]["bp"] == "     "

    # read from a session whose settings differ from the pinned ones in every way that matters
    with cluster.connect(options="-c DateStyle=German,DMY -c IntervalStyle=postgres_verbose "
                                 "-c TimeZone=America/New_York -c extra_float_digits=-5 "
                                 "-c bytea_output=escape -c lc_monetary=C") as other:
        records = slot.get(conn=other)
    rel = relation(records, table)
    assert [c["format"] for c in rel["columns"]] == ["b"] + ["t"] * len(families)
    assert rel_columns(rel) == pg_columns(conn, table)
    inserts = [r["new"] for r in data_changes(records, table)]
    assert_rows(inserts, want, "text value")
    assert inserts[2]["tx"] == "" and inserts[0]["tx"] is None, "empty string is not NULL"


def test_value_encoding_text(conn, make_slot):
    families = {**FAMILIES, **text_families(conn)}
    table, nrows = fill(conn, "bw_alltext", families)
    slot = make_slot()
    insert_rows(conn, table, families, nrows)
    want = expected_text(conn, table, families)
    records = slot.get(value_encoding="text")
    rel = relation(records, table)
    assert all(c["format"] == "t" for c in rel["columns"])
    assert [c["name"] for c in rel["columns"] if c["key"]] == ["id"]
    inserts = [r["new"] for r in data_changes(records, table)]
    want = [{**w, "id": str(w["id"])} for w in want]
    assert_rows(inserts, want, "value-encoding=text")


def test_value_encoding_send(conn, make_slot):
    recreate(conn, "bw_send", "id int PRIMARY KEY, tx text, jb jsonb, ai int[], n numeric")
    slot = make_slot()
    conn.execute("""INSERT INTO bw_send VALUES (1, 'h\u00e9', '{"a": 1}', '{1,2}', 1.5)""")
    records = slot.get(value_encoding="send")
    rel = relation(records, "bw_send")
    assert all(c["format"] == "b" for c in rel["columns"])
    (ins,) = data_changes(records, "bw_send")
    row = ins["new"]
    assert row["id"] == 1 and row["n"] == decimal.Decimal("1.5")
    assert row["tx"] == "h\u00e9".encode()                  # text's send format: the bytes
    assert row["jb"] == b'\x01{"a": 1}'                     # jsonb's: version 1, then text
    want_ai = conn.execute("SELECT array_send('{1,2}'::int[])").fetchone()[0]
    assert row["ai"] == want_ai


# ---- replica identity -----------------------------------------------------------------------

IDENTITIES = {
    # name: (columns, setup, replident, key columns, update-non-key, update-key, delete)
    "default": ("id int PRIMARY KEY, code text NOT NULL, v text", "", "d", ["id"], "X", "K", "K"),
    "default-nopk": ("id int, code text NOT NULL, v text", "", "d", [], "X", "X", "X"),
    "full": ("id int PRIMARY KEY, code text NOT NULL, v text", "REPLICA IDENTITY FULL", "f", ["id"],
             "O", "O", "O"),
    "full-nopk": ("id int, code text NOT NULL, v text", "REPLICA IDENTITY FULL", "f", [], "O", "O", "O"),
    "nothing": ("id int PRIMARY KEY, code text NOT NULL, v text", "REPLICA IDENTITY NOTHING", "n", ["id"],
                "X", "X", "X"),
    "index": ("id int PRIMARY KEY, code text NOT NULL, v text", "REPLICA IDENTITY USING INDEX {t}_code",
              "i", ["code"], "X", "K", "K"),
}


@pytest.mark.parametrize("ident", IDENTITIES)
def test_replica_identity(conn, make_slot, ident):
    columns, setup, replident, keys, upd, upd_key, dele = IDENTITIES[ident]
    table = "bw_ident_" + ident.replace("-", "_")
    recreate(conn, table, columns, f"CREATE UNIQUE INDEX {table}_code ON {table} (code); "
             + (f"ALTER TABLE {table} {setup.format(t=table)}" if setup else ""))
    conn.execute(f"INSERT INTO {table} VALUES (1, 'c1', 'v1')")
    slot = make_slot()
    conn.execute(f"UPDATE {table} SET v = 'v2'")
    key_col = keys[0] if keys else "id"
    conn.execute(f"UPDATE {table} SET {key_col} = {'2' if key_col == 'id' else quote('c2')}")
    conn.execute(f"DELETE FROM {table}")
    records = slot.get()
    rel = relation(records, table)
    assert rel["replident"] == replident
    assert [c["name"] for c in rel["columns"] if c["key"]] == keys
    u1, u2, d = data_changes(records, table)
    row1 = {"id": 1, "code": "c1", "v": "v1"}
    row2 = {"id": 1, "code": "c1", "v": "v2"}
    row3 = {**row2, key_col: 2 if key_col == "id" else "c2"}
    assert (u1["old_kind"], u2["old_kind"], d["old_kind"]) == (upd, upd_key, dele)
    assert u1["new"] == row2 and u2["new"] == row3
    old_of = {"X": lambda row: None, "O": lambda row: row,
              "K": lambda row: {k: row[k] for k in keys}}
    assert u1["old"] == old_of[upd](row1)
    assert u2["old"] == old_of[upd_key](row2)
    assert d["old"] == old_of[dele](row3)


def quote(s):
    return "'" + s.replace("'", "''") + "'"


# ---- TOAST ----------------------------------------------------------------------------------

BIG = "(SELECT string_agg(md5(i::text || random()::text), '') FROM generate_series(1, 400) i)"  # 12800 chars


def test_unchanged_and_changed_toast(conn, make_slot):
    recreate(conn, "bw_toast", "id int PRIMARY KEY, n int, big text",
             "ALTER TABLE bw_toast ALTER COLUMN big SET STORAGE EXTERNAL")
    slot = make_slot()
    big = lambda: conn.execute("SELECT big FROM bw_toast WHERE id = 1").fetchone()[0]  # noqa: E731
    conn.execute(f"INSERT INTO bw_toast VALUES (1, 0, {BIG})")
    v1 = big()
    assert len(v1) == 12800
    assert conn.execute("SELECT pg_column_size(big) FROM bw_toast").fetchone()[0] >= 12800, "stored uncompressed"
    conn.execute("UPDATE bw_toast SET n = 1")                  # big unchanged: 'u'
    conn.execute(f"UPDATE bw_toast SET big = {BIG}")            # big changed: the new value
    v2 = big()
    with conn.transaction():                                   # both in one transaction
        conn.execute("UPDATE bw_toast SET n = 2")
        conn.execute(f"UPDATE bw_toast SET big = {BIG}, n = 3")
    v3 = big()
    conn.execute("ALTER TABLE bw_toast REPLICA IDENTITY FULL")
    conn.execute("UPDATE bw_toast SET n = 4")                  # old row: the whole value
    conn.execute("DELETE FROM bw_toast")
    records = slot.get()
    ins, u1, u2, u3, u4, u5, d = data_changes(records, "bw_toast")
    assert ins["new"]["big"] == v1
    assert u1["new"] == {"id": 1, "n": 1, "big": UNCHANGED}
    assert u2["new"]["big"] == v2
    assert u3["new"] == {"id": 1, "n": 2, "big": UNCHANGED}
    assert u4["new"] == {"id": 1, "n": 3, "big": v3}
    assert u5["old_kind"] == "O" and u5["old"] == {"id": 1, "n": 3, "big": v3}
    assert u5["new"]["n"] == 4 and u5["new"]["big"] in (UNCHANGED, v3)
    assert d["old_kind"] == "O" and d["old"] == {"id": 1, "n": 4, "big": v3}
    assert v1 != v2 != v3


# ---- DDL ------------------------------------------------------------------------------------

def test_relation_resent_after_ddl(conn, make_slot):
    recreate(conn, "bw_ddl", "id int PRIMARY KEY, gone text, a text, b int",
             "ALTER TABLE bw_ddl DROP COLUMN gone")
    slot = make_slot()
    conn.execute("INSERT INTO bw_ddl VALUES (1, 'x', 1)")
    cols = [pg_columns(conn, "bw_ddl")]
    conn.execute("ALTER TABLE bw_ddl ADD COLUMN c date DEFAULT '2024-01-01'")
    conn.execute("INSERT INTO bw_ddl (id, a, b) VALUES (2, 'y', 2)")
    cols.append(pg_columns(conn, "bw_ddl"))
    conn.execute("ALTER TABLE bw_ddl DROP COLUMN b")
    conn.execute("INSERT INTO bw_ddl VALUES (3, 'z', '2024-03-03')")
    cols.append(pg_columns(conn, "bw_ddl"))
    with conn.transaction():                                   # DDL inside a transaction
        conn.execute("INSERT INTO bw_ddl VALUES (4, 'w', '2024-04-04')")
        conn.execute("ALTER TABLE bw_ddl ADD COLUMN d int8")
        conn.execute("INSERT INTO bw_ddl VALUES (5, 'v', '2024-05-05', 5)")
    cols.append(pg_columns(conn, "bw_ddl"))
    conn.execute("ALTER TABLE bw_ddl ALTER COLUMN d TYPE numeric")  # rewrites the table
    conn.execute("INSERT INTO bw_ddl VALUES (6, 'u', NULL, 6.5)")
    cols.append(pg_columns(conn, "bw_ddl"))
    records = slot.get()

    assert [n for n, _, _ in cols[0]] == ["id", "a", "b"], "dropped column 'gone' is not a column"
    latest, seen = None, []
    for r in records:
        if r["type"] == "relation" and r["table"] == "bw_ddl":
            latest = rel_columns(r)
        elif r["type"] in ("insert", "update", "delete"):
            assert r["table"] == "bw_ddl", f"unexpected change {r}"     # nothing from the rewrite
            seen.append((r["new"]["id"], latest, list(r["new"])))
    want_cols = [cols[0], cols[1], cols[2], cols[2], cols[3], cols[4]]
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5, 6]
    for (rid, rel_cols, new_keys), want in zip(seen, want_cols):
        assert rel_cols == want, f"row {rid}: relation columns"
        assert new_keys == [n for n, _, _ in want], f"row {rid}: tuple columns"
    news = [r["new"] for r in data_changes(records, "bw_ddl")]
    assert news[1]["c"] == datetime.date(2024, 1, 1)           # the default, filled in
    assert news[4]["d"] == 5 and news[5]["d"] == decimal.Decimal("6.5")
    assert len(relations(records, "bw_ddl")) >= 5


# ---- chunks ---------------------------------------------------------------------------------

def chunk_records(slot, **options):
    """[(chunk bytes, its records)] of one decoding session; checks what holds for every chunk."""
    reader = bwproto.Reader()
    out = []
    for ch in slot.chunks(peek=True, message_prefixes="bw", **options):
        recs = reader.read_chunk(ch)        # raises if a record spans chunks
        assert ch[0] == 1 and 1 + sum(r["size"] for r in recs) == len(ch)
        types = [r["type"] for r in recs]
        assert "commit" not in types[:-1], f"a commit does not end its chunk: {types}"
        assert "begin" not in types[1:], f"a chunk holds two transactions: {types}"
        if any(r["type"] == "message" and not r["transactional"] for r in recs):
            assert len(recs) == 1, "a non-transactional message is a chunk of its own"
        out.append((ch, recs))
    return out


def test_write_chunk_bytes(conn, make_slot):
    recreate(conn, "bw_chunk", "id int PRIMARY KEY, tenant_id text, v text")
    slot = make_slot()
    with conn.transaction():
        for i in range(20):
            conn.execute("INSERT INTO bw_chunk VALUES (%s, 'acme', repeat('x', %s))", (i, i * 10))
    with conn.transaction():
        conn.execute("UPDATE bw_chunk SET v = 'u' WHERE id < 5")
        conn.execute("SELECT pg_logical_emit_message(true, 'bw', 'in the transaction')")
        conn.execute("SELECT pg_logical_emit_message(true, 'other', 'filtered out')")
        conn.execute("DELETE FROM bw_chunk WHERE id >= 15")
    conn.execute("SELECT pg_logical_emit_message(false, 'bw', '\\x00ff'::bytea)")
    conn.execute("TRUNCATE bw_chunk")

    default = chunk_records(slot)
    records = [r for _, recs in default for r in recs]
    check_transactions(records)
    msgs = [r for r in records if r["type"] == "message"]
    assert [(m["transactional"], m["prefix"], m["content"]) for m in msgs] == \
        [(True, "bw", b"in the transaction"), (False, "bw", b"\x00\xff")]
    assert len(data_changes(records)) == 20 + 5 + 5

    oversized = []
    for limit in (200, 1):
        chunks = chunk_records(slot, write_chunk_bytes=limit)
        assert [r for _, recs in chunks for r in recs] == records, f"write-chunk-bytes={limit}"
        assert len(default) < len(chunks) <= len(records)
        oversized += [f"write-chunk-bytes={limit}: {len(ch)} bytes: {[(r['type'], r['size']) for r in recs]}"
                      for ch, recs in chunks if len(ch) - recs[-1]["size"] > limit]
    assert not oversized, "chunks holding more than the bound plus one record:\n" + "\n".join(oversized)


def flush_wal(conn):
    """A non-transactional message is not flushed by itself; the SQL interface reads flushed WAL."""
    conn.execute("DROP TABLE IF EXISTS pg_temp.bw_flush; CREATE TEMP TABLE bw_flush ()")  # commit flushes


def test_messages_need_a_matching_prefix(conn, make_slot):
    slot = make_slot()
    conn.execute("SELECT pg_logical_emit_message(false, 'bw', 'hi')")
    flush_wal(conn)
    assert slot.peek() == []                    # no message-prefixes: no messages
    assert slot.peek(message_prefixes="other") == []
    (m,) = slot.peek(message_prefixes="other,bw")
    assert m["content"] == b"hi" and not m["transactional"]


def test_large_transaction_chunks(conn, make_slot):
    recreate(conn, "bw_big", "id int PRIMARY KEY, tenant_id text, v text")
    slot = make_slot()
    conn.execute("INSERT INTO bw_big SELECT g, 'acme', 'row ' || g FROM generate_series(1, 200000) g")
    limit = 65536
    chunks = slot.chunks(write_chunk_bytes=limit, tables="public.bw_big")
    reader = bwproto.Reader()
    n, next_id = 0, 1
    for ch in chunks:
        recs = reader.read_chunk(ch)
        assert len(ch) - recs[-1]["size"] <= limit
        for r in recs:
            if r["type"] == "insert":
                assert r["new"] == {"id": next_id, "tenant_id": "acme", "v": f"row {next_id}"}
                next_id += 1
                n += 1
    assert n == 200000
    assert len(chunks) >= 200000 * 30 // limit


def test_domains_are_described_as_their_base_type(conn, make_slot):
    """A domain's values are its base type's: the relation record must name the base type (and
    its typmod), or a reader that decodes by type oid cannot read them."""
    conn.execute("DROP TABLE IF EXISTS bw_dom; DROP DOMAIN IF EXISTS bw_posint; "
                 "DROP DOMAIN IF EXISTS bw_money2; DROP DOMAIN IF EXISTS bw_code")
    conn.execute("CREATE DOMAIN bw_posint AS int CHECK (VALUE > 0); "
                 "CREATE DOMAIN bw_money2 AS numeric(12,2); CREATE DOMAIN bw_code AS varchar(8)")
    conn.execute("CREATE TABLE bw_dom (id bw_posint PRIMARY KEY, tenant_id text, amount bw_money2, "
                 "code bw_code)")
    slot = make_slot()
    conn.execute("INSERT INTO bw_dom VALUES (7, 'acme', 12.5, 'ab')")
    records = slot.get()
    rel = relation(records, "bw_dom")
    cols = {c["name"]: c for c in rel["columns"]}
    assert cols["id"]["type_oid"] == 23 and cols["id"]["format"] == "b"
    assert cols["amount"]["type_oid"] == 1700 and cols["amount"]["typmod"] == (12 << 16 | 2) + 4
    assert cols["code"]["type_oid"] == 1043 and cols["code"]["typmod"] == 8 + 4
    (ins,) = data_changes(records, "bw_dom")
    assert ins["new"]["id"] == 7 and str(ins["new"]["amount"]) == "12.50" and ins["new"]["code"] == "ab"
