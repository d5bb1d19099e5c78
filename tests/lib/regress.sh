#!/usr/bin/env bash
# Runs the decoder's pg_regress suite on a throwaway cluster, twice: with the default
# logical_decoding_work_mem, then with 64kB so that the reorder buffer spills to disk.
#   regress.sh TEST...        (run from decoder/, as `make regress` does)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
pgxs=$(dirname "$(${PG_CONFIG:-pg_config} --pgxs)")
pg_regress="$pgxs/../test/regress/pg_regress"
bindir=$(${PG_CONFIG:-pg_config} --bindir)
[ $# -gt 0 ] || { echo "usage: regress.sh TEST..." >&2; exit 2; }

status=0
for mem in 64MB 64kB; do
  work=$(mktemp -d /tmp/bw-regress.XXXXXX)
  chmod 755 "$work"
  env_file=$("$top/tests/lib/pgcluster.sh" start "$work/pg" --set "logical_decoding_work_mem=$mem")
  # shellcheck disable=SC1090
  . "$env_file"
  out="$top/decoder/results-$mem"
  rm -rf "$out"; mkdir -p "$out"
  echo "== pg_regress (logical_decoding_work_mem=$mem)"
  if ! "$pg_regress" --bindir="$bindir" --inputdir="$top/decoder" --outputdir="$out" \
      --host="$PGHOST" --port="$PGPORT" --user=postgres --dbname=bw_regress "$@"; then
    status=1
    [ -f "$out/regression.diffs" ] && head -200 "$out/regression.diffs"
  fi
  "$top/tests/lib/pgcluster.sh" stop "$work/pg"
  if grep -E 'TRAP|terminated by signal|PANIC' "$work/pg/server.log" >/dev/null; then
    echo "server log shows a crash:"; cat "$work/pg/server.log"; status=1
  fi
  [ $status -eq 0 ] && rm -rf "$work" "$out"
done
exit $status
