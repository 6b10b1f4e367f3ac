#!/usr/bin/env bash
# bench/run.sh: `make bench`. Measures dcgate and prints every figure next to an anchor measured in
# the same run on the same machine, as a ratio: read throughput and p99 against nginx serving the
# same bytes as a static file, RSS against an nginx worker, the time one write takes to wake 10,000
# blocked queries against the time the same 10,000 sockets take to get a plain answer.
# What each figure means: docs/bench.md. Usage: bash bench/run.sh /abs/path/to/dcgate
#
# Everything listens on and connects to loopback (127.0.0.0/8) only. Every loop is bounded in count
# and time. Missed targets are reported, not failed: the exit status is non-zero only when something
# broke (a process died, a request failed, a tool timed out). Knobs, for a quicker look:
#   BENCH_DURATION (s, default 5)  BENCH_CONNS (wrk connections, 32)  BENCH_WAITERS (10000)
#   BENCH_SERVICES (10000)  BENCH_ROUNDS (waiter rounds, 3)  BENCH_KEEP=1 keeps the temp dir.
set -uo pipefail

DCGATE=${1:-}
if [ -z "$DCGATE" ] || [ ! -x "$DCGATE" ]; then
	echo "usage: bash bench/run.sh /abs/path/to/dcgate (got '${DCGATE}', not executable)" >&2
	exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

DURATION=${BENCH_DURATION:-5}
CONNS=${BENCH_CONNS:-32}
WAITERS=${BENCH_WAITERS:-10000}
SERVICES=${BENCH_SERVICES:-10000}
ROUNDS=${BENCH_ROUNDS:-3}
INSTANCES=100 # of service "web", as the issue says
H_URL_PATH="/v1/health/service/web?passing"
K_URL_PATH="/v1/kv/bench/key"
for v in DURATION CONNS WAITERS SERVICES ROUNDS; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
		echo "bench: BENCH_$v must be a positive integer" >&2
		exit 2
	fi
done
[ "$DURATION" -le 300 ] || { echo "bench: BENCH_DURATION is at most 300" >&2; exit 2; }

log() { echo "bench: $*" >&2; }
BROKEN=()
broke() {
	log "BROKEN: $*"
	BROKEN+=("$*")
}
for tool in nginx wrk curl cc awk pgrep "$PY"; do
	command -v "$tool" >/dev/null 2>&1 || { log "missing $tool (make deps installs it)"; exit 1; }
done

TMP=$(mktemp -d /tmp/dcgate-bench.XXXXXX)
chmod 755 "$TMP" # the nginx worker drops to an unprivileged user and must read www/
PIDS=()

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
	if [ "${BENCH_KEEP:-0}" = 1 ] || [ ${#BROKEN[@]} -gt 0 ]; then
		log "logs kept in $TMP"
	else
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 10,000 waiters need 10,000 sockets on each side; each process gets its own limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((WAITERS + 256)) ]; then
	log "open file limit $NOFILE is below $((WAITERS + 256)); the waiter figure will be skipped"
fi

# ---------------------------------------------------------------------------------------------
# helpers

# Prints the first port from $1 on that nobody holds on 127.0.0.1 (tcp), skipping those in $2...
free_port() {
	"$PY" - "$@" <<'EOF'
import socket, sys
start, taken = int(sys.argv[1]), {int(p) for p in sys.argv[2:]}
for p in range(start, start + 500):
    if p in taken:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        print(p)
        break
    except OSError:
        pass
    finally:
        s.close()
else:
    sys.exit(1)
EOF
}

# The dev agent also binds its server/LAN/WAN ports (8300-8302) on -bind; other dcgate or Consul
# processes on this machine may hold them on 127.0.0.1, so take the first loopback address where
# all three are free (tcp and udp).
choose_bind() {
	"$PY" - <<'EOF'
import socket, sys
for last in [1] + list(range(240, 250)):
    addr, ok = f"127.0.0.{last}", True
    for port in (8300, 8301, 8302):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET, kind)
            try:
                s.bind((addr, port))
            except OSError:
                ok = False
            finally:
                s.close()
    if ok:
        print(addr)
        sys.exit(0)
sys.exit(1)
EOF
}

