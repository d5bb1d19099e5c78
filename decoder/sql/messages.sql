-- Logical decoding messages: only matching prefixes, transactional and not.
CREATE TABLE msg_t (id int PRIMARY KEY, tenant_id text);
SELECT 'init' FROM pg_create_logical_replication_slot('msg', 'breakwater');
BEGIN;
INSERT INTO msg_t VALUES (1, 'acme');
SELECT 'emitted' FROM pg_logical_emit_message(true, 'app.invoice', '{"tenant":"acme","event":"paid"}');
SELECT 'emitted' FROM pg_logical_emit_message(true, 'other', 'not wanted');
COMMIT;
SELECT 'emitted' FROM pg_logical_emit_message(false, 'app.audit', 'outside a transaction');
SELECT 'emitted' FROM pg_logical_emit_message(false, 'app.bin', '\x00ff'::bytea);
BEGIN;
SELECT 'emitted' FROM pg_logical_emit_message(true, 'app.only', 'a transaction with only a message');
COMMIT;
-- no message-prefixes: messages are not sent
SELECT * FROM bw('msg', 'format', 'json');
BEGIN;
INSERT INTO msg_t VALUES (2, 'acme');
SELECT 'emitted' FROM pg_logical_emit_message(true, 'app.invoice', '{"tenant":"acme","event":"paid"}');
SELECT 'emitted' FROM pg_logical_emit_message(true, 'other', 'not wanted');
COMMIT;
SELECT 'emitted' FROM pg_logical_emit_message(false, 'app.audit', 'outside a transaction');
SELECT 'emitted' FROM pg_logical_emit_message(false, 'app.bin', '\x00ff'::bytea);
-- decoding reads flushed WAL only, and a message outside a transaction with an xid is not
-- flushed by itself (PostgreSQL 15): the next commit flushes it
INSERT INTO msg_t VALUES (3, 'acme');
SELECT * FROM bw('msg', 'message-prefixes', 'app.*');
-- binary: same records, prefix filter applies
BEGIN;
SELECT 'emitted' FROM pg_logical_emit_message(true, 'app.x', 'in binary');
COMMIT;
SELECT count(*) AS chunks FROM pg_logical_slot_get_binary_changes('msg', NULL, NULL, 'format', 'binary', 'message-prefixes', 'app.x');
SELECT pg_drop_replication_slot('msg');
DROP TABLE msg_t;
