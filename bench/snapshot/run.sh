#!/usr/bin/env bash
# Snapshot benchmark: breakwater-relay's initial snapshot (snapshot.mode=initial-only) of a
# 1M-row table into Kafka, against the read floor measured in the same run, on fresh servers.
#
#   bench/snapshot/run.sh [--quick] [--reps N] [--relay PATH] [--keep]
#
# Tables public.snap (1M rows) and public.snap_small (250k rows), the same shape: tenant_id text
# (50 tenants), id bigint, customer_id int, status text, total numeric(12,2), created_at
# timestamptz, note text (40 bytes); PRIMARY KEY (tenant_id, id); rows inserted in id order, so
# the tenants are interleaved in the heap; VACUUM ANALYZE. Each round runs, in turn:
#   floor-ordered   psql -c "COPY (SELECT * FROM snap ORDER BY tenant_id, id) TO STDOUT" > /dev/null
#   floor-plain     psql -c "COPY snap TO STDOUT" > /dev/null
#   peer-copy-kcat  psql -c "COPY (SELECT <key as json>, row_to_json(snap) ... ORDER BY tenant_id, id)
#                   TO STDOUT" | kcat -P (acks=all, idempotence, linger.ms=1, as the relay): a
#                   hand-made pipeline into Kafka, with no delivery check, for comparison
#   relay-chunk10k  the relay with snapshot.mode=initial-only on public.snap, chunk_rows 10000
#                   (the default), value.format json, signals off, into a fresh one-partition topic
#   relay-chunk50k  the same with chunk_rows 50000
#   relay-250k      the same as relay-chunk10k on public.snap_small (for the memory comparison)
# Measured: wall time from start to exit, the process's CPU (user + system) and peak RSS (wait4),
# the CPU of the PostgreSQL backend that served it, and of the broker; for the relay also its own
# "snapshot: done" rate; the messages in each topic (watermarks) must be exactly the table's rows.
#
# It prints ratios (relay rows/s over the floor's, CPU us per row, peak RSS at 250k vs 1M rows) and
# the goal (>= 0.5x the read floor, memory flat in table size) for information, and never fails on
# speed: the exit status is 1 only when something broke (a relay exiting with an error or leaving
# the wrong number of messages, psql failing, a server dying).
#
#   --quick         a smoke test: a tenth of the rows (100k and 25k), one round
#   --reps N        rounds (default 5)
#   --relay PATH    the breakwater-relay to measure (default: relay/breakwater-relay)
#   --keep          keep the work directory (server log, relay logs and configs, records) under /tmp
#
# Needs `make` (decoder/breakwater.so, relay/breakwater-relay), tests/.venv and the broker's jars
# and kcat (make deps). Writes the report to bench/.out/snapshot.txt, the runs' records to
# bench/.out/snapshot-runs.jsonl.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bench_name=snapshot
. "$here/../lib.sh"

quick=0 reps=5 keep=0 reps_set=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --reps) reps=${2:?}; reps_set=1; shift ;;
    --relay) relay=${2:?}; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[ $quick -eq 1 ] && [ $reps_set -eq 0 ] && reps=1
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "--reps wants a positive whole number, not '$reps'"
[ -f "$plugin" ] || die "'$plugin' not found: run 'make' first"
[ -x "$relay" ] || die "'$relay' not found: run 'make' first"
relay_note=""
[ "$relay" = "$top/relay/breakwater-relay" ] || relay_note=" at $relay"
relay=$(cd "$(dirname "$relay")" && pwd)/$(basename "$relay")
[ -x "$py" ] || die "'$py' not found: run 'make deps' (tests/lib/deps.sh) first"
for tool in java kcat; do
  command -v $tool >/dev/null || die "$tool not found: run 'make deps' (tests/lib/deps.sh) first"
done

big_rows=1000000 small_rows=250000 tenants=50
[ $quick -eq 1 ] && { big_rows=100000; small_rows=25000; }

bench_work snapshot

