-- DDL between changes, inside a transaction, dropped columns, renames.
CREATE TABLE ddl_t (id int PRIMARY KEY, tenant_id text, a text, b int);
SELECT 'init' FROM pg_create_logical_replication_slot('ddl', 'breakwater');
INSERT INTO ddl_t VALUES (1, 'acme', 'a1', 1);
ALTER TABLE ddl_t ADD COLUMN c text DEFAULT 'dflt';
INSERT INTO ddl_t VALUES (2, 'acme', 'a2', 2, 'c2');
ALTER TABLE ddl_t DROP COLUMN a;
INSERT INTO ddl_t VALUES (3, 'acme', 3, 'c3');
BEGIN;
INSERT INTO ddl_t VALUES (4, 'acme', 4, 'c4');
ALTER TABLE ddl_t ADD COLUMN d int;
INSERT INTO ddl_t VALUES (5, 'acme', 5, 'c5', 55);
ALTER TABLE ddl_t DROP COLUMN b;
INSERT INTO ddl_t VALUES (6, 'acme', 'c6', 66);
ALTER TABLE ddl_t RENAME COLUMN c TO cc;
ALTER TABLE ddl_t ALTER COLUMN d TYPE text;
UPDATE ddl_t SET d = 'six' WHERE id = 6;
COMMIT;
ALTER TABLE ddl_t RENAME TO ddl_renamed;
INSERT INTO ddl_renamed VALUES (7, 'acme', 'c7', '77');
CREATE SCHEMA ddl_s;
ALTER TABLE ddl_renamed SET SCHEMA ddl_s;
INSERT INTO ddl_s.ddl_renamed VALUES (8, 'acme', 'c8', '88');
ALTER SCHEMA ddl_s RENAME TO ddl_s2;
INSERT INTO ddl_s2.ddl_renamed VALUES (9, 'acme', 'c9', '99');
-- binary: the same stream decodes (relation records per shape are checked with the reader
-- in tests/decoder)
SELECT count(*) > 0 AS decoded FROM pg_logical_slot_peek_binary_changes('ddl', NULL, NULL, 'format', 'binary');
SELECT * FROM bw('ddl');
SELECT pg_drop_replication_slot('ddl');
DROP TABLE ddl_s2.ddl_renamed; DROP SCHEMA ddl_s2;
