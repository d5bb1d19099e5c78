#!/usr/bin/env bash
# Event-storm benchmark: one bulk transaction over 5 storm tenants while 50 background tenants
# keep a steady trickle, streamed by breakwater-relay with tenant signals, without and with row
# coalescing.
#
#   bench/storm/run.sh [--quick] [--relay PATH] [--keep]
#
# Table public.storm (tenant_id, id) primary key: tenants 1-5 are the storm tenants (200k rows each;
# --quick: 20k), tenants 6-55 the background tenants (1000 rows each). Each run starts the relay on
# a fresh slot and topic prefix (slot.create = true: the relay creates its slot), then runs at once
#   (a) one transaction updating every row of the storm tenants (1M rows; --quick: 100k), and
#   (b) ~200 one-row UPDATE transactions per second on random rows of the background tenants
#       (one connection, synchronous_commit=on), from 5 s before the storm to 3 s after its drain.
# Twice: coalescing off (no coalesce.tables) and on (coalesce.tables = public.storm, window 1000 ms),
# signals on (signals.interval_ms = 1000). Measured: row and signal messages in the topics
# (watermarks), signals per (tenant, table) per second for the storm tenants, the background
# tenants' signal latency (see bench/storm/storm.py for the matching), the relay's peak RSS
# (VmHWM) and CPU, and the drain: from the storm's COMMIT until the relay's /metrics show
# breakwater_confirmed_lsn at the WAL insert position taken right after that COMMIT.
#
# It prints goals for information and never fails on speed: the exit status is 1 only when
# something broke (the relay or a server dying, a drain that never ends).
#
#   --quick         a smoke test: 100k storm rows
#   --relay PATH    the breakwater-relay to measure (default: relay/breakwater-relay)
#   --keep          keep the work directory (server log, relay logs, records) under /tmp
#
# Writes the report to bench/.out/storm.txt and the runs' records to bench/.out/storm-runs.jsonl.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bench_name=storm
. "$here/../lib.sh"

quick=0 keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --relay) relay=${2:?}; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[ -f "$plugin" ] || die "'$plugin' not found: run 'make' first"
[ -x "$relay" ] || die "'$relay' not found: run 'make' first"
relay=$(cd "$(dirname "$relay")" && pwd)/$(basename "$relay")
[ -x "$py" ] || die "'$py' not found: run 'make deps' (tests/lib/deps.sh) first"
command -v java >/dev/null || die "java not found"

storm_tenants=5 bg_tenants=50 bg_ids=1000 rate=200 interval_ms=1000 window_ms=1000
per_storm_tenant=200000
[ $quick -eq 1 ] && per_storm_tenant=20000
storm_rows=$((storm_tenants * per_storm_tenant))
bg_lo=$((storm_tenants + 1)) bg_hi=$((storm_tenants + bg_tenants))
inflight_mb=64 held_mb=64   # the relay's defaults: relay.max_inflight_bytes, coalesce.max_held_bytes

bench_work storm

t_start=$EPOCHREALTIME
echo "starting PostgreSQL and Kafka..." >&2
bench_start_pg --set autovacuum=off --set checkpoint_timeout=1h --set max_wal_size=8GB \
  --set shared_buffers=256MB --set synchronous_commit=on
bench_start_kafka
dsn="host=$PGHOST port=$PGPORT user=$PGUSER dbname=$PGDATABASE"
psql_q() { "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -At "$@"; }
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "filling public.storm ($storm_rows storm rows, $((bg_tenants * bg_ids)) background rows)..." >&2
psql_q <<SQL
CREATE TABLE storm (tenant_id int NOT NULL, id int NOT NULL, v bigint NOT NULL, note text,
                    updated_at timestamptz, PRIMARY KEY (tenant_id, id));
INSERT INTO storm SELECT t, i, 0, 'row ' || i || ' of tenant ' || t, now()
  FROM generate_series(1, $storm_tenants) t, generate_series(1, $per_storm_tenant) i;
INSERT INTO storm SELECT t, i, 0, 'row ' || i || ' of tenant ' || t, now()
  FROM generate_series($bg_lo, $bg_hi) t, generate_series(1, $bg_ids) i;
VACUUM ANALYZE storm;
CHECKPOINT;
SQL

runs="$work/runs.jsonl"
: >"$runs"
broke=0
"$py" "$here/storm.py" topics --bootstrap "$bootstrap" \
  storm_off.public.storm storm_off.signals storm_on.public.storm storm_on.signals \
  || die "could not create the topics"

for mode in off on; do
  conf="$work/relay_$mode.conf"
  cat >"$conf" <<INI
[pg]
conninfo = $dsn
[slot]
name = storm_$mode
create = true
[decoder]
tables = public.storm
[topic]
prefix = storm_$mode
[signals]
enabled = true
interval_ms = $interval_ms
[relay]
stats_interval_ms = 0
state_dir = $work/state
[snapshot]
mode = never
[kafka]
bootstrap.servers = $bootstrap
INI
  if [ $mode = on ]; then
    printf '[coalesce]\ntables = public.storm\nwindow_ms = %s\n' "$window_ms" >>"$conf"
  fi
  echo "run: coalescing $mode..." >&2
  "$py" "$here/storm.py" run --out "$runs" --mode $mode --bootstrap "$bootstrap" --dsn "$dsn" \
    --relay "$relay" --config "$conf" --log "$work/relay_$mode.log" --slot "storm_$mode" \
    --table storm --row-topic "storm_$mode.public.storm" --signal-topic "storm_$mode.signals" \
    --bg-out "$work/bg_$mode.txt" --port "$(free_port)" --storm-lo 1 --storm-hi $storm_tenants \
    --bg-lo $bg_lo --bg-hi $bg_hi --bg-ids $bg_ids --rate $rate --interval-ms $interval_ms \
    || broke=1
  tail -n1 "$runs" | "$py" -c 'import json,sys; d=json.load(sys.stdin); print("  drain %s s%s" % (round(d["drain_s"], 1) if "drain_s" in d else "-", "; " + d["error"] if "error" in d else ""))' >&2
  psql_q -c "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE NOT active" >/dev/null
  psql_q -c "VACUUM storm" >/dev/null
  psql_q -c "CHECKPOINT" >/dev/null
done

bench_server_errors

mkdir -p "$out_dir"
cp "$runs" "$out_dir/storm-runs.jsonl"
status=0
"$py" "$here/storm.py" report --runs "$runs" --quick $quick --storm-rows $storm_rows \
  --storm-tenants $storm_tenants --bg-tenants $bg_tenants --rate $rate --elapsed "$elapsed" \
  --interval-ms $interval_ms --inflight-mb $inflight_mb --held-mb $held_mb \
  | tee "$out_dir/storm.txt" || status=1
if [ -n "$errors" ]; then
  echo "BROKE: $errors" | tee -a "$out_dir/storm.txt"
  status=1
fi
[ $broke -eq 0 ] || status=1
exit $status
