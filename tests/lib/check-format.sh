#!/usr/bin/env bash
# Checks (or with --fix, applies) clang-format on every tracked C file: the decoder's layout is
# decoder/.clang-format, the rest uses the top-level .clang-format.
set -euo pipefail
cd "$(dirname "$0")/../.."
mapfile -t files < <(git ls-files '*.c' '*.h')
[ ${#files[@]} -gt 0 ] || exit 0
if [ "${1:-}" = "--fix" ]; then
  clang-format -i "${files[@]}"
  exit 0
fi
bad=0
for f in "${files[@]}"; do
  if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
    echo "format: $f differs from clang-format (run 'make format')"
    bad=1
  fi
done
exit $bad
