#!/usr/bin/env bash
# bench/gossip.sh: the LAN membership figures of `make bench` (bench/run.sh calls it; it also runs
# alone). Starts 50 agents, 3 servers and 47 client agents, on 127.0.1.1-50, then times, over
# BENCH_GOSSIP_ROUNDS rounds each: a client agent killed with -9 until the first and then all 49
# others list it failed and the servers' catalog has its serfHealth critical, and its restart until
# all list it alive again; a 51st agent (127.0.1.51) joining until all 50 list it alive, and its
# graceful leave until all list it left. There is no Consul here: each figure is printed next to
# the time the gossip parameters predict (docs/cluster.md), as a ratio, and the target is the
# issue's: a killed agent marked failed within 5 s. What the figures mean: docs/bench.md.
# Usage: bash bench/gossip.sh /abs/path/to/build/dcgate
#
# Loopback only, at fixed addresses: 127.0.1.1-51, which neither the integration tests (they lease
# 127.0.0.20-250) nor the other benches use. The whole block is claimed with one flock on
# ${TMPDIR:-/tmp}/dcgate-it-addr/127.0.1.lock (waiting at most 60 s), and the ports each agent
# needs must be free there. Bounded: start-up and convergence 60 s, each round's watch 30 s, the
# watcher tool behind `timeout`. Every process started is stopped on exit (trap), by pid, and only
# while it is known to run. Missed targets print MISS and exit 0; the exit status is non-zero only
# when something broke (an agent did not start or died, the members did not converge, a change
# did not reach every agent within 30 s, a tool failed).
# Knobs: BENCH_GOSSIP_ROUNDS (5), BENCH_GOSSIP_INTERVAL_MS (how often each agent is polled while
# a change spreads, 50), BENCH_KEEP=1 keeps the temp dir (data dirs, logs, raw watcher output).
set -uo pipefail
export LC_ALL=C # $EPOCHREALTIME with a '.', awk's numbers

