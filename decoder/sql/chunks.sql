-- Packing: JSON over SQL is one change per row unless write-chunk-bytes says otherwise;
-- binary chunks stay near the bound and a commit ends its chunk.
CREATE TABLE ch_t (id int PRIMARY KEY, tenant_id text, pad text);
SELECT 'init' FROM pg_create_logical_replication_slot('chunks', 'breakwater');
INSERT INTO ch_t SELECT g, 't' || (g % 3), repeat('p', 50) FROM generate_series(1, 1000) g;
INSERT INTO ch_t VALUES (1001, 'x', 'second transaction');
SELECT count(*) AS rows FROM pg_logical_slot_peek_changes('chunks', NULL, NULL);
-- NDJSON when packed: every line is a JSON object, 1001 in all
-- (how many objects fit in a chunk depends on their lengths: commit times, LSNs and xids vary)
SELECT count(*) BETWEEN 20 AND 200 AS packed, max(length(data)) <= 4096 + 400 AS bounded,
       sum(array_length(regexp_split_to_array(data, E'\n'), 1)) AS objects
FROM pg_logical_slot_peek_changes('chunks', NULL, NULL, 'write-chunk-bytes', '4096');
SELECT count(*) FROM (SELECT regexp_split_to_table(data, E'\n')::json
  FROM pg_logical_slot_peek_changes('chunks', NULL, NULL, 'write-chunk-bytes', '4096')) s;
-- binary: 64kB default bound, and a tiny bound gives one record per chunk (+ version byte)
SELECT count(*) AS chunks, max(length(data)) <= 65536 + 200 AS bounded
FROM pg_logical_slot_peek_binary_changes('chunks', NULL, NULL, 'format', 'binary');
SELECT count(*) AS chunks, min(get_byte(data, 0)) AS version
FROM pg_logical_slot_peek_binary_changes('chunks', NULL, NULL, 'format', 'binary', 'write-chunk-bytes', '1');
SELECT pg_drop_replication_slot('chunks');
DROP TABLE ch_t;
