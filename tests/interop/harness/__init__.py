"""Interop test harness for s2smux.

Runs private instances of Prosody, ejabberd, dnsmasq and s2smuxd on loopback
ports under a temporary directory, plus slixmpp clients, so that the scripts
tests/interop/test_*.py can check real S2S traffic end to end.

Only the standard library and slixmpp (python3-slixmpp, /usr/bin/python3) are
used. Nothing here writes outside the per-test temporary directory.
"""

from pathlib import Path

#: tests/interop/harness
HARNESS_DIR = Path(__file__).resolve().parent
#: tests/interop
INTEROP_DIR = HARNESS_DIR.parent
#: repository root
REPO_ROOT = INTEROP_DIR.parent.parent
#: directory holding mod_s2smux_route.lua
PROSODY_PLUGIN_DIR = REPO_ROOT / "tools" / "prosody"