DCGATE=${1:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

ROUNDS=${BENCH_GOSSIP_ROUNDS:-5}
INTERVAL_MS=${BENCH_GOSSIP_INTERVAL_MS:-50}
NET=127.0.1
SERVERS=3
AGENTS=50    # the issue's; 127.0.1.1-3 are s1-s3, 127.0.1.4-50 are c4-c50 (named by address)
JOINER=51    # 127.0.1.51: the agent that joins and leaves, j1, j2, ... one name per round
WATCH_S=30   # how long a change may take to reach every agent before the round counts as broken
IDLE_S=10    # the CPU and RSS sample of the idle agents
# The gossip parameters the anchors are computed from: the agent's defaults (docs/cluster.md,
# cmd/main.c) and the state machine's (docs/gossip.md), none of which the bench changes.
P_MS=500     # probe interval
T_MS=250     # probe timeout (then indirect probes; the target is suspect at the end of P)
S_MULT=4     # suspicion = S_MULT x log10(n+1) x P, n the members known
G_MS=200     # gossip interval: queued updates sent on their own ...
G_NODES=3    # ... to this many random members

log() { echo "bench: gossip: $*" >&2; }
BROKEN=()
broke() {
	log "BROKEN: $*"
	BROKEN+=("$*")
}

echo
echo "LAN membership: 50 agents, 3 servers and 47 client agents, on ${NET}.1-$AGENTS (loopback)"
if [ -z "$DCGATE" ] || [ ! -x "$DCGATE" ]; then
	echo "usage: bash bench/gossip.sh /abs/path/to/build/dcgate (got '${DCGATE}')" >&2
	exit 2
fi
for v in ROUNDS INTERVAL_MS; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
		echo "bench: gossip: $v must be a positive integer (got '${!v}')" >&2
		exit 2
	fi
done
[ "$ROUNDS" -le 50 ] && [ "$INTERVAL_MS" -ge 10 ] && [ "$INTERVAL_MS" -le 1000 ] ||
	{ echo "bench: gossip: at most 50 rounds, a poll interval of 10..1000 ms" >&2; exit 2; }
for tool in curl flock timeout awk mkfifo "$PY"; do
	command -v "$tool" >/dev/null 2>&1 || { echo "bench: gossip: missing $tool (make deps installs it)" >&2; exit 1; }
done
[ -f "$HERE/gossip_watch.py" ] || { echo "bench: gossip: bench/gossip_watch.py is missing" >&2; exit 1; }
[ -n "${EPOCHREALTIME:-}" ] || { echo "bench: gossip: needs bash 5 (\$EPOCHREALTIME)" >&2; exit 1; }

# Loopback traffic never goes through a proxy (curl honours these).
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY="127.0.0.0/8,localhost" no_proxy="127.0.0.0/8,localhost"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dcgate-bench-gossip.XXXXXX")
mkdir -p "$TMP/data" "$TMP/log"
# Processes started and not yet reaped, by pid. A pid leaves the set when it is reaped, so cleanup
# never signals a pid the system may have given to someone else since.
declare -A LIVE=()
reaped() { unset "LIVE[$1]"; }
cleanup() { # shellcheck disable=SC2317 # called by the EXIT trap
	local pid i
	# All at once, and within 5 s: 50 agents stopped one by one take long, and run.sh's
	# `timeout -k 10` leaves 10 s between its TERM and its KILL.
	for pid in "${!LIVE[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	for ((i = 0; i < 50; i++)); do
		for pid in "${!LIVE[@]}"; do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; reaped "$pid"; }; done
		[ ${#LIVE[@]} -eq 0 ] && break
		sleep 0.1
	done
	for pid in "${!LIVE[@]}"; do kill -KILL "$pid" 2>/dev/null; done
	for pid in "${!LIVE[@]}"; do wait "$pid" 2>/dev/null; reaped "$pid"; done
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

# run_wait <command...>: runs it in the background and waits for it, so that a TERM reaches the
# EXIT trap at once (bash runs a trap only after a foreground command ends)
run_wait() {
	local p rc
	"$@" &
	p=$!
	LIVE[$p]=1
	wait "$p"
	rc=$?
	kill -0 "$p" 2>/dev/null || reaped "$p"
	return $rc
}

# claim_block: one flock on $LOCK_DIR/127.0.1.lock for all of 127.0.1.x, held by this shell (and
# inherited by the agents) until exit; waits at most 60 s.
LOCK_DIR="${TMPDIR:-/tmp}/dcgate-it-addr"
claim_block() {
	local fd
	mkdir -p "$LOCK_DIR" 2>/dev/null
	exec {fd}>>"$LOCK_DIR/$NET.lock" || return 1
	chmod 666 "$LOCK_DIR/$NET.lock" 2>/dev/null
	flock -w 60 "$fd" || { exec {fd}>&-; return 1; }
}

# ports_busy <first> <last>: prints "addr:proto/port" for each port a server needs (8300-8302 and
# 8500 tcp, 8301-8302 udp) that is taken on $NET.<first..last>; nothing when all are free.
ports_busy() {
	"$PY" - "$NET" "$1" "$2" <<'EOF'
import socket, sys
net, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
busy = []
for n in range(first, last + 1):
    addr = "%s.%d" % (net, n)
    for kind, name, ports in ((socket.SOCK_STREAM, "tcp", (8300, 8301, 8302, 8500)),
                              (socket.SOCK_DGRAM, "udp", (8301, 8302))):
        for p in ports:
            s = socket.socket(socket.AF_INET, kind)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((addr, p))
            except OSError:
                busy.append("%s:%s/%d" % (addr, name, p))
            finally:
                s.close()
print(" ".join(busy))
EOF
}

name_of() { # <last octet>: s1-s3, c4-c50, j<round> for the joiner
	if [ "$1" -le "$SERVERS" ]; then echo "s$1"; else echo "c$1"; fi
}

# start_agent <last octet> <node name>: starts the agent with Consul's flags, its data dir
# $TMP/data/<name> (kept across restarts), its log $TMP/log/<name>.log (appended). Sets AG_PID.
declare -a PID_OF=()
AG_PID=
start_agent() {
	local i=$1 name=$2 a="$NET.$1" args=(agent)
	[ "$i" -le "$SERVERS" ] && args+=(-server -bootstrap-expect="$SERVERS")
	args+=(-retry-join="$NET.1" -bind="$a" -client="$a" -data-dir="$TMP/data/$name" -node="$name"
		-dns-port=-1)
	mkdir -p "$TMP/data/$name"
	"$DCGATE" "${args[@]}" >>"$TMP/log/$name.log" 2>&1 &
	AG_PID=$!
	LIVE[$AG_PID]=1
	PID_OF[i]=$AG_PID
}

# addresses and names of the 50 agents, without the one at octet $1 (0: none left out)
list_agents() {
	local i skip=$1 addrs='' names=''
	for ((i = 1; i <= AGENTS; i++)); do
		[ "$i" = "$skip" ] && continue
		addrs+="${addrs:+,}$NET.$i"
		names+="${names:+,}$(name_of "$i")"
	done
	printf '%s %s\n' "$addrs" "$names"
}

# converge <what>: waits until every one of the 50 agents lists 50 members, all alive (at most
# 60 s); sets CONV_S to the seconds it took, CONV_MED to the median agent's, CONV_LAST to the
# last agent's name, or records why and returns 1.
CONV_S='' CONV_MED='' CONV_LAST=''
converge() {
	local out addrs names
	CONV_S='' CONV_MED='' CONV_LAST=''
	read -r addrs names <<<"$(list_agents 0)"
	run_wait timeout -k 5 75 "$PY" "$HERE/gossip_watch.py" converge --agents "$addrs" --names "$names" \
		--count "$AGENTS" --timeout 60 >"$TMP/converge.out" 2>&1
	out=$(cat "$TMP/converge.out")
	if [[ $out == converged* ]]; then
		read -r _ CONV_S CONV_MED CONV_LAST <<<"$out"
		CONV_MED=${CONV_MED#median=} CONV_LAST=${CONV_LAST#last=}
		return 0
	fi
	broke "$1: not every agent lists $AGENTS alive members after 60 s (agent:alive/listed): $(printf '%s' "${out#notconverged }" | cut -c1-400)"
	return 1
}

dg_leader() { # <addr>: the leader's raft address as that server sees it, or nothing
	local l
	l=$(curl -s --max-time 1 "http://$1:8500/v1/status/leader" 2>/dev/null)
	[[ $l =~ ^\"([^\"]+)\"$ ]] && echo "${BASH_REMATCH[1]}"
}

# The watcher of one change: bench/gossip_watch.py, started before the change, ready once every
# agent shows the state before it; told "go <t0>" just before the change is made, it polls every
# agent each INTERVAL_MS until all show the state after it. Its answer goes to $W_OUT.
W_PID='' W_FD='' W_OUT=''
# watch_start <tag> <watcher args...>: returns 1 (and records why) if it is not ready in 30 s
watch_start() {
	local tag=$1 first='' i
	shift
	W_OUT="$TMP/watch-$tag.out"
	rm -f "$TMP/go.fifo"
	mkfifo "$TMP/go.fifo" || { broke "mkfifo $TMP/go.fifo failed"; return 1; }
	exec {W_FD}<>"$TMP/go.fifo" # read-write: opening it never blocks, and the watcher sees no EOF
	timeout -k 5 $((WATCH_S * 2 + 20)) "$PY" "$HERE/gossip_watch.py" watch --interval-ms "$INTERVAL_MS" \
		--ready-timeout "$WATCH_S" --timeout "$WATCH_S" "$@" <"$TMP/go.fifo" >"$W_OUT" 2>"$TMP/watch-$tag.err" &
	W_PID=$!
	LIVE[$W_PID]=1
	for ((i = 0; i < (WATCH_S + 10) * 50; i++)); do # 20 ms steps, bounded by the watcher's own wait
		first=''
		[ -s "$W_OUT" ] && read -r first <"$W_OUT"
		[[ $first == ready* ]] && return 0
		[ -n "$first" ] && break
		kill -0 "$W_PID" 2>/dev/null || break
		sleep 0.02
	done
	broke "$tag: the state before the change was not seen everywhere: $(printf '%s' "${first:-$(tail -n 2 "$TMP/watch-$tag.err" | tr '\n' ' ')}" | cut -c1-400)"
	watch_end
	return 1
}
# watch_go: the time 0 of the change, to the watcher; the caller makes the change right after
watch_go() {
	printf 'go %s\n' "$EPOCHREALTIME" >&"$W_FD"
}
# watch_end: waits for the watcher (bounded by its timeout) and reads its answer into W[];
# returns 1 unless every agent showed the change
declare -A W=()
watch_end() {
	local line kv
	[ -n "$W_FD" ] && exec {W_FD}>&-
	W_FD=''
	wait "$W_PID" 2>/dev/null
	reaped "$W_PID"
	W=()
	line=$(sed -n 2p "$W_OUT")
	for kv in $line; do W[${kv%%=*}]=${kv#*=}; done
	[ -n "${W[all_ms]:-}" ] && [ "${W[all_ms]}" != - ] # "-": not every agent got there
}

mib() { [ -n "${1:-}" ] && awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}' || printf -- '-'; }
loadavg() { awk '{print $1, $2, $3}' /proc/loadavg 2>/dev/null; }

# stats <values...>: "<median> <max>" of the numbers given (those that are "-" skipped), or "- -";
# rounded to whole numbers, or as STATS_FMT says
stats() {
	printf '%s\n' "$@" | awk -v f="${STATS_FMT:-%.0f}" '$1 != "-" && $1 != "" {v[n++] = $1 + 0}
		END {
			if (!n) {print "- -"; exit}
			for (i = 1; i < n; i++) for (j = i; j > 0 && v[j - 1] > v[j]; j--) {t = v[j]; v[j] = v[j - 1]; v[j - 1] = t}
			med = n % 2 ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
			printf f " " f "\n", med, v[n - 1]
		}'
}

# cpu_ticks <pid>...: utime + stime of all of them, in clock ticks; rss_sum <field> <pid>...: KiB
cpu_ticks() {
	local p sum=0 f
	for p in "$@"; do
		f=$(cat "/proc/$p/stat" 2>/dev/null) || return 1
		f=${f##*) } # past "pid (comm) "
		read -r -a f <<<"$f"
		sum=$((sum + f[11] + f[12])) # fields 14 and 15 of stat, 12 and 13 after comm
	done
	echo "$sum"
}
rss_sum() {
	local field=$1 p sum=0 v
	shift
	for p in "$@"; do
		v=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null)
		[ -n "$v" ] || return 1
		sum=$((sum + v))
	done
	echo "$sum"
}

# ---------------------------------------------------------------------------------------------
# the addresses, then 50 agents: the servers first, the client agents right after, all with
# -retry-join s1; ready when every agent lists 50 alive members and the servers agree on a
# leader with 3 raft peers

if ! claim_block; then
	broke "$NET.x is leased by another run (waited 60 s for $LOCK_DIR/$NET.lock)"
else
	busy=$(ports_busy 1 "$JOINER")
	[ -z "$busy" ] || broke "ports in use on $NET.x: $(printf '%s' "$busy" | cut -c1-300) (dcgate needs 8300-8302 and 8500)"
fi

UP_S='' UP_MED='' UP_LAST='' LEADER='' CPU_S='' CPU_SRV='' CPU_CLI='' RSS_ALL='' RSS_ANON='' RSS_SRV='' RSS_CLI=''
if [ ${#BROKEN[@]} -eq 0 ]; then
	log "starting s1-s$SERVERS on $NET.1-$SERVERS and c$((SERVERS + 1))-c$AGENTS on $NET.$((SERVERS + 1))-$AGENTS; data and logs in $TMP"
	for ((i = 1; i <= AGENTS; i++)); do start_agent "$i" "$(name_of "$i")"; done
	sleep 1
	for ((i = 1; i <= AGENTS; i++)); do
		kill -0 "${PID_OF[i]}" 2>/dev/null && continue
		tail -n 5 "$TMP/log/$(name_of "$i").log" | sed "s/^/bench: gossip:   $(name_of "$i"): /" >&2
		broke "$(name_of "$i") exited during startup: $(tail -n 1 "$TMP/log/$(name_of "$i").log" | cut -c1-300)"
	done
fi
if [ ${#BROKEN[@]} -eq 0 ] && converge "start-up"; then
	UP_S=$CONV_S UP_MED=$CONV_MED UP_LAST=$CONV_LAST
	log "all $AGENTS agents list $AGENTS alive members, $UP_S s after the convergence check began (1 s after the last start; median agent $UP_MED s, last $UP_LAST)"
	deadline=$((SECONDS + 30)) last=''
	for ((t = 0; t < 300 && SECONDS < deadline; t++)); do
		l1=$(dg_leader "$NET.1") l2=$(dg_leader "$NET.2") l3=$(dg_leader "$NET.3")
		last="$l1 $l2 $l3"
		if [ -n "$l1" ] && [ "$l1" = "$l2" ] && [ "$l2" = "$l3" ]; then
			peers=$(curl -s --max-time 1 "http://${l1%:*}:8500/v1/status/peers" 2>/dev/null |
				"$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null)
			[ "${peers:-0}" = "$SERVERS" ] && { LEADER=${l1%:*}; break; }
		fi
		sleep 0.1
	done
	if [ -z "$LEADER" ]; then
		# Say which servers bootstrapped: one that bootstrapped alone, with the other two
		# "waiting to be added", never gets the votes it needs (see docs/bench.md).
		boot='' waiting=''
		for ((i = 1; i <= SERVERS; i++)); do
			grep -q 'raft: bootstrapped with' "$TMP/log/s$i.log" && boot+=" s$i"
			grep -q 'waiting to be added' "$TMP/log/s$i.log" && waiting+=" s$i"
		done
		broke "no leader known to s1-s3 with 3 raft peers within 30 s (seen: ${last:-none}); bootstrapped:${boot:- none}; logged 'has raft state; waiting to be added':${waiting:- none}. The gossip figures are still measured, the catalog's are not"
	fi
fi

# CPU and RSS of the idle agents: context, no anchor
if [ -n "$UP_S" ]; then
	log "leader: ${LEADER:-none}; CPU and RSS of the $AGENTS idle agents over $IDLE_S s"
	sleep 2
	SRV_PIDS=("${PID_OF[@]:1:SERVERS}")
	CLI_PIDS=("${PID_OF[@]:SERVERS+1:AGENTS-SERVERS}")
	tick=$(getconf CLK_TCK)
	if a0=$(cpu_ticks "${SRV_PIDS[@]}") && b0=$(cpu_ticks "${CLI_PIDS[@]}"); then
		run_wait sleep "$IDLE_S"
		if a1=$(cpu_ticks "${SRV_PIDS[@]}") && b1=$(cpu_ticks "${CLI_PIDS[@]}"); then
			CPU_SRV=$(awk -v d=$((a1 - a0)) -v t="$tick" 'BEGIN {printf "%.2f", d / t}')
			CPU_CLI=$(awk -v d=$((b1 - b0)) -v t="$tick" 'BEGIN {printf "%.2f", d / t}')
			CPU_S=$(awk -v d=$((a1 - a0 + b1 - b0)) -v t="$tick" 'BEGIN {printf "%.2f", d / t}')
		fi
		RSS_ALL=$(rss_sum VmRSS "${SRV_PIDS[@]}" "${CLI_PIDS[@]}")
		RSS_ANON=$(rss_sum RssAnon "${SRV_PIDS[@]}" "${CLI_PIDS[@]}")
		RSS_SRV=$(rss_sum VmRSS "${SRV_PIDS[@]}")
		RSS_CLI=$(rss_sum VmRSS "${CLI_PIDS[@]}")
	fi
	[ -n "$CPU_S" ] && [ -n "$RSS_ALL" ] || broke "an agent exited while idle (its /proc entry went)"
	log "idle: ${CPU_S:-?} s CPU in $IDLE_S s (servers ${CPU_SRV:-?}, client agents ${CPU_CLI:-?}); RSS ${RSS_ALL:-?} KiB, anon ${RSS_ANON:-?} KiB"
fi

# ---------------------------------------------------------------------------------------------
# the rounds. Failure first, while the agents know exactly the 50 of them (members that left stay
# known, and counted in the suspicion timeout, for 72 h): each round kills a different client
# agent with -9, times its failure, restarts it with its data dir and times its rejoin.

LOAD_START='' LOAD_END=''
declare -a K_FIRST=() K_ALL=() K_CAT=() R_ALL=() R_CAT=() J_FIRST=() J_ALL=() J_CAT=() L_ALL=() L_CAT=()
N_KNOWN='' WATCH_CPU=() LAT50=() LAT99=()
# Rounds run once the agents converged, and stop at the first thing that breaks from then on
# (a DC without a leader does not stop them: gossip does not need raft; HEALTH is then empty and
# the catalog figures are not measured).
BASE_BROKEN=${#BROKEN[@]}
round_ok() { [ -n "$UP_S" ] && [ ${#BROKEN[@]} -eq "$BASE_BROKEN" ]; }
HEALTH=()
[ -z "$LEADER" ] || HEALTH=(--health "$LEADER")
if round_ok; then
	LOAD_START=$(loadavg)
	log "$ROUNDS failure rounds: kill -9 a client agent, then restart it with its data dir (load average $LOAD_START)"
fi
for ((r = 1; r <= ROUNDS; r++)); do
	round_ok || break
	vi=$((SERVERS + 1 + ((r - 1) * 11) % (AGENTS - SERVERS))) # c4, c15, c26, c37, c48, c12, ...
	victim=$(name_of "$vi")
	read -r addrs names <<<"$(list_agents "$vi")"
	common=(--agents "$addrs" --names "$names" --node "$victim" "${HEALTH[@]+"${HEALTH[@]}"}")
	watch_start "kill-$r" "${common[@]}" --pre 1 --want 4 --health-pre passing --health-want critical || break
	[ -n "$N_KNOWN" ] || N_KNOWN=$(awk 'NR == 1 {print $2}' "$W_OUT")
	watch_go
	kill -KILL "${PID_OF[vi]}"
	wait "${PID_OF[vi]}" 2>/dev/null
	reaped "${PID_OF[vi]}"
	if ! watch_end; then
		broke "kill $victim (round $r): not every agent listed it failed within $WATCH_S s: reached ${W[reached]:-?}, still: ${W[missing]:-?}"
		break
	fi
	K_FIRST+=("${W[first_ms]}") K_ALL+=("${W[all_ms]}") K_CAT+=("${W[health_ms]}") WATCH_CPU+=("${W[cpu_s]}")
	LAT50+=("${W[lat_p50_ms]}") LAT99+=("${W[lat_p99_ms]}")
	[ "${W[health_ms]}" != - ] || [ -z "$LEADER" ] || broke "kill $victim (round $r): serfHealth not critical on $LEADER within $WATCH_S s (${W[missing]})"
	log "  round $r: kill -9 $victim: first failed ${W[first_ms]} ms, all 49 ${W[all_ms]} ms, catalog critical ${W[health_ms]} ms (${W[polls]} answers, p50 ${W[lat_p50_ms]} ms, p99 ${W[lat_p99_ms]} ms, errors ${W[errors]}, watcher cpu ${W[cpu_s]} s)"

	watch_start "restart-$r" "${common[@]}" --pre 4 --want 1 --health-pre critical --health-want passing || break
	watch_go
	start_agent "$vi" "$victim"
	if ! watch_end; then
		broke "restart $victim (round $r): not every agent listed it alive within $WATCH_S s: reached ${W[reached]:-?}, still: ${W[missing]:-?}"
		break
	fi
	R_ALL+=("${W[all_ms]}") R_CAT+=("${W[health_ms]}")
	log "  round $r: restart $victim: all 49 list it alive ${W[all_ms]} ms (first ${W[first_ms]} ms), catalog passing ${W[health_ms]} ms"
	converge "after restarting $victim (round $r)" || break
	sleep 1 # the restart's own updates drain before the next kill
done

# Join and leave: a fresh agent j<r> on 127.0.1.51 with a fresh data dir joins through s1 and
# leaves with `dcgate leave` (it then exits). Each round's joiner has its own name: the left ones
# stay listed (Status 3).
if round_ok; then
	log "$ROUNDS join rounds: a fresh client agent on $NET.$JOINER joins through s1, then leaves"
fi
read -r addrs names <<<"$(list_agents 0)"
for ((r = 1; r <= ROUNDS; r++)); do
	round_ok || break
	jn="j$r"
	common=(--agents "$addrs" --names "$names" --node "$jn" "${HEALTH[@]+"${HEALTH[@]}"}")
	watch_start "join-$r" "${common[@]}" --pre 0 --want 1 --health-pre absent --health-want passing || break
	watch_go
	start_agent "$JOINER" "$jn"
	jpid=$AG_PID
	if ! watch_end; then
		broke "join $jn (round $r): not every agent listed it alive within $WATCH_S s: reached ${W[reached]:-?}, still: ${W[missing]:-?}"
		break
	fi
	J_FIRST+=("${W[first_ms]}") J_ALL+=("${W[all_ms]}") J_CAT+=("${W[health_ms]}")
	log "  round $r: join $jn: first ${W[first_ms]} ms, all 50 ${W[all_ms]} ms, catalog ${W[health_ms]} ms"

	watch_start "leave-$r" "${common[@]}" --pre 1 --want 3 --health-pre passing --health-want absent || break
	watch_go
	run_wait timeout 20 "$DCGATE" leave -http-addr="$NET.$JOINER:8500" >"$TMP/leave-$r.out" 2>&1 ||
		broke "dcgate leave against $jn (round $r): $(head -c 300 "$TMP/leave-$r.out")"
	if ! watch_end; then
		broke "leave $jn (round $r): not every agent listed it left within $WATCH_S s: reached ${W[reached]:-?}, still: ${W[missing]:-?}"
		break
	fi
	L_ALL+=("${W[all_ms]}") L_CAT+=("${W[health_ms]}")
	log "  round $r: leave $jn: all 50 list it left ${W[all_ms]} ms (first ${W[first_ms]} ms), catalog deregistered ${W[health_ms]} ms"
	for ((i = 0; i < 100; i++)); do kill -0 "$jpid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$jpid" 2>/dev/null; then
		broke "$jn still runs 10 s after dcgate leave answered"
		stop_pid "$jpid"
	fi
	wait "$jpid" 2>/dev/null
	reaped "$jpid"
done

LOAD_END=$(loadavg)
for ((i = 1; i <= AGENTS; i++)); do
	[ -n "${PID_OF[i]:-}" ] || continue
	[ -n "${LIVE[${PID_OF[i]}]+x}" ] || continue
	kill -0 "${PID_OF[i]}" 2>/dev/null || broke "$(name_of "$i") died; see $TMP/log/$(name_of "$i").log"
done

# ---------------------------------------------------------------------------------------------
# report (stdout)

# The predictions (ms). S(n): the suspicion timeout with n members known. D(n): the time for an
# update to reach n agents by gossip alone, each agent that has it sending it to G_NODES random
# members every G_MS: log_(k+1)(n) + ln(n)/k rounds, the push epidemic's growth and its tail
# (with k = 1, the classic log2 n + ln n). Piggybacking on probes only makes it faster.
N_KNOWN=${N_KNOWN:-$AGENTS}
S_MS=$(awk -v m="$S_MULT" -v n="$N_KNOWN" -v p="$P_MS" 'BEGIN {f = log(n + 1) / log(10); if (f < 1) f = 1; printf "%.0f", m * f * p}')
d_ms() { awk -v n="$1" -v k="$G_NODES" -v g="$G_MS" 'BEGIN {printf "%.0f", g * (log(n) / log(k + 1) + log(n) / k)}'; }
D50=$(d_ms "$AGENTS")
D49=$(d_ms $((AGENTS - 1)))
A_FIRST=$((2 * P_MS + S_MS))
A_ALL=$((A_FIRST + D49))

row() { printf '%-44s %12s %12s %7s   %s\n' "$@"; }
# figure <title> <anchor> <anchor is> <values...>: a title row, then the median and max rows
figure() {
	local title=$1 anchor=$2 what=$3 med mx
	shift 3
	read -r med mx <<<"$(stats "$@")"
	echo "$title"
	row "  median (ms)" "$med" "$anchor" "$(ratio "${med/-/}" "${anchor/-/}")" "$what"
	row "  max (ms)" "$mx" "$anchor" "$(ratio "${mx/-/}" "${anchor/-/}")" "$what"
}
echo "Rounds: $ROUNDS of each. Failure: a client agent killed with -9 (a different one each round), then"
echo "restarted with its data dir. Join: a fresh client agent on $NET.$JOINER (j1, j2, ...) joining through s1,"
echo "then \`dcgate leave\`. Every other agent's GET /v1/agent/members polled every $INTERVAL_MS ms from the change"
echo "on; the catalog is GET /v1/health/node/<node> on the leader (${LEADER:-none: not measured}). Times from the change"
echo "(the process start, the kill, the leave command) to the answer that shows it; lower is better."
echo "Anchor: no Consul here; the time dcgate's gossip parameters predict (docs/cluster.md), with"
echo "P = $P_MS ms probe interval, S = $S_MULT x log10(n+1) x P = $S_MS ms suspicion (n = $N_KNOWN members known),"
echo "D(n) = $G_MS ms x (log$((G_NODES + 1)) n + ln n / $G_NODES), an update gossiped to $G_NODES random members every $G_MS ms"
echo "reaching n agents: D(50) = $D50 ms, D(49) = $D49 ms. A failure: P until a member probes it,"
echo "P until that probe gives up (timeout $T_MS ms, then indirect probes) and it is suspect, S until failed."
echo
row "figure" "dcgate" "anchor" "ratio" "anchor is"
figure "kill -9: first agent lists it failed" "$A_FIRST" "predicted: 2P + S" "${K_FIRST[@]+"${K_FIRST[@]}"}"
figure "kill -9: all 49 others list it failed" "$A_ALL" "predicted: 2P + S + D(49)" "${K_ALL[@]+"${K_ALL[@]}"}"
figure "kill -9: catalog serfHealth critical" "$A_ALL" "predicted: 2P + S + D(49)" "${K_CAT[@]+"${K_CAT[@]}"}"
figure "restart: all 49 others list it alive" "$D49" "predicted: D(49) (start-up not in it)" "${R_ALL[@]+"${R_ALL[@]}"}"
figure "join: first agent lists it alive" "-" "(context: start-up and push-pull with s1)" "${J_FIRST[@]+"${J_FIRST[@]}"}"
figure "join: all 50 list it alive" "$D50" "predicted: D(50) (start-up not in it)" "${J_ALL[@]+"${J_ALL[@]}"}"
figure "leave: all 50 list it left" "$D50" "predicted: D(50)" "${L_ALL[@]+"${L_ALL[@]}"}"
echo
read -r c_med c_max <<<"$(stats "${R_CAT[@]+"${R_CAT[@]}"}")"
read -r j_med j_max <<<"$(stats "${J_CAT[@]+"${J_CAT[@]}"}")"
read -r l_med l_max <<<"$(stats "${L_CAT[@]+"${L_CAT[@]}"}")"
echo "context: catalog after a restart, serfHealth passing: median $c_med ms, max $c_max ms; after a join: median $j_med ms,"
echo "  max $j_max ms; after a leave, node deregistered: median $l_med ms, max $l_max ms"
echo "context: start-up: every agent lists $AGENTS alive members ${UP_S:-?} s after the check began, 1 s after the last start"
echo "  (median agent ${UP_MED:-?} s; the last: ${UP_LAST:-?}; a member that gossip misses is learned at the next push-pull, every 30 s)"
if [ -n "$CPU_S" ]; then
	echo "context: $AGENTS idle agents over $IDLE_S s: $CPU_S s CPU in all ($(awk -v c="$CPU_S" -v s="$IDLE_S" 'BEGIN {printf "%.1f", 100 * c / s}')% of one cpu), servers $CPU_SRV s, client agents $CPU_CLI s"
	echo "context: RSS of the $AGENTS agents: $(mib "$RSS_ALL") MiB summed (VmRSS; the shared libraries' pages counted in each), $(mib "$RSS_ANON") MiB private (RssAnon);"
	echo "  per server $(awk -v k="$RSS_SRV" -v n="$SERVERS" 'BEGIN {printf "%.1f", k / n / 1024}') MiB, per client agent $(awk -v k="$RSS_CLI" -v n=$((AGENTS - SERVERS)) 'BEGIN {printf "%.1f", k / n / 1024}') MiB"
fi
read -r w_med w_max <<<"$(STATS_FMT=%.2f stats "${WATCH_CPU[@]+"${WATCH_CPU[@]}"}")"
read -r l50 _ <<<"$(STATS_FMT=%.1f stats "${LAT50[@]+"${LAT50[@]}"}")"
read -r _ l99 <<<"$(STATS_FMT=%.1f stats "${LAT99[@]+"${LAT99[@]}"}")"
echo "context: the watcher, in a failure round (49 agents polled every $INTERVAL_MS ms): its own CPU median $w_med s, max $w_max s;"
echo "  an answer to GET /v1/agent/members took $l50 ms (median of the rounds' p50), $l99 ms (max of their p99)"
echo "context: load average (1, 5, 15 min) when the rounds began: ${LOAD_START:-?}; when they ended: ${LOAD_END:-?}"
echo

# target <label> <value> <shown> <awk condition on v>
target() {
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
secs() { fmt '%.2f s' "$(awk -v v="${1/-/}" 'BEGIN {if (v != "") print v / 1000}')"; }
read -r k_med k_max <<<"$(stats "${K_ALL[@]+"${K_ALL[@]}"}")"
target "a killed agent marked failed within 5 s (all 49, max of ${#K_ALL[@]})" "${k_max/-/}" "$(secs "$k_max")" "v <= 5000"
echo "        (all 49 list it failed: median $(secs "$k_med"), max $(secs "$k_max"))"

if [ ${#BROKEN[@]} -gt 0 ]; then
	for f in "$TMP"/log/*.log; do
		[ -f "$f" ] || continue
		grep -E '\[(WARN|ERROR)\]' "$f" | sed 's/^[^ ]* *//' | cut -c1-200 |
			sort | uniq -c | sort -rn | head -n 2 | sed "s|^|bench: gossip: ${f##*/}: |" >&2
	done 2>/dev/null | head -n 40 >&2
	echo
	echo "gossip broken (figures above marked - were not measured):"
	printf '  %s\n' "${BROKEN[@]}"
	exit 1
fi
exit 0
