#!/usr/bin/env bash
# Two federated datacenters on one machine, in one command:
#   - makes a CA and one server certificate per DC with `dcgate tls`, in a temporary directory;
#   - starts dc1 on $DC1_ADDR (default 127.0.0.1) and east on $EAST_ADDR (default 127.0.0.2),
#     each a single server with the HTTP API on :8500 and the WAN port on :8302 (mutual TLS);
#     east's config has retry_join_wan = [dc1], which links the two datacenters;
#   - registers the service `web` with east's agent;
#   - asks dc1 for it three ways: curl, python-consul and `dcgate catalog services -datacenter
#     east`, printing each answer;
#   - stops both agents when it ends, however it ends (trap on EXIT).
# Every wait is bounded; on failure the agents' log tails are printed and the exit code is 1.
#
# env: DC1_ADDR, EAST_ADDR  loopback addresses for the two servers
#      DCGATE               the dcgate binary (default: build/dcgate of this checkout)
#      KEEP=1               keep the temporary directory (certificates, configs, logs)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
DCGATE="${DCGATE:-$root/build/dcgate}"
DC1_ADDR="${DC1_ADDR:-127.0.0.1}"
EAST_ADDR="${EAST_ADDR:-127.0.0.2}"
PY=/usr/bin/python3 # Debian's Python, which has python3-consul

# Loopback traffic must not go through a proxy (curl and python-consul both honour these).
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY="127.0.0.0/8,localhost" no_proxy="127.0.0.0/8,localhost"
unset CONSUL_HTTP_ADDR DCGATE_HTTP_ADDR

[ -x "$DCGATE" ] || { echo "run.sh: $DCGATE not found; build it with make" >&2; exit 1; }
"$PY" -c 'import consul' 2>/dev/null ||
  { echo "run.sh: $PY cannot import consul (apt-get install python3-consul)" >&2; exit 1; }
for a in "$DC1_ADDR" "$EAST_ADDR"; do
  if curl -s -o /dev/null --max-time 2 "http://$a:8500/"; then
    echo "run.sh: something already answers on $a:8500; set DC1_ADDR/EAST_ADDR to free addresses" >&2
    exit 1
  fi
done

work="$(mktemp -d /tmp/dcgate-federation.XXXXXX)"
pids=()
stop_agents() {
  local rc=$? pid i
  trap - EXIT
  for pid in "${pids[@]+"${pids[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]+"${pids[@]}"}"; do
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    for dc in dc1 east; do
      [ -f "$work/$dc.log" ] && { echo "----- $dc.log (last lines)"; tail -n 30 "$work/$dc.log"; } >&2
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
  local what="$1" tries="$2" i pid
  shift 2
  for i in $(seq 1 "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    for pid in "${pids[@]+"${pids[@]}"}"; do
      kill -0 "$pid" 2>/dev/null || fail "$what: an agent exited (see its log below)"
    done
    sleep 0.2
  done
  fail "$what (gave up after $tries tries)"
}
leader() { curl -sf --max-time 2 "http://$1:8500/v1/status/leader" | grep -q ':8300'; }
wan_alive() { [ "$("$DCGATE" members -wan -http-addr "$DC1_ADDR:8500" | grep -c ' alive ')" -ge 2 ]; }
web_in_east() {
  curl -sf --max-time 5 "http://$DC1_ADDR:8500/v1/health/service/web?dc=east" | grep -q '"web"'
}

cd "$work"
echo "==> certificates in $work"
"$DCGATE" tls ca create >tls.log
"$DCGATE" tls cert create -server -dc dc1 >>tls.log
"$DCGATE" tls cert create -server -dc east >>tls.log
ls -1 ./*.pem

# One config per server, in Consul's keys. Only east names the other DC: retry_join_wan.
config() { # dc addr [join-address]
  local join=""
  [ -n "${3:-}" ] && join=",
 \"retry_join_wan\": [\"$3\"]"
  cat <<JSON
{"datacenter": "$1", "node_name": "$1-server", "server": true, "bootstrap_expect": 1,
 "data_dir": "$work/$1-data", "bind_addr": "$2", "client_addr": "$2",
 "ports": {"http": 8500, "serf_wan": 8302},
 "tls": {"defaults": {"ca_file": "consul-agent-ca.pem",
                      "cert_file": "$1-server-consul-0.pem",
                      "key_file": "$1-server-consul-0-key.pem",
                      "verify_incoming": true, "verify_outgoing": true},
         "internal_rpc": {"verify_server_hostname": true}}$join}
JSON
}
config dc1 "$DC1_ADDR" >dc1.json
config east "$EAST_ADDR" "$DC1_ADDR" >east.json

echo "==> starting dc1 on $DC1_ADDR and east on $EAST_ADDR"
"$DCGATE" agent -config-file dc1.json >dc1.log 2>&1 &
pids+=($!)
"$DCGATE" agent -config-file east.json >east.log 2>&1 &
pids+=($!)
wait_for "dc1 to elect its leader" 150 leader "$DC1_ADDR"
wait_for "east to elect its leader" 150 leader "$EAST_ADDR"
wait_for "east to join dc1 over the WAN" 300 wan_alive

echo "==> dcgate members -wan (asked of dc1)"
"$DCGATE" members -wan -http-addr "$DC1_ADDR:8500"

echo "==> registering web with east's agent"
curl -sf --max-time 10 -X PUT -d '{"ID":"web1","Name":"web","Port":8080,"Tags":["v1"]}' \
  "http://$EAST_ADDR:8500/v1/agent/service/register" || fail "registering web in east"
wait_for "web to be visible from dc1 with ?dc=east" 150 web_in_east

echo "==> curl -s 'http://$DC1_ADDR:8500/v1/health/service/web?dc=east'"
curl -sf --max-time 10 "http://$DC1_ADDR:8500/v1/health/service/web?dc=east" || fail "curl ?dc=east"
echo

echo "==> python-consul: consul.Consul(host='$DC1_ADDR', port=8500).health.service('web', dc='east')"
timeout 60 "$PY" - "$DC1_ADDR" <<'PY' || fail "python-consul"
import sys
import consul

c = consul.Consul(host=sys.argv[1], port=8500)
index, nodes = c.health.service('web', dc='east')
for n in nodes:
    print(n['Node']['Node'], n['Node'].get('Datacenter'), n['Service']['Service'], n['Service']['Port'])
PY

echo "==> dcgate catalog services -datacenter east (asked of dc1)"
"$DCGATE" catalog services -datacenter east -http-addr "$DC1_ADDR:8500" || fail "dcgate catalog services"

echo "==> stopping both agents"
echo "OK"
