#!/usr/bin/env bash
# bench/raft.sh: the KV write figures of `make bench` (bench/run.sh calls it; it also runs alone).
# Starts etcd 3.4 (Debian's etcd-server) as a 3-member cluster on 127.0.0.201-203 and dcgate as a
# RAFT_SERVERS-server datacenter (3 by default) on 127.0.0.211-213, both on this machine with their
# data on the same file system and fsync as each does by default, and drives both with the same
# load: wrk PUTs of distinct keys with a 128-byte value at concurrency 1, 16 and 64, to each
# one's leader. Prints puts/s and p99 of dcgate next to etcd's, as ratios, and the targets
# (KV writes >= 2x etcd at each concurrency). What the figures mean: docs/bench.md.
# Usage: bash bench/raft.sh /abs/path/to/build/dcgate
#
# etcd-server is installed here (apt-get, once; quiet when present), not by scripts/install-deps.sh:
# only this bench needs it. Until dcgate runs multi-server datacenters, RAFT_SERVERS=3 reports the
# dcgate figures as "n/a (3-server DC not available)" (an agent that refuses -bootstrap-expect=3, or
# no leader within 30 s) and still measures etcd; RAFT_SERVERS=1 measures one dcgate server.
#
# Loopback only, at fixed addresses (the issue's): each is claimed with the integration tests' lock
# file (${TMPDIR:-/tmp}/dcgate-it-addr/<n>.lock, flock, waiting at most 60 s) and its ports must be
# free. Bounded: etcd start 30 s, dcgate start 30 s, each wrk run its duration plus 30 s (`timeout`
# behind each). Everything started is stopped on exit (trap), by pid. Missed targets print MISS
# and exit 0; the exit status is non-zero only when something broke (etcd did not come up, a
# server died, a write got anything but a success, a tool failed or timed out).
# Knobs: RAFT_SERVERS (1 or 3, default 3), BENCH_RAFT_DURATION (s per figure, 10, split into
# BENCH_RAFT_SLICES alternating slices of etcd and dcgate, 3, each figure their median),
# BENCH_RAFT_VALUE (value bytes, 128), BENCH_KEEP=1 keeps the temp dir.
set -uo pipefail