rss_kib() { awk '/^VmRSS:/ {print $2; found=1} END {if (!found) print ""}' "/proc/$1/status" 2>/dev/null; }

# Float helpers (awk): fmt <printf-format> <value>, ratio a b (a/b, 2 decimals), "-" when missing.
mib() { [ -n "${1:-}" ] && awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}' || printf -- '-'; }

AGENT_PID=
# start_agent <name> <http-port>: starts a fresh -dev agent, waits (at most 30 s) until
# /v1/status/leader names a leader. Sets AGENT_PID. Returns 1 (and records why) if it does not.
start_agent() {
	local name=$1 port=$2 leader i
	local alog="$TMP/$name.log"
	"$DCGATE" agent -dev -bind "$BIND" -client 127.0.0.1 -http-port "$port" -dns-port -1 \
		-node bench >"$alog" 2>&1 &
	AGENT_PID=$!
	PIDS+=("$AGENT_PID")
	for ((i = 0; i < 300; i++)); do
		if ! kill -0 "$AGENT_PID" 2>/dev/null; then
			tail -n 15 "$alog" | sed 's/^/bench:   /' >&2
			broke "agent ($name) exited during startup: $(tail -n 1 "$alog") (log: $alog)"
			return 1
		fi
		leader=$(curl -s --max-time 1 "http://127.0.0.1:$port/v1/status/leader" 2>/dev/null)
		if [[ $leader =~ ^\"[^\"]+\"$ ]]; then
			return 0
		fi
		sleep 0.1
	done
	broke "agent ($name) had no leader after 30 s (last answer: '${leader:-none}'); see $alog"
	return 1
}

# http_save <method> <url> <out-file> [curl args...]: one request, body to out-file; 200 or broke.
http_save() {
	local method=$1 url=$2 out=$3 code
	shift 3
	code=$(curl -s --max-time 10 -X "$method" -o "$out" -w '%{http_code}' "$@" "$url")
	if [ "$code" != 200 ]; then
		broke "$method $url answered ${code:-nothing}: $(head -c 200 "$out" 2>/dev/null)"
		return 1
	fi
}

# wrk_run <url> <seconds> <tag>: prints "<requests/s> <p99 ms>", or nothing (and records why) if
# wrk failed or any response was not 2xx/3xx.
wrk_run() {
	local url=$1 secs=$2 tag=$3 out="$TMP/wrk-$3.txt"
	if ! timeout $((secs + 30)) wrk -t1 -c"$CONNS" -d"${secs}s" --latency "$url" >"$out" 2>&1; then
		broke "wrk against $url failed: $(tail -n 3 "$out" | tr '\n' ' ')"
		return 1
	fi
	if grep -q 'Non-2xx or 3xx responses' "$out"; then
		broke "wrk against $url: $(grep 'Non-2xx' "$out" | sed 's/^ *//')"
		return 1
	fi
	if grep -q 'Socket errors' "$out"; then
		log "note: wrk against $url: $(grep 'Socket errors' "$out" | sed 's/^ *//')"
	fi
	awk '
		function ms(s) {
			if (s ~ /us$/) return s * 0.001     # awk reads the leading number
			if (s ~ /ms$/) return s + 0
			if (s ~ /s$/ && s !~ /[mu]s$/) return s * 1000
			if (s ~ /m$/) return s * 60000
			if (s ~ /h$/) return s * 3600000
			return ""
		}
		/^Requests\/sec:/ {rps = $2}
		$1 == "99%" {p99 = ms($2)}
		END {if (rps == "" || p99 == "") exit 1; printf "%s %.3f\n", rps, p99}' "$out" || {
		broke "could not read Requests/sec and the 99% line from wrk's output ($out)"
		return 1
	}
}


NGINX_PID= NGINX_WORKER=
# start_nginx <worker_connections>: (re)starts the anchor nginx on 127.0.0.1:$PORT_N serving $WWW,
# waits (at most 10 s) until it serves a check file. Sets NGINX_PID (the master)
# and NGINX_WORKER. Returns 1 (and records why) if it does not come up.
start_nginx() {
	local wc=$1 temp_paths= m code= i ngx_nofile=$NOFILE
	[ -z "$NGINX_PID" ] || stop_pid "$NGINX_PID"
	NGINX_PID= NGINX_WORKER=
	if [ "$NOFILE" = unlimited ] || [ "$NOFILE" -gt 65536 ]; then ngx_nofile=65536; fi
	for m in proxy fastcgi uwsgi scgi; do
		nginx -V 2>&1 | grep -q -- "--without-http_${m}_module" ||
			temp_paths+="${m}_temp_path $TMP/nginx/$m; "
	done
	cat >"$TMP/nginx/nginx.conf" <<EOF
# The anchor: one nginx worker (dcgate answers HTTP on one thread) serving the saved bodies as
# static files, keep-alive on and never cut short, no access log.
daemon off;
worker_processes 1;
worker_rlimit_nofile $ngx_nofile;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections $wc; use epoll; }
http {
    access_log off;
    default_type application/json;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path $TMP/nginx/body;
    $temp_paths
    server {
        listen 127.0.0.1:$PORT_N backlog=4096;
        root $WWW;
    }
}
EOF
	echo ok >"$WWW/bench-ready"
	chmod -R a+rX "$TMP/nginx"
	nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx/" -e "$TMP/nginx/error.log" \
		>>"$TMP/nginx/stdout.log" 2>&1 &
	NGINX_PID=$!
	PIDS+=("$NGINX_PID")
	for ((i = 0; i < 100; i++)); do
		kill -0 "$NGINX_PID" 2>/dev/null || break
		code=$(curl -s --max-time 1 -o /dev/null -w '%{http_code}' \
			"http://127.0.0.1:$PORT_N/bench-ready" 2>/dev/null)
		[ "$code" = 200 ] && break
		sleep 0.1
	done
	NGINX_WORKER=$(pgrep -P "$NGINX_PID" 2>/dev/null | head -n 1)
	if [ "$code" != 200 ] || [ -z "$NGINX_WORKER" ]; then
		broke "nginx did not come up: $(tail -n 5 "$TMP/nginx/error.log" "$TMP/nginx/stdout.log" 2>/dev/null | tr '\n' ' ')"
		return 1
	fi
	sleep 0.5 # at rest, like the agent
}

