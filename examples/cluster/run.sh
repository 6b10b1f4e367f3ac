#!/usr/bin/env bash
# One datacenter of three servers and one client agent on one machine, in one command:
#   - starts the servers s1, s2, s3 on $S1_ADDR, $S2_ADDR, $S3_ADDR (default 127.0.0.1 to
#     127.0.0.3) with -bootstrap-expect=3, and the client agent c1 on $C1_ADDR (127.0.0.4);
#     every agent finds the others through -retry-join=$S1_ADDR;
#   - waits until every server knows the elected leader and c1 sees all four members alive;
#   - through c1: `dcgate members`, `dcgate operator raft list-peers`, registers the service
#     `web` with c1's HTTP API and reads it with python-consul, writes and reads a KV key; and
#     reads `web` and the key from every server too; printing each answer;
#   - stops the four agents when it ends, however it ends (trap on EXIT).
# Every wait is bounded; on failure the agents' log tails are printed and the exit code is 1.
#
# env: S1_ADDR, S2_ADDR, S3_ADDR, C1_ADDR  loopback addresses of the four agents
#      DCGATE               the dcgate binary (default: build/dcgate of this checkout)
#      KEEP=1               keep the temporary directory (data dirs, logs)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
DCGATE="${DCGATE:-$root/build/dcgate}"
S1_ADDR="${S1_ADDR:-127.0.0.1}"
S2_ADDR="${S2_ADDR:-127.0.0.2}"
S3_ADDR="${S3_ADDR:-127.0.0.3}"
C1_ADDR="${C1_ADDR:-127.0.0.4}"
PY=/usr/bin/python3 # Debian's Python, which has python3-consul
servers=(s1 s2 s3)
declare -A addr=([s1]="$S1_ADDR" [s2]="$S2_ADDR" [s3]="$S3_ADDR" [c1]="$C1_ADDR")

# Loopback traffic must not go through a proxy (curl and python-consul both honour these).
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY="127.0.0.0/8,localhost" no_proxy="127.0.0.0/8,localhost"
unset CONSUL_HTTP_ADDR DCGATE_HTTP_ADDR

[ -x "$DCGATE" ] || { echo "run.sh: $DCGATE not found; build it with make" >&2; exit 1; }
"$PY" -c 'import consul' 2>/dev/null ||
  { echo "run.sh: $PY cannot import consul (apt-get install python3-consul)" >&2; exit 1; }
if [ "$(printf '%s\n' "${addr[@]}" | sort -u | wc -l)" -ne 4 ]; then
  echo "run.sh: S1_ADDR, S2_ADDR, S3_ADDR and C1_ADDR must be four different addresses" >&2
  exit 1
fi
for a in "$S1_ADDR" "$S2_ADDR" "$S3_ADDR" "$C1_ADDR"; do
  if curl -s -o /dev/null --max-time 2 "http://$a:8500/"; then
    echo "run.sh: something already answers on $a:8500; set S1_ADDR, S2_ADDR, S3_ADDR and" \
      "C1_ADDR to free addresses" >&2
    exit 1
  fi
done

work="$(mktemp -d /tmp/dcgate-cluster.XXXXXX)"
pids=()
stop_agents() {
  local rc=$? pid n
  trap - EXIT
  for pid in "${pids[@]+"${pids[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]+"${pids[@]}"}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    for n in s1 s2 s3 c1; do
      [ -f "$work/$n.log" ] && { echo "----- $n.log (last lines)"; tail -n 30 "$work/$n.log"; } >&2
    done
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
  exit "$rc"
}
trap stop_agents EXIT
trap 'exit 130' INT TERM

