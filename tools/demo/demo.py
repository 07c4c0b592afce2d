#!/usr/bin/python3
"""The s2smux demo (run it through tools/demo.sh, which installs and builds first).

    /usr/bin/python3 tools/demo/demo.py [--single] [--keep-running] [--dir DIR]

Default: two clouds multiplexed (tools/demo/two_clouds.py). Prosody A
(a1.test a2.test a3.test, and c.test) behind s2smuxd A, Prosody B (b1.test
b2.test b3.test) behind s2smuxd B, all on 127.0.0.1:

    Prosody A --inner--> s2smuxd A ==== ONE TLS 1.3 stream, MUX on ==== s2smuxd B <--inner-- Prosody B

Messages cross every domain pair both ways over that one connection
(s2smuxctl streams, domains and the kernel's TCP table show it); then
s2smuxctl adds c.test to the live stream, replaces its certificate with a
renewal, and removes it, after which carol@c.test's message is refused with
an error.

--single: the earlier demo (tools/demo/single.py): one Prosody behind
s2smuxd federating with a plain Prosody that knows nothing of s2smux
(standard S2S: TLS 1.3 + SASL EXTERNAL outside, dialback inside).

Certificates come from the demo CA (certs/ca.pem, "s2smux Demo CA (TEST
ONLY)") through certs/gen-certs.sh; everything lives under the run directory
(default: demo-run/ in the repository, wiped at start).

Exit status 0 on success (or Ctrl-C after --keep-running's demo); 1 on
failure, after the tails of the logs; 130 when interrupted before the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description="s2smux demo: two clouds multiplexed over one connection "
                                             "(--single: one gateway in front of Prosody)")
    ap.add_argument("--single", action="store_true",
                    help="the single-gateway demo: Prosody a.test behind s2smuxd <-> plain Prosody b.test")
    ap.add_argument("--keep-running", action="store_true",
                    help="leave the servers up and print how to connect a client by hand; Ctrl-C stops them")
    ap.add_argument("--dir", type=Path, default=None,
                    help="run directory, wiped at start (default: demo-run/ in the repository)")
    args = ap.parse_args()
    default = common.REPO / "demo-run"
    run_dir = (args.dir or default).absolute()
    if args.single:
        import single as demo
    else:
        import two_clouds as demo
    return common.run_demo(demo.make, run_dir, default, args.keep_running)


if __name__ == "__main__":
    sys.exit(main())
