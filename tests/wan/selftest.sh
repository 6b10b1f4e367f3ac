#!/usr/bin/env bash
# Self-test of the WAN emulator outside the integration runner: builds the delayer if needed, then
# runs tests/integration/test_wanemu.py (delay measured with TCP, partitions, stalls, teardown).
# It skips, saying so, only when the kernel lacks NFQUEUE. Needs root. About 30 s.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
make -s -C "$root" build/tests/wan/delayer
exec /usr/bin/python3 "$root/tests/integration/test_wanemu.py" -v
