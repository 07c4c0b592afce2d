#!/bin/sh
# The replay suite: every capture of the corpus replays through the session
# core as recorded (s2smux-replay(1)). Usage: run_replay.sh S2SMUX_REPLAY DIR
set -eu
replay=$1 dir=$2
set -- "$dir"/*.cap
[ -e "$1" ] || { echo "no captures in $dir"; exit 1; }
exec "$replay" --quiet "$@"
