-- A 500k-row transaction streams out in bounded chunks (no 1 GB allocation, no growth with
-- transaction size); run again under logical_decoding_work_mem=64kB it spills to disk.
CREATE TABLE big_t (id int PRIMARY KEY, tenant_id int, pad text);
SELECT 'init' FROM pg_create_logical_replication_slot('big', 'breakwater');
INSERT INTO big_t SELECT g, g % 50, 'row ' || g FROM generate_series(1, 500000) g;
SELECT count(*) AS chunks, max(length(data)) <= 65536 + 200 AS bounded,
       sum(length(data)) > 500000 * 20 AS plausible
FROM pg_logical_slot_peek_binary_changes('big', NULL, NULL, 'format', 'binary');
SELECT count(*) AS changes, count(DISTINCT data::jsonb->>'tenant') AS tenants
FROM pg_logical_slot_get_changes('big', NULL, NULL);
SELECT pg_drop_replication_slot('big');
DROP TABLE big_t;
