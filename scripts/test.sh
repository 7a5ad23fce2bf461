#!/usr/bin/env bash
# The test suite as CI runs it (README's test command): first the tests that only compute, one
# per core (pytest-xdist); then, one at a time on a quiet host, those that time real media (the
# live server, the browser, a real audio source: marked `serial`). Arguments go to both runs;
# with none, a run that collects no test fails (exit 5: a marker went astray). Both runs always
# run; the script fails if either did.
set -uo pipefail
cd "$(dirname "$0")/.."
workers="${SYNCMON_TEST_WORKERS:-$(python -c 'import os; print(max(1, min(4, len(os.sched_getaffinity(0)))))')}"
filtered=$(($# > 0))
status=0
phase() {
  local rc=0
  python -m pytest -q -ra "$@" || rc=$?
  if [ "$rc" = 5 ] && [ "$filtered" = 1 ]; then rc=0; fi
  if [ "$rc" != 0 ]; then status=$rc; fi
}
phase -n "$workers" -m "not serial" "$@"
phase -m serial "$@"
exit "$status"
