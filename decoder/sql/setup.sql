-- Helpers for the other tests. bw() returns a slot's JSON changes without the volatile fields
-- (LSNs, xid, commit time); every row is cast to json on the way, so invalid JSON fails a test.
CREATE FUNCTION bw(slot name, VARIADIC opts text[] DEFAULT '{}')
RETURNS SETOF text LANGUAGE sql AS $$
  SELECT regexp_replace(data,
           '"lsn":"[0-9A-F]+/[0-9A-F]+",("xid":[0-9]+,"commit_lsn":"[0-9A-F]+/[0-9A-F]+","commit_time":"[^"]+",)?', '')
  FROM pg_logical_slot_get_changes(slot, NULL, NULL, VARIADIC opts)
  WHERE data::json IS NOT NULL
$$;
-- the volatile fields are present and well formed
CREATE TABLE setup_t (id int PRIMARY KEY, tenant_id text);
SELECT 'init' FROM pg_create_logical_replication_slot('setup', 'breakwater');
INSERT INTO setup_t VALUES (1, 'a');
SELECT data ~ '^\{"op":"insert","lsn":"[0-9A-F]+/[0-9A-F]+","xid":[0-9]+,"commit_lsn":"[0-9A-F]+/[0-9A-F]+","commit_time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00",'
  AS well_formed FROM pg_logical_slot_get_changes('setup', NULL, NULL);
SELECT pg_drop_replication_slot('setup');
DROP TABLE setup_t;
