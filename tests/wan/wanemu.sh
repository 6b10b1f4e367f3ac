#!/usr/bin/env bash
# wanemu.sh: an emulated WAN between datacenters on one machine, for the federation tests.
# Each DC gets its own network namespace (<prefix><dc>, e.g. dgw-a) with its own lo and one
# interface wan0 (10.254.<i>.1/16, plus .2, .3 ... with --addrs); all wan0s hang off a bridge in a
# hub namespace (<prefix>hub). Nothing is added to the caller's namespace.
#
# The kernel has no netem, so on each DC's INPUT hook the packets from every other DC go to an
# NFQUEUE (queue number = the sender DC's index) served by tests/wan/delayer, one per (receiver,
# sender) pair: each direction of each link is delayed once, by its receiver. Loss and partitions
# are nft rules in table `inet dgw` (priority -50, before the queue): a partition drops at input
# on both sides, silently, as a real cut does.
#
# Needs root, ip (iproute2), nft, iptables (the nf_tables flavour is fine) and the delayer binary
# (make builds it as build/tests/wan/delayer). See tests/wan/README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
prog=wanemu

usage() {
	cat <<'EOF'
usage: wanemu.sh [--prefix P] COMMAND [args]
  up [--dcs a,b[,c...]] [--delay MS] [--jitter MS] [--loss PCT] [--stall-every S] [--stall-for S]
     [--addrs K] [--link A:B:DELAY:JITTER:LOSS]...
                 create the namespaces and start the delayers (defaults: dcs a,b; delay 150,
                 jitter 30, loss 5, stall 3 s every 60 s; 1 address per DC). --link sets one
                 link's figures, both directions. Anything left over from an earlier `up` with
                 the same prefix is removed first.
  down           stop every process in the namespaces and delete them (idempotent)
  partition on|off [A [B]]
                 drop all traffic between A and B; A alone: between A and every other DC;
                 neither: between every pair
  status         namespaces, addresses, partitions, delayer and nft counters
  exec DC CMD... run CMD inside DC's namespace
  addr DC [K]    print DC's K-th address (K from 1)
  ns DC          print DC's namespace name
  check          can this machine run the emulator? exit 0 yes, 3 the kernel lacks NFQUEUE
                 (the reason is printed), 1 anything else is missing
--prefix (or WANEMU_PREFIX; default dgw-) names the namespaces; it must start with dgw- and end
with -. Instances with different prefixes can run side by side. WANEMU_DELAYER overrides the
delayer binary; WANEMU_STATE (default /run/dgw-wanemu) holds pids, logs and the configuration.
EOF
}

die() { echo "$prog: $*" >&2; exit 1; }
log() { [ "${WANEMU_QUIET:-0}" = 1 ] || echo "$prog: $*" >&2; }

prefix="${WANEMU_PREFIX:-dgw-}"
args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--prefix) [ $# -ge 2 ] || die "--prefix needs a value"; prefix="$2"; shift 2 ;;
	--prefix=*) prefix="${1#--prefix=}"; shift ;;
	*) args+=("$1"); shift ;;
	esac
done
set -- "${args[@]+"${args[@]}"}"
[[ "$prefix" =~ ^dgw-([a-z0-9]+-)*$ ]] || die "bad prefix '$prefix' (dgw-, or dgw- then [a-z0-9]+- parts)"
state="${WANEMU_STATE:-/run/dgw-wanemu}/${prefix%-}"
hub="${prefix}hub"

need_root() { [ "$(id -u)" = 0 ] || die "needs root (network namespaces, netfilter)"; }

find_delayer() {
	local c
	for c in "${WANEMU_DELAYER:-}" "$root/build/tests/wan/delayer" "$root/build-san/tests/wan/delayer"; do
		[ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
	done
	return 1
}

need_tools() {
	local t
	for t in ip nft iptables; do
		command -v "$t" >/dev/null 2>&1 || die "$t not found (install iproute2, nftables, iptables: make deps)"
	done
	delayer="$(find_delayer)" || die "delayer not built: run 'make build/tests/wan/delayer' (or set WANEMU_DELAYER)"
}

# Our namespaces: <prefix><name> with no further '-', so another prefix's names never match.
our_namespaces() {
	ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${prefix}[a-z0-9]+\$" || true
}

ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }

