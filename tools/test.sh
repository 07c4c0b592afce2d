#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every
# test suite (unit, interop with real Prosody/ejabberd/dnsmasq), then the unit
# tests again under AddressSanitizer + UndefinedBehaviorSanitizer, then the
# libFuzzer targets (tests/fuzz) on their corpus plus a short fuzz run each.
set -euo pipefail
cd "$(dirname "$0")/.."

./tools/setup-debian.sh

jobs=$(nproc 2>/dev/null || echo 2)
meson setup build --buildtype=debugoptimized >/dev/null 2>&1 || meson setup --reconfigure build >/dev/null
ninja -C build -j "$jobs"

status=0
# meson install puts binaries, man pages, the unit file and the example config in place.
inst=$(mktemp -d)
meson install -C build --destdir "$inst" --no-rebuild >/dev/null
for f in sbin/s2smuxd sbin/s2smuxctl share/man/man8/s2smuxd.8 share/man/man8/s2smuxctl.8 \
         share/man/man5/s2smux.conf.5 share/man/man7/s2smux-protocol.7 share/doc/s2smux/examples/s2smux.toml \
         bin/s2smux-replay share/man/man1/s2smux-replay.1 share/man/man5/s2smux-capture.5 \
         lib/sysusers.d/s2smux.conf; do
  if [ -z "$(find "$inst" -path "*/$f" -print -quit)" ]; then echo "meson install: $f missing"; status=1; fi
done
[ -n "$(find "$inst" -name s2smuxd.service -print -quit)" ] || { echo "meson install: s2smuxd.service missing"; status=1; }
rm -rf "$inst"

meson test -C build --print-errorlogs --num-processes "$jobs" || status=1

# Sanitizer build (clang, ASan + UBSan): every suite.
CC=clang-14 CXX=clang++-14 meson setup build-asan --buildtype=debug \
  -Db_sanitize=address,undefined -Db_lundef=false >/dev/null 2>&1 || \
  meson setup --reconfigure build-asan >/dev/null
ninja -C build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  meson test -C build-asan --print-errorlogs --num-processes "$jobs" || status=1

# Fuzz build (clang, libFuzzer + ASan + UBSan): suite `fuzz` only, each target
# on its corpus, then a short fuzz run from a fixed seed (tests/fuzz/README.md
# for long runs).
CC=clang-14 CXX=clang++-14 meson setup build-fuzz --buildtype=debugoptimized -Dfuzz=true -Dtests=disabled \
  -Db_lundef=false >/dev/null 2>&1 || meson setup --reconfigure build-fuzz >/dev/null
ninja -C build-fuzz -j "$jobs" fuzzers
meson test -C build-fuzz --no-rebuild --suite fuzz --print-errorlogs --num-processes "$jobs" || status=1

if [ $status -eq 0 ]; then echo "ALL TESTS PASSED"; else echo "SOME TESTS FAILED"; fi
exit $status