# ---------------------------------------------------------------------------------------------
# setup

log "temp dir $TMP"
if ! cc -std=gnu11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -o "$TMP/waiters" "$HERE/waiters.c" \
	>"$TMP/cc.log" 2>&1; then
	cat "$TMP/cc.log" >&2
	broke "could not build bench/waiters.c"
	exit 1
fi
if ! BIND=$(choose_bind); then
	broke "ports 8300-8302 are taken on 127.0.0.1 and on 127.0.0.240..249"
	exit 1
fi
[ "$BIND" = 127.0.0.1 ] || log "8300-8302 are taken on 127.0.0.1: the agents bind $BIND (HTTP stays on 127.0.0.1)"
PORT_A=$(free_port 18500) && PORT_N=$(free_port 18600 "$PORT_A") &&
	PORT_B=$(free_port 18700 "$PORT_A" "$PORT_N") || { broke "no free port near 18500"; exit 1; }

WWW="$TMP/nginx/www"
mkdir -p "$WWW/v1/health/service" "$WWW/v1/kv/bench" "$TMP/nginx/body"
make_kv_value "$TMP/value.json" || { broke "could not make the KV value"; exit 1; }

# Result variables: empty means not measured (and the reason is in BROKEN).
H_RPS= H_P99= H_NRPS= H_NP99= H_BYTES=
K_RPS= K_P99= K_NRPS= K_NP99= K_BYTES=
RSS_IDLE= RSS_IDLE_B= RSS_SVC= REG_BYTES= REG_SECS= N_RSS_IDLE=
N_RSS_IDLE_BIG= W_PLAIN= W_WAKE= W_RSS_BEFORE= W_RSS_PARKED= W_ROUNDS= N_PLAIN= N_RSS_OPEN= W_BYTES=

