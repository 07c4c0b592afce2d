#!/bin/sh
# Usage: run_fuzzer.sh FUZZER CORPUS_DIR RUNS [libFuzzer options...]
# Runs every input of CORPUS_DIR (seeds and crash regressions), then fuzzes
# RUNS inputs from a fixed seed (reproducible; capped at 5 minutes). Inputs
# it finds go to a temporary directory, never into the repository's corpus.
set -eu
fuzzer=$1 corpus=$2 runs=$3
shift 3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/s2smux-fuzz.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
# fuzz_session is also seeded from the capture corpus (tests/captures).
extra=
if [ -n "${CAPTURES_DIR:-}" ] && [ -n "${CAPTURE_SEEDER:-}" ]; then
  /usr/bin/python3 "$CAPTURE_SEEDER" "$tmp/captures" "$CAPTURES_DIR"/*.cap && extra="$tmp/captures"
fi
mkdir -p "$tmp/new"
"$fuzzer" -seed=1 -runs="$runs" -max_total_time=300 -rss_limit_mb=2048 -timeout=10 -error_exitcode=1 -print_final_stats=1 "$@" "$tmp/new" "$corpus" $extra