# Waits up to $2 tenths of a second for namespace $1 to hold no process.
wait_ns_empty() {
	local i
	for ((i = 0; i < $2; i++)); do
		[ -z "$(ip netns pids "$1" 2>/dev/null)" ] && return 0
		sleep 0.1
	done
	return 1
}

do_down() {
	local ns pids
	for ns in $(our_namespaces); do
		pids="$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
		if [ -n "${pids// /}" ]; then
			# shellcheck disable=SC2086
			kill -TERM $pids 2>/dev/null || true
			if ! wait_ns_empty "$ns" 30; then
				pids="$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
				# shellcheck disable=SC2086
				[ -n "${pids// /}" ] && kill -KILL $pids 2>/dev/null || true
				wait_ns_empty "$ns" 20 || echo "$prog: processes still in $ns: $(ip netns pids "$ns" | tr '\n' ' ')" >&2
			fi
		fi
		ip netns del "$ns" 2>/dev/null || true
	done
	rm -rf "$state"
	local left
	left="$(our_namespaces)"
	[ -z "$left" ] || die "could not delete: $left"
}

# --- configuration saved by `up` ---------------------------------------------------------------
load_state() {
	[ -f "$state/config" ] || die "not up (no $state/config); run: wanemu.sh --prefix $prefix up"
	# shellcheck disable=SC1091
	. "$state/config"
	IFS=, read -r -a dcs <<<"$DCS"
}

dc_index() { # DC name -> 1-based index, or die
	local i
	for i in "${!dcs[@]}"; do
		[ "${dcs[$i]}" = "$1" ] && { echo $((i + 1)); return 0; }
	done
	die "unknown DC '$1' (known: ${dcs[*]})"
}

# --- up ----------------------------------------------------------------------------------------
up_ok=0
on_up_exit() {
	local rc=$?
	if [ "$up_ok" != 1 ]; then
		echo "$prog: up failed; removing what was made" >&2
		for f in "$state"/delayer.*.log; do
			[ -f "$f" ] && { echo "--- ${f##*/}" >&2; tail -n 5 "$f" >&2; }
		done
		set +e
		do_down
		[ "$rc" = 0 ] && rc=1
	fi
	exit "$rc"
}

stall_text() { # for, every
	if awk -v s="$1" -v e="$2" 'BEGIN { exit !(s > 0 && e > 0) }'; then
		echo "total stall of $1 s every $2 s"
	else
		echo "no stalls"
	fi
}

