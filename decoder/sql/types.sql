-- Every built-in type family in JSON, independent of the session's DateStyle, TimeZone,
-- IntervalStyle and extra_float_digits. (The binary format's values are checked by
-- tests/decoder with the reference reader.)
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE types_t (
  id serial PRIMARY KEY, tenant_id int,
  b bool, i2 int2, i4 int4, i8 int8, o oid, f4 float4, f8 float8, n numeric, n52 numeric(5,2),
  m money, c char(3), vc varchar(10), t text, nm name, by bytea, u uuid,
  d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
  j json, jb jsonb, x xml, ai int[], at text[], ats timestamptz[], r int4range, tsr tstzrange,
  e mood, p pair, dom posint, inet_ inet, cidr_ cidr, mac macaddr, pt point, bits bit(4),
  vb varbit, tsv tsvector, pl pg_lsn
);
SELECT 'init' FROM pg_create_logical_replication_slot('types', 'breakwater');
SET DateStyle = 'SQL, DMY'; SET TimeZone = 'Asia/Kolkata'; SET IntervalStyle = 'sql_standard';
SET extra_float_digits = 0;
INSERT INTO types_t (tenant_id, b, i2, i4, i8, o, f4, f8, n, n52, m, c, vc, t, nm, by, u,
  d, tm, ttz, ts, tstz, iv, j, jb, x, ai, at, ats, r, tsr, e, p, dom, inet_, cidr_, mac, pt, bits, vb, tsv, pl)
VALUES (42, true, -32768, -2147483648, -9223372036854775808, 4294967295, 1.1, 0.1, 123456789012345678901234567890.123456789, 1.5,
  12.34, 'ab', 'varchar', E'quote " backslash \\ newline \n tab \t bell \x07 unicode é 😀', 'nm', '\xdeadbeef00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '2024-02-29', '13:14:15.123456', '13:14:15+05:30', '2024-02-29 13:14:15.5', '2024-02-29 13:14:15.5+05:30', '1 year 2 months 3 days 04:05:06.7',
  '{"k": [1, 2.50, "x"], "n": null}', '{"k": [1, 2.50, "x"], "n": null}', '<a>x</a>', '{1,NULL,3}', '{"a b",c}', '{"2024-01-01 00:00:00+00"}',
  '[1,10)', '[2024-01-01 00:00+00,2024-02-01 00:00+00)', 'happy', '(1,"x y")', 7, '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '(1.5,2)',
  B'1010', B'101', 'a fat cat', '16/B374D848');
INSERT INTO types_t (tenant_id, f4, f8, n, d, ts, tstz, t, vc)
VALUES (42, 'NaN', '-Infinity', 'NaN', 'infinity', '-infinity', 'infinity', '', ''),
       (42, '-0', '1e300', '-Infinity', '-infinity', 'infinity', '-infinity', NULL, NULL),
       (42, 3.4e38, 5e-324, '0.000000000000000000001', '0001-01-01 BC', '0001-01-01 00:00:00 BC', '294276-12-31 23:59:59.999999+00', 'x', 'y');
INSERT INTO types_t (tenant_id) VALUES (NULL);
SELECT * FROM bw('types');
-- the reading session's settings are restored afterwards
SHOW DateStyle; SHOW TimeZone; SHOW IntervalStyle; SHOW extra_float_digits;
RESET DateStyle; RESET TimeZone; RESET IntervalStyle; RESET extra_float_digits;
SELECT pg_drop_replication_slot('types');
DROP TABLE types_t; DROP TYPE mood; DROP TYPE pair; DROP DOMAIN posint;
