#!/usr/bin/env bash
# Installs the Debian packages dcgate needs to build and test. Idempotent: prints nothing and
# touches nothing when every package is already present. Called by the Makefile.
set -euo pipefail

packages=(
  build-essential pkg-config
  libraft-dev libuv1-dev libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev
  libssl-dev libnng-dev libcmocka-dev libgnutls28-dev openssl zlib1g-dev
  python3 python3-consul python3-cryptography curl procps iproute2
  nodejs npm wrk nginx-light
  # tests/wan: the WAN emulator (NFQUEUE delayer, nft loss and partition rules)
  libnetfilter-queue-dev nftables iptables
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
    missing+=("$p")
  fi
done
# A machine that already has a node and npm of its own needs no Debian ones.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  filtered=()
  for p in "${missing[@]}"; do
    case "$p" in nodejs|npm) ;; *) filtered+=("$p") ;; esac
  done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Package lists are needed once on a fresh machine; refresh them if apt knows none of the packages.
if ! apt-cache show "${missing[0]}" >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi
if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/dcgate-apt.log 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/dcgate-apt.log 2>&1 || {
    cat /tmp/dcgate-apt.log >&2; exit 1; }
fi
