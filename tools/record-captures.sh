#!/usr/bin/env bash
# Re-records the replay corpus (tests/captures/*.cap) from real servers: runs
# interop scenarios (real Prosody 0.12 / ejabberd 23.01, one or two s2smuxd)
# with every gateway capturing all its streams (s2smuxctl capture start '*'),
# checks that every capture replays, and replaces the corpus with them.
#
# Usage: tools/record-captures.sh [BUILD_DIR]   (default: build; run after ninja)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
scenarios=(
  test_gateway_prosody     # standard S2S with Prosody: STARTTLS, SASL EXTERNAL, dialback inside
  test_gateway_ejabberd    # standard S2S with ejabberd
  test_gateway_bad_certs   # TLS failures, dialback fallback refused
  test_gateway_bad_input   # malformed XML, oversize stanzas, unknown hosts: stream errors
  test_mux_basic           # two gateways: mux enabled, adds
  test_mux_live            # live add, replace, remove while traffic flows
  test_mux_add_failures    # every failure of an add
  test_mux_refusals        # stanzas for pairs not granted: refused
)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/s2smux-captures.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for t in "${scenarios[@]}"; do
  echo "== $t"
  S2SMUX_CAPTURE_DIR=$tmp S2SMUX_CAPTURE_PREFIX="${t#test_}-" \
  S2SMUXD=$PWD/$build/s2smuxd S2SMUXCTL=$PWD/$build/tools/ctl/s2smuxctl \
    /usr/bin/python3 "tests/interop/$t.py" >"$tmp/$t.log" 2>&1 || { cat "$tmp/$t.log"; exit 1; }
done
"$build/tools/s2smux-replay" --quiet "$tmp"/*.cap
rm -f tests/captures/*.cap
cp "$tmp"/*.cap tests/captures/
ls -l tests/captures/*.cap | awk '{ n++; b += $5 } END { printf "%d captures, %d bytes\n", n, b }'
