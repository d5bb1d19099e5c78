-- TRUNCATE: only included tables, with options; can be left out with actions.
CREATE TABLE tr_a (id int PRIMARY KEY, tenant_id text);
CREATE TABLE tr_b (id int PRIMARY KEY, a_id int REFERENCES tr_a, tenant_id text);
CREATE TABLE tr_c (id int PRIMARY KEY);
SELECT 'init' FROM pg_create_logical_replication_slot('trunc', 'breakwater');
TRUNCATE tr_a, tr_b, tr_c;
TRUNCATE tr_a CASCADE;
TRUNCATE tr_c RESTART IDENTITY;
SELECT * FROM bw('trunc', 'exclude-tables', 'public.tr_c');
TRUNCATE tr_a, tr_b, tr_c;
SELECT * FROM bw('trunc', 'actions', 'insert,update,delete');
SELECT pg_drop_replication_slot('trunc');
DROP TABLE tr_b, tr_a, tr_c;
