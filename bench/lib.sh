# bench/lib.sh: helpers shared by bench/run.sh, bench/tls.sh and bench/federation.sh (sourced;
# they expect PY to name Debian's python3 where they use it).

# Stops one process we started: TERM, up to 5 s, then KILL; reaps it.
stop_pid() {
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}

# median of the numbers given (of an even count, the mean of the two middle ones); nothing
# when none. bench/federation.sh's and bench/raft.sh's alternating slices.
median() { # median of the numbers given; nothing when none
	[ $# -gt 0 ] || return 0
	printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# fmt <printf format> <value>: the value formatted, or - when there is none
fmt() { [ -n "${2:-}" ] && awk -v v="$2" -v f="$1" 'BEGIN {printf f, v}' || printf -- '-'; }
# ratio <a> <b>: a / b to two places, or - when either is missing or b is not above 0
ratio() {
	if [ -n "${1:-}" ] && [ -n "${2:-}" ]; then
		awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else printf "-"}'
	else
		printf -- '-'
	fi
}

# A realistic ~1 KiB KV value: an application's JSON config, padded to exactly 1024 bytes.
make_kv_value() {
	"$PY" - "$1" <<'EOF'
import json, sys
cfg = {
    "service": "checkout", "version": "2.14.3", "environment": "production",
    "database": {"host": "db-primary.service.consul", "port": 5432, "name": "checkout",
                 "pool": {"min": 4, "max": 32, "idle_timeout": "30s", "max_lifetime": "30m"}},
    "cache": {"host": "redis.service.consul", "port": 6379, "ttl": "5m", "max_entries": 50000},
    "http": {"listen": ":8080", "read_timeout": "5s", "write_timeout": "10s",
             "cors": ["https://shop.example.com", "https://admin.example.com"]},
    "features": {"new_cart": True, "express_checkout": False, "gift_cards": True,
                 "split_payment": False, "address_autocomplete": True},
    "payment": {"provider": "stripe", "retry": {"attempts": 3, "backoff": "250ms"}},
    "log": {"level": "info", "format": "json", "sample_rate": 0.1},
    "notes": "",
}
s = json.dumps(cfg, separators=(",", ":"))
pad = 1024 - len(s)
assert pad >= 0, len(s)
cfg["notes"] = ("rollout of express checkout planned after load test; " * 20)[:pad]
s = json.dumps(cfg, separators=(",", ":"))
assert len(s) == 1024, len(s)
open(sys.argv[1], "w").write(s)
EOF
}
