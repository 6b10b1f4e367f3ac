#!/usr/bin/env bash
# bench/federation.sh: the federation figures of `make bench` (bench/run.sh calls it at the end;
# it also runs alone). Starts two datacenters, dc1 and east, one dcgate server each on its own
# leased loopback address, linked over the WAN with mutual TLS (certificates from `dcgate tls`),
# and prints each figure next to its anchor measured in the same run, as a ratio:
#   read latency, 1 client, p50 and p99     a KV read sent to dc1 with ?dc=east, minus the link's
#                                           own round trip, against the same read made in east
#                                           (alternating slices, medians)   target: adds < 1 ms at p99
#   reads/s at saturation, distinct keys    forwarded driven with 256 connections (wrk -t2),
#                                           against the better of local with 256 (wrk -t2) and
#                                           with 16 (wrk -t1)                target >= 0.3x
#   reads/s, 16 connections                 the same at 16 connections, distinct keys and one shared
#                                           key (identical in-flight reads share one WAN request);
#                                           context: a forwarded read takes longer, so 16 clients
#                                           leave CPU idle and measure latency more than capacity
#   WAN bytes per remote watcher per change N watchers blocked on one remote key, coalesced into one
#                                           WAN request, against N distinct queries (no sharing)
# What each figure means: docs/bench.md. Usage: bash bench/federation.sh /abs/path/to/build/dcgate
#
# Loopback only: the two servers take addresses in 127.0.0.0/8 leased with the integration tests'
# lock files (${TMPDIR:-/tmp}/dcgate-it-addr/<n>.lock, flock), where ports 8300-8302, 8500 and
# 8600 are free. Bounded: agent start 30 s, WAN join 60 s, each wrk run its duration plus 30 s,
# the watcher tool 600 s (`timeout` behind each). Everything started is stopped on exit (trap).
# Missed targets print MISS and exit 0; the exit status is non-zero only when something broke.
# Knobs: BENCH_FED_DURATION (s per throughput run, default BENCH_DURATION or 5), BENCH_FED_SLICE
# (s per latency slice, 3), BENCH_FED_CONNS (16), BENCH_FED_SAT_CONNS (256), BENCH_FED_KEYS (1000),
# BENCH_FED_WATCHERS (200),
# BENCH_FED_ROUNDS (watcher rounds of each kind, 3), BENCH_KEEP=1 keeps the temp dir.
set -uo pipefail

