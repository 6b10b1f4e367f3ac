#!/usr/bin/env bash
# `make soak`: the long-running checks, repeated. Each round runs the restart-safety test (kill -9
# in a write stream, every acknowledged write checked), 10,000 parked blocking queries, and the TLS
# matrix, against fresh agents. Bounded: SOAK_ROUNDS rounds (default 5), each under the runner's
# own time ceiling. Prints "N passed, N failed" over all rounds.
set -u
cd "$(dirname "$0")/.."
rounds=${SOAK_ROUNDS:-5}
pass=0; fail=0
for r in $(seq 1 "$rounds"); do
  out=$(DCGATE_IT_ONLY="tests/integration/test_restart.py tests/integration/test_many_waiters.py tests/integration/test_tls_matrix.py tests/integration/test_tls_reload.py" \
        bash tests/run-integration.sh 2>&1)
  line=$(echo "$out" | grep -oE '[0-9]+ passed, [0-9]+ failed' | tail -1)
  echo "soak round $r/$rounds: $line"
  p=$(echo "$line" | awk '{print $1}'); f=$(echo "$line" | awk '{print $3}')
  pass=$((pass + ${p:-0})); fail=$((fail + ${f:-1}))
  [ "${f:-1}" -eq 0 ] || echo "$out" | grep -A30 -E '^(FAIL|ERROR)' | head -80
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
