#!/usr/bin/env bash
# Replays every fuzz target's corpus (tests/fuzz/corpus/<target>/) with the replay build of that
# target. Usage: replay-all.sh <build dir>. Prints "N passed, N failed".
set -u
build=$1
cd "$(dirname "$0")/../.."
pass=0; fail=0
for src in tests/fuzz/fuzz_*.c; do
  name=$(basename "$src" .c)
  corpus=tests/fuzz/corpus/${name#fuzz_}
  if [ ! -d "$corpus" ]; then
    echo "FAIL $name: no corpus at $corpus"; fail=$((fail+1)); continue
  fi
  if out=$("$build/tests/fuzz/$name" "$corpus" 2>&1); then
    echo "ok   $name: $out"; pass=$((pass+1))
  else
    echo "FAIL $name:"; echo "$out" | tail -20; fail=$((fail+1))
  fi
done
echo "fuzz-replay: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