DCGATE=${1:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

DURATION=${BENCH_FED_DURATION:-${BENCH_DURATION:-5}}
SLICE=${BENCH_FED_SLICE:-3}
CONNS=${BENCH_FED_CONNS:-16}
SAT_CONNS=${BENCH_FED_SAT_CONNS:-256} # enough clients to keep both paths busy (docs/bench.md)
SAT_THREADS=2
NKEYS=${BENCH_FED_KEYS:-1000}
WATCHERS=${BENCH_FED_WATCHERS:-200}
ROUNDS=${BENCH_FED_ROUNDS:-3}
REMOTE=east
KEY_PATH=/v1/kv/bench/key      # the 1 KiB value, for latency and the shared-key throughput
KEYS_PREFIX=/v1/kv/bench/fed/k # NKEYS keys of 1 KiB, for the distinct-key throughput
WATCH_KEY=bench/watch

log() { echo "bench: federation: $*" >&2; }
BROKEN=()
broke() {
	log "BROKEN: $*"
	BROKEN+=("$*")
}

echo
echo "Federation: dc1 and $REMOTE, one server each, mutual TLS on the WAN (loopback)"
if [ -z "$DCGATE" ] || [ ! -x "$DCGATE" ]; then
	echo "usage: bash bench/federation.sh /abs/path/to/build/dcgate (got '${DCGATE}')" >&2
	exit 2
fi
for v in DURATION SLICE CONNS SAT_CONNS NKEYS WATCHERS ROUNDS; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
		echo "bench: federation: $v must be a positive integer (got '${!v}')" >&2
		exit 2
	fi
done
[ "$DURATION" -le 300 ] && [ "$SLICE" -le 60 ] || { echo "bench: federation: at most 300 s a run, 60 s a slice" >&2; exit 2; }
[ "$NKEYS" -le 10000 ] && [ "$NKEYS" -gt "$CONNS" ] && [ "$NKEYS" -gt "$SAT_CONNS" ] || { echo "bench: federation: BENCH_FED_KEYS must be above the connections and at most 10000" >&2; exit 2; }
[ "$SAT_CONNS" -le 4096 ] || { echo "bench: federation: at most 4096 connections" >&2; exit 2; }
[ "$WATCHERS" -le 5000 ] && [ "$ROUNDS" -le 20 ] || { echo "bench: federation: at most 5000 watchers, 20 rounds" >&2; exit 2; }
for tool in wrk curl flock timeout awk "$PY"; do
	command -v "$tool" >/dev/null 2>&1 || { echo "bench: federation: missing $tool (make deps installs it)" >&2; exit 1; }
done
for f in fed_keys.lua fed_watch.py; do
	[ -f "$HERE/$f" ] || { echo "bench: federation: bench/$f is missing" >&2; exit 1; }
done

# Loopback traffic never goes through a proxy (curl honours these).
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY="127.0.0.0/8,localhost" no_proxy="127.0.0.0/8,localhost"

TMP=$(mktemp -d /tmp/dcgate-bench-fed.XXXXXX)
PIDS=()
cleanup() { # shellcheck disable=SC2317 # called by the EXIT trap
	local pid
	for pid in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$pid"; done
	if [ "${BENCH_KEEP:-0}" = 1 ] || [ ${#BROKEN[@]} -gt 0 ]; then
		log "logs kept in $TMP"
	else
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null

# ---------------------------------------------------------------------------------------------
# helpers

# Leases a loopback address the way tests/integration/harness.py does: an flock on
# <lockdir>/<n>.lock, held by this shell (and inherited by the agents) until exit, then a check
# that the agent's ports are free there. Sets LEASED (the address).
LOCK_DIR="${TMPDIR:-/tmp}/dcgate-it-addr"
LEASED_N=()
lease_addr() {
	local n fd
	mkdir -p "$LOCK_DIR" 2>/dev/null
	for n in $(seq 240 250) $(seq 200 239); do
		[[ " ${LEASED_N[*]-} " == *" $n "* ]] && continue
		exec {fd}>>"$LOCK_DIR/$n.lock" || continue
		chmod 666 "$LOCK_DIR/$n.lock" 2>/dev/null
		if ! flock -n "$fd"; then
			exec {fd}>&-
			continue
		fi
		if "$PY" - "127.0.0.$n" <<'EOF'; then
import socket, sys
addr = sys.argv[1]
for port, kind in [(p, socket.SOCK_STREAM) for p in (8300, 8301, 8302, 8500, 8600)] + \
        [(p, socket.SOCK_DGRAM) for p in (8301, 8302, 8600)]:
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
EOF
			LEASED="127.0.0.$n"
			LEASED_N+=("$n")
			return 0
		fi
		exec {fd}>&-
	done
	return 1
}

# get_json <url> <out-file>: one GET, 200 or it returns 1 (nothing recorded).
get_ok() { [ "$(curl -s --max-time 5 -o "$2" -w '%{http_code}' "$1")" = 200 ]; }

# wrk_run <tag> <wrk args...>: sets WRK_RPS, WRK_P50, WRK_P99 (ms; "-" without --latency), or
# returns 1 with them empty (and records why) if wrk failed or any answer was not 2xx/3xx. Runs in
# this shell (not in $(...)), so that what broke is kept.
WRK_RPS='' WRK_P50='' WRK_P99=''
wrk_run() {
	local tag=$1 out="$TMP/wrk-$1.txt" secs=0 a r
	WRK_RPS='' WRK_P50='' WRK_P99=''
	shift
	for a in "$@"; do [[ $a =~ ^-d([0-9]+)s$ ]] && secs=${BASH_REMATCH[1]}; done
	if ! timeout $((secs + 30)) wrk "$@" >"$out" 2>&1; then
		broke "wrk $* failed: $(tail -n 3 "$out" | tr '\n' ' ')"
		return 1
	fi
	if grep -q 'Non-2xx or 3xx responses' "$out"; then
		broke "wrk $*: $(grep 'Non-2xx' "$out" | sed 's/^ *//')"
		return 1
	fi
	if grep -q 'Socket errors' "$out"; then
		log "note: wrk ($tag): $(grep 'Socket errors' "$out" | sed 's/^ *//')"
	fi
	r=$(awk '
		function ms(s) {
			if (s ~ /us$/) return s * 0.001     # awk reads the leading number
			if (s ~ /ms$/) return s + 0
			if (s ~ /s$/ && s !~ /[mu]s$/) return s * 1000
			if (s ~ /m$/) return s * 60000
			return ""
		}
		/^Requests\/sec:/ {rps = $2}
		$1 == "50%" {p50 = ms($2)}
		$1 == "99%" {p99 = ms($2)}
		END {if (rps == "") exit 1; printf "%s %s %s\n", rps, (p50 == "" ? "-" : sprintf("%.4f", p50)), (p99 == "" ? "-" : sprintf("%.4f", p99))}' "$out") || {
		broke "could not read Requests/sec from wrk's output ($out)"
		return 1
	}
	read -r WRK_RPS WRK_P50 WRK_P99 <<<"$r"
}

# metric <addr> <name>: a counter's Count or a gauge's Value from /v1/agent/metrics
metric() {
	curl -s --max-time 5 "http://$1:8500/v1/agent/metrics" | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
for e in (d.get("Counters") or []) + (d.get("Gauges") or []):
    if e.get("Name") == sys.argv[1]:
        print(e.get("Count", e.get("Value")))
        break' "$2" 2>/dev/null
}

# link_rtt: east's MedianRTTMs as dc1 sees it (the WAN pool's smoothed probe RTT), or nothing
link_rtt() {
	curl -s --max-time 5 "http://$DC1/v1/catalog/datacenters?detailed" | "$PY" -c '
import json, sys
for d in json.load(sys.stdin):
    if d.get("Datacenter") == sys.argv[1] and d.get("MedianRTTMs", -1) >= 0:
        print(d["MedianRTTMs"])' "$REMOTE" 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
# two datacenters

DC1_ADDR='' EAST_ADDR='' DC1='' EAST=''
if lease_addr; then DC1_ADDR=$LEASED; else broke "no free loopback address to lease for dc1"; fi
if [ -n "$DC1_ADDR" ]; then
	if lease_addr; then EAST_ADDR=$LEASED; else broke "no free loopback address to lease for $REMOTE"; fi
fi
DC1="$DC1_ADDR:8500" EAST="$EAST_ADDR:8500"

if [ ${#BROKEN[@]} -eq 0 ]; then
	log "certificates (dcgate tls) in $TMP"
	(cd "$TMP" && timeout 30 "$DCGATE" tls ca create &&
		timeout 30 "$DCGATE" tls cert create -server -dc dc1 &&
		timeout 30 "$DCGATE" tls cert create -server -dc "$REMOTE") >"$TMP/tls.log" 2>&1 ||
		broke "dcgate tls could not make the CA and certificates: $(tail -n 2 "$TMP/tls.log" | tr '\n' ' ')"
fi

config() { # <dc> <addr> [wan join address]
	local join=
	[ -n "${3:-}" ] && join=", \"retry_join_wan\": [\"$3\"]"
	cat <<JSON
{"datacenter": "$1", "node_name": "$1-bench", "server": true, "bootstrap_expect": 1,
 "data_dir": "$TMP/$1-data", "bind_addr": "$2", "client_addr": "$2",
 "tls": {"defaults": {"ca_file": "$TMP/consul-agent-ca.pem",
                      "cert_file": "$TMP/$1-server-consul-0.pem",
                      "key_file": "$TMP/$1-server-consul-0-key.pem",
                      "verify_incoming": true, "verify_outgoing": true},
         "internal_rpc": {"verify_server_hostname": true}}$join}
JSON
}

# start_agent <dc> <addr> [join]: starts the server, waits (at most 30 s) for its leader.
start_agent() {
	local dc=$1 addr=$2 leader i pid
	config "$dc" "$addr" "${3:-}" >"$TMP/$dc.json"
	mkdir -p "$TMP/$dc-data"
	"$DCGATE" agent -config-file "$TMP/$dc.json" >"$TMP/$dc.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	for ((i = 0; i < 300; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 15 "$TMP/$dc.log" | sed 's/^/bench: federation:   /' >&2
			broke "$dc's server exited during startup: $(tail -n 1 "$TMP/$dc.log") (log: $TMP/$dc.log)"
			return 1
		fi
		leader=$(curl -s --max-time 1 "http://$addr:8500/v1/status/leader" 2>/dev/null)
		[[ $leader =~ ^\"[^\"]+\"$ ]] && return 0
		sleep 0.1
	done
	broke "$dc's server had no leader after 30 s (last answer: '${leader:-none}'); see $TMP/$dc.log"
	return 1
}

alive_all() { kill -0 "${PIDS[0]}" 2>/dev/null && kill -0 "${PIDS[1]}" 2>/dev/null; }

if [ ${#BROKEN[@]} -eq 0 ]; then
	log "dc1 on $DC1_ADDR, $REMOTE on $EAST_ADDR (retry_join_wan dc1)"
	start_agent dc1 "$DC1_ADDR" && start_agent "$REMOTE" "$EAST_ADDR" "$DC1_ADDR"
fi
if [ ${#BROKEN[@]} -eq 0 ]; then
	# WAN pool formed: dc1 lists 2 members with Status 1, and has an RTT sample for east
	joined=
	for ((i = 0; i < 600; i++)); do
		alive_all || break
		if get_ok "http://$DC1/v1/agent/members?wan=1" "$TMP/members.json" &&
			[ "$("$PY" -c 'import json,sys; print(sum(1 for m in json.load(open(sys.argv[1])) if m.get("Status") == 1))' "$TMP/members.json" 2>/dev/null)" = 2 ] &&
			[ -n "$(link_rtt)" ]; then
			joined=1
			break
		fi
		sleep 0.1
	done
	if [ -z "$joined" ]; then
		alive_all || broke "a server died while joining the WAN; see $TMP/dc1.log, $TMP/$REMOTE.log"
		alive_all && broke "dc1 did not list 2 alive WAN members with an RTT for $REMOTE within 60 s; see $TMP/*.log"
	fi
fi

# The data, written in east: the 1 KiB value of bench/run.sh's KV read, under bench/key and under
# NKEYS keys for the distinct-key throughput. One keep-alive connection.
if [ ${#BROKEN[@]} -eq 0 ]; then
	log "writing $((NKEYS + 1)) keys of 1 KiB in $REMOTE"
	make_kv_value "$TMP/value.json" || broke "could not make the KV value"
fi
if [ ${#BROKEN[@]} -eq 0 ]; then
	if ! timeout 120 "$PY" - "$EAST_ADDR" "$TMP/value.json" "$KEY_PATH" "$KEYS_PREFIX" "$NKEYS" "$DC1_ADDR" "$REMOTE" <<'EOF' 2>"$TMP/keys.err"; then
import http.client, sys
addr, value, key, prefix, n, dc1, remote = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6], sys.argv[7]
s = open(value, "rb").read()  # bench/lib.sh's make_kv_value: bench/run.sh's 1 KiB KV value
c = http.client.HTTPConnection(addr, 8500, timeout=10)
for path in [key] + ["%s%04d" % (prefix, i) for i in range(n)]:
    c.request("PUT", path, body=s)
    r = c.getresponse()
    body = r.read()
    if r.status != 200 or body.strip() != b"true":
        sys.exit("PUT %s answered %d: %r" % (path, r.status, body[:200]))
# read back, in east and through dc1
for host, q in ((addr, ""), (dc1, "&dc=" + remote)):
    for path in (key, "%s%04d" % (prefix, n - 1)):
        h = http.client.HTTPConnection(host, 8500, timeout=10)
        h.request("GET", path + "?raw" + q)
        r = h.getresponse()
        body = r.read()
        if r.status != 200 or body != s:
            sys.exit("GET %s?raw%s on %s answered %d: %r" % (path, q, host, r.status, body[:200]))
EOF
		broke "writing the keys: $(tail -n 3 "$TMP/keys.err" | tr '\n' ' ')"
	fi
fi

# Each phase runs when the two DCs came up and both servers still run, whatever an earlier
# phase ran into, so one broken figure does not hide the others.
UP=
[ ${#BROKEN[@]} -eq 0 ] && UP=1
up() { [ -n "$UP" ] && alive_all; }

# ---------------------------------------------------------------------------------------------
# 1. latency: one client, sequential, local and forwarded in alternating slices

L_P50=() L_P99=() F_P50=() F_P99=() RTTS=()
LOCAL_URL="http://$EAST$KEY_PATH"
FWD_URL="http://$DC1$KEY_PATH?dc=$REMOTE"
if up; then
	log "latency: wrk -t1 -c1 -d${SLICE}s --latency, local and forwarded in 3 alternating slices"
	wrk_run warm-local -t1 -c1 -d1s "$LOCAL_URL"
	wrk_run warm-fwd -t1 -c1 -d1s "$FWD_URL"
	for s in 1 2 3; do
		if wrk_run "lat-local-$s" -t1 -c1 -d"${SLICE}s" --latency "$LOCAL_URL"; then
			L_P50+=("$WRK_P50") L_P99+=("$WRK_P99")
			log "  slice $s local:     p50 $WRK_P50 ms  p99 $WRK_P99 ms  ($(fmt %.0f "$WRK_RPS") reads/s)"
		fi
		if wrk_run "lat-fwd-$s" -t1 -c1 -d"${SLICE}s" --latency "$FWD_URL"; then
			F_P50+=("$WRK_P50") F_P99+=("$WRK_P99")
			rtt=$(link_rtt)
			[ -n "$rtt" ] && RTTS+=("$rtt")
			log "  slice $s forwarded: p50 $WRK_P50 ms  p99 $WRK_P99 ms  ($(fmt %.0f "$WRK_RPS") reads/s), link RTT ${rtt:-?} ms"
		fi
	done
	# a figure is the median of all 3 slices or it is not given
	[ ${#L_P50[@]} -eq 3 ] || L_P50=() L_P99=()
	[ ${#F_P50[@]} -eq 3 ] || F_P50=() F_P99=()
	alive_all || broke "a server died during the latency runs; see $TMP/*.log"
	[ ${#RTTS[@]} -gt 0 ] || broke "no MedianRTTMs for $REMOTE in dc1's /v1/catalog/datacenters?detailed"
fi
LP50=$(median "${L_P50[@]+"${L_P50[@]}"}") LP99=$(median "${L_P99[@]+"${L_P99[@]}"}")
FP50=$(median "${F_P50[@]+"${F_P50[@]}"}") FP99=$(median "${F_P99[@]+"${F_P99[@]}"}")
RTT=$(median "${RTTS[@]+"${RTTS[@]}"}")
minus() { [ -n "${1:-}" ] && [ -n "${2:-}" ] && awk -v a="$1" -v b="$2" 'BEGIN {printf "%.4f", a - b}'; }
FP50_NET=$(minus "$FP50" "$RTT") FP99_NET=$(minus "$FP99" "$RTT")
ADDED=$(minus "$FP99_NET" "$LP99")

# ---------------------------------------------------------------------------------------------
# 2. throughput: CONNS connections, distinct keys (no sharing), then one shared key

coalesced_now() { metric "$DC1_ADDR" dcgate.federation.coalesced; }
T_LOCAL='' T_FWD='' S_LOCAL='' S_FWD='' T_COAL='' S_COAL='' X_LOCAL='' X_FWD='' X_COAL=''
X_ANCHOR='' X_ANCHOR_AT=''
if up; then
	log "throughput: wrk -t1 -c$CONNS -d${DURATION}s, local and forwarded in 2 alternating slices each:"
	log "  $NKEYS distinct keys (bench/fed_keys.lua), then one key"
	keys=(-s "$HERE/fed_keys.lua")
	# rps_run <tag> <url> [script args...]: one run; WRK_RPS (wrk_run records what broke)
	rps_run() {
		local tag=$1 url=$2
		shift 2
		if [ $# -gt 0 ]; then
			wrk_run "$tag" -t1 -c"$CONNS" -d"${DURATION}s" "${keys[@]}" "$url" -- "$@"
		else
			wrk_run "$tag" -t1 -c"$CONNS" -d"${DURATION}s" "$url"
		fi
	}
	# coalesced reads (dc1's dcgate.federation.coalesced) during the forwarded slices
	coal_delta() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$2" -v b="$1" 'BEGIN {printf "%.0f", a - b}'; }
	wrk_run warm-keys-local -t1 -c"$CONNS" -d1s "${keys[@]}" "http://$EAST" -- "$KEYS_PREFIX" "$NKEYS" 1
	wrk_run warm-keys-fwd -t1 -c"$CONNS" -d1s "${keys[@]}" "http://$DC1" -- "$KEYS_PREFIX" "$NKEYS" 1 "?dc=$REMOTE"
	TL=() TF=() SL=() SF=() T_COAL=0 S_COAL=0
	for s in 1 2; do
		rps_run "keys-local-$s" "http://$EAST" "$KEYS_PREFIX" "$NKEYS" 1 && TL+=("$WRK_RPS")
		lv=$WRK_RPS
		c0=$(coalesced_now)
		rps_run "keys-fwd-$s" "http://$DC1" "$KEYS_PREFIX" "$NKEYS" 1 "?dc=$REMOTE" && TF+=("$WRK_RPS")
		fv=$WRK_RPS
		d=$(coal_delta "$c0" "$(coalesced_now)") && T_COAL=$((T_COAL + d))
		log "  slice $s distinct keys: local $(fmt %.0f "$lv") reads/s, forwarded $(fmt %.0f "$fv") reads/s (reads that shared a WAN request: ${d:-?})"
	done
	# saturation: SAT_CONNS connections over SAT_THREADS wrk threads, distinct keys
	log "  saturation: wrk -t$SAT_THREADS -c$SAT_CONNS -d${DURATION}s, $NKEYS distinct keys:"
	XL=() XF=() X_COAL=0
	wrk_run warm-sat-fwd -t"$SAT_THREADS" -c"$SAT_CONNS" -d1s "${keys[@]}" "http://$DC1" -- "$KEYS_PREFIX" "$NKEYS" "$SAT_THREADS" "?dc=$REMOTE"
	for s in 1 2; do
		wrk_run "sat-local-$s" -t"$SAT_THREADS" -c"$SAT_CONNS" -d"${DURATION}s" "${keys[@]}" "http://$EAST" -- "$KEYS_PREFIX" "$NKEYS" "$SAT_THREADS" && XL+=("$WRK_RPS")
		lv=$WRK_RPS
		c0=$(coalesced_now)
		wrk_run "sat-fwd-$s" -t"$SAT_THREADS" -c"$SAT_CONNS" -d"${DURATION}s" "${keys[@]}" "http://$DC1" -- "$KEYS_PREFIX" "$NKEYS" "$SAT_THREADS" "?dc=$REMOTE" && XF+=("$WRK_RPS")
		fv=$WRK_RPS
		d=$(coal_delta "$c0" "$(coalesced_now)") && X_COAL=$((X_COAL + d))
		log "  slice $s saturation:    local $(fmt %.0f "$lv") reads/s, forwarded $(fmt %.0f "$fv") reads/s (reads that shared a WAN request: ${d:-?})"
	done
	wrk_run warm-key-fwd -t1 -c"$CONNS" -d1s "$FWD_URL"
	for s in 1 2; do
		rps_run "key-local-$s" "$LOCAL_URL" && SL+=("$WRK_RPS")
		lv=$WRK_RPS
		c0=$(coalesced_now)
		rps_run "key-fwd-$s" "$FWD_URL" && SF+=("$WRK_RPS")
		fv=$WRK_RPS
		d=$(coal_delta "$c0" "$(coalesced_now)") && S_COAL=$((S_COAL + d))
		log "  slice $s one key:       local $(fmt %.0f "$lv") reads/s, forwarded $(fmt %.0f "$fv") reads/s (reads that shared a WAN request: ${d:-?})"
	done
	# a figure is the median of both slices or it is not given
	[ ${#TL[@]} -eq 2 ] || TL=()
	[ ${#TF[@]} -eq 2 ] || TF=()
	[ ${#SL[@]} -eq 2 ] || SL=()
	[ ${#SF[@]} -eq 2 ] || SF=()
	[ ${#XL[@]} -eq 2 ] || XL=()
	[ ${#XF[@]} -eq 2 ] || XF=()
	X_LOCAL=$(median "${XL[@]+"${XL[@]}"}") X_FWD=$(median "${XF[@]+"${XF[@]}"}")
	T_LOCAL=$(median "${TL[@]+"${TL[@]}"}") T_FWD=$(median "${TF[@]+"${TF[@]}"}")
	# the anchor is local at its best: two wrk threads take CPU from a local server that one
	# thread keeps busy, so local with 16 connections may beat local with 256
	X_ANCHOR=$X_LOCAL X_ANCHOR_AT="$SAT_CONNS conns"
	if [ -n "$T_LOCAL" ] && { [ -z "$X_LOCAL" ] || awk -v a="$T_LOCAL" -v b="$X_LOCAL" 'BEGIN {exit !(a > b)}'; }; then
		X_ANCHOR=$T_LOCAL X_ANCHOR_AT="$CONNS conns"
	fi
	S_LOCAL=$(median "${SL[@]+"${SL[@]}"}") S_FWD=$(median "${SF[@]+"${SF[@]}"}")
	alive_all || broke "a server died during the throughput runs; see $TMP/*.log"
fi

# ---------------------------------------------------------------------------------------------
# 3. WAN bytes per remote watcher per change, coalesced and not (bench/fed_watch.py)

W_SHARED='' W_DISTINCT='' W_INFLIGHT='' W_BG=''
if up; then
	log "watchers: $WATCHERS blocked on dc1 with ?dc=$REMOTE, one PUT in $REMOTE; shared and distinct queries, $ROUNDS rounds each"
	timeout -k 10 600 "$PY" "$HERE/fed_watch.py" --dc1 "$DC1" --remote "$EAST" --dc "$REMOTE" \
		--key "$WATCH_KEY" --value-file "$TMP/value.json" --watchers "$WATCHERS" --rounds "$ROUNDS" \
		>"$TMP/watch.out" 2>"$TMP/watch.err"
	rc=$?
	sed 's/^/bench: federation:   /' "$TMP/watch.out" >&2
	if [ $rc -ne 0 ]; then
		tail -n 5 "$TMP/watch.err" | sed 's/^/bench: federation:   /' >&2
		broke "bench/fed_watch.py exited with status $rc$([ $rc = 124 ] && echo ' (timed out after 600 s)')"
	fi
	W_SHARED=$(awk '$1 == "shared_bytes_per_watcher" {print $2}' "$TMP/watch.out")
	W_DISTINCT=$(awk '$1 == "distinct_bytes_per_watcher" {print $2}' "$TMP/watch.out")
	W_INFLIGHT=$(awk '$1 == "shared_inflight_max" {print $2}' "$TMP/watch.out")
	W_BG=$(awk '$1 == "background_bytes_per_s" {print $2}' "$TMP/watch.out")
	alive_all || broke "a server died during the watcher rounds; see $TMP/*.log"
fi

# ---------------------------------------------------------------------------------------------
# report (stdout)

row() { printf '%-44s %12s %12s %7s   %s\n' "$@"; }
echo "dc1 ($DC1_ADDR) forwards to $REMOTE ($EAST_ADDR) over one WAN link (nng, dcgate's OpenSSL"
echo "engine); the anchor of each figure is the same request made in $REMOTE directly, measured in"
echo "this run. Reads: GET $KEY_PATH (1 KiB value), wrk with keep-alive; latency: wrk -t1 -c1"
echo "--latency in 3 alternating slices of ${SLICE} s, medians. Higher is better for reads/s, lower"
echo "for the rest."
echo
row "figure" "forwarded" "local" "ratio" "anchor is"
row "read latency, 1 client (ms)" "" "" "" "(link RTT $(fmt %.3f "$RTT") ms, $REMOTE's MedianRTTMs seen by dc1)"
row "  p50, forwarded minus link RTT" "$(fmt %.3f "$FP50_NET")" "$(fmt %.3f "$LP50")" "$(ratio "$FP50_NET" "$LP50")" "the same read in $REMOTE"
row "  p99, forwarded minus link RTT" "$(fmt %.3f "$FP99_NET")" "$(fmt %.3f "$LP99")" "$(ratio "$FP99_NET" "$LP99")" "the same read in $REMOTE"
row "  p50, forwarded as measured" "$(fmt %.3f "$FP50")" "$(fmt %.3f "$LP50")" "$(ratio "$FP50" "$LP50")" "the same read in $REMOTE (context)"
row "  p99, forwarded as measured" "$(fmt %.3f "$FP99")" "$(fmt %.3f "$LP99")" "$(ratio "$FP99" "$LP99")" "the same read in $REMOTE (context)"
row "reads/s, saturated, $NKEYS distinct keys" "$(fmt %.0f "$X_FWD")" "$(fmt %.0f "$X_ANCHOR")" "$(ratio "$X_FWD" "$X_ANCHOR")" "local at its best (${X_ANCHOR_AT:--}); fwd at $SAT_CONNS conns"
row "reads/s, $SAT_CONNS conns, $NKEYS distinct keys" "$(fmt %.0f "$X_FWD")" "$(fmt %.0f "$X_LOCAL")" "$(ratio "$X_FWD" "$X_LOCAL")" "the same reads in $REMOTE (context)"
row "reads/s, $CONNS conns, $NKEYS distinct keys" "$(fmt %.0f "$T_FWD")" "$(fmt %.0f "$T_LOCAL")" "$(ratio "$T_FWD" "$T_LOCAL")" "the same reads in $REMOTE (context)"
row "reads/s, $CONNS conns, one key" "$(fmt %.0f "$S_FWD")" "$(fmt %.0f "$S_LOCAL")" "$(ratio "$S_FWD" "$S_LOCAL")" "(identical reads share one WAN request)"
echo "  (reads/s: 2 alternating slices of ${DURATION} s each, medians; forwarded reads that shared an"
echo "  identical one's WAN request, dcgate.federation.coalesced: ${X_COAL:--} saturated, ${T_COAL:--} with"
echo "  distinct keys at $CONNS, ${S_COAL:--} with one key; $SAT_CONNS conns: wrk -t$SAT_THREADS, $CONNS conns: wrk -t1)"
echo
row "figure" "coalesced" "distinct" "ratio" "anchor is"
# (a ratio of a few thousandths: 4 decimals)
WB_RATIO=-
[ -n "$W_SHARED" ] && [ -n "$W_DISTINCT" ] && WB_RATIO=$(awk -v a="$W_SHARED" -v b="$W_DISTINCT" 'BEGIN {if (b > 0) printf "%.4f", a / b; else printf "-"}')
row "WAN bytes per remote watcher per change" "$(fmt %.1f "$W_SHARED")" "$(fmt %.1f "$W_DISTINCT")" "$WB_RATIO" "$WATCHERS distinct queries (no sharing)"
row "  WAN requests in flight, $WATCHERS watchers (max)" "$(fmt %.0f "$W_INFLIGHT")" "$WATCHERS" "$(ratio "$W_INFLIGHT" "$WATCHERS")" "one per distinct query"
echo "  ($WATCHERS clients blocked on dc1 with ?dc=$REMOTE&index=..&wait=60s, one PUT in $REMOTE, all"
echo "  return; dc1's dcgate.wan.bytes_sent + bytes_received, less the pool's background traffic"
echo "  ($(fmt %.0f "$W_BG") bytes/s of probes and push-pull, measured before), divided by $WATCHERS;"
echo "  medians of $ROUNDS rounds each, alternating)"
echo

target() { # <label> <value> <shown> <awk condition on v>
	local verdict shown=$3
	if [ -z "$2" ] || [ "$2" = - ]; then
		verdict="n/a (not measured)"
		shown=-
	elif awk -v v="$2" "BEGIN {exit !($4)}"; then
		verdict=PASS
	else
		verdict=MISS
	fi
	printf 'target: %-52s %10s  %s\n' "$1" "$shown" "$verdict"
}
target "forwarding adds < 1 ms at p99 (fwd - RTT - local)" "$ADDED" "$(fmt %.3f "$ADDED") ms" "v < 1"
tr=$(ratio "$X_FWD" "$X_ANCHOR")
target "forwarded reads/s >= 0.3 x local (saturated, distinct)" "$tr" "$tr" "v >= 0.3"
target "one WAN request for $WATCHERS identical watchers" "$W_INFLIGHT" "$(fmt %.0f "$W_INFLIGHT")" "v == 1"

if [ ${#BROKEN[@]} -gt 0 ]; then
	# what the servers complained about, most frequent first
	for dc in dc1 "$REMOTE"; do
		[ -f "$TMP/$dc.log" ] || continue
		grep -E '\[(WARN|ERROR)\]' "$TMP/$dc.log" | sed 's/^[^ ]* *//' | sort | uniq -c | sort -rn |
			head -n 5 | sed "s/^/bench: federation: $dc.log: /" >&2
	done
	echo
	echo "federation broken (figures above marked - were not measured):"
	printf '  %s\n' "${BROKEN[@]}"
	exit 1
fi
exit 0
