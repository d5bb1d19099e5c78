#!/usr/bin/env bash
# End-to-end benchmark: PostgreSQL -> breakwater-relay -> Kafka, against the unsafe
# `pg_recvlogical | kcat` pipeline measured in the same run, on fresh servers.
#
#   bench/e2e/run.sh [--quick] [--reps N] [--steady-reps N] [--duration S] [--rates R,...]
#                    [--relay PATH] [--keep]
#
# 1. Backlog drain. The workload of bench/decode (table public.main, 7 columns with a tenant_id:
#    200k inserts in 1000-row transactions, then 200k updates in 10k-row transactions) is written
#    while nothing reads the slots; then each slot is drained, one at a time, by
#      relay   breakwater-relay into Kafka (acks=all, idempotent, confirms only what Kafka
#              acknowledged); done when its /metrics show every change delivered and the
#              confirmed LSN at or past the end of the backlog;
#      avro    the same relay with value.format=avro: keys and values in the Confluent wire
#              format, schemas registered in a schema registry (Apicurio, Confluent API) that
#              runs beside the broker during the drains;
#      kcat    pg_recvlogical -o format-version=2 (wal2json) --start -E <end> -f - | kcat -P:
#              no delivery guarantee; done when kcat has exited (it flushes at EOF);
#      floor   pg_recvlogical with breakwater's binary format into /dev/null: decoding and the
#              replication connection alone, no Kafka.
#    Drains run in rounds, each round in another order (a Williams design: each pipeline in each
#    position, and after each other one, once every 4 rounds); the report gives medians.
#    Recorded: wall time, CPU seconds and peak RSS of the pipeline's own processes, the messages
#    in each Kafka topic (watermarks), which must be all of them, and the topic's bytes on the
#    broker's disk.
# 2. Steady load. pgbench, one-row UPDATE per transaction on public.accounts keyed by
#    (tenant_id, id) (50 tenants, random tenant and id), synchronous_commit=on, at each fixed
#    rate (-R) for --duration seconds with -c 4 -j 2, while one pipeline streams its own fresh
#    slot: the relay or the kcat pipeline (wal2json with include-timestamp), alternately, each run
#    after one warm-up transaction through the pipeline. Latency per message = its LogAppendTime
#    (the topic is created with message.timestamp.type=LogAppendTime) minus its transaction's
#    commit time (the relay's commit_time_us header; wal2json's "timestamp"). Recorded:
#    P50/P95/P99/max, the achieved rate, CPU and RSS during the load.
#
# It prints ratios and targets and never fails on speed: the exit status is 1 only when something
# broke (a drain missing messages or stopping short, a pipeline or server dying).
#
#   --quick         a smoke test (~1 min): a tenth of the rows, one run of each, 5 s per rate
#   --reps N        drains per pipeline (default 5)
#   --steady-reps N steady-load runs per pipeline and rate (default 2)
#   --duration S    seconds of pgbench per rate and pipeline (default 20)
#   --rates LIST    comma-separated pgbench -R rates (default 1000,5000)
#   --relay PATH    the breakwater-relay to measure (default: relay/breakwater-relay)
#   --keep          keep the work directory (server logs, relay logs, records) under /tmp
#
# Needs `make` (decoder/breakwater.so, relay/breakwater-relay), and tests/.venv, the broker's jars
# and the schema registry's distribution (make deps).
# Writes the report to bench/.out/e2e.txt and every run's record to bench/.out/e2e-runs.jsonl.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bench_name=e2e
. "$here/../lib.sh"

quick=0 reps=5 steady_reps=2 duration=20 rates=1000,5000 keep=0 reps_set=0 steady_set=0 duration_set=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --reps) reps=${2:?}; reps_set=1; shift ;;
    --steady-reps) steady_reps=${2:?}; steady_set=1; shift ;;
    --duration) duration=${2:?}; duration_set=1; shift ;;
    --rates) rates=${2:?}; shift ;;
    --relay) relay=${2:?}; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