# ---------------------------------------------------------------------------------------------
# phase 1: agent A, idle RSS, then reads under wrk next to nginx serving the same bytes

log "phase 1: agent on 127.0.0.1:$PORT_A (bind $BIND), nginx on 127.0.0.1:$PORT_N"
if start_agent agent-a "$PORT_A"; then
	A_PID=$AGENT_PID
	sleep 2 # let start-up allocations settle: this is the agent at rest, nothing registered
	RSS_IDLE=$(rss_kib "$A_PID")
	log "idle agent RSS ${RSS_IDLE:-?} KiB"

	ok=1
	if out=$(timeout 120 "$PY" "$HERE/register.py" --port "$PORT_A" --count "$INSTANCES" --kind web \
		--concurrency 8 --timeout 60 2>&1); then
		log "$out"
	else
		broke "registering $INSTANCES web instances: $out"
		ok=0
	fi
	if [ $ok = 1 ]; then
		http_save PUT "http://127.0.0.1:$PORT_A/v1/kv/bench/key" "$TMP/put.out" \
			--data-binary "@$TMP/value.json" || ok=0
	fi
	if [ $ok = 1 ]; then
		# One copy of each body, served by nginx from the same path, so wrk sends the same request.
		http_save GET "http://127.0.0.1:$PORT_A$H_URL_PATH" "$WWW/v1/health/service/web" &&
			http_save GET "http://127.0.0.1:$PORT_A$K_URL_PATH" "$WWW/v1/kv/bench/key" || ok=0
	fi
	if [ $ok = 1 ]; then
		n=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d) if isinstance(d, list) else -1)' \
			"$WWW/v1/health/service/web" 2>/dev/null)
		if [ "$n" != "$INSTANCES" ]; then
			broke "GET $H_URL_PATH returned ${n:-unparseable} entries, not $INSTANCES"
			ok=0
		fi
		if ! "$PY" - "$WWW/v1/kv/bench/key" "$TMP/value.json" <<'EOF'; then
import base64, json, sys
d = json.load(open(sys.argv[1]))
assert base64.b64decode(d[0]["Value"]) == open(sys.argv[2], "rb").read()
EOF
			broke "GET $K_URL_PATH did not return the value that was PUT"
			ok=0
		fi
		H_BYTES=$(stat -c %s "$WWW/v1/health/service/web")
		K_BYTES=$(stat -c %s "$WWW/v1/kv/bench/key")
	fi

	if [ $ok = 1 ]; then
		if start_nginx 1024; then
			N_RSS_IDLE=$(rss_kib "$NGINX_WORKER")
			log "idle nginx worker RSS ${N_RSS_IDLE:-?} KiB"
			for p in "$H_URL_PATH" "$K_URL_PATH"; do
				curl -s --max-time 5 -o "$TMP/nginx-check" "http://127.0.0.1:$PORT_N$p"
				if ! cmp -s "$TMP/nginx-check" "$WWW${p%%\?*}"; then
					broke "nginx does not serve the saved body of $p unchanged"
					ok=0
				fi
			done
		else
			ok=0
		fi
	fi

	if [ $ok = 1 ]; then
		log "wrk -t1 -c$CONNS -d${DURATION}s --latency, 1 s warm-up each (about $((4 * (DURATION + 1))) s)"
		for target in "A:$PORT_A" "N:$PORT_N"; do # warm-up: first-touch costs out of the figures
			for p in "$H_URL_PATH" "$K_URL_PATH"; do
				wrk_run "http://127.0.0.1:${target#*:}$p" 1 "warmup-${target%%:*}" >/dev/null || ok=0
			done
		done
	fi
	if [ $ok = 1 ]; then
		# dcgate then nginx for each endpoint, back to back, so both see the same machine state.
		if r=$(wrk_run "http://127.0.0.1:$PORT_A$H_URL_PATH" "$DURATION" health-dcgate); then read -r H_RPS H_P99 <<<"$r"; fi
		if r=$(wrk_run "http://127.0.0.1:$PORT_N$H_URL_PATH" "$DURATION" health-nginx); then read -r H_NRPS H_NP99 <<<"$r"; fi
		if r=$(wrk_run "http://127.0.0.1:$PORT_A$K_URL_PATH" "$DURATION" kv-dcgate); then read -r K_RPS K_P99 <<<"$r"; fi
		if r=$(wrk_run "http://127.0.0.1:$PORT_N$K_URL_PATH" "$DURATION" kv-nginx); then read -r K_NRPS K_NP99 <<<"$r"; fi
	fi
	kill -0 "$A_PID" 2>/dev/null || broke "agent A died during phase 1; see $TMP/agent-a.log"
	stop_pid "$A_PID"
