# bench/lib.sh — what the benchmark scripts share. Sourced first thing, after setting
# bench_name: the paths (top, bindir, out_dir, py, and the default relay and plugin, which
# options may change) and die, whose messages name the benchmark. Then, once `keep` (--keep) is
# known: a work directory under /tmp that goes away on exit unless kept, and the servers
# started in it, stopped on exit in reverse order.
#
#   bench_work NAME            work=/tmp/bw-bench-NAME.XXXXXX, and the exit trap
#   bench_start_pg ARGS...     PostgreSQL (tests/lib/pgcluster.sh start "$work/pg" ARGS), its
#                              environment (PGHOST, PGPORT, ...) sourced
#   bench_start_kafka          a Kafka broker; its environment sourced, bootstrap=its address
#   bench_start_registry       the schema registry; its environment sourced
#   bench_server_errors        after the runs: errors (servers that crashed or went), elapsed

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bindir=$(${PG_CONFIG:-pg_config} --bindir)
out_dir="$top/bench/.out"
py="$top/tests/.venv/bin/python"
relay="$top/relay/breakwater-relay"
plugin="$top/decoder/breakwater.so"

die() { echo "bench/$bench_name: $*" >&2; exit 2; }

bench_servers=() # "script:directory" of what was started, in order

bench_cleanup() {
  local i script dir
  for ((i = ${#bench_servers[@]} - 1; i >= 0; i--)); do
    script=${bench_servers[i]%%:*} dir=${bench_servers[i]#*:}
    "$top/tests/lib/$script.sh" stop "$work/$dir" || true
  done
  if [ "$keep" -eq 1 ]; then echo "work directory kept in $work" >&2; else rm -rf "$work"; fi
}

bench_work() {
  work=$(mktemp -d "/tmp/bw-bench-$1.XXXXXX")
  chmod 755 "$work"
  trap bench_cleanup EXIT
}

# bench_start SCRIPT DIR ARGS...: starts a server and sources the environment file it prints
bench_start() {
  local script=$1 dir=$2 env
  shift 2
  bench_servers+=("$script:$dir")
  env=$("$top/tests/lib/$script.sh" start "$work/$dir" "$@")
  # shellcheck disable=SC1090
  . "$env"
}

bench_start_pg() { bench_start pgcluster pg "$@"; }
bench_start_kafka() { bench_start kafka kafka; bootstrap=$BW_KAFKA_BOOTSTRAP; }
bench_start_registry() { bench_start registry registry; }

# After the runs: errors= what went wrong with the servers ("" when nothing: a crash in
# PostgreSQL's log, a broker gone), elapsed= whole seconds since t_start.
bench_server_errors() {
  errors=""
  if grep -E 'TRAP|terminated by signal|PANIC' "$work/pg/server.log" >/dev/null; then
    errors="PostgreSQL's log shows a crash"
  fi
  kill -0 "$BW_KAFKA_PID" 2>/dev/null || errors="$errors; the Kafka broker is gone"
  elapsed=$(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", b-a}')
}
