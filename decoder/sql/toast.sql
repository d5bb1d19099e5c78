-- Unchanged TOASTed values are marked, never detoasted; changed ones arrive whole.
CREATE TABLE toast_t (id int PRIMARY KEY, tenant_id text, big text, small text);
ALTER TABLE toast_t ALTER COLUMN big SET STORAGE EXTERNAL;
SELECT 'init' FROM pg_create_logical_replication_slot('toast', 'breakwater');
INSERT INTO toast_t VALUES (1, 'acme', repeat('x', 10000), 'a');
UPDATE toast_t SET small = 'b' WHERE id = 1;           -- big unchanged: marked
UPDATE toast_t SET big = repeat('y', 9000) WHERE id = 1; -- big changed: sent whole
DELETE FROM toast_t WHERE id = 1;
SELECT op, length(new->>'big') AS big_len, new->>'small' AS small, unchanged
FROM (SELECT d::jsonb->>'op' AS op, d::jsonb->'new' AS new, d::jsonb->'unchanged_toast' AS unchanged
      FROM bw('toast') AS d) s;
-- the TOAST data of an unchanged value may be gone by the time we decode: never read it
INSERT INTO toast_t VALUES (2, 'acme', repeat('z', 10000), 'a');
UPDATE toast_t SET small = 'c' WHERE id = 2;
DELETE FROM toast_t WHERE id = 2;
VACUUM toast_t;
SELECT count(*) > 0 AS decoded FROM pg_logical_slot_peek_binary_changes('toast', NULL, NULL, 'format', 'binary');
SELECT d::jsonb->>'op' AS op, d::jsonb->'unchanged_toast' AS unchanged, length(d::jsonb->'new'->>'big') AS big_len
FROM bw('toast', 'format', 'json') AS d;
SELECT pg_drop_replication_slot('toast');
DROP TABLE toast_t;
