#!/usr/bin/env bash
# Decoding benchmark: how fast the walsender turns one WAL backlog into each plugin's output.
#
#   bench/decode/run.sh [--quick] [--reps N] [--configs NAME,...] [--plugin PATH] [--keep]
#
# Every configuration gets its own logical slots (one per repetition), all created before the
# workload runs, so every slot holds the same backlog. Each slot is then drained once with
# `pg_recvlogical --start -E <end> -f /dev/null`; the wall clock of the drain and the CPU of the
# walsender that served it are recorded, and the report gives medians and ratios. It prints
# ratios measured in this run and never fails on speed: the exit status is 1 only when a drain
# errored or stopped short of the end of the backlog.
#
# Two backlogs, each on its own set of slots in one throwaway cluster:
#   phase 1: table public.main (7 columns): 200k inserts in 1000-row transactions, then 200k
#            updates in 10k-row transactions;
#   phase 2: the same transactions, but each one writes 90% of its rows to public.main and 10% to
#            public.hot, so that a `tables=public.hot` slot has something to filter. Its floor is
#            measured again on this backlog.
#
# Configurations (names for --configs):
#   phase 1: bw_binary (breakwater format=binary), bw_json (format=json), w2j_v1 / w2j_v2 (wal2json
#            format-version 1 / 2), pgoutput (proto_version 1, publication FOR ALL TABLES),
#            floor (pgoutput with a publication holding no table: the cost of decoding alone)
#   phase 2: bw_hot (breakwater format=binary tables=public.hot), w2j_v2_hot (wal2json v2
#            add-tables=public.hot), floor_hot (the floor again, on this backlog)
#
#   --quick         row counts divided by 10 (transaction sizes stay): a smoke test
#   --reps N        timed drains per configuration, median reported (default 5)
#   --configs LIST  comma-separated subset of the names above
#   --plugin PATH   the breakwater.so to measure (default: decoder/breakwater.so)
#   --keep          keep the cluster directory (logs) under /tmp
#
# Writes the report to bench/.out/decode.txt and every timed drain to bench/.out/decode-drains.tsv.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bench_name=decode
. "$here/../lib.sh"

# name | phase | plugin | pg_recvlogical -o options (space-separated name=value)
all_configs=(
  "bw_binary|1|breakwater|format=binary"
  "bw_json|1|breakwater|format=json"
  "w2j_v1|1|wal2json|format-version=1"
  "w2j_v2|1|wal2json|format-version=2"
  "pgoutput|1|pgoutput|proto_version=1 publication_names=pub_all"
  "floor|1|pgoutput|proto_version=1 publication_names=pub_none"
  "bw_hot|2|breakwater|format=binary tables=public.hot"
  "w2j_v2_hot|2|wal2json|format-version=2 add-tables=public.hot"
  "floor_hot|2|pgoutput|proto_version=1 publication_names=pub_none"
)

quick=0 reps=5 only="" plugin="$top/decoder/breakwater.so" keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --reps) reps=${2:?}; shift ;;
    --configs) only=${2:?}; shift ;;
    --plugin) plugin=${2:?}; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "--reps wants a positive whole number, not '$reps'"

configs=()
for c in "${all_configs[@]}"; do
  name=${c%%|*}
  if [ -z "$only" ] || [[ ",$only," == *",$name,"* ]]; then configs+=("$c"); fi
