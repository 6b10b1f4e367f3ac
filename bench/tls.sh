#!/usr/bin/env bash
# bench/tls.sh: the TLS figures of `make bench` (bench/run.sh calls it at the end; it also runs
# alone). Builds bench/tls_bench.c against build/libdcgate.a, runs it once and prints each figure
# of dcgate's OpenSSL engine next to its anchor measured in the same run, as a ratio:
#   handshakes/s (1 and 8 at once)   anchor: nng's own TLS engine (mbedTLS)   target >= 3x
#   round trips/s (1 and 8 at once)  anchor: plain tcp:// on the same path     target >= 0.7x
#     (both measured in one process in alternating slices; medians, slices shown as # notes)
# Usage: bash bench/tls.sh /abs/path/to/build/dcgate   (libdcgate.a is taken from beside it)
#
# tls_bench prints machine-readable `name value` lines. The names are read by what they say, not
# by one fixed spelling: an engine (openssl | mbedtls | plain/tcp), a figure (handshake... | round
# trip.../rtt), a concurrency (1 or 8, as a separate number in the name, e.g. _c1 / _c8) and a
# rate (lines about latency, *_us / *_ms / *_ns / lat*, are shown but not used). Lines it cannot
# place are listed on stderr.
#
# Loopback only (tls_bench listens on and dials 127.0.0.1). Bounded: the build 120 s, the run
# 600 s (`timeout`). Missed targets print MISS and exit 0; the exit status is non-zero only when
# something broke (no compiler output, a crash, figures missing). When bench/tls_bench.c is not
# there yet the script says so and exits 0.
set -uo pipefail