t_start=$EPOCHREALTIME
echo "starting PostgreSQL and Kafka..." >&2
bench_start_pg --set autovacuum=off --set checkpoint_timeout=1h --set max_wal_size=8GB \
  --set shared_buffers=256MB
bench_start_kafka
dsn="host=$PGHOST port=$PGPORT user=$PGUSER dbname=$PGDATABASE"
psql_q() { "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -At "$@"; }

# fill TABLE ROWS: ids 1..ROWS in order, tenant = id mod 50, so every tenant's rows are spread over
# the whole heap (as in a multi-tenant table filled over time) and key order is not heap order
fill() {
  cat <<SQL
CREATE TABLE $1 (tenant_id text NOT NULL, id bigint NOT NULL, customer_id int NOT NULL,
                 status text NOT NULL, total numeric(12,2) NOT NULL, created_at timestamptz NOT NULL,
                 note text, PRIMARY KEY (tenant_id, id));
INSERT INTO $1
  SELECT 'tenant_' || lpad((g % $tenants)::text, 2, '0'), g, (g::bigint * 7919 % 100000)::int,
         (ARRAY['new', 'paid', 'shipped', 'delivered', 'refunded'])[g % 5 + 1],
         (g % 100000) * 1.37, timestamptz '2024-01-01 00:00:00+00' + g * interval '7 seconds',
         'order note ' || substr(md5(g::text), 1, 29)
    FROM generate_series(1, $2) g;
SQL
}
echo "filling public.snap ($big_rows rows) and public.snap_small ($small_rows rows)..." >&2
{ fill snap $big_rows; fill snap_small $small_rows; echo "VACUUM ANALYZE snap; VACUUM ANALYZE snap_small; CHECKPOINT;"; } | psql_q
big_mb=$(psql_q -c "SELECT round(pg_relation_size('snap') / 1e6)")
small_mb=$(psql_q -c "SELECT round(pg_relation_size('snap_small') / 1e6)")
ordered_sql="COPY (SELECT * FROM snap ORDER BY tenant_id, id) TO STDOUT"
plain_sql="COPY snap TO STDOUT"
peer_sql="COPY (SELECT json_build_object('tenant_id', tenant_id, 'id', id), row_to_json(snap) FROM snap ORDER BY tenant_id, id) TO STDOUT"
plan=$(psql_q -c "EXPLAIN (COSTS OFF) SELECT * FROM snap ORDER BY tenant_id, id" | sed 's/^ *//; s/^-> *//' | paste -sd '|' | sed 's/|/; /g')

# one fresh topic per relay run, created beforehand (one partition), and the broker warmed up
topics=()
for ((r = 1; r <= reps; r++)); do
  topics+=("snap_chunk10k_r$r.public.snap" "snap_chunk50k_r$r.public.snap" "snap_small_r$r.public.snap_small"
           "snap_kcat_r$r")
done
"$py" "$here/snap.py" topics --bootstrap "$bootstrap" "${topics[@]}" \
  || die "could not create the topics or warm up the broker"

# relay_config FILE NAME TABLE CHUNK_ROWS
relay_config() {
  cat >"$1" <<INI
[pg]
conninfo = $dsn
[slot]
name = $2
[decoder]
tables = public.$3
[topic]
prefix = $2
[value]
format = json
[signals]
enabled = false
[snapshot]
mode = initial-only
chunk_rows = $4
[relay]
stats_interval_ms = 0
state_dir = $work/state
[http]
listen =
[kafka]
bootstrap.servers = $bootstrap
INI
}

runs="$work/runs.jsonl"
: >"$runs"
broke=0
common() { echo --out "$runs" --rep "$1" --pgdata "$BW_PGDATA" --log "$work/$2.log"; }

floor() { # LABEL REP SQL
  # shellcheck disable=SC2046
  "$py" "$here/snap.py" floor --label "$1" --rows $big_rows $(common "$2" "$1_r$2") \
    --psql "$bindir/psql" --dsn "$dsn" --sql "$3" || broke=1
}
# Each run into Kafka leaves up to half a gigabyte of dirty pages (the broker's log): write them
# out before the next timed run, or the kernel's writeback lands at random inside one.
peer() { # REP
  sync
  # shellcheck disable=SC2046
  "$py" "$here/snap.py" peer --label peer-copy-kcat --rows $big_rows $(common "$1" "kcat_r$1") \
    --psql "$bindir/psql" --dsn "$dsn" --sql "$peer_sql" --kcat "$(command -v kcat)" \
    --bootstrap "$bootstrap" --topic "snap_kcat_r$1" --broker-pid "$BW_KAFKA_PID" \
    --kafka-data "$BW_KAFKA_DIR/data" || broke=1
}
relay_run() { # RUN REP TABLE ROWS CHUNK LABEL; the slot name and topic prefix are snap_RUN_rREP
  local name="snap_$1_r$2"
  relay_config "$work/$name.conf" "$name" "$3" "$5"
  sync
  # shellcheck disable=SC2046
  "$py" "$here/snap.py" relay --label "$6" --rows "$4" $(common "$2" "$name") --relay "$relay" \
    --config "$work/$name.conf" --bootstrap "$bootstrap" --topic "$name.public.$3" --chunk-rows "$5" \
    --broker-pid "$BW_KAFKA_PID" --kafka-data "$BW_KAFKA_DIR/data" || broke=1
}
show() { tail -n1 "$runs" | "$py" -c 'import json,sys; d=json.load(sys.stdin); print("  %s run %s: %s" % (d["label"], d["rep"], "%.2f s, %.0f rows/s%s" % (d["wall_s"], d["rows"] / d["wall_s"], ", peak RSS %.0f MB" % d["rss_mb"] if "rss_mb" in d else "") if "error" not in d else d["error"]))' >&2; }

# Rounds: the floors first (they also bring the table into the page cache for the first relay run),
# then the pipeline and the relay runs on the big table, whose order turns from round to round, then
# the relay on the small table.
for ((r = 1; r <= reps; r++)); do
  echo "round $r of $reps..." >&2
  sync
  floor floor-ordered $r "$ordered_sql"; show
  floor floor-plain $r "$plain_sql"; show
  runs_big=(chunk10k chunk50k kcat)
  for ((i = 0; i < 3; i++)); do
    run=${runs_big[$(((i + r - 1) % 3))]}
    case $run in
      kcat) peer $r ;;
      chunk10k) relay_run chunk10k $r snap $big_rows 10000 relay-chunk10k ;;
      chunk50k) relay_run chunk50k $r snap $big_rows 50000 relay-chunk50k ;;
    esac
    show
  done
  relay_run small $r snap_small $small_rows 10000 "relay-chunk10k-$((small_rows / 1000))k"; show
done

bench_server_errors

kafka_jar=$(cd "${BW_KAFKA_LIBS:-$top/tests/.kafka-libs}" && ls kafka_2.13-*.jar | head -1)
mkdir -p "$out_dir"
cp "$runs" "$out_dir/snapshot-runs.jsonl"
status=0
"$py" "$here/snap.py" report --runs "$runs" --quick $quick --reps "$reps" \
  --big snap --big-rows $big_rows --big-mb "$big_mb" --small snap_small --small-rows $small_rows \
  --small-mb "$small_mb" --tenants $tenants --plan "$plan" \
  --mem-big relay-chunk10k --mem-small "relay-chunk10k-$((small_rows / 1000))k" \
  --pg "$("$bindir/postgres" --version)" --kafka "${kafka_jar%.jar}" \
  --relay-version "$("$relay" --version)$relay_note (librdkafka $(pkg-config --modversion rdkafka 2>/dev/null || echo "?"))" \
  --cpus "$(nproc)" --elapsed "$elapsed" | tee "$out_dir/snapshot.txt" || status=1
if [ -n "$errors" ]; then
  echo "BROKE: $errors" | tee -a "$out_dir/snapshot.txt"
  status=1
fi
[ $broke -eq 0 ] || status=1
exit $status