done
[ ${#configs[@]} -gt 0 ] || die "--configs '$only' selects nothing (known: $(IFS=,; echo "${all_configs[*]%%|*}"))"
if printf '%s\n' "${configs[@]}" | cut -d'|' -f3 | grep -x breakwater >/dev/null; then
  [ -f "$plugin" ] || die "'$plugin' not found: run 'make' first (or pick configs with --configs)"
fi
[ -f "$plugin" ] || plugin=$(${PG_CONFIG:-pg_config} --pkglibdir)/pgoutput.so  # pgcluster wants a file; never loaded

# Row counts: inserts in 1000-row transactions, then updates in 10k-row transactions.
rows=200000 ins_tx=1000 upd_tx=10000
[ $quick -eq 1 ] && rows=20000
changes=$((2 * rows))

bench_work decode

nslots=$(( ${#configs[@]} * (reps + 1) + 4 ))
bench_start_pg --plugin "$plugin" \
  --set "max_replication_slots=$nslots" --set autovacuum=off \
  --set checkpoint_timeout=1h --set max_wal_size=8GB --set shared_buffers=256MB
pm=$(head -1 "$BW_PGDATA/postmaster.pid")
clk=$(getconf CLK_TCK)

psql_q() { "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -At "$@"; }

psql_q <<'SQL'
CREATE TABLE main (id bigint PRIMARY KEY, tenant_id int NOT NULL, a text, b int, c numeric(12,2),
                   d timestamptz, e boolean);
CREATE TABLE hot (LIKE main INCLUDING ALL);
CREATE PUBLICATION pub_all FOR ALL TABLES;
CREATE PUBLICATION pub_none;
SQL

# SQL that inserts ids lo..hi into TABLE
ins_sql() {
  echo "INSERT INTO $1 SELECT g, g % 64, 'tenant ' || g % 64 || ' order ' || md5(g::text), g % 1000,"
  echo "  g * 1.37, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', g % 2 = 0"
  echo "  FROM generate_series($2, $3) g;"
}
upd_sql() {
  echo "UPDATE $1 SET b = b + 1, c = c + 0.01, d = d + interval '1 hour', e = NOT e"
  echo "  WHERE id BETWEEN $2 AND $3;"
}

# workload PHASE: phase 1 writes every row to main; phase 2 puts 10% of each transaction in hot
workload() {
  local phase=$1 lo n main_n hot_n
  for ((lo = 1; lo <= rows; lo += ins_tx)); do
    n=$ins_tx
    echo "BEGIN;"
    if [ "$phase" = 1 ]; then ins_sql main $lo $((lo + n - 1)); else
      main_n=$((n * 9 / 10)); hot_n=$((n - main_n))
      ins_sql main $lo $((lo + main_n - 1)); ins_sql hot $lo $((lo + hot_n - 1))
    fi
    echo "COMMIT;"
  done
  for ((lo = 1; lo <= rows; lo += upd_tx)); do
    n=$upd_tx
    echo "BEGIN;"
    upd_sql main $lo $((lo + n - 1))
    # phase 2 put ids b..b+899 in main and b..b+99 in hot for each 1000-block b: the same id range
    # holds 90% of the rows in main and 10% in hot
    [ "$phase" = 1 ] || upd_sql hot $lo $((lo + n - 1))
    echo "COMMIT;"
  done
}

# children of the postmaster, one pid per line, sorted
pm_children() { ps -o pid= --ppid "$pm" | tr -d ' ' | sort; }
# CPU ticks of the postmaster's reaped children (cutime + cstime): an exited walsender's CPU
# lands here once the postmaster has waited for it
reaped_ticks() {
  local line rest
  read -r line <"/proc/$pm/stat"
  rest=${line##*) }
  # shellcheck disable=SC2086
  set -- $rest
  echo $(( ${14} + ${15} ))
}

results="$work/drains.tsv"
: >"$results"
errors="$work/errors.txt"
: >"$errors"
sizes="$work/sizes.tsv"
: >"$sizes"

run_phase() {
  local phase=$1 c name ph plugin_name opts r i k slot end t0 t1 wall ticks0 ticks1 before after
  local phase_cfgs=()
  for c in "${configs[@]}"; do
    IFS='|' read -r name ph plugin_name opts <<<"$c"
    [ "$ph" = "$phase" ] && phase_cfgs+=("$c")
  done
  [ ${#phase_cfgs[@]} -gt 0 ] || return 0

  psql_q -c "TRUNCATE main, hot" >/dev/null
  # slots first, so that every one holds the whole backlog
  for c in "${phase_cfgs[@]}"; do
    IFS='|' read -r name ph plugin_name opts <<<"$c"
    for slot in $(seq -f "${name}_%g" 1 "$reps") "${name}_size"; do
      if ! psql_q -c "SELECT pg_create_logical_replication_slot('$slot', '$plugin_name')" \
          >/dev/null 2>"$work/err"; then
        printf '%s\tslot creation: %s\n' "$name" "$(tr '\n' ' ' <"$work/err")" >>"$errors"
        break
      fi
    done
  done

  echo "phase $phase: workload ($changes changes)..." >&2
  t0=$EPOCHREALTIME
  workload "$phase" | psql_q >/dev/null
  psql_q -c "CHECKPOINT" >/dev/null
  end=$(psql_q -c "SELECT pg_current_wal_insert_lsn()")
  t1=$EPOCHREALTIME
  echo "phase $phase: workload took $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s; backlog $(psql_q -c "SELECT pg_size_pretty(pg_current_wal_insert_lsn() - min(restart_lsn)) FROM pg_replication_slots") of WAL, end $end" >&2

  # round r drains slot r of every config, starting at a different config each round
  for ((r = 1; r <= reps; r++)); do
    for ((i = 0; i < ${#phase_cfgs[@]}; i++)); do
      k=$(( (i + r - 1) % ${#phase_cfgs[@]} ))
      IFS='|' read -r name ph plugin_name opts <<<"${phase_cfgs[$k]}"
      slot="${name}_$r"
      grep "^$name	" "$errors" >/dev/null && continue
      local oargs=()
      for o in $opts; do oargs+=(-o "$o"); done
      before=$(pm_children)
      ticks0=$(reaped_ticks)
      t0=$EPOCHREALTIME
      if ! PGAPPNAME="bench_$slot" "$bindir/pg_recvlogical" -d "$PGDATABASE" --slot "$slot" \
          --start -E "$end" --no-loop -f /dev/null "${oargs[@]}" 2>"$work/err"; then
        printf '%s\tdrain of %s: %s\n' "$name" "$slot" "$(tr '\n' ' ' <"$work/err")" >>"$errors"
        continue
      fi
      t1=$EPOCHREALTIME
      # wait until the walsender has exited and been reaped, so its CPU is in reaped_ticks
      for ((w = 0; w < 500; w++)); do
        after=$(pm_children)
        [ -z "$(comm -13 <(echo "$before") <(echo "$after"))" ] && break
        sleep 0.01
      done
      ticks1=$(reaped_ticks)
      wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
      # the slot must have confirmed the whole backlog: else the drain stopped short
      if [ "$(psql_q -c "SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = '$slot'")" != t ]; then
        printf '%s\tdrain of %s stopped short: confirmed_flush_lsn %s < end %s\n' "$name" "$slot" \
          "$(psql_q -c "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'")" "$end" >>"$errors"
        continue
      fi
      printf '%s\t%s\t%s\t%s\t%s\n' "$phase" "$name" "$r" "$wall" \
        "$(awk -v t=$((ticks1 - ticks0)) -v h="$clk" 'BEGIN{printf "%.2f", t/h}')" >>"$results"
      echo "  $slot: ${wall} s" >&2
    done
  done
  # one more drain per config, untimed, counts the bytes of output (a check that each one wrote
  # what it should, and a size to compare)
  for c in "${phase_cfgs[@]}"; do
    IFS='|' read -r name ph plugin_name opts <<<"$c"
    grep "^$name	" "$errors" >/dev/null && continue
    local oargs=()
    for o in $opts; do oargs+=(-o "$o"); done
    if bytes=$("$bindir/pg_recvlogical" -d "$PGDATABASE" --slot "${name}_size" --start -E "$end" \
        --no-loop -f - "${oargs[@]}" 2>"$work/err" | wc -c); then
      printf '%s\t%s\n' "$name" "$bytes" >>"$sizes"
    else
      printf '%s\tdrain of %s_size: %s\n' "$name" "$name" "$(tr '\n' ' ' <"$work/err")" >>"$errors"
    fi
  done
  # consumed slots hold nothing back, but the next phase must not see them
  psql_q -c "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots" >/dev/null
}

t_start=$EPOCHREALTIME
run_phase 1
run_phase 2
elapsed=$(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", b-a}')

if grep -E 'TRAP|terminated by signal|PANIC' "$work/pg/server.log" >/dev/null; then
  printf 'server\tthe server log shows a crash:\n%s\n' "$(grep -E -B2 -A2 'TRAP|terminated by signal|PANIC' "$work/pg/server.log")" >>"$errors"
fi

mkdir -p "$out_dir"
cp "$results" "$out_dir/decode-drains.tsv"
python3 "$here/report.py" --drains "$results" --errors "$errors" --sizes "$sizes" --changes "$changes" \
  --reps "$reps" --quick "$quick" --elapsed "$elapsed" \
  --pg "$("$bindir/postgres" --version)" --plugin "$plugin" | tee "$out_dir/decode.txt"

[ -s "$errors" ] && exit 1
exit 0
