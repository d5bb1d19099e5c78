-- Every operation, both formats, transactions with nothing emitted write nothing.
CREATE TABLE basic_t (id int PRIMARY KEY, tenant_id text NOT NULL, name text, qty int);
CREATE TABLE basic_skip (id int PRIMARY KEY);
SELECT 'init' FROM pg_create_logical_replication_slot('basic', 'breakwater');
BEGIN;
INSERT INTO basic_t VALUES (1, 'acme', 'one', 1), (2, 'globex', 'two', 2);
UPDATE basic_t SET qty = qty + 10 WHERE id = 1;
UPDATE basic_t SET id = 3 WHERE id = 2;
DELETE FROM basic_t WHERE id = 1;
COMMIT;
INSERT INTO basic_skip VALUES (1);
INSERT INTO basic_t VALUES (4, 'acme', NULL, NULL);
SELECT * FROM bw('basic', 'tables', 'public.basic_t');
-- a filtered-out transaction leaves no row at all (no empty BEGIN/COMMIT)
INSERT INTO basic_skip VALUES (2);
SELECT count(*) FROM pg_logical_slot_get_binary_changes('basic', NULL, NULL, 'format', 'binary', 'tables', 'public.basic_t');
-- a rolled-back transaction is not decoded
BEGIN; INSERT INTO basic_t VALUES (9, 'acme', 'gone', 0); ROLLBACK;
SELECT count(*) FROM pg_logical_slot_get_changes('basic', NULL, NULL);
-- subtransactions: the aborted one is not decoded
BEGIN;
INSERT INTO basic_t VALUES (10, 'acme', 'kept', 0);
SAVEPOINT s1; INSERT INTO basic_t VALUES (11, 'acme', 'rolled back', 0); ROLLBACK TO s1;
SAVEPOINT s2; INSERT INTO basic_t VALUES (12, 'acme', 'released', 0); RELEASE s2;
COMMIT;
SELECT * FROM bw('basic');
SELECT pg_drop_replication_slot('basic');
DROP TABLE basic_t, basic_skip;
