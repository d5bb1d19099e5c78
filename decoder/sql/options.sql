\set SHOW_CONTEXT never
-- Every option: accepted values, and a clear error for each kind of bad value.
CREATE TABLE opt_t (id int PRIMARY KEY, tenant_id text, secret text);
SELECT 'init' FROM pg_create_logical_replication_slot('opts', 'breakwater');
INSERT INTO opt_t VALUES (1, 'acme', 's');

-- unknown, repeated, valueless
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'no-such-option', '1');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'format', 'json', 'format', 'json');
-- format
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'format', 'xml');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'format', 'binary');
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('opts', NULL, NULL, 'format', 'binary');
SELECT count(*) FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'format', 'json');
-- value-encoding, protocol-version, write-chunk-bytes
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'value-encoding', 'hex');
SELECT count(*) FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'value-encoding', 'send');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'protocol-version', '2');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'protocol-version', 'one');
SELECT count(*) FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'protocol-version', '1');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'write-chunk-bytes', '0');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'write-chunk-bytes', '64k');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'write-chunk-bytes', '999999999999');
-- tables, exclude-tables
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'tables', 'opt_t');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'tables', 'public.opt_t.x');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'tables', 'public.opt_t,,public.x');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'tables', '');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'tables', 'public."opt_t');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'tables', 'public.');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'exclude-tables', 'nodot');
-- tenant-column, tenant-columns, missing-tenant
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'tenant-column', 'a,b');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'tenant-column', '');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'tenant-columns', 'public.opt_t');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'tenant-columns', 'public.opt_t=');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'tenant-columns', 'opt_t=org_id');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'missing-tenant', 'ignore');
-- exclude-columns, actions, message-prefixes
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'exclude-columns', 'public.opt_t');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'actions', 'insert,upsert');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'actions', 'insert,');
SELECT * FROM pg_logical_slot_peek_changes('opts', NULL, NULL, 'message-prefixes', ' , ');

-- accepted forms, each with its effect
SELECT * FROM bw('opts', 'tables', ' public.opt_t , other.* ', 'exclude-columns', 'public.opt_t.secret');
INSERT INTO opt_t VALUES (2, 'acme', 's');
SELECT * FROM bw('opts', 'tables', '*.opt_*', 'exclude-tables', 'public.opt_t');
INSERT INTO opt_t VALUES (3, 'acme', 's');
SELECT * FROM bw('opts', 'tables', '"public".opt_t', 'tenant-column', 'secret', 'actions', 'insert');
UPDATE opt_t SET secret = 'u' WHERE id = 3;
DELETE FROM opt_t WHERE id = 3;
SELECT * FROM bw('opts', 'actions', ' delete ,truncate');
SELECT pg_drop_replication_slot('opts');
DROP TABLE opt_t;
