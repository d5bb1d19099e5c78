#!/usr/bin/env bash
# Runs every test suite: the decoder's pg_regress suite (twice, see tests/lib/regress.sh) and the
# pytest suites under tests/ (a real PostgreSQL and, for the suites that ask for one, a real Kafka
# broker). Prints one closing line "N passed, N failed" over the suites and exits non-zero if any
# failed.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
passed=0
failed=0

run() {
  local name=$1; shift
  echo "=== $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "=== $name FAILED"; fi
}

run "decoder pg_regress" make -s -C decoder regress
run "relay unit tests (ASan+UBSan)" make -s -C relay check
run "pytest" tests/.venv/bin/pytest -q -p no:cacheprovider tests
# the daemon itself under AddressSanitizer + UndefinedBehaviorSanitizer (leaks fail): a subset
# that exercises startup, streaming, delivery, reconnection, failure and shutdown paths
run "relay end to end under ASan+UBSan" env BW_RELAY_SANITIZER=both \
  tests/.venv/bin/pytest -q -p no:cacheprovider tests/relay \
  -k "arrive or sigterm or postgres_restart or unreachable or rejects or weakening or takes_over or registry or avro_cannot_hold or coalescing_merges_avro or streamed_transaction or spooled or signals_do_not_wait or aborted_streamed or ddl_inside or compacted_topic or kill9_mid_snapshot or filters_apply_to_read or concurrent_changes_win or kill9_mid_backfill or standby_waits_while or failing_condition or bad_requests_are_refused"

echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
