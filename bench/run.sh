#!/usr/bin/env bash
# Release build, then RUNS (default 5) runs of s2smux-load; prints each run's
# JSON line and a Markdown summary (median, min-max) for bench/RESULTS.md.
# Extra arguments go to s2smux-load, e.g. bench/run.sh --window 5000
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
build=${BUILD:-build-rel}
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=release >/dev/null
fi
ninja -C "$build" s2smuxd tools/s2smux-load >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "# $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $runs run(s): $build/tools/s2smux-load --no-progress $*"
for i in $(seq "$runs"); do
  "$build/tools/s2smux-load" --no-progress "$@" | grep '^{' | tee -a "$out"
done
python3 bench/summarize.py "$out"
