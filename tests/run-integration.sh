#!/usr/bin/env bash
# Runs the integration tests (tests/integration) and the client interop tests (tests/interop)
# against real dcgate agents on 127.0.0.x, and prints one closing line `N passed, N failed`
# (`, N skipped` only when something was skipped). Exits non-zero when anything failed.
#
# The long tests (the python-consul example, about 2 minutes of waiting for the deregistration;
# the kill -9 restart test; slow clients; session TTL expiry; federation, three DCs with one of
# them killed and restarted; federation between two DCs of three servers with east's leader and
# the servers dc1 forwards to killed; three-server clusters with a leader killed) mostly wait, so they run as a second
# group in parallel with the rest; each test starts its own agent on its own loopback address.
#
# usage: run-integration.sh [--quick]
#   --quick  a fast core subset (well under 2 minutes, also with a sanitizer build): agent service
#            register/deregister, KV, catalog and health, two blocking queries, the quick bad-input
#            tests, the CLI tests, three federation tests (WAN members, KV and a catalog
#            register across three DCs) and three servers with five client agents; no interop and none of the other long or slow-client tests. The
#            list is `quick` below; a selector that no longer names a test fails the run.
#
# env: DCGATE_BIN   the agent binary (the Makefile sets it; default build/dcgate)
#      DCGATE_IT_ONLY  optional space-separated list of test files (or file.py::Class[.method])
#                      to run instead of all; it wins over --quick
#      DCGATE_IT_FAST=1  a quicker subset (e.g. for a sanitizer build): only the main group,
#                        without the long tests listed below; it says so on stderr
#      DCGATE_SANITIZED=1  the binary is built with ASan/UBSan: sanitizer reports (of the agents
#                        and of the CLI processes) go to files that are printed at the end, and
#                        any report counts as one failure (leaks show only at exit, when no test
#                        is looking); the tests use longer timeouts
#      DCGATE_IT_KEEP  keep the agents' temp dirs and logs
set -uo pipefail

quick=0
case "${1:-}" in
  "") ;;
  --quick) quick=1; shift ;;
  *) echo "usage: $0 [--quick]" >&2; echo "0 passed, 1 failed"; exit 2 ;;
esac
if [ $# -gt 0 ]; then echo "usage: $0 [--quick]" >&2; echo "0 passed, 1 failed"; exit 2; fi

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
export DCGATE_BIN="${DCGATE_BIN:-$root/build/dcgate}"
py=/usr/bin/python3   # Debian's Python: it has python3-consul; never a pyenv one
runner="$here/integration/runner.py"

if [ ! -x "$DCGATE_BIN" ]; then
  echo "run-integration: agent binary $DCGATE_BIN not found (build it with make)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
if ! "$py" -c 'import consul' 2>/dev/null; then
  echo "run-integration: $py cannot import consul (install Debian's python3-consul: make deps)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

long=(
  "$here/integration/test_example_register.py"
  "$here/integration/test_restart.py"
  "$here/integration/test_slowclient.py"
  "$here/integration/test_session_ttl.py"
  "$here/integration/test_many_waiters.py"
  "$here/integration/test_federation.py"
  "$here/integration/test_federation_cluster.py"
  "$here/integration/test_cluster.py"
  "$here/integration/test_example_cluster.py"
)
# Federation on the emulated WAN (network namespaces, 150 ms each way, loss, stalls): mostly
# waiting too, so a third group of its own, beside the other two.
wan=("$here/integration/test_wan_emulated.py")
main=()
for f in "$here"/integration/test_*.py "$here"/interop/test_*.py; do
  skip=0
  for l in "${long[@]}" "${wan[@]}"; do [ "$f" = "$l" ] && skip=1; done
  [ $skip -eq 0 ] && main+=("$f")
done
it="$here/integration"
quick_tests=(
  "$it/test_agent.py::AgentServiceTest"
  "$it/test_kv.py::KVTest"
  "$it/test_catalog_health.py"
  "$it/test_http.py::BlockingTest.test_kv_returns_on_change"
  "$it/test_http.py::BlockingTest.test_catalog_services_wakes_on_register"
  "$it/test_badinput.py::BadInputTest.test_malformed_json"
  "$it/test_badinput.py::BadInputTest.test_deep_nesting"
  "$it/test_badinput.py::BadInputTest.test_oversized_bodies"
  "$it/test_badinput.py::BadInputTest.test_huge_header"
  "$it/test_badinput.py::BadInputTest.test_truncated_body"
  "$it/test_badinput.py::BadInputTest.test_bad_query_values"
  "$it/test_cli.py"
  "$it/test_tls_matrix.py::TLSMatrixTest"
  "$it/test_tls_matrix.py::StartupRefusalTest"
  "$it/test_tls_reload.py::WanRotationTest"
  "$it/test_https.py"
  "$it/test_federation.py::FederationTest.test_members_wan"
  "$it/test_federation.py::FederationTest.test_kv_every_pair"
  "$it/test_federation.py::FederationTest.test_register_by_body_datacenter"
  "$it/test_client.py::ClientAgentTest"
)
ceiling=540
if [ $quick -eq 1 ] && [ -z "${DCGATE_IT_ONLY:-}" ]; then
  echo "run-integration: --quick: core subset only (no interop, long or slow-client tests)" >&2
  long=(); wan=(); main=("${quick_tests[@]}")
  ceiling=300
fi
if [ -n "${DCGATE_IT_ONLY:-}" ]; then
  read -r -a only <<<"$DCGATE_IT_ONLY"
  sel_long=(); sel_main=()
  for o in "${only[@]}"; do
    sel=""; case "$o" in *::*) sel="::${o#*::}"; o="${o%%::*}" ;; esac
    p="$(cd "$(dirname "$o")" && pwd)/$(basename "$o")"
    case " ${long[*]} " in *" $p "*) sel_long+=("$p$sel") ;; *) sel_main+=("$p$sel") ;; esac
  done
  long=("${sel_long[@]+"${sel_long[@]}"}"); main=("${sel_main[@]+"${sel_main[@]}"}"); wan=()