fi

# ---------------------------------------------------------------------------------------------
# phase 2: a fresh agent B: RSS with many services, then the waiter wake-up

log "phase 2: fresh agent on 127.0.0.1:$PORT_B"
if start_agent agent-b "$PORT_B"; then
	B_PID=$AGENT_PID
	sleep 2
	RSS_IDLE_B=$(rss_kib "$B_PID")
	log "registering $SERVICES service instances (64 in flight, at most 180 s)"
	if out=$(timeout 200 "$PY" "$HERE/register.py" --port "$PORT_B" --count "$SERVICES" --kind bulk \
		--concurrency 64 --timeout 180 2>&1); then
		log "$out"
		REG_BYTES=$(awk '{print $4}' <<<"$out")
		REG_SECS=$(awk '{print $6}' <<<"$out")
		sleep 2 # let the apply loop finish and memory settle
		RSS_SVC=$(rss_kib "$B_PID")
	else
		broke "registering $SERVICES services: $out"
	fi

	if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((WAITERS + 256)) ]; then
		broke "open file limit $NOFILE is too low for $WAITERS waiters"
	elif kill -0 "$B_PID" 2>/dev/null; then
		log "waking $WAITERS blocked GETs, $ROUNDS rounds (each: plain round, 2 s park, one PUT)"
		if timeout 400 "$TMP/waiters" -p "$PORT_B" -n "$WAITERS" -r "$ROUNDS" -t 300 -P "$B_PID" \
			-k bench/wake -w 60s -s 2000 >"$TMP/waiters.out" 2>"$TMP/waiters.err"; then
			cat "$TMP/waiters.out" | sed 's/^/bench:   /' >&2
			W_PLAIN=$(awk '$1 == "plain_ms_median" {print $2}' "$TMP/waiters.out")
			W_WAKE=$(awk '$1 == "wake_ms_median" {print $2}' "$TMP/waiters.out")
			W_RSS_BEFORE=$(awk '$1 == "rss_before_kib" {print $2}' "$TMP/waiters.out")
			W_RSS_PARKED=$(awk '$1 == "rss_parked_kib" {print $2}' "$TMP/waiters.out")
			W_ROUNDS=$(awk '$1 == "round" {printf "%s%.0f", sep, $6; sep = "/"}' "$TMP/waiters.out")
			# The same body, as a file, for nginx's turn with the same number of sockets.
			http_save GET "http://127.0.0.1:$PORT_B/v1/kv/bench/wake" "$WWW/v1/kv/bench/wake" &&
				chmod a+r "$WWW/v1/kv/bench/wake" && W_BYTES=$(stat -c %s "$WWW/v1/kv/bench/wake")
		else
			broke "waiters against the agent: $(tr '\n' ' ' <"$TMP/waiters.err")"
		fi
	fi
	kill -0 "$B_PID" 2>/dev/null || broke "agent B died during phase 2; see $TMP/agent-b.log"
	stop_pid "$B_PID"

	# nginx again, with room for the waiters' sockets: it starts closing idle keep-alive
	# connections once fewer than 1/16 of worker_connections are free.
	if [ -n "$W_BYTES" ] && start_nginx $((WAITERS + WAITERS / 8 + 1024)); then
		N_RSS_IDLE_BIG=$(rss_kib "$NGINX_WORKER")
		log "nginx: the same $WAITERS sockets, plain GETs of the same body"
		if timeout 400 "$TMP/waiters" -m hold -p "$PORT_N" -n "$WAITERS" -r "$ROUNDS" -t 300 \
			-P "$NGINX_WORKER" -u /v1/kv/bench/wake >"$TMP/waiters-nginx.out" 2>"$TMP/waiters-nginx.err"; then
			N_PLAIN=$(awk '$1 == "plain_ms_median" {print $2}' "$TMP/waiters-nginx.out")
			N_RSS_OPEN=$(awk '$1 == "rss_open_kib" {print $2}' "$TMP/waiters-nginx.out")
		else
			broke "waiters against nginx: $(tr '\n' ' ' <"$TMP/waiters-nginx.err")"
		fi
	fi