num_ok() { [[ "$1" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "bad number '$1' for $2"; }

do_up() {
	local dcs_arg=a,b delay=150 jitter=30 loss=5 every=60 stall=3 naddrs=1
	local -a links=()
	while [ $# -gt 0 ]; do
		[ $# -ge 2 ] || die "$1 needs a value"
		case "$1" in
		--dcs) dcs_arg="$2" ;;
		--delay) delay="$2" ;;
		--jitter) jitter="$2" ;;
		--loss) loss="$2" ;;
		--stall-every) every="$2" ;;
		--stall-for) stall="$2" ;;
		--addrs) naddrs="$2" ;;
		--link) links+=("$2") ;;
		*) die "up: unknown option $1" ;;
		esac
		shift 2
	done
	num_ok "$delay" --delay; num_ok "$jitter" --jitter; num_ok "$loss" --loss
	num_ok "$every" --stall-every; num_ok "$stall" --stall-for
	[[ "$naddrs" =~ ^[0-9]+$ ]] && [ "$naddrs" -ge 1 ] && [ "$naddrs" -le 50 ] || die "--addrs must be 1..50"
	IFS=, read -r -a dcs <<<"$dcs_arg"
	[ ${#dcs[@]} -ge 2 ] && [ ${#dcs[@]} -le 16 ] || die "--dcs needs 2 to 16 names"
	local d
	for d in "${dcs[@]}"; do
		[[ "$d" =~ ^[a-z0-9]{1,12}$ ]] || die "bad DC name '$d' ([a-z0-9], at most 12)"
		[ "$d" != hub ] || die "'hub' is reserved"
	done
	[ "$(printf '%s\n' "${dcs[@]}" | sort | uniq -d)" = "" ] || die "duplicate DC names"

	# Per-link figures: lk_<i>_<j> = "delay jitter loss", the same both ways.
	local i j n=${#dcs[@]}
	declare -A lk=()
	for ((i = 1; i <= n; i++)); do
		for ((j = 1; j <= n; j++)); do lk[$i,$j]="$delay $jitter $loss"; done
	done
	local l a b ld lj ll
	for l in "${links[@]+"${links[@]}"}"; do
		IFS=: read -r a b ld lj ll <<<"$l"
		[ -n "${ll:-}" ] || die "--link wants A:B:DELAY:JITTER:LOSS, got '$l'"
		num_ok "$ld" --link; num_ok "$lj" --link; num_ok "$ll" --link
		i=$(dc_index "$a"); j=$(dc_index "$b")
		lk[$i,$j]="$ld $lj $ll"; lk[$j,$i]="$ld $lj $ll"
	done

	need_root
	need_tools
	do_down # whatever an earlier run with this prefix left
	trap on_up_exit EXIT
	mkdir -p "$state"
	local epoch
	epoch="$(date +%s.%N)"

	ip netns add "$hub"
	ip -n "$hub" link set lo up
	ip -n "$hub" link add br0 type bridge
	ip netns exec "$hub" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 2>/dev/null || true
	ip -n "$hub" link set br0 up

	local ns k
	for ((i = 1; i <= n; i++)); do
		d=${dcs[$((i - 1))]}
		ns="$prefix$d"
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		ip link add wan0 netns "$ns" type veth peer name "h-$d" netns "$hub"
		ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 2>/dev/null || true
		for ((k = 1; k <= naddrs; k++)); do
			ip -n "$ns" addr add "10.254.$i.$k/16" dev wan0
		done
		ip -n "$ns" link set wan0 up
		ip -n "$hub" link set "h-$d" master br0
		ip -n "$hub" link set "h-$d" up
	done

	# One delayer per (receiver i, sender j), bound to queue j inside i's namespace.
	local f ready
	local -a dpids=()
	for ((i = 1; i <= n; i++)); do
		for ((j = 1; j <= n; j++)); do
			[ "$i" = "$j" ] && continue
			read -r ld lj ll <<<"${lk[$i,$j]}"
			f="$state/delayer.${dcs[$((i - 1))]}.from.${dcs[$((j - 1))]}"
			# Loss is nft's job (below); the delayer only delays and stalls.
			ip netns exec "$prefix${dcs[$((i - 1))]}" setsid "$delayer" -q "$j" -d "$ld" -j "$lj" \
				-e "$every" -s "$stall" -E "$epoch" -R "$f.pid" </dev/null >"$f.log" 2>&1 &
			dpids+=($!)
		done
	done
	for ((k = 0; k < 50; k++)); do # up to 5 s for every delayer to bind its queue
		ready=1
		for ((i = 1; i <= n; i++)); do
			for ((j = 1; j <= n; j++)); do
				[ "$i" = "$j" ] && continue
				[ -s "$state/delayer.${dcs[$((i - 1))]}.from.${dcs[$((j - 1))]}.pid" ] || ready=0
			done
		done
		[ $ready = 1 ] && break
		for f in "${dpids[@]}"; do
			kill -0 "$f" 2>/dev/null || die "a delayer exited at start"
		done
		sleep 0.1
	done
	[ $ready = 1 ] || die "delayers did not bind their queues within 5 s"

	for ((i = 1; i <= n; i++)); do
		ns="$prefix${dcs[$((i - 1))]}"
		{
			echo "table inet dgw {"
			echo "  set blocked { type ipv4_addr; flags interval; }"
			echo "  chain input {"
			echo "    type filter hook input priority -50; policy accept;"
			echo "    iifname \"wan0\" ip saddr @blocked counter drop comment \"partition\""
			for ((j = 1; j <= n; j++)); do
				[ "$i" = "$j" ] && continue
				read -r ld lj ll <<<"${lk[$i,$j]}"
				local per10k
				per10k=$(awk -v l="$ll" 'BEGIN { printf "%d", l * 100 + 0.5 }')
				[ "$per10k" -gt 0 ] || continue
				echo "    iifname \"wan0\" ip saddr 10.254.$j.0/24 numgen random mod 10000 < $per10k counter drop comment \"loss from ${dcs[$((j - 1))]}\""
			done
			echo "  }"
			echo "}"
		} | ip netns exec "$ns" nft -f -
		for ((j = 1; j <= n; j++)); do
			[ "$i" = "$j" ] && continue
			# No --queue-bypass: if a delayer dies its link goes dark (status shows it) rather than
			# silently losing its delay.
			ip netns exec "$ns" iptables -w 5 -A INPUT -i wan0 -s "10.254.$j.0/24" -j NFQUEUE --queue-num "$j"
		done
	done

	{
		echo "DCS=$(IFS=,; echo "${dcs[*]}")"
		echo "NADDRS=$naddrs"
		echo "DELAY=$delay JITTER=$jitter LOSS=$loss STALL_EVERY=$every STALL_FOR=$stall"
		echo "EPOCH=$epoch"
		printf 'LINKS=%q\n' "${links[*]+"${links[*]}"}"
	} >"$state/config"
	up_ok=1
	trap - EXIT
	for ((i = 1; i <= n; i++)); do
		log "${dcs[$((i - 1))]}: namespace $prefix${dcs[$((i - 1))]}, address 10.254.$i.1"
	done
	log "up: delay ${delay}±${jitter} ms each way, loss ${loss}%, $(stall_text "$stall" "$every")"
}

# --- partition ---------------------------------------------------------------------------------
set_block() { # on|off, receiver index, sender index
	local ns="$prefix${dcs[$(($2 - 1))]}" el="{ 10.254.$3.0/24 }"
	if [ "$1" = on ]; then
		ip netns exec "$ns" nft add element inet dgw blocked "$el"
	elif ip netns exec "$ns" nft get element inet dgw blocked "$el" >/dev/null 2>&1; then
		ip netns exec "$ns" nft delete element inet dgw blocked "$el"
	fi
}

do_partition() {
	[ $# -ge 1 ] && [ $# -le 3 ] || die "usage: partition on|off [A [B]]"
	local mode="$1" a="${2:-}" b="${3:-}" i j n
	[ "$mode" = on ] || [ "$mode" = off ] || die "partition: on or off, not '$mode'"
	need_root
	load_state
	n=${#dcs[@]}
	local ia=0 ib=0
	[ -n "$a" ] && ia=$(dc_index "$a")
	[ -n "$b" ] && ib=$(dc_index "$b")
	[ "$ia" = 0 ] || [ "$ia" != "$ib" ] || die "partition: $a and $b are the same DC"
	for ((i = 1; i <= n; i++)); do
		for ((j = 1; j <= n; j++)); do
			[ "$i" = "$j" ] && continue
			if [ "$ia" != 0 ] && [ "$i" != "$ia" ] && [ "$j" != "$ia" ]; then continue; fi
			if [ "$ib" != 0 ] && [ "$i" != "$ib" ] && [ "$j" != "$ib" ]; then continue; fi
			set_block "$mode" "$i" "$j"
		done
	done
}

# --- status ------------------------------------------------------------------------------------
do_status() {
	need_root
	load_state
	echo "prefix $prefix; $DELAY±$JITTER ms, loss $LOSS%, $(stall_text "$STALL_FOR" "$STALL_EVERY")${LINKS:+; links $LINKS}"
	local i j d ns pf pid f before
	for i in "${!dcs[@]}"; do
		d=${dcs[$i]}
		ns="$prefix$d"
		if ! ns_exists "$ns"; then echo "$d: namespace $ns MISSING"; continue; fi
		echo "$d: namespace $ns, addresses $(ip -n "$ns" -4 -o addr show dev wan0 | awk '{print $4}' | tr '\n' ' ')"
		echo "  blocked (partition): $(ip netns exec "$ns" nft -j list set inet dgw blocked 2>/dev/null |
			grep -oE '"addr": "[0-9.]+", "len": [0-9]+' | sed -E 's/"addr": "([0-9.]+)", "len": ([0-9]+)/\1\/\2/' | tr '\n' ' ')"
		ip netns exec "$ns" nft list chain inet dgw input 2>/dev/null | grep -E 'counter' | sed -E 's/^[[:space:]]+/  nft: /'
		for j in "${!dcs[@]}"; do
			[ "$i" = "$j" ] && continue
			f="$state/delayer.$d.from.${dcs[$j]}"
			pf="$f.pid"
			pid="$(cat "$pf" 2>/dev/null || true)"
			if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q delayer "/proc/$pid/cmdline" 2>/dev/null; then
				before=$(grep -c '^delayer counters' "$f.log" 2>/dev/null || true)
				kill -USR1 "$pid"
				for ((k = 0; k < 20; k++)); do
					[ "$(grep -c '^delayer counters' "$f.log" 2>/dev/null || true)" -gt "$before" ] && break
					sleep 0.05
				done
				echo "  from ${dcs[$j]}: $(grep '^delayer counters' "$f.log" | tail -n 1 | sed 's/^delayer counters //')"
			else
				echo "  from ${dcs[$j]}: delayer NOT RUNNING (the link is dark); log: $(tail -n 2 "$f.log" 2>/dev/null | tr '\n' ' ')"
			fi
		done
	done
}

# --- check -------------------------------------------------------------------------------------
do_check() {
	need_root
	command -v ip >/dev/null 2>&1 || die "ip not found (iproute2)"
	need_tools
	local ns="${prefix}chk" out rc=0 k
	ns_exists "$ns" && ip netns del "$ns"
	ip netns add "$ns" || die "cannot create a network namespace"
	trap 'ip netns pids '"$ns"' 2>/dev/null | xargs -r kill -KILL 2>/dev/null; ip netns del '"$ns"' 2>/dev/null || true' EXIT
	ip -n "$ns" link set lo up
	if ! out=$(ip netns exec "$ns" iptables -w 5 -A INPUT -i lo -j NFQUEUE --queue-num 7 2>&1); then
		if [ ! -e /proc/net/netfilter/nfnetlink_queue ]; then
			echo "$prog: the kernel lacks NFQUEUE support: iptables -j NFQUEUE: $out" >&2
			exit 3
		fi
		die "iptables -j NFQUEUE failed: $out"
	fi
	local tmp; tmp="$(mktemp -d)"
	ip netns exec "$ns" "$delayer" -q 7 -R "$tmp/pid" </dev/null >"$tmp/log" 2>&1 &
	local dpid=$!
	for ((k = 0; k < 30; k++)); do
		[ -s "$tmp/pid" ] && break
		kill -0 "$dpid" 2>/dev/null || break
		sleep 0.1
	done
	if [ ! -s "$tmp/pid" ]; then
		out="$(cat "$tmp/log")"
		kill -KILL "$dpid" 2>/dev/null || true
		rm -rf "$tmp"
		if [ ! -e /proc/net/netfilter/nfnetlink_queue ]; then
			echo "$prog: the kernel lacks NFQUEUE support (no /proc/net/netfilter/nfnetlink_queue): $out" >&2
			exit 3
		fi
		die "delayer could not bind a queue: $out"
	fi
	kill -TERM "$dpid" 2>/dev/null || true
	wait "$dpid" 2>/dev/null || rc=$?
	rm -rf "$tmp"
	echo "$prog: ok (network namespaces, veth, nft, NFQUEUE, delayer $delayer)"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
up) do_up "$@" ;;
down) need_root; do_down ;;
partition) do_partition "$@" ;;
status) do_status ;;
exec)
	[ $# -ge 2 ] || die "usage: exec DC CMD..."
	load_state; dc_index "$1" >/dev/null
	ns="$prefix$1"; shift
	exec ip netns exec "$ns" "$@"
	;;
addr)
	[ $# -ge 1 ] || die "usage: addr DC [K]"
	load_state
	k="${2:-1}"
	[[ "$k" =~ ^[0-9]+$ ]] && [ "$k" -ge 1 ] && [ "$k" -le "$NADDRS" ] || die "addr: K must be 1..$NADDRS"
	echo "10.254.$(dc_index "$1").$k"
	;;
ns) [ $# -eq 1 ] || die "usage: ns DC"; load_state; dc_index "$1" >/dev/null; echo "$prefix$1" ;;
check) do_check ;;
-h | --help | help) usage ;;
*) usage >&2; exit 2 ;;
esac