if [ $quick -eq 1 ]; then
  [ $reps_set -eq 1 ] || reps=1
  [ $steady_set -eq 1 ] || steady_reps=1
  [ $duration_set -eq 1 ] || duration=5
fi
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "--reps wants a positive whole number, not '$reps'"
[[ $steady_reps =~ ^[1-9][0-9]*$ ]] || die "--steady-reps wants a positive whole number, not '$steady_reps'"
[[ $duration =~ ^[1-9][0-9]*$ ]] || die "--duration wants a positive whole number of seconds, not '$duration'"
[[ $rates =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--rates wants comma-separated positive rates, not '$rates'"
[ -f "$plugin" ] || die "'$plugin' not found: run 'make' first"
[ -x "$relay" ] || die "'$relay' not found: run 'make' first"
relay_note=""
[ "$relay" = "$top/relay/breakwater-relay" ] || relay_note=" at $relay"
relay=$(cd "$(dirname "$relay")" && pwd)/$(basename "$relay")
[ -x "$py" ] || die "'$py' not found: run 'make deps' (tests/lib/deps.sh) first"
for tool in kcat java "$bindir/pgbench" "$bindir/pg_recvlogical"; do
  command -v "$tool" >/dev/null || die "$tool not found: run 'make deps' (tests/lib/deps.sh) first"
done

# The workload of bench/decode, phase 1: inserts in 1000-row transactions, then updates in
# 10k-row transactions.
rows=200000 ins_tx=1000 upd_tx=10000
[ $quick -eq 1 ] && rows=20000
changes=$((2 * rows))
txns=$((rows / ins_tx + rows / upd_tx))
tenants=50 ids_per_tenant=2000

bench_work e2e

t_start=$EPOCHREALTIME
echo "starting PostgreSQL, Kafka and the schema registry..." >&2
bench_start_pg \
  --set "max_replication_slots=$((4 * reps + 10))" --set "max_wal_senders=$((4 * reps + 10))" \
  --set autovacuum=off --set checkpoint_timeout=1h --set max_wal_size=8GB \
  --set shared_buffers=256MB --set synchronous_commit=on
bench_start_kafka
bench_start_registry
dsn="host=$PGHOST port=$PGPORT user=$PGUSER dbname=$PGDATABASE"

psql_q() { "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -At "$@"; }
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

runs="$work/runs.jsonl"
: >"$runs"
broke=0

# every table exists and is filled before the first slot, so no slot holds more than its part
psql_q <<SQL
CREATE TABLE main (id bigint PRIMARY KEY, tenant_id int NOT NULL, a text, b int, c numeric(12,2),
                   d timestamptz, e boolean);
CREATE TABLE accounts (tenant_id int NOT NULL, id int NOT NULL, balance bigint NOT NULL, note text,
                       updated_at timestamptz, PRIMARY KEY (tenant_id, id));
INSERT INTO accounts SELECT t, i, 1000, 'account ' || i || ' of tenant ' || t, now()
  FROM generate_series(1, $tenants) t, generate_series(1, $ids_per_tenant) i;
CREATE TABLE pad (filler text);
VACUUM ANALYZE accounts;
SQL
cat >"$work/update.sql" <<SQL
\set tenant random(1, $tenants)
\set id random(1, $ids_per_tenant)
UPDATE accounts SET balance = balance + 1, updated_at = now() WHERE tenant_id = :tenant AND id = :id;
SQL

# Topics beforehand, all with LogAppendTime; the relay's topic for public.X is <prefix>.public.X.
topics=()
for ((r = 1; r <= reps; r++)); do topics+=("drain_r$r.public.main" "avro_r$r.public.main" "w2j_drain_r$r"); done
IFS=, read -ra rate_list <<<"$rates"
for ((s = 1; s <= steady_reps; s++)); do
  for rate in "${rate_list[@]}"; do topics+=("lat_${rate}_$s.public.accounts" "w2j_lat_${rate}_$s"); done
done
"$py" "$here/drive.py" topics --bootstrap "$bootstrap" --registry "$BW_REGISTRY_URL" "${topics[@]}" \
  || die "could not create the topics or warm up the servers"

# drive SUBCOMMAND ARGS...: one measured run; drive.py appends its record to $runs (also when the
# run broke). A run that left no record at all gets one here, so the report always sees it.
drive() {
  local before after label=$3
  before=$(wc -l <"$runs")
  "$py" "$here/drive.py" "$@" 2>>"$work/drive.err" || broke=1
  after=$(wc -l <"$runs")
  if [ "$after" -eq "$before" ]; then
    "$py" -c 'import json,sys; print(json.dumps({"kind": sys.argv[1], "label": sys.argv[2], "error": "drive.py left no record: " + sys.argv[3]}))' \
      "$1" "$label" "$(tail -n 3 "$work/drive.err" | tr '\n' ' ')" >>"$runs"
    broke=1
  fi
}

# relay_config FILE SLOT CREATE TABLES PREFIX [FORMAT]; FORMAT avro adds the schema registry
relay_config() {
  cat >"$1" <<INI
[pg]
conninfo = $dsn
[slot]
name = $2
create = $3
[decoder]
tables = $4
[topic]
prefix = $5
[kafka]
bootstrap.servers = $bootstrap
[relay]
stats_interval_ms = 0
state_dir = $work/state
[snapshot]
mode = never
INI
  if [ "${6:-json}" = avro ]; then
    cat >>"$1" <<INI
[value]
format = avro
[schema_registry]
url = $BW_REGISTRY_URL
INI
  fi
}

# ---- 1. backlog drain --------------------------------------------------------------------------

for ((r = 1; r <= reps; r++)); do
  psql_q -c "SELECT pg_create_logical_replication_slot('relay_r$r', 'breakwater'),
                    pg_create_logical_replication_slot('avro_r$r', 'breakwater'),
                    pg_create_logical_replication_slot('kcat_r$r', 'wal2json'),
                    pg_create_logical_replication_slot('floor_r$r', 'breakwater')" >/dev/null
done

ins_sql() {
  echo "INSERT INTO main SELECT g, g % 64, 'tenant ' || g % 64 || ' order ' || md5(g::text), g % 1000,"
  echo "  g * 1.37, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', g % 2 = 0"
  echo "  FROM generate_series($1, $2) g;"
}
upd_sql() {
  echo "UPDATE main SET b = b + 1, c = c + 0.01, d = d + interval '1 hour', e = NOT e"
  echo "  WHERE id BETWEEN $1 AND $2;"
}
workload() {
  local lo
  for ((lo = 1; lo <= rows; lo += ins_tx)); do
    echo "BEGIN;"; ins_sql $lo $((lo + ins_tx - 1)); echo "COMMIT;"
  done
  for ((lo = 1; lo <= rows; lo += upd_tx)); do
    echo "BEGIN;"; upd_sql $lo $((lo + upd_tx - 1)); echo "COMMIT;"
  done
}

echo "drain: workload ($changes changes in $txns transactions) with $((4 * reps)) idle slots..." >&2
t0=$EPOCHREALTIME
start_lsn=$(psql_q -c "SELECT pg_current_wal_insert_lsn()")
workload | psql_q >/dev/null
psql_q -c "CHECKPOINT" >/dev/null
end=$(psql_q -c "SELECT pg_current_wal_insert_lsn()")
wal_mb=$(psql_q -c "SELECT round(('$end'::pg_lsn - '$start_lsn'::pg_lsn) / 1e6, 1)")
workload_s=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
echo "drain: workload took $workload_s s, $wal_mb MB of WAL, end $end" >&2

# Round r runs the pipelines in the order williams + (r - 1), modulo their number: williams is
# 0, 1, n-1, 2, n-2, ..., so that over n rounds (n even) each pipeline runs once in each position
# and once right after each other pipeline. What ran just before (fresh Kafka log in the page
# cache, a walsender that just exited) then weighs on every pipeline alike, relay and avro included.
pipelines=(relay avro kcat floor)
n=${#pipelines[@]}
williams=(0) lo=1 hi=$((n - 1))
while [ ${#williams[@]} -lt $n ]; do
  williams+=($lo); lo=$((lo + 1))
  if [ ${#williams[@]} -lt $n ]; then williams+=($hi); hi=$((hi - 1)); fi
done
for ((r = 1; r <= reps; r++)); do
  for ((i = 0; i < n; i++)); do
    p=${pipelines[$(((williams[i] + r - 1) % n))]}
    case $p in
      relay)
        relay_config "$work/relay_r$r.conf" "relay_r$r" false public.main "drain_r$r"
        drive drain-relay --label relay --out "$runs" --bootstrap "$bootstrap" \
          --topic "drain_r$r.public.main" --log "$work/relay_r$r.log" --dsn "$dsn" --end "$end" \
          --messages "$changes" --relay "$relay" --config "$work/relay_r$r.conf" \
          --port "$(free_port)" --kafka-data "$BW_KAFKA_DIR/data" ;;
      avro)
        relay_config "$work/avro_r$r.conf" "avro_r$r" false public.main "avro_r$r" avro
        drive drain-relay --label relay-avro --out "$runs" --bootstrap "$bootstrap" \
          --topic "avro_r$r.public.main" --log "$work/avro_r$r.log" --dsn "$dsn" --end "$end" \
          --messages "$changes" --relay "$relay" --config "$work/avro_r$r.conf" \
          --port "$(free_port)" --kafka-data "$BW_KAFKA_DIR/data" ;;
      kcat)
        drive drain-kcat --label kcat --out "$runs" --bootstrap "$bootstrap" \
          --topic "w2j_drain_r$r" --log "$work/kcat_r$r.log" --dsn "$dsn" --end "$end" \
          --messages $((changes + 2 * txns)) --slot "kcat_r$r" --option format-version=2 \
          --pg-recvlogical "$bindir/pg_recvlogical" --kafka-data "$BW_KAFKA_DIR/data" ;;
      floor)
        drive drain-floor --label floor --out "$runs" --bootstrap "$bootstrap" \
          --log "$work/floor_r$r.log" --dsn "$dsn" --end "$end" --slot "floor_r$r" \
          --option format=binary --option tables=public.main --option write-chunk-bytes=65536 \
          --pg-recvlogical "$bindir/pg_recvlogical" ;;
    esac
    tail -n1 "$runs" | "$py" -c 'import json,sys; d=json.load(sys.stdin); print("  %s drain %s: %s" % (d["label"], sys.argv[1], "%.2f s" % d["wall_s"] if "wall_s" in d else d.get("error")))' "$r" >&2
  done
done
# the consumed slots hold nothing back; drop them so that the steady load runs beside no slot
psql_q -c "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots" >/dev/null
# the steady load has no Avro variant: stop the registry so that its JVM is not beside it (a
# registry that died during the drains is reported)
registry_gone=0
kill -0 "$BW_REGISTRY_PID" 2>/dev/null || registry_gone=1
"$top/tests/lib/registry.sh" stop "$work/registry" || true
# the drains left about a gigabyte of dirty pages (Kafka's logs, WAL): write them out now, or the
# kernel's writeback stalls the steady load's first run at random
sync

# ---- 2. steady load ----------------------------------------------------------------------------

for ((s = 1; s <= steady_reps; s++)); do
  for ((k = 0; k < ${#rate_list[@]}; k++)); do
    rate=${rate_list[$k]}
    # alternate which pipeline goes first (from rate to rate and from run to run), so that drift
    # does not always favour the same one
    order=(relay kcat)
    [ $(((k + s) % 2)) -eq 1 ] && order=(kcat relay)
    for p in "${order[@]}"; do
      echo "steady: $p at $rate tx/s for $duration s (run $s)..." >&2
      common=(--out "$runs" --bootstrap "$bootstrap" --dsn "$dsn" --rate "$rate" --duration "$duration"
              --clients 4 --jobs 2 --script "$work/update.sql" --dbname "$PGDATABASE" --table accounts
              --pgbench "$bindir/pgbench")
      if [ "$p" = relay ]; then
        relay_config "$work/lat_${rate}_$s.conf" "lat_${rate}_$s" true public.accounts "lat_${rate}_$s"
        drive steady-relay --label relay "${common[@]}" --topic "lat_${rate}_$s.public.accounts" \
          --log "$work/lat_relay_${rate}_$s.log" --relay "$relay" --config "$work/lat_${rate}_$s.conf" \
          --port "$(free_port)"
      else
        drive steady-kcat --label kcat "${common[@]}" --topic "w2j_lat_${rate}_$s" \
          --log "$work/lat_kcat_${rate}_$s.log" --slot "w2j_lat_${rate}_$s" --option format-version=2 \
              --option include-timestamp=1 --option add-tables=public.accounts,public.pad \
          --pg-recvlogical "$bindir/pg_recvlogical"
      fi
      tail -n1 "$runs" | "$py" -c 'import json,sys; d=json.load(sys.stdin); l=d.get("latency_ms") or {}; print("  %.0f tx/s, P50 %s P99 %s ms%s" % (d.get("achieved_tps", 0), l.get("p50"), l.get("p99"), "; " + d["error"] if "error" in d else ""))' >&2
      psql_q -c "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE NOT active" >/dev/null
    done
  done
done

# ---- checks and report -------------------------------------------------------------------------

errors="$work/errors.txt"
: >"$errors"
if grep -E 'TRAP|terminated by signal|PANIC' "$work/pg/server.log" >/dev/null; then
  { echo "PostgreSQL's log shows a crash:"; grep -E -B2 -A2 'TRAP|terminated by signal|PANIC' "$work/pg/server.log"; } >>"$errors"
fi
if ! kill -0 "$BW_KAFKA_PID" 2>/dev/null; then
  echo "the Kafka broker (pid $BW_KAFKA_PID) is gone; its log: $(tail -n 5 "$BW_KAFKA_LOG" | tr '\n' ' ')" >>"$errors"
fi
if [ $registry_gone -eq 1 ]; then
  echo "the schema registry (pid $BW_REGISTRY_PID) died during the drains; its log: $(tail -n 5 "$BW_REGISTRY_LOG" | tr '\n' ' ')" >>"$errors"
fi
elapsed=$(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", b-a}')

kafka_jar=$(cd "${BW_KAFKA_LIBS:-$top/tests/.kafka-libs}" && ls kafka_2.13-*.jar | head -1)
mkdir -p "$out_dir"
cp "$runs" "$out_dir/e2e-runs.jsonl"
"$py" "$here/report.py" --runs "$runs" --errors "$errors" --quick "$quick" --reps "$reps" --steady-reps "$steady_reps" \
  --rows "$rows" --changes "$changes" --txns "$txns" --wal-mb "$wal_mb" --workload-s "$workload_s" \
  --duration "$duration" --tenants "$tenants" --ids "$ids_per_tenant" --elapsed "$elapsed" \
  --pg "$("$bindir/postgres" --version)" --kafka "${kafka_jar%.jar}" \
  --relay-version "$("$relay" --version)$relay_note (librdkafka $(pkg-config --modversion rdkafka 2>/dev/null || echo "?"))" --kcat "$(kcat -V 2>&1 | grep -o 'Version .*' | head -1)" \
  --cpus "$(nproc)" | tee "$out_dir/e2e.txt"

[ $broke -eq 0 ] && [ ! -s "$errors" ] || exit 1
exit 0
