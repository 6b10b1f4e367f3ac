#!/usr/bin/env bash
# `make test`: builds, then runs unit tests, fuzz corpora and integration tests; then the same
# unit tests, corpora and the quick integration subset again under ASan+UBSan.
# Ends with one line "N passed, N failed" summing every suite; exits non-zero on any failure.
set -u
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
total_pass=0; total_fail=0

count() { # adds the "N passed, N failed" of the last such line of a suite's output
  local line
  line=$(grep -oE '[0-9]+ passed, [0-9]+ failed' "$1" | tail -1)
  [ -n "$line" ] || return 0
  total_pass=$((total_pass + $(echo "$line" | awk '{print $1}')))
  total_fail=$((total_fail + $(echo "$line" | awk '{print $3}')))
}

suite() { # name, command...
  local name=$1; shift
  local log; log=$(mktemp)
  echo "==> $name"
  if "$@" 2>&1 | tee "$log"; then :; fi
  local rc=${PIPESTATUS[0]}
  count "$log"
  if [ "$rc" -ne 0 ] && ! grep -qE '[0-9]+ passed, [0-9]+ failed' "$log"; then
    total_fail=$((total_fail + 1)) # the suite died before it could count
  fi
  rm -f "$log"
  return 0
}

if ! make -s -j"$jobs" all >/tmp/dcgate-build.log 2>&1; then
  cat /tmp/dcgate-build.log; echo "build: 0 passed, 1 failed"; exit 1
fi
suite "unit tests" make -s -j"$jobs" unit
suite "fuzz corpora" make -s -j"$jobs" fuzz-replay
suite "integration and interop tests" make -s integration

echo "==> sanitizer build (ASan+UBSan)"
if make -s -j"$jobs" SANITIZE=1 all >/tmp/dcgate-build-san.log 2>&1; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  suite "unit tests (sanitizers)" make -s -j"$jobs" SANITIZE=1 unit
  suite "fuzz corpora (sanitizers)" make -s -j"$jobs" SANITIZE=1 fuzz-replay
  suite "integration quick subset (sanitizers)" env DCGATE_BIN="$PWD/build-san/dcgate" \
    DCGATE_SANITIZED=1 bash tests/run-integration.sh --quick
else
  cat /tmp/dcgate-build-san.log; total_fail=$((total_fail + 1))
fi

echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
