#!/usr/bin/env bash
# Stanza latency on one busy multiplexed stream while domains are added
# (s2smux-load --topology mux): release build, then RUNS (default 5) runs,
# each preceded by `uptime`; prints each run's JSON line and a Markdown
# summary (median, min-max) from bench/summarize_mux.py.
# Extra arguments go to s2smux-load, e.g. bench/mux_latency.sh --rate 40000
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
build=${BUILD:-build-rel}
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=release -Dtests=enabled >/dev/null
fi
ninja -C "$build" s2smuxd tools/s2smux-load bench/s2smux-gencerts >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "# $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $runs run(s): $build/tools/s2smux-load --topology mux --no-progress $*"
for i in $(seq "$runs"); do
  echo "# run $i: $(uptime)"
  "$build/tools/s2smux-load" --topology mux --no-progress "$@" | grep '^{' | tee -a "$out" || true
done
python3 bench/summarize_mux.py "$out"
