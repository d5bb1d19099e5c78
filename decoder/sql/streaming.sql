\set SHOW_CONTEXT never
-- The streaming option: strict values, binary only; with it a transaction larger than
-- logical_decoding_work_mem arrives as stream blocks (S .. E) and a stream commit (K), without
-- begin/commit. Only tags and flags are shown: LSNs and xids vary.
CREATE TABLE st_t (id int PRIMARY KEY, tenant_id text, pad text);
CREATE TABLE st_other (id int PRIMARY KEY, tenant_id text);
SELECT 'init' FROM pg_create_logical_replication_slot('stream', 'breakwater');

-- bad values, repeated, JSON
SELECT * FROM pg_logical_slot_peek_binary_changes('stream', NULL, NULL, 'format', 'binary', 'streaming', 'yes');
SELECT * FROM pg_logical_slot_peek_binary_changes('stream', NULL, NULL, 'format', 'binary', 'streaming', 'ON');
SELECT * FROM pg_logical_slot_peek_binary_changes('stream', NULL, NULL, 'format', 'binary', 'streaming', '');
SELECT * FROM pg_logical_slot_peek_binary_changes('stream', NULL, NULL, 'format', 'binary', 'streaming', 'on', 'streaming', 'on');
SELECT * FROM pg_logical_slot_peek_changes('stream', NULL, NULL, 'streaming', 'on');
SELECT * FROM pg_logical_slot_peek_changes('stream', NULL, NULL, 'format', 'json', 'streaming', 'on');
SELECT count(*) FROM pg_logical_slot_peek_changes('stream', NULL, NULL, 'streaming', 'off');

-- a 5000-row transaction under a 64kB logical_decoding_work_mem, then a small one
SET logical_decoding_work_mem = '64kB';
INSERT INTO st_t SELECT g, 'acme', repeat('p', 20) FROM generate_series(1, 5000) g;
INSERT INTO st_t VALUES (5001, 'acme', 'small');
-- per chunk: its first record's tag (byte 1), and for S the "first" flag (byte 10)
CREATE FUNCTION chunk_tags(VARIADIC opts text[])
RETURNS TABLE (tag text, first_block boolean, chunks bigint) LANGUAGE sql AS $$
  SELECT chr(get_byte(data, 1)),
         CASE WHEN get_byte(data, 1) = ascii('S') THEN get_byte(data, 10) = 1 END,
         count(*)
  FROM pg_logical_slot_peek_binary_changes('stream', NULL, NULL, VARIADIC opts)
  GROUP BY 1, 2
$$;
SELECT tag, first_block, chunks > 1 AS several FROM chunk_tags('format', 'binary', 'streaming', 'on')
  ORDER BY 1, 2;
-- one record per chunk: X names the (sub)transaction in each block, R comes once
SELECT tag, first_block, chunks > 1 AS several
  FROM chunk_tags('format', 'binary', 'streaming', 'on', 'write-chunk-bytes', '1') ORDER BY 1, 2;
-- with no size bound, each block is one chunk: E ends its chunk, and only E does
SELECT count(*) FILTER (WHERE s) > 1 AS several_blocks,
       bool_and(e) FILTER (WHERE s) AS e_ends_each_block,
       count(*) FILTER (WHERE e) = count(*) FILTER (WHERE s) AS only_blocks_end_with_e
FROM (SELECT get_byte(data, 1) = ascii('S') AS s, substr(data, length(data) - 4) = '\x4500000000'::bytea AS e
      FROM pg_logical_slot_peek_binary_changes('stream', NULL, NULL, 'format', 'binary', 'streaming', 'on',
                                               'write-chunk-bytes', '268435456')) c;
-- without the option: no stream records
SELECT tag, first_block, chunks FROM chunk_tags('format', 'binary') ORDER BY 1, 2;
-- nothing passes the filters: no S, E or K at all (the small transaction has st_t only too)
SELECT tag, first_block, chunks
  FROM chunk_tags('format', 'binary', 'streaming', 'on', 'tables', 'public.st_other') ORDER BY 1, 2;
RESET logical_decoding_work_mem;
SELECT pg_drop_replication_slot('stream');
DROP FUNCTION chunk_tags(text[]);
DROP TABLE st_t, st_other;