fi

if [ "${DCGATE_IT_FAST:-0}" = 1 ] && [ $((${#long[@]} + ${#wan[@]})) -gt 0 ]; then
  echo "run-integration: DCGATE_IT_FAST=1: running without: ${long[*]##*/} ${wan[*]##*/}" >&2
  long=(); wan=()
fi

work="$(mktemp -d /tmp/dcgate-it-run.XXXXXX)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

if [ "${DCGATE_SANITIZED:-0}" = 1 ]; then
  # Reports land in $work/san.<pid> instead of the agents' logs (deleted with their temp dirs).
  mkdir -p "$work/san"
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}log_path=$work/san/asan"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}log_path=$work/san/ubsan"
fi

run_group() { # name files...
  local name="$1"; shift
  if [ $# -eq 0 ]; then echo "0 0 0" >"$work/$name.sum"; return 0; fi
  # A hard ceiling so a hung agent or client cannot hold the run past the CI budget.
  timeout -k 10 "$ceiling" "$py" "$runner" "$work/$name.sum" "$@" >"$work/$name.log" 2>&1
  local rc=$?
  if [ ! -s "$work/$name.sum" ]; then
    echo "run-integration: group $name ended without a summary (exit $rc)" >>"$work/$name.log"
    echo "0 1 0" >"$work/$name.sum"
  fi
}

run_group long "${long[@]+"${long[@]}"}" &
long_pid=$!
run_group wan "${wan[@]+"${wan[@]}"}" &
wan_pid=$!
run_group main "${main[@]+"${main[@]}"}"
wait "$long_pid"
wait "$wan_pid"

passed=0; failed=0; skipped=0
for g in main long wan; do
  echo "===== integration group: $g ====="
  [ -f "$work/$g.log" ] && cat "$work/$g.log"
  read -r p f s <"$work/$g.sum"
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done
if [ "${DCGATE_SANITIZED:-0}" = 1 ]; then
  reports=("$work"/san/*)
  if [ -e "${reports[0]}" ]; then
    echo "===== sanitizer reports (${#reports[@]} files) ====="
    for r in "${reports[@]}"; do echo "--- ${r##*/}"; head -c 20000 "$r"; done
    failed=$((failed + 1))
  else
    echo "sanitizers: no reports"
  fi
fi
echo "integration: $(( $(date +%s) - start )) s"
if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
