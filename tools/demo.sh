#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs the
# s2smux demo (tools/demo/demo.py):
#
#   ./tools/demo.sh [--single] [--keep-running] [--dir DIR]
#
# Two clouds, multiplexed: Prosody A (a1.test a2.test a3.test, and c.test)
# behind s2smuxd A, Prosody B (b1.test b2.test b3.test) behind s2smuxd B, all
# on 127.0.0.1 with certificates issued at demo time by the demo CA
# (certs/ca.pem, TEST ONLY). Clients exchange messages across every domain
# pair, both ways, over ONE connection between the gateways (s2smuxctl
# streams and domains, and the kernel's TCP table, show it). Then s2smuxctl
# adds c.test to the live stream, replaces its certificate with a renewal and
# removes it, after which carol@c.test's message is refused with an error;
# then s2smuxctl stats and a summary. Everything is stopped at the end: exit
# status 0 on success, non-zero (with the tails of the logs) on failure.
#
#   --single        the single-gateway demo instead: Prosody a.test behind
#                   s2smuxd federating with a plain Prosody b.test (standard
#                   S2S, no second gateway)
#   --keep-running  leave the servers up afterwards and print how to connect a
#                   client by hand and the s2smuxctl admin sockets; Ctrl-C
#                   stops them
#   --dir DIR       run directory: configs, certificates, data, sockets and
#                   logs (default: demo-run/ in the repository, git-ignored);
#                   it is wiped at start
#   -h, --help      this help
#
# Needs Debian 12; installing missing packages needs root (or sudo). Apart
# from those packages, nothing is written outside the repository's build/ and
# the run directory, no system service is started, and only ports on
# 127.0.0.1 are used.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }

demo_args=()
while (($#)); do
    case "$1" in
        --keep-running) demo_args+=(--keep-running); shift ;;
        --single) demo_args+=(--single); shift ;;
        --dir)
            if (($# < 2)) || [[ -z "$2" ]]; then echo "demo.sh: --dir needs a directory" >&2; exit 2; fi
            demo_args+=(--dir "$2"); shift 2 ;;
        --dir=?*) demo_args+=(--dir "${1#--dir=}"); shift ;;
        -h|--help) usage 0 ;;
        *) echo "demo.sh: unknown argument: $1 (see ./tools/demo.sh --help)" >&2; exit 2 ;;
    esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

echo "[demo] checking packages (tools/setup-debian.sh)"
"$repo/tools/setup-debian.sh"

# A build directory copied from another checkout would build that checkout's
# sources: refuse it rather than demo the wrong code.
info="$repo/build/meson-info/meson-info.json"
if [[ -f "$info" ]]; then
    configured_for="$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["directories"]["source"])' "$info" 2>/dev/null || true)"
    if [[ -n "$configured_for" && "$configured_for" != "$repo" ]]; then
        echo "[demo] build/ is configured for another source directory ($configured_for); remove build/ and run again" >&2
        exit 1
    fi
fi

if [[ ! -f "$repo/build/build.ninja" ]]; then
    echo "[demo] configuring (meson setup build)"
    if ! out="$(cd "$repo" && meson setup build --buildtype=debugoptimized 2>&1)"; then
        printf '%s\n' "$out" >&2
        echo "[demo] meson setup failed (log: build/meson-logs/meson-log.txt)" >&2
        exit 1
    fi
fi
echo "[demo] building (ninja -C build)"
ninja -C "$repo/build" --quiet

exec /usr/bin/python3 "$repo/tools/demo/demo.py" "${demo_args[@]}"