fi
[ -z "$NGINX_PID" ] || stop_pid "$NGINX_PID"

# ---------------------------------------------------------------------------------------------
# report (stdout)

row() { printf '%-44s %12s %12s %7s   %s\n' "$@"; }
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
ver=$(timeout 5 "$DCGATE" version 2>/dev/null | head -n 1)
echo
echo "dcgate bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cpus (${cpu:-unknown cpu}), kernel $(uname -r)"
echo "dcgate: ${ver:-version unknown} ($DCGATE); anchors: $(nginx -v 2>&1 | sed 's/.*: //') with 1 worker, $(wrk -v 2>&1 | head -n 1 | awk '{print $1, $2}')"
echo "reads: wrk -t1 -c$CONNS -d${DURATION}s --latency, keep-alive, loopback; nginx serves the same bytes"
echo "as a static file at the same path. Higher is better for requests/s, lower for the rest."
echo
row "figure" "dcgate" "anchor" "ratio" "anchor is"
row "GET $H_URL_PATH" "" "" "" "($INSTANCES instances, ${H_BYTES:-?} byte body)"
row "  requests/s" "$(fmt %.0f "$H_RPS")" "$(fmt %.0f "$H_NRPS")" "$(ratio "$H_RPS" "$H_NRPS")" "nginx, same bytes"
row "  p99 latency (ms)" "$(fmt %.2f "$H_P99")" "$(fmt %.2f "$H_NP99")" "$(ratio "$H_P99" "$H_NP99")" "nginx, same bytes"
row "GET $K_URL_PATH" "" "" "" "(1024 byte value, ${K_BYTES:-?} byte body)"
row "  requests/s" "$(fmt %.0f "$K_RPS")" "$(fmt %.0f "$K_NRPS")" "$(ratio "$K_RPS" "$K_NRPS")" "nginx, same bytes"
row "  p99 latency (ms)" "$(fmt %.2f "$K_P99")" "$(fmt %.2f "$K_NP99")" "$(ratio "$K_P99" "$K_NP99")" "nginx, same bytes"
row "RSS, fresh agent at rest (MiB)" "$(mib "$RSS_IDLE")" "$(mib "$N_RSS_IDLE")" "$(ratio "$RSS_IDLE" "$N_RSS_IDLE")" "idle nginx worker"
row "RSS with $SERVICES services (MiB)" "$(mib "$RSS_SVC")" "$(mib "$N_RSS_IDLE")" "$(ratio "$RSS_SVC" "$N_RSS_IDLE")" "idle nginx worker"
SVC_GROWTH=
[ -n "$RSS_SVC" ] && [ -n "$RSS_IDLE_B" ] && SVC_GROWTH=$((RSS_SVC - RSS_IDLE_B))
REG_KIB=
[ -n "$REG_BYTES" ] && REG_KIB=$(awk -v b="$REG_BYTES" 'BEGIN {printf "%.0f", b / 1024}')
row "  growth over its own idle (MiB)" "$(mib "$SVC_GROWTH")" "$(mib "$REG_KIB")" "$(ratio "$SVC_GROWTH" "$REG_KIB")" "JSON bytes registered"
WAKE_NOTE="same sockets, plain GET"
[ -n "$W_ROUNDS" ] && WAKE_NOTE+=" (wake rounds: $W_ROUNDS ms)"
row "wake $WAITERS blocked GETs, one PUT (ms)" "$(fmt %.1f "$W_WAKE")" "$(fmt %.1f "$W_PLAIN")" "$(ratio "$W_WAKE" "$W_PLAIN")" "$WAKE_NOTE"
row "$WAITERS plain GETs at once (ms)" "$(fmt %.1f "$W_PLAIN")" "$(fmt %.1f "$N_PLAIN")" "$(ratio "$W_PLAIN" "$N_PLAIN")" "nginx, same sockets and bytes"
PARKED_GROWTH=
[ -n "$W_RSS_PARKED" ] && [ -n "$W_RSS_BEFORE" ] && PARKED_GROWTH=$((W_RSS_PARKED - W_RSS_BEFORE))
N_OPEN_GROWTH=
[ -n "$N_RSS_OPEN" ] && [ -n "$N_RSS_IDLE_BIG" ] && N_OPEN_GROWTH=$((N_RSS_OPEN - N_RSS_IDLE_BIG))
row "RSS growth, $WAITERS parked GETs (MiB)" "$(mib "$PARKED_GROWTH")" "$(mib "$N_OPEN_GROWTH")" "$(ratio "$PARKED_GROWTH" "$N_OPEN_GROWTH")" "nginx worker, as many open conns"
echo