DCGATE=${1:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

SERVERS=${RAFT_SERVERS:-3}
DURATION=${BENCH_RAFT_DURATION:-10}
VALUE_SIZE=${BENCH_RAFT_VALUE:-128}
CONCS=(1 16 64) # the issue's
SLICES=${BENCH_RAFT_SLICES:-3} # alternating slices of each run (measure)
WARMUP=2        # s, at concurrency 16, once for each system before the timed runs
ETCD_ADDRS=(127.0.0.201 127.0.0.202 127.0.0.203)
DG_ALL=(127.0.0.211 127.0.0.212 127.0.0.213)

log() { echo "bench: raft: $*" >&2; }
BROKEN=()
broke() {
	log "BROKEN: $*"
	BROKEN+=("$*")
}

echo
echo "KV writes: dcgate, a ${SERVERS}-server datacenter, against etcd, a 3-member cluster (loopback)"
if [ -z "$DCGATE" ] || [ ! -x "$DCGATE" ]; then
	echo "usage: bash bench/raft.sh /abs/path/to/build/dcgate (got '${DCGATE}')" >&2
	exit 2
fi
if [ "$SERVERS" != 1 ] && [ "$SERVERS" != 3 ]; then
	echo "bench: raft: RAFT_SERVERS must be 1 or 3 (got '$SERVERS')" >&2
	exit 2
fi
for v in DURATION VALUE_SIZE SLICES; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
		echo "bench: raft: $v must be a positive integer (got '${!v}')" >&2
		exit 2
	fi
done
[ "$DURATION" -le 120 ] && [ "$VALUE_SIZE" -le 65536 ] ||
	{ echo "bench: raft: at most 120 s a run and 65536 bytes a value" >&2; exit 2; }
for tool in wrk curl flock timeout awk "$PY"; do
	command -v "$tool" >/dev/null 2>&1 || { echo "bench: raft: missing $tool (make deps installs it)" >&2; exit 1; }
done
[ -f "$HERE/raft_put.lua" ] || { echo "bench: raft: bench/raft_put.lua is missing" >&2; exit 1; }

# Loopback traffic never goes through a proxy (curl honours these).
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY="127.0.0.0/8,localhost" no_proxy="127.0.0.0/8,localhost"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dcgate-bench-raft.XXXXXX")
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
# etcd-server, for this bench only: Debian's package, installed once (the way
# scripts/install-deps.sh installs the build's packages). Quiet when etcd is already there.

ensure_etcd() {
	command -v etcd >/dev/null 2>&1 && return 0
	local sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	log "installing etcd-server (Debian's etcd 3.4, the anchor of this bench); log $TMP/apt.log"
	export DEBIAN_FRONTEND=noninteractive
	# package lists are needed once on a fresh machine
	apt-cache show etcd-server >/dev/null 2>&1 || timeout 120 $sudo apt-get update -qq >>"$TMP/apt.log" 2>&1
	if ! timeout 240 $sudo apt-get install -y -qq --no-install-recommends etcd-server >>"$TMP/apt.log" 2>&1; then
		timeout 120 $sudo apt-get update -qq >>"$TMP/apt.log" 2>&1
		timeout 240 $sudo apt-get install -y -qq --no-install-recommends etcd-server >>"$TMP/apt.log" 2>&1 ||
			return 1
	fi
	command -v etcd >/dev/null 2>&1
}

ETCD_VER=
if ensure_etcd; then
	ETCD_VER=$(timeout 10 etcd --version 2>/dev/null | awk '/^etcd Version:/ {print $3; exit}')
	[[ $ETCD_VER == 3.4.* ]] || log "note: etcd is ${ETCD_VER:-of an unknown version}, not 3.4 (the issue's anchor)"
else
	broke "could not install etcd-server: $(tail -n 3 "$TMP/apt.log" 2>/dev/null | tr '\n' ' ')"
fi

# ---------------------------------------------------------------------------------------------
# helpers

# claim <n>: an flock on the integration tests' lock file for 127.0.0.<n> (they lease addresses
# from 127.0.0.20-250), waiting at most 60 s; held by this shell and the servers until exit.
LOCK_DIR="${TMPDIR:-/tmp}/dcgate-it-addr"
claim() {
	local fd
	mkdir -p "$LOCK_DIR" 2>/dev/null
	exec {fd}>>"$LOCK_DIR/$1.lock" || return 1
	chmod 666 "$LOCK_DIR/$1.lock" 2>/dev/null
	flock -w 60 "$fd" || { exec {fd}>&-; return 1; }
}

# ports_free <addr> <tcp ports, comma-separated> <udp ports, comma-separated or ->
ports_free() {
	"$PY" - "$@" <<'EOF'
import socket, sys
addr = sys.argv[1]
tcp = [int(p) for p in sys.argv[2].split(",") if p.strip("-")]
udp = [int(p) for p in sys.argv[3].split(",") if p.strip("-")]
busy = []
for ports, kind, name in ((tcp, socket.SOCK_STREAM, "tcp"), (udp, socket.SOCK_DGRAM, "udp")):
    for p in ports:
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, p))
        except OSError:
            busy.append("%s/%d" % (name, p))
        finally:
            s.close()
if busy:
    print(" ".join(busy))
    sys.exit(1)
EOF
}

# etcd_status <addr>: "<member_id> <leader_id>" from the member's /v3/maintenance/status, or nothing
etcd_status() {
	curl -s --max-time 2 -X POST -d '{}' "http://$1:2379/v3/maintenance/status" 2>/dev/null | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
print(d["header"]["member_id"], d["leader"])' 2>/dev/null
}