DCGATE=${1:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PY=/usr/bin/python3
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
SRC="$HERE/tls_bench.c"

log() { echo "bench: tls: $*" >&2; }
BROKEN=()
broke() {
	log "BROKEN: $*"
	BROKEN+=("$*")
}

echo
echo "TLS on the WAN transport (bench/tls_bench.c, loopback)"
if [ ! -f "$SRC" ]; then
	echo "  bench/tls_bench.c is not in this tree yet: no TLS figures this run."
	exit 0
fi
if [ -z "$DCGATE" ] || [ ! -x "$DCGATE" ]; then
	echo "usage: bash bench/tls.sh /abs/path/to/build/dcgate (got '${DCGATE}')" >&2
	exit 2
fi
LIB="$(dirname "$DCGATE")/libdcgate.a"
[ -f "$LIB" ] || { broke "no $LIB beside $DCGATE (make builds it)"; }
for tool in cc pkg-config timeout "$PY"; do
	command -v "$tool" >/dev/null 2>&1 || broke "missing $tool (make deps installs it)"
done

TMP=$(mktemp -d /tmp/dcgate-bench-tls.XXXXXX)
cleanup() { # shellcheck disable=SC2317 # called by the EXIT trap
	if [ "${BENCH_KEEP:-0}" = 1 ] || [ ${#BROKEN[@]} -gt 0 ]; then
		log "logs kept in $TMP"
	else
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The same pkg-config packages as the Makefile, so the bench links what the agent links.
read -r -a PKGS <<<"$(sed -n 's/^PKGS *:= *//p' "$ROOT/Makefile")"
read -r -a PKG_CFLAGS <<<"$(pkg-config --cflags "${PKGS[@]}" 2>/dev/null)"
read -r -a PKG_LIBS <<<"$(pkg-config --libs "${PKGS[@]}" 2>/dev/null)"
if [ ${#PKGS[@]} -eq 0 ] || [ ${#PKG_LIBS[@]} -eq 0 ]; then
	broke "could not read the Makefile's PKGS or pkg-config --libs for them"
fi
if [ ${#BROKEN[@]} -eq 0 ]; then
	if ! timeout 120 cc -std=gnu11 -O2 -D_GNU_SOURCE -pthread -I"$ROOT" "${PKG_CFLAGS[@]}" \
		-o "$TMP/tls_bench" "$SRC" "$LIB" "${PKG_LIBS[@]}" -lnng -lm -pthread \
		>"$TMP/cc.log" 2>&1; then
		sed 's/^/bench: tls: cc: /' "$TMP/cc.log" | head -n 40 >&2
		broke "could not build bench/tls_bench.c (see $TMP/cc.log)"
	fi
fi
if [ ${#BROKEN[@]} -eq 0 ]; then
	log "running tls_bench (at most 600 s)"
	(cd "$TMP" && timeout -k 10 600 "$TMP/tls_bench") >"$TMP/tls_bench.out" 2>"$TMP/tls_bench.err"
	rc=$?
	sed 's/^/bench: tls:   /' "$TMP/tls_bench.out" >&2
	if [ $rc -ne 0 ]; then
		tail -n 20 "$TMP/tls_bench.err" | sed 's/^/bench: tls: stderr: /' >&2
		broke "tls_bench exited with status $rc$([ $rc = 124 ] && echo ' (timed out after 600 s)')"
	fi
fi

# Places the `name value` lines; prints KEY=value for the shell (keys below) and notes on stderr.
classify() {
	"$PY" - "$1" <<'EOF'
import re, sys
keys = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"^\s*([A-Za-z][A-Za-z0-9_.:/+\-]*)\s+(-?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*$", line)
    if not m:
        continue
    name, value = m.group(1), float(m.group(2))
    n = name.lower()
    if re.search(r"lat|(^|[_.])(us|ms|ns|p50|p99)($|[_.])", n):
        continue
    if "mbed" in n:
        eng = "MBED"
    elif "openssl" in n or "ossl" in n:
        eng = "OSSL"
    elif "plain" in n or "tcp" in n:
        eng = "TCP"
    else:
        print("bench: tls: no engine in %r; ignored" % name, file=sys.stderr)
        continue
    if "hand" in n or re.search(r"(^|[_.])hs($|[_.])", n):
        fig = "HS"
    elif re.search(r"round|rtt|(^|[_.])rt($|[_.])|req|echo|msg", n):
        fig = "RT"
    else:
        print("bench: tls: no figure in %r; ignored" % name, file=sys.stderr)
        continue
    bare = re.sub(r"tls\s*v?1[._]?[0-3]|sha[0-9]+|p[0-9]+|[0-9]+k", "", n)
    conc = set(re.findall(r"(?<![0-9])(1|8)(?![0-9])", bare))
    if len(conc) != 1:
        print("bench: tls: no concurrency (1 or 8) in %r; ignored" % name, file=sys.stderr)
        continue
    key = "%s_%s_%s" % (eng, fig, conc.pop())
    if key in keys:
        print("bench: tls: %r is a second %s; the first is kept" % (name, key), file=sys.stderr)
        continue
    keys[key] = value
    print("%s=%s" % (key, repr(value)))
EOF
}

OSSL_HS_1='' OSSL_HS_8='' MBED_HS_1='' MBED_HS_8='' OSSL_RT_1='' OSSL_RT_8='' TCP_RT_1='' TCP_RT_8=''
MBED_RT_1='' MBED_RT_8='' # context only: not required
if [ ${#BROKEN[@]} -eq 0 ]; then
	while IFS='=' read -r k v; do
		case "$k" in
		OSSL_HS_1 | OSSL_HS_8 | MBED_HS_1 | MBED_HS_8 | OSSL_RT_1 | OSSL_RT_8 | TCP_RT_1 | TCP_RT_8 | \
			MBED_RT_1 | MBED_RT_8)
			printf -v "$k" '%s' "$v" ;;
		esac
	done < <(classify "$TMP/tls_bench.out")
	for k in OSSL_HS_1 OSSL_HS_8 MBED_HS_1 MBED_HS_8 OSSL_RT_1 OSSL_RT_8 TCP_RT_1 TCP_RT_8; do
		[ -n "${!k}" ] || broke "tls_bench printed no figure for $k (its output: $TMP/tls_bench.out)"
	done
fi

row() { printf '%-44s %14s %12s %7s   %s\n' "$@"; }

echo "OpenSSL engine (dcgate's, registered in nng) against nng's mbedTLS engine and plain tcp://,"
echo "same nng sockets and messages, measured in this run (round trips: OpenSSL and tcp in"
echo "alternating slices, medians). Higher is better."
echo
row "figure" "openssl engine" "anchor" "ratio" "anchor is"
row "handshakes/s, 1 at a time" "$(fmt %.0f "$OSSL_HS_1")" "$(fmt %.0f "$MBED_HS_1")" "$(ratio "$OSSL_HS_1" "$MBED_HS_1")" "nng's mbedTLS"
row "handshakes/s, 8 at once" "$(fmt %.0f "$OSSL_HS_8")" "$(fmt %.0f "$MBED_HS_8")" "$(ratio "$OSSL_HS_8" "$MBED_HS_8")" "nng's mbedTLS"
row "round trips/s, 1 at a time" "$(fmt %.0f "$OSSL_RT_1")" "$(fmt %.0f "$TCP_RT_1")" "$(ratio "$OSSL_RT_1" "$TCP_RT_1")" "plain tcp"
row "round trips/s, 8 at once" "$(fmt %.0f "$OSSL_RT_8")" "$(fmt %.0f "$TCP_RT_8")" "$(ratio "$OSSL_RT_8" "$TCP_RT_8")" "plain tcp"
# context: the same round trips against nng's own TLS engine (tells record overhead from crypto)
row "  round trips/s, 1 at a time" "$(fmt %.0f "$OSSL_RT_1")" "$(fmt %.0f "$MBED_RT_1")" "$(ratio "$OSSL_RT_1" "$MBED_RT_1")" "nng's mbedTLS (context)"
row "  round trips/s, 8 at once" "$(fmt %.0f "$OSSL_RT_8")" "$(fmt %.0f "$MBED_RT_8")" "$(ratio "$OSSL_RT_8" "$MBED_RT_8")" "nng's mbedTLS (context)"
echo

target() { # <label> <ratio> <awk condition on v>
	local verdict
	if [ -z "$2" ] || [ "$2" = - ]; then
		verdict="n/a (not measured)"
	elif awk -v v="$2" "BEGIN {exit !($3)}"; then
		verdict=PASS
	else
		verdict=MISS
	fi
	printf 'target: %-52s %10s  %s\n' "$1" "$2" "$verdict"
}
target "TLS handshakes/s, 1 at a time >= 3 x mbedTLS" "$(ratio "$OSSL_HS_1" "$MBED_HS_1")" "v >= 3"
target "TLS handshakes/s, 8 at once >= 3 x mbedTLS" "$(ratio "$OSSL_HS_8" "$MBED_HS_8")" "v >= 3"
target "TLS round trips/s, 1 at a time >= 0.7 x plain tcp" "$(ratio "$OSSL_RT_1" "$TCP_RT_1")" "v >= 0.7"
target "TLS round trips/s, 8 at once >= 0.7 x plain tcp" "$(ratio "$OSSL_RT_8" "$TCP_RT_8")" "v >= 0.7"

if [ ${#BROKEN[@]} -gt 0 ]; then
	echo
	echo "tls broken (figures above marked - were not measured):"
	printf '  %s\n' "${BROKEN[@]}"
	exit 1
fi
exit 0