# target <label> <value> <shown> <awk condition on v>
target() {
	local verdict
	local shown=$3
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
hr=$(ratio "$H_RPS" "$H_NRPS")
kr=$(ratio "$K_RPS" "$K_NRPS")
target "health/service requests/s >= 0.6 x nginx" "$hr" "$hr" "v >= 0.6"
target "kv requests/s >= 0.6 x nginx" "$kr" "$kr" "v >= 0.6"
target "RSS of the idle agent < 10 MiB" "$RSS_IDLE" "$(mib "$RSS_IDLE") MiB" "v < 10240"

# ---------------------------------------------------------------------------------------------
# TLS: bench/tls.sh prints its own table (OpenSSL engine against nng's mbedTLS and plain tcp, each
# measured in this run) and its own targets; it exits 0 when its tool is not in the tree yet.

timeout -k 10 900 bash "$HERE/tls.sh" "$DCGATE" ||
	broke "bench/tls.sh (exit $?; its reasons are listed above)"

# Federation: bench/federation.sh starts two DCs (dc1, east) on leased loopback addresses and
# prints its own table (forwarded reads against the same reads made locally, WAN bytes per remote
# watcher with and without coalescing) and its own targets.
timeout -k 10 900 bash "$HERE/federation.sh" "$DCGATE" ||
	broke "bench/federation.sh (exit $?; its reasons are listed above)"

# KV writes: bench/raft.sh starts etcd 3.4 (3 members, installed for the bench) and a 3-server
# dcgate DC (RAFT_SERVERS) and prints PUT throughput and p99 at concurrency 1, 16, 64 next to etcd's.
timeout -k 10 1200 bash "$HERE/raft.sh" "$DCGATE" ||
	broke "bench/raft.sh (exit $?; its reasons are listed above)"

# LAN membership: bench/gossip.sh starts 50 agents (3 servers, 47 client agents) on 127.0.1.1-50 and
# prints join, leave and failure propagation next to what the gossip parameters predict.
timeout -k 10 600 bash "$HERE/gossip.sh" "$DCGATE" ||
	broke "bench/gossip.sh (exit $?; its reasons are listed above)"

if [ ${#BROKEN[@]} -gt 0 ]; then
	echo
	echo "broken (figures above marked - were not measured):"
	printf '  %s\n' "${BROKEN[@]}"
	exit 1
fi
exit 0
