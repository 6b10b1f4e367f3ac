#!/usr/bin/env bash
# Runs the cmocka unit-test binaries given as arguments (after the build dir) and prints
# "unit: N passed, N failed" counting individual test cases.
set -u
build=$1; shift
pass=0; fail=0
for bin in "$@"; do
  out=$("$bin" 2>&1); rc=$?
  p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0}))
  if [ $rc -ne 0 ]; then
    echo "FAIL $bin"; echo "$out" | grep -v '^\[       OK \]\|^\[ RUN      \]' | tail -20
    [ -z "$f" ] && fail=$((fail + 1))
  else
    echo "ok   $(basename "$bin"): ${p:-0} tests"
  fi
done
echo "unit: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