fail() { echo "FAILED: $*" >&2; exit 1; }
# wait_for WHAT TRIES CMD...: runs CMD every 0.2 s until it succeeds, at most TRIES times; gives
# up at once if an agent has exited.
wait_for() {
  local what="$1" tries="$2" pid
  shift 2
  for _ in $(seq 1 "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    for pid in "${pids[@]+"${pids[@]}"}"; do
      kill -0 "$pid" 2>/dev/null || fail "$what: an agent exited (see its log below)"
    done
    sleep 0.2
  done
  fail "$what (gave up after $tries tries)"
}
c1_http="$C1_ADDR:8500"
# Every server names the same leader and has the three voters in its raft configuration. (Right
# after the election a server may not have heard from the leader yet and answers "" and no peers;
# c1 passes each such request to one server, so it waits for all of them.)
leader_everywhere() {
  local n l first=""
  for n in "${servers[@]}"; do
    l="$(curl -sf --max-time 2 "http://${addr[$n]}:8500/v1/status/leader")" || return 1
    case "$l" in *:8300\") ;; *) return 1 ;; esac
    [ -z "$first" ] && first="$l"
    [ "$l" = "$first" ] || return 1
    [ "$(curl -sf --max-time 2 "http://${addr[$n]}:8500/v1/operator/raft/configuration" |
      grep -o '"Voter":true' | wc -l)" -eq 3 ] || return 1
  done
}
four_alive() {
  [ "$("$DCGATE" members -status=alive -http-addr "$c1_http" | tail -n +2 | grep -c .)" -eq 4 ]
}
web_passing_on() { # server address
  curl -sf --max-time 5 "http://$1:8500/v1/health/service/web?passing" | grep -q '"Service":"web"'
}

cd "$work"
mkdir s1 s2 s3 c1 # the data dirs

echo "==> starting s1 ($S1_ADDR), s2 ($S2_ADDR), s3 ($S3_ADDR) with -bootstrap-expect=3" \
  "and the client agent c1 ($C1_ADDR)"
for n in "${servers[@]}"; do
  "$DCGATE" agent -server -bootstrap-expect=3 -retry-join="$S1_ADDR" -bind="${addr[$n]}" \
    -client="${addr[$n]}" -data-dir="$work/$n" -node="$n" >"$n.log" 2>&1 &
  pids+=($!)
done
# A client agent has no -server: it keeps its own services and checks and sends everything
# else to a server.
"$DCGATE" agent -retry-join="$S1_ADDR" -bind="$C1_ADDR" -client="$C1_ADDR" \
  -data-dir="$work/c1" -node=c1 >c1.log 2>&1 &
pids+=($!)
wait_for "a leader, known to every server" 150 leader_everywhere
wait_for "c1 to see four members alive" 150 four_alive

# From here on the commands talk to the client agent, as an application on c1's machine would;
# only the reads that show each server's copy go to the servers.
export DCGATE_HTTP_ADDR="$c1_http"

echo "==> the leader: curl -s http://$c1_http/v1/status/leader"
curl -sf --max-time 10 "http://$c1_http/v1/status/leader" || fail "status/leader"
echo

echo "==> dcgate members (DCGATE_HTTP_ADDR=$c1_http)"
"$DCGATE" members || fail "dcgate members"

echo "==> dcgate operator raft list-peers"
"$DCGATE" operator raft list-peers || fail "dcgate operator raft list-peers"

echo "==> registering web with c1: curl -X PUT http://$c1_http/v1/agent/service/register"
code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X PUT \
  -d '{"ID":"web1","Name":"web","Port":8080,"Tags":["v1"]}' \
  "http://$c1_http/v1/agent/service/register")" || true
echo "HTTP $code"
[ "$code" = 200 ] || fail "registering web with c1"

for n in "${servers[@]}"; do
  wait_for "web to pass on $n" 150 web_passing_on "${addr[$n]}"
  echo "==> $n: curl -s 'http://${addr[$n]}:8500/v1/health/service/web?passing'"
  curl -sf --max-time 10 "http://${addr[$n]}:8500/v1/health/service/web?passing" ||
    fail "health/service/web on $n"
  echo
done

echo "==> python-consul: consul.Consul(host='$C1_ADDR', port=8500).health.service('web', passing=True)"
timeout 60 "$PY" -c '
import sys
import consul

c = consul.Consul(host=sys.argv[1], port=8500)
index, nodes = c.health.service("web", passing=True)
for n in nodes:
    checks = " ".join("%s=%s" % (k["CheckID"], k["Status"]) for k in n["Checks"])
    print(n["Node"]["Node"], n["Node"]["Address"], n["Service"]["Service"], n["Service"]["Port"], checks)
' "$C1_ADDR" || fail "python-consul"

echo "==> dcgate kv put app/greeting 'hello from c1'"
"$DCGATE" kv put app/greeting 'hello from c1' || fail "dcgate kv put"
echo "==> dcgate kv get app/greeting"
"$DCGATE" kv get app/greeting || fail "dcgate kv get"

echo "==> app/greeting on every server: curl -s 'http://<server>:8500/v1/kv/app/greeting?raw'"
for n in "${servers[@]}"; do
  v="$(curl -sf --max-time 10 "http://${addr[$n]}:8500/v1/kv/app/greeting?raw")" ||
    fail "reading app/greeting from $n"
  echo "$n: $v"
done

echo "==> stopping the four agents"
echo "OK"
