#!/usr/bin/env bash
# Installs everything s2smux needs to build, test and run its demo on Debian 12.
# Idempotent: only missing packages are installed. Needs root (or sudo).
set -euo pipefail

packages=(
  # build
  g++ meson ninja-build pkg-config
  libgnutls28-dev libssl-dev libxml2-dev libuv1-dev libfmt-dev libc-ares-dev libtomlplusplus-dev
  libboost-test-dev scdoc
  # tests and demo: real servers, DNS, clients, certificates
  prosody ejabberd python3 python3-slixmpp python3-prometheus-client dnsmasq-base gnutls-bin lua-unbound
  systemd  # systemd-analyze checks the unit file
  haproxy  # the load benchmark's TLS relay baseline (s2smux-load --mode all)
  # sanitizers and fuzzing
  clang-14 libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Debian's prosody/ejabberd/haproxy packages try to start system services; a policy
# that forbids it keeps the machine clean (the tests start private instances).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Stop system instances if a service manager started them anyway.
for svc in prosody ejabberd haproxy; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl stop "$svc" || true
  fi
done
echo "setup: done"
