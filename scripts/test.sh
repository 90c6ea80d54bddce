#!/usr/bin/env bash
# The test command behind `make test` and CI: stack up, lint, tests, and stack down for the
# services this run started. pytest's "no tests collected" (exit 5) counts as a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
t0=$(date +%s)

started=0
if ! $BIN/citystream stack status >/dev/null 2>&1; then
  started=1
fi
cleanup() {
  if [ "$started" = 1 ]; then
    echo "== stopping the services this run started"
    $BIN/citystream stack down || true
  fi
}
trap cleanup EXIT

echo "== stack up"
$BIN/citystream stack up || exit 1

echo "== lint"
$BIN/ruff check . || exit 1
$BIN/ruff format --check . || exit 1
$BIN/mypy || exit 1

run_pytest() {
  $BIN/pytest "$@"
  local rc=$?
  if [ "$rc" = 5 ]; then
    echo "pytest collected no tests for: $*" >&2
    return 1
  fi
  return "$rc"
}

echo "== tests (unit, integration, e2e)"
run_pytest -m "not disruptive" -p no:cacheprovider || exit 1
echo "== disruptive tests (services are stopped and restarted, one at a time)"
run_pytest -m disruptive -p no:cacheprovider || exit 1

echo "== make test passed in $(( $(date +%s) - t0 )) s"
