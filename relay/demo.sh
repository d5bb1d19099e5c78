#!/usr/bin/env bash
# `make demo`: Breakwater in thirty seconds. Starts a throwaway PostgreSQL with the plugin, a
# Kafka broker and breakwater-relay, writes a short multi-tenant workload, shows each event as it
# arrives in Kafka (tenant, table, operation, key, latency), then stops everything cleanly.
#
#   relay/demo.sh             rows as JSON
#   relay/demo.sh --avro      rows as Avro, schemas in a schema registry started beside Kafka
#                             (`make demo FORMAT=avro`)
set -euo pipefail
format=json
case "${1:-}" in
  --avro) format=avro ;;
  "") ;;
  *) echo "demo.sh: unknown argument '$1' (--avro or nothing)" >&2; exit 2 ;;
esac
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/breakwater-demo.XXXXXX)
chmod 755 "$work"
relay_pid=""

cleanup() {
  [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null
  "$top/tests/lib/registry.sh" stop "$work/registry" >/dev/null 2>&1 || true
  "$top/tests/lib/kafka.sh" stop "$work/kafka" >/dev/null 2>&1 || true
  "$top/tests/lib/pgcluster.sh" stop "$work/pg" || true
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

say "1. Starting a throwaway PostgreSQL 15 (with the breakwater plugin) and a Kafka broker"
. "$("$top/tests/lib/pgcluster.sh" start "$work/pg")"
. "$("$top/tests/lib/kafka.sh" start "$work/kafka")"
echo "   PostgreSQL on $PGHOST, Kafka on $BW_KAFKA_BOOTSTRAP"
registry_opt=()
if [ "$format" = avro ]; then
  . "$("$top/tests/lib/registry.sh" start "$work/registry")"
  echo "   a schema registry (Apicurio, Confluent API) on $BW_REGISTRY_URL"
  registry_opt=(--registry "$BW_REGISTRY_URL")
fi
psql -qX -o /dev/null -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE customers (tenant_id text, id serial, name text, email text, PRIMARY KEY (tenant_id, id));
CREATE TABLE orders (tenant_id text, id serial, customer_id int, total numeric(10,2), status text,
                     PRIMARY KEY (tenant_id, id));   -- the tenant in the key: deletes carry it too
CREATE TABLE job_heartbeats (id int PRIMARY KEY, beat timestamptz);   -- internal: not streamed
SQL

say "2. Starting breakwater-relay: customers and orders only, email never leaves the database"
http_port=$(free_port)
cat >"$work/relay.conf" <<CONF
[pg]
conninfo = host=$PGHOST port=$PGPORT dbname=postgres user=postgres
[slot]
name = demo
[decoder]
tables = public.customers,public.orders
exclude_columns = public.customers.email
message_prefixes = app.*
[topic]
prefix = demo
[relay]
state_dir = $work/state
[backfill]
chunk_rows = 100
[kafka]
bootstrap.servers = $BW_KAFKA_BOOTSTRAP
[http]
listen = 127.0.0.1:$http_port
[log]
level = warn
CONF
if [ "$format" = avro ]; then
  cat >>"$work/relay.conf" <<CONF
[value]
format = avro
[schema_registry]
url = $BW_REGISTRY_URL
compatibility = BACKWARD
CONF
fi
sed 's/^/   | /' "$work/relay.conf" | grep -v "^   | $"
"$top/relay/breakwater-relay" --config="$work/relay.conf" 2>"$work/relay.log" &
relay_pid=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

say "3. Writing a workload for tenants acme, globex and initech, plus a background job"
"$top/tests/.venv/bin/python" "$top/relay/demo_view.py" --bootstrap "$BW_KAFKA_BOOTSTRAP" \
  --expect 11 --idle 2 --timeout 60 ${registry_opt[@]+"${registry_opt[@]}"} &
view_pid=$!
sleep 2
psql -qX -o /dev/null -v ON_ERROR_STOP=1 <<'SQL'
INSERT INTO customers (tenant_id, name, email) VALUES
  ('acme', 'Ada', 'ada@acme.test'), ('globex', 'Grace', 'grace@globex.test'), ('initech', 'Ivan', 'ivan@initech.test');
INSERT INTO job_heartbeats SELECT g, now() FROM generate_series(1, 1000) g;
BEGIN;
INSERT INTO orders (tenant_id, customer_id, total, status) VALUES
  ('acme', 1, 99.50, 'new'), ('globex', 2, 12.00, 'new'), ('initech', 3, 7.25, 'new');
SELECT pg_logical_emit_message(true, 'app.invoice', '{"tenant":"acme","event":"invoice.paid"}');
COMMIT;
UPDATE job_heartbeats SET beat = now();
UPDATE orders SET status = 'shipped' WHERE tenant_id IN ('acme', 'initech');
UPDATE customers SET name = 'Ada L.' WHERE tenant_id = 'acme';
DELETE FROM orders WHERE tenant_id = 'globex';
SQL
wait "$view_pid" || true

say "4. A backfill while streaming: acme's orders sent again (say, a socket tier lost its cache)"
echo "   \$ breakwater-relay backfill --table=public.orders --tenant=acme"
"$top/relay/breakwater-relay" --config="$work/relay.conf" backfill --table=public.orders \
  --tenant=acme 2>&1 | sed 's/^/   /'
for _ in $(seq 100); do
  "$top/relay/breakwater-relay" --config="$work/relay.conf" backfill --status 2>/dev/null |
    grep -q '"status": "done"' && break
  sleep 0.1
done
"$top/relay/breakwater-relay" --config="$work/relay.conf" backfill --status 2>&1 |
  "$top/tests/.venv/bin/python" -c 'import json, sys
for j in json.load(sys.stdin):
    print("   backfill %(id)s: %(schema)s.%(table)s, tenant %(tenant)s: %(status)s, %(rows)d row(s) sent again as op read" % j)'

say "5. What the relay reports (/metrics), and what PostgreSQL has confirmed"
curl -s "http://127.0.0.1:$http_port/metrics" | grep -E '^breakwater_(changes_in_total|messages_delivered_total|delivery_errors_total|lag_bytes)' | sed 's/^/   /'
psql -qX -c "SELECT slot_name, confirmed_flush_lsn, pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)) AS lag FROM pg_replication_slots"
echo "   2000 job_heartbeats changes were filtered out inside PostgreSQL: none crossed the wire."
echo "   The slot was confirmed only up to what Kafka had acknowledged."

say "6. Stopping: the relay flushes Kafka, confirms, and exits 0"
kill -TERM "$relay_pid"
status=0; wait "$relay_pid" || status=$?
relay_pid=""
echo "   breakwater-relay exited with status $status"
