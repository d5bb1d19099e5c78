\set SHOW_CONTEXT never
-- Tenant tags: default column, per-table overrides, and each missing-tenant mode for a
-- table without the column and for NULL values.
CREATE TABLE ten_default (id int PRIMARY KEY, tenant_id int);
CREATE TABLE ten_org (id int PRIMARY KEY, org_id uuid, tenant_id int);
CREATE TABLE ten_none (id int PRIMARY KEY, v text);
CREATE TABLE ten_pk (tenant_id text, id int, PRIMARY KEY (tenant_id, id));
SELECT 'init' FROM pg_create_logical_replication_slot('tenant', 'breakwater');
INSERT INTO ten_default VALUES (1, 7), (2, NULL);
INSERT INTO ten_org VALUES (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 7);
INSERT INTO ten_none VALUES (1, 'x');
INSERT INTO ten_pk VALUES ('acme', 1);
DELETE FROM ten_pk;     -- the tenant is in the key: deletes carry it
DELETE FROM ten_default WHERE id = 1;  -- the tenant is not in the key: deletes do not
-- pass (default): untagged rows are sent, one warning per table
SELECT * FROM bw('tenant', 'tenant-columns', 'public.ten_org=org_id');
INSERT INTO ten_default VALUES (5, 7), (6, NULL);
INSERT INTO ten_none VALUES (2, 'x');
INSERT INTO ten_pk VALUES ('acme', 2);
DELETE FROM ten_default WHERE id = 5;
-- drop: untagged rows are left out, but a delete whose replica identity cannot carry the
-- tenant is sent untagged (dropping it would hide the delete), with a warning
SELECT * FROM bw('tenant', 'missing-tenant', 'drop');
-- error: a table without the column stops decoding with a hint
INSERT INTO ten_none VALUES (3, 'x');
SELECT * FROM pg_logical_slot_peek_changes('tenant', NULL, NULL, 'missing-tenant', 'error');
SELECT * FROM bw('tenant', 'missing-tenant', 'error', 'exclude-tables', 'public.ten_none');
-- error: a NULL tenant stops decoding
INSERT INTO ten_default VALUES (7, NULL);
SELECT * FROM pg_logical_slot_peek_changes('tenant', NULL, NULL, 'missing-tenant', 'error');
SELECT count(*) FROM pg_logical_slot_get_changes('tenant', NULL, NULL);
-- error: a delete whose replica identity lacks the tenant
DELETE FROM ten_default WHERE id = 7;
SELECT * FROM pg_logical_slot_peek_changes('tenant', NULL, NULL, 'missing-tenant', 'error');
SELECT count(*) FROM pg_logical_slot_get_changes('tenant', NULL, NULL);
-- tenant-columns: the first matching rule wins; a named column a table lacks is a missing tenant
INSERT INTO ten_org VALUES (2, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', 8);
INSERT INTO ten_default VALUES (8, 9);
SELECT * FROM bw('tenant', 'tenant-columns', 'public.ten_org=tenant_id,public.ten_*=org_id');
SELECT pg_drop_replication_slot('tenant');
DROP TABLE ten_default, ten_org, ten_none, ten_pk;