# dg_leader <addr>: the leader's raft address ("127.0.0.212:8300") as that server sees it, or nothing
dg_leader() {
	local l
	l=$(curl -s --max-time 1 "http://$1:8500/v1/status/leader" 2>/dev/null)
	[[ $l =~ ^\"([^\"]+)\"$ ]] && echo "${BASH_REMATCH[1]}"
}

alive() { # <pid>...: all still run
	local p
	for p in "$@"; do kill -0 "$p" 2>/dev/null || return 1; done
}

# ---------------------------------------------------------------------------------------------
# the addresses

DG_ADDRS=("${DG_ALL[@]:0:$SERVERS}")
DG_DESC="1 server, s1 on ${DG_ADDRS[0]}"
[ "$SERVERS" = 1 ] || DG_DESC="$SERVERS servers, s1..s$SERVERS on ${DG_ADDRS[0]}-${DG_ADDRS[SERVERS - 1]##*.}"
if [ ${#BROKEN[@]} -eq 0 ]; then
	for a in "${ETCD_ADDRS[@]}" "${DG_ADDRS[@]}"; do
		claim "${a##*.}" || { broke "127.0.0.${a##*.} is leased by another run (waited 60 s for $LOCK_DIR/${a##*.}.lock)"; break; }
	done
fi
if [ ${#BROKEN[@]} -eq 0 ]; then
	for a in "${ETCD_ADDRS[@]}"; do
		busy=$(ports_free "$a" 2379,2380 -) || broke "ports in use on $a: $busy (etcd needs 2379 and 2380)"
	done
	for a in "${DG_ADDRS[@]}"; do
		busy=$(ports_free "$a" 8300,8301,8302,8500 8301,8302) ||
			broke "ports in use on $a: $busy (dcgate needs 8300-8302 and 8500)"
	done
fi
FSTYPE=$(df -T "$TMP" 2>/dev/null | awk 'NR == 2 {print $2}')

# ---------------------------------------------------------------------------------------------
# etcd: 3 members, each with its own data dir under $TMP; ready when every member's /health says
# true and all three name the same leader (at most 30 s)

ETCD_PIDS=() E_LEADER='' E_FOLLOWER=''
if [ ${#BROKEN[@]} -eq 0 ]; then
	cluster=
	for i in 0 1 2; do cluster+="${cluster:+,}e$((i + 1))=http://${ETCD_ADDRS[i]}:2380"; done
	log "etcd $ETCD_VER: e1..e3 on ${ETCD_ADDRS[0]}-${ETCD_ADDRS[2]##*.} (client 2379, peer 2380), data in $TMP/etcd"
	mkdir -p "$TMP/etcd"
	for i in 0 1 2; do
		a=${ETCD_ADDRS[i]}
		etcd --name "e$((i + 1))" --data-dir "$TMP/etcd/e$((i + 1))" \
			--listen-client-urls "http://$a:2379" --advertise-client-urls "http://$a:2379" \
			--listen-peer-urls "http://$a:2380" --initial-advertise-peer-urls "http://$a:2380" \
			--initial-cluster "$cluster" --initial-cluster-state new \
			--initial-cluster-token "dcgate-bench-$$" --logger zap --log-outputs stderr \
			>"$TMP/etcd-e$((i + 1)).log" 2>&1 &
		ETCD_PIDS+=($!)
		PIDS+=($!)
	done
	declare -A E_ID=()
	deadline=$((SECONDS + 30))
	for ((t = 0; t < 300 && SECONDS < deadline; t++)); do
		if ! alive "${ETCD_PIDS[@]}"; then
			for i in 0 1 2; do
				alive "${ETCD_PIDS[i]}" || broke "etcd e$((i + 1)) exited during startup: $(tail -n 1 "$TMP/etcd-e$((i + 1)).log" | cut -c1-300) (log: $TMP/etcd-e$((i + 1)).log)"
			done
			break
		fi
		leaders=() ok=1
		for i in 0 1 2; do
			h=$(curl -s --max-time 1 "http://${ETCD_ADDRS[i]}:2379/health" 2>/dev/null)
			[[ $h == *'"health":"true"'* ]] || { ok=0; break; }
			read -r id leader <<<"$(etcd_status "${ETCD_ADDRS[i]}")"
			[ -n "${leader:-}" ] && [ "$leader" != 0 ] || { ok=0; break; }
			E_ID[$id]=$i
			leaders+=("$leader")
		done
		if [ $ok = 1 ] && [ "${leaders[0]}" = "${leaders[1]}" ] && [ "${leaders[1]}" = "${leaders[2]}" ] &&
			[ -n "${E_ID[${leaders[0]}]+x}" ]; then
			E_LEADER=${E_ID[${leaders[0]}]}
			E_FOLLOWER=$(((E_LEADER + 1) % 3))
			break
		fi
		sleep 0.1
	done
	if [ -z "$E_LEADER" ] && [ ${#BROKEN[@]} -eq 0 ]; then
		broke "etcd had no healthy 3-member cluster with one leader after 30 s; see $TMP/etcd-e*.log"
	fi
fi
if [ -n "$E_LEADER" ]; then
	log "etcd leader: e$((E_LEADER + 1)) (${ETCD_ADDRS[E_LEADER]})"
	# one write through the gateway, read back from a follower (a linearizable range)
	if ! "$PY" - "${ETCD_ADDRS[E_LEADER]}" "${ETCD_ADDRS[E_FOLLOWER]}" >"$TMP/etcd-check.err" 2>&1 <<'EOF'; then
import base64, http.client, json, sys
b = lambda s: base64.b64encode(s).decode()
def post(addr, path, body):
    c = http.client.HTTPConnection(addr, 2379, timeout=10)
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    d = r.read()
    if r.status != 200:
        sys.exit("%s on %s answered %d: %r" % (path, addr, r.status, d[:200]))
    return json.loads(d)
post(sys.argv[1], "/v3/kv/put", {"key": b(b"bench/raft/check"), "value": b(b"v" * 128)})
d = post(sys.argv[2], "/v3/kv/range", {"key": b(b"bench/raft/check")})
kvs = d.get("kvs") or []
if len(kvs) != 1 or base64.b64decode(kvs[0]["value"]) != b"v" * 128:
    sys.exit("the value put on the leader did not read back on a follower: %r" % d)
EOF
		broke "etcd: $(tail -n 1 "$TMP/etcd-check.err")"
		E_LEADER=''
	fi
fi

# ---------------------------------------------------------------------------------------------
# dcgate: SERVERS servers, each with its own data dir under $TMP; ready when every server names the
# same leader and that leader lists SERVERS raft peers (at most 30 s). With 3 servers, a DC that
# does not come up is "not available" (the multi-server flags are new), not broken.

DG_PIDS=() DG_LEADER='' DG_FOLLOWER='' DG_NA='' DG_NA_WHY=''
dg_unavailable() { # <why>: with 3 servers, dcgate's figures become n/a; with 1, it broke
	if [ "$SERVERS" = 3 ]; then
		DG_NA="3-server DC not available"
		DG_NA_WHY=$1
		log "dcgate: $DG_NA: $1"
	else
		broke "dcgate: $1"
	fi
}
if [ ${#BROKEN[@]} -eq 0 ]; then
	log "dcgate: $DG_DESC (HTTP 8500), data in $TMP/dcgate"
	for ((i = 0; i < SERVERS; i++)); do
		a=${DG_ADDRS[i]}
		mkdir -p "$TMP/dcgate/s$((i + 1))"
		args=(agent -server -bootstrap-expect="$SERVERS" -bind="$a" -client="$a"
			-data-dir="$TMP/dcgate/s$((i + 1))" -node="s$((i + 1))" -datacenter=dc1 -dns-port=-1)
		[ "$SERVERS" -gt 1 ] && args+=(-retry-join="${DG_ADDRS[0]}")
		"$DCGATE" "${args[@]}" >"$TMP/dcgate-s$((i + 1)).log" 2>&1 &
		DG_PIDS+=($!)
		PIDS+=($!)
	done
	last=''
	deadline=$((SECONDS + 30))
	for ((t = 0; t < 300 && SECONDS < deadline; t++)); do
		if ! alive "${DG_PIDS[@]}"; then
			for ((i = 0; i < SERVERS; i++)); do
				alive "${DG_PIDS[i]}" && continue
				tail -n 5 "$TMP/dcgate-s$((i + 1)).log" | sed 's/^/bench: raft:   /' >&2
				dg_unavailable "s$((i + 1)) exited during startup: $(tail -n 1 "$TMP/dcgate-s$((i + 1)).log" | cut -c1-300)"
				break
			done
			break
		fi
		leaders=()
		for ((i = 0; i < SERVERS; i++)); do leaders+=("$(dg_leader "${DG_ADDRS[i]}")"); done
		last=
		for l in "${leaders[@]}"; do last+="${last:+, }${l:-none}"; done
		if [ -n "${leaders[0]}" ] && [ "$(printf '%s\n' "${leaders[@]}" | sort -u | wc -l)" = 1 ]; then
			for ((i = 0; i < SERVERS; i++)); do
				[ "${leaders[0]%:*}" = "${DG_ADDRS[i]}" ] && DG_LEADER=$i
			done
			peers=$(curl -s --max-time 1 "http://${leaders[0]%:*}:8500/v1/status/peers" 2>/dev/null |
				"$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null)
			[ -n "$DG_LEADER" ] && [ "${peers:-0}" = "$SERVERS" ] && break
			DG_LEADER=''
		fi
		sleep 0.1
	done
	if [ -z "$DG_LEADER" ] && [ -z "$DG_NA" ] && [ ${#BROKEN[@]} -eq 0 ]; then
		for ((i = 0; i < SERVERS; i++)); do # the temp dir goes at exit: n/a is not broken
			tail -n 3 "$TMP/dcgate-s$((i + 1)).log" | cut -c1-200 | sed "s/^/bench: raft:   s$((i + 1)): /" >&2
		done
		dg_unavailable "no leader known to all $SERVERS servers with $SERVERS raft peers after 30 s (leaders seen by s1..s$SERVERS: ${last:-none})"
	fi
fi
DG_FWD_NA="1-server DC: no follower"
if [ -n "$DG_LEADER" ]; then
	log "dcgate leader: s$((DG_LEADER + 1)) (${DG_ADDRS[DG_LEADER]})"
	v=$(head -c "$VALUE_SIZE" /dev/zero | tr '\0' v)
	code=$(curl -s --max-time 10 -o "$TMP/put.out" -w '%{http_code}' -X PUT --data-binary "$v" \
		"http://${DG_ADDRS[DG_LEADER]}:8500/v1/kv/bench/raft/check")
	got=$(curl -s --max-time 10 "http://${DG_ADDRS[DG_LEADER]}:8500/v1/kv/bench/raft/check?raw")
	if [ "$code" != 200 ] || [ "$(cat "$TMP/put.out")" != true ] || [ "$got" != "$v" ]; then
		broke "dcgate: PUT /v1/kv/bench/raft/check on the leader answered ${code:-nothing} $(head -c 200 "$TMP/put.out"), read back ${#got} bytes"
		DG_LEADER=''
	fi
fi
if [ -n "$DG_LEADER" ] && [ "$SERVERS" -gt 1 ]; then
	# A follower's answer to a write: forwarded to the leader (200 "true") or not (yet).
	DG_FOLLOWER=$(((DG_LEADER + 1) % SERVERS))
	code=$(curl -s --max-time 10 -o "$TMP/put-follower.out" -w '%{http_code}' -X PUT --data-binary x \
		"http://${DG_ADDRS[DG_FOLLOWER]}:8500/v1/kv/bench/raft/check-follower")
	if [ "$code" = 200 ] && [ "$(cat "$TMP/put-follower.out")" = true ]; then
		DG_FWD_NA=''
	else
		DG_FWD_NA="no follower forwarding: a follower answered ${code:-nothing}"
		log "dcgate: $DG_FWD_NA $(head -c 200 "$TMP/put-follower.out")"
		DG_FOLLOWER=''
	fi
fi

# ---------------------------------------------------------------------------------------------
# the runs

# put_run <tag> <consul|etcd> <addr:port> <conns> <seconds>: one wrk run of bench/raft_put.lua
# (-t1 at 1 connection, -t2 above). Sets RUN_RPS and RUN_P99 (ms), or returns 1 with them empty
# (and records why): wrk failed, or any answer was not a success, or any socket error.
RUN_RPS='' RUN_P99='' RUN_MAX=''
put_run() {
	local tag=$1 kind=$2 hp=$3 c=$4 secs=$5 t out bad sock status reqs
	RUN_RPS='' RUN_P99='' RUN_MAX=''
	t=$((c < 2 ? c : 2))
	out="$TMP/wrk-$tag.txt"
	if ! timeout $((secs + 30)) wrk -t"$t" -c"$c" -d"${secs}s" --timeout 10s -s "$HERE/raft_put.lua" \
		"http://$hp" -- "$kind" "bench/raft/$tag" "$VALUE_SIZE" >"$out" 2>&1; then
		broke "wrk ($tag) against $hp failed: $(tail -n 3 "$out" | tr '\n' ' ')"
		return 1
	fi
	field() { awk -v k="$1" '$1 == "raft_put" && $2 == k {sub(/^raft_put [^ ]+ /, ""); print; exit}' "$out"; }
	reqs=$(field requests) bad=$(field bad) sock=$(field socket_errors) status=$(field status_errors)
	if [ -z "$reqs" ] || [ -z "$bad" ]; then
		broke "wrk ($tag): no figures from bench/raft_put.lua in $out"
		return 1
	fi
	if [ "$bad" != 0 ] || [ "$sock" != 0 ] || [ "$status" != 0 ]; then
		broke "$kind on $hp at concurrency $c ($tag): $bad of $reqs answers were not successes, socket errors $(field socket_errors_detail)$([ "$bad" != 0 ] && echo ", first: $(field first_bad)")"
		return 1
	fi
	if [ "$reqs" = 0 ]; then
		broke "$kind on $hp at concurrency $c ($tag): no request completed in $secs s"
		return 1
	fi
	RUN_RPS=$(field puts_per_s) RUN_P99=$(field p99_ms) RUN_MAX=$(field max_ms)
	log "  $tag: $(fmt %.0f "$RUN_RPS") puts/s, p50 $(field p50_ms) ms, p99 $RUN_P99 ms, slowest $(field max_ms) ms ($reqs puts)"
}

declare -A E_RPS=() E_P99=() E_MAX=() D_RPS=() D_P99=() D_MAX=() EF_RPS=() EF_P99=() DF_RPS=() DF_P99=() E_ERR=() D_ERR=() EF_ERR=() DF_ERR=()
E_HP='' D_HP=''
[ -n "$E_LEADER" ] && E_HP="${ETCD_ADDRS[E_LEADER]}:2379"
[ -n "$DG_LEADER" ] && D_HP="${DG_ADDRS[DG_LEADER]}:8500"
# maximum of the numbers given (median: bench/lib.sh)
maximum() { printf '%s\n' "$@" | sort -g | tail -n 1; }

# one_slice <E|D> <kind> <addr:port> <tag> <conns> <seconds>: runs one slice and records its
# figures in SL_<side>_* (measure gathers a system's SLICES runs at one concurrency there)
SL_E_RPS=() SL_E_P99=() SL_E_MAX=() SL_D_RPS=() SL_D_P99=() SL_D_MAX=() SL_E_ERR='' SL_D_ERR=''
one_slice() {
	local side=$1 kind=$2 hp=$3 tag=$4 c=$5 secs=$6
	if put_run "$tag" "$kind" "$hp" "$c" "$secs"; then
		eval "SL_${side}_RPS+=(\"\$RUN_RPS\") SL_${side}_P99+=(\"\$RUN_P99\") SL_${side}_MAX+=(\"\$RUN_MAX\")"
	else
		eval "SL_${side}_ERR=1"
	fi
}

# measure <etcd addr:port> <dcgate addr:port> <tag suffix> <array suffix>: at each concurrency,
# etcd and dcgate in SLICES alternating slices (etcd first in odd slices, dcgate first in even
# ones), so that drift on the shared machine (the disk's flushes, the other system's background
# work) weighs on both alike; each figure is the median of its slices (slowest: the maximum)
measure() {
	local ehp=$1 dhp=$2 sfx=$3 arr=$4 c s secs
	secs=$(((DURATION + SLICES - 1) / SLICES))
	for c in "${CONCS[@]}"; do
		SL_E_RPS=() SL_E_P99=() SL_E_MAX=() SL_D_RPS=() SL_D_P99=() SL_D_MAX=() SL_E_ERR='' SL_D_ERR=''
		for ((s = 1; s <= SLICES; s++)); do
			if ((s % 2)); then
				[ -z "$ehp" ] || one_slice E etcd "$ehp" "etcd-$sfx-c$c-$s" "$c" "$secs"
				[ -z "$dhp" ] || one_slice D consul "$dhp" "dcgate-$sfx-c$c-$s" "$c" "$secs"
			else
				[ -z "$dhp" ] || one_slice D consul "$dhp" "dcgate-$sfx-c$c-$s" "$c" "$secs"
				[ -z "$ehp" ] || one_slice E etcd "$ehp" "etcd-$sfx-c$c-$s" "$c" "$secs"
			fi
		done
		if [ -n "$ehp" ]; then
			if [ -z "$SL_E_ERR" ]; then
				eval "E${arr}_RPS[$c]=$(median "${SL_E_RPS[@]}") E${arr}_P99[$c]=$(median "${SL_E_P99[@]}")"
				[ -n "$arr" ] || E_MAX[$c]=$(maximum "${SL_E_MAX[@]}")
			else
				eval "E${arr}_ERR[$c]=1"
			fi
		fi
		if [ -n "$dhp" ]; then
			if [ -z "$SL_D_ERR" ]; then
				eval "D${arr}_RPS[$c]=$(median "${SL_D_RPS[@]}") D${arr}_P99[$c]=$(median "${SL_D_P99[@]}")"
				[ -n "$arr" ] || D_MAX[$c]=$(maximum "${SL_D_MAX[@]}")
			else
				eval "D${arr}_ERR[$c]=1"
			fi
		fi
	done
}
if [ -n "$E_HP" ] || [ -n "$D_HP" ]; then
	log "PUTs of distinct keys, $VALUE_SIZE-byte values, at concurrency ${CONCS[*]}: $SLICES alternating slices of wrk -d$(((DURATION + SLICES - 1) / SLICES))s for each"
	[ -z "$E_HP" ] || put_run etcd-warmup etcd "$E_HP" 16 "$WARMUP" || E_HP=''
	[ -z "$D_HP" ] || put_run dcgate-warmup consul "$D_HP" 16 "$WARMUP" || D_HP=''
	measure "$E_HP" "$D_HP" leader ''
	if [ -n "$DG_FOLLOWER" ] && [ -n "$D_HP" ]; then
		log "context: the same PUTs sent to a follower of each"
		measure "${ETCD_ADDRS[E_FOLLOWER]}:2379" "${DG_ADDRS[DG_FOLLOWER]}:8500" follower F
	fi
fi
for ((i = 0; i < ${#ETCD_PIDS[@]}; i++)); do
	alive "${ETCD_PIDS[i]}" || broke "etcd e$((i + 1)) died; see $TMP/etcd-e$((i + 1)).log"
done
for ((i = 0; i < ${#DG_PIDS[@]}; i++)); do
	[ -n "$DG_NA" ] && break
	alive "${DG_PIDS[i]}" || broke "dcgate s$((i + 1)) died; see $TMP/dcgate-s$((i + 1)).log"
done

# ---------------------------------------------------------------------------------------------
# report (stdout)

row() { printf '%-44s %12s %12s %7s   %s\n' "$@"; }
# cell <value> <printf format> <errored> <n/a>: the figure, "errors" for a run that had any, the
# n/a word when that side was not there to measure, "-" when it was not measured (broken)
cell() {
	if [ -n "$1" ]; then fmt "$2" "$1"
	elif [ -n "$3" ]; then printf 'errors'
	elif [ -n "$4" ]; then printf 'n/a'
	else printf -- '-'
	fi
}
E_NAME=- D_NAME=-
[ -n "$E_LEADER" ] && E_NAME="e$((E_LEADER + 1)) (${ETCD_ADDRS[E_LEADER]}:2379)"
[ -n "$DG_LEADER" ] && D_NAME="s$((DG_LEADER + 1)) (${DG_ADDRS[DG_LEADER]}:8500)"
echo "PUTs of distinct keys with a ${VALUE_SIZE}-byte value, $SLICES slices of wrk -d$(((DURATION + SLICES - 1) / SLICES))s each, etcd's and"
echo "dcgate's alternating, each figure the median of its slices (bench/raft_put.lua; -t1 at"
echo "concurrency 1, -t2 above; every answer checked), keep-alive, loopback; both on this machine's"
echo "$(nproc) cpus, data dirs on ${FSTYPE:-?} (${TMPDIR:-/tmp}), each fsyncs as it does by default."
if [ -n "$DG_NA" ]; then
	echo "dcgate: $DG_DESC: $DG_NA:"
	echo "  $(printf '%s' "$DG_NA_WHY" | cut -c1-160)"
else
	echo "dcgate: $DG_DESC; PUT /v1/kv/<key> to the leader (/v1/status/leader): $D_NAME."
fi
echo "etcd ${ETCD_VER:-?}: 3 members, e1..e3 on ${ETCD_ADDRS[0]}-${ETCD_ADDRS[2]##*.}; POST /v3/kv/put (its JSON gateway) to the"
echo "leader (/v3/maintenance/status): $E_NAME; a member that is not the leader forwards"
echo "a put to it."
echo "Higher is better for puts/s, lower for p99."
echo
NA=${DG_NA:+"dcgate: $DG_NA"}
row "figure" "dcgate" "etcd" "ratio" "anchor is"
for c in "${CONCS[@]}"; do
	t=$((c < 2 ? c : 2))
	row "KV PUT, concurrency $c (wrk -t$t -c$c)" "" "" "" "${NA:+($NA)}"
	row "  puts/s" "$(cell "${D_RPS[$c]:-}" %.0f "${D_ERR[$c]:-}" "$DG_NA")" \
		"$(cell "${E_RPS[$c]:-}" %.0f "${E_ERR[$c]:-}" '')" \
		"$(ratio "${D_RPS[$c]:-}" "${E_RPS[$c]:-}")" "etcd's leader, same load"
	row "  p99 latency (ms)" "$(cell "${D_P99[$c]:-}" %.2f "${D_ERR[$c]:-}" "$DG_NA")" \
		"$(cell "${E_P99[$c]:-}" %.2f "${E_ERR[$c]:-}" '')" \
		"$(ratio "${D_P99[$c]:-}" "${E_P99[$c]:-}")" "etcd's leader, same load"
	row "  slowest answer (ms)" "$(cell "${D_MAX[$c]:-}" %.2f "${D_ERR[$c]:-}" "$DG_NA")" \
		"$(cell "${E_MAX[$c]:-}" %.2f "${E_ERR[$c]:-}" '')" \
		"$(ratio "${D_MAX[$c]:-}" "${E_MAX[$c]:-}")" "etcd's leader (context: stalls)"
done
if [ -n "$DG_FOLLOWER" ]; then
	fname="s$((DG_FOLLOWER + 1)) and e$((E_FOLLOWER + 1))"
	for c in "${CONCS[@]}"; do
		row "  puts/s via a follower, concurrency $c" "$(cell "${DF_RPS[$c]:-}" %.0f "${DF_ERR[$c]:-}" '')" \
			"$(cell "${EF_RPS[$c]:-}" %.0f "${EF_ERR[$c]:-}" '')" \
			"$(ratio "${DF_RPS[$c]:-}" "${EF_RPS[$c]:-}")" "etcd's follower (context; $fname)"
		row "  p99 via a follower, concurrency $c (ms)" "$(cell "${DF_P99[$c]:-}" %.2f "${DF_ERR[$c]:-}" '')" \
			"$(cell "${EF_P99[$c]:-}" %.2f "${EF_ERR[$c]:-}" '')" \
			"$(ratio "${DF_P99[$c]:-}" "${EF_P99[$c]:-}")" "etcd's follower (context; $fname)"
	done
else
	row "  PUT via a follower" "n/a" "" "" "(context: ${DG_NA:-$DG_FWD_NA})"
fi
echo

# target <label> <value> <shown> <awk condition on v> [why not judged]
target() {
	local verdict shown=$3
	if [ -n "${5:-}" ]; then
		verdict="n/a ($5)"
		[ -n "$2" ] && [ "$2" != - ] || shown=-
	elif [ -z "$2" ] || [ "$2" = - ]; then
		verdict="n/a (not measured)"
		shown=-
	elif awk -v v="$2" "BEGIN {exit !($4)}"; then
		verdict=PASS
	else
		verdict=MISS
	fi
	printf 'target: %-52s %10s  %s\n' "$1" "$shown" "$verdict"
}
why=
[ "$SERVERS" = 1 ] && why="1-server DC, not the target's figure"
[ -n "$DG_NA" ] && why=$DG_NA
for c in "${CONCS[@]}"; do
	r=$(ratio "${D_RPS[$c]:-}" "${E_RPS[$c]:-}")
	target "KV writes >= 2x etcd at concurrency $c" "$r" "$r" "v >= 2" "$why"
done

if [ ${#BROKEN[@]} -gt 0 ]; then
	for f in "$TMP"/dcgate-s*.log "$TMP"/etcd-e*.log; do
		[ -f "$f" ] || continue
		grep -E '\[(WARN|ERROR)\]|"level":"(warn|error)"' "$f" | sed 's/^[^ ]* *//' | cut -c1-200 |
			sort | uniq -c | sort -rn | head -n 3 | sed "s|^|bench: raft: ${f##*/}: |" >&2
	done
	echo
	echo "raft broken (figures above marked - or errors were not measured):"
	printf '  %s\n' "${BROKEN[@]}"
	exit 1
fi
exit 0
