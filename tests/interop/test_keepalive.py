#!/usr/bin/python3
"""Whitespace keepalives and dead-peer detection on a multiplexed stream.

Two gateways (a.test, b.test) each fronting a Prosody, with [limits]
keepalive = 1 s and dead_peer_timeout = 4 s. Gateway A captures its streams.

Checks: a message each way opens the multiplexed stream; while it sits idle
for 6 s (longer than the dead-peer timeout) both gateways keep it alive with
whitespace (captured as a one-space write, and the capture replays) and it
is NOT closed; then gateway B is frozen (SIGSTOP: the TCP connection stays up
but nothing comes from it, like a black-holed path) and gateway A drops the
connection within the timeout plus slack (silently: the stream is kept for
resumption); after B runs again, A reconnects and resumes the stream
(XEP-0198) and messages flow both ways on it.

Run by hand: /usr/bin/python3 tests/interop/test_keepalive.py [--keep] [-v]
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from harness.scenarios import check_message
from harness.sockets import established

REPO = Path(__file__).resolve().parents[2]
LIMITS = {"keepalive": 1, "dead_peer_timeout": 4}


def main(t):
    pki = t.pki()
    a_s2s, b_s2s = free_port(), free_port()
    a_outer, b_outer = free_port(), free_port()
    ca, cb = pki.issue("a.test"), pki.issue("b.test")
    gwa = S2smuxd(t.dir, name="s2smuxd-a", config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[ca], ca_file=pki.ca_file, upstream=f"127.0.0.1:{a_s2s}",
        outer=f"127.0.0.1:{a_outer}", limits=LIMITS,
        routes=[{"domain": "b.test", "address": f"127.0.0.1:{b_outer}"}]))
    gwb = S2smuxd(t.dir, name="s2smuxd-b", config=S2smuxd.fronting_config(
        domains=["b.test"], certs=[cb], ca_file=pki.ca_file, upstream=f"127.0.0.1:{b_s2s}",
        outer=f"127.0.0.1:{b_outer}", limits=LIMITS,
        routes=[{"domain": "a.test", "address": f"127.0.0.1:{a_outer}"}]))
    pa = Prosody(t.dir, "prosody-a", ["a.test"], pki=pki, s2s_port=a_s2s,
                 gateway=f"127.0.0.1:{gwa.inner_port}", s2s_secure_auth=False, users={"u": "pw"})
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, s2s_port=b_s2s,
                 gateway=f"127.0.0.1:{gwb.inner_port}", s2s_secure_auth=False, users={"u": "pw"})
    cap = t.dir / "a.cap"
    with t.check("two gateways and two Prosody servers started, gateway A capturing", fatal=True):
        for s in (gwa, gwb, pa, pb):
            t.start(s)
        gwa.ctl_ok("capture", "start", "*", str(cap))

    cl = t.clients()
    with t.check("users logged in", fatal=True):
        ua = cl.connect("u@a.test", "pw", pa.c2s_port)
        ub = cl.connect("u@b.test", "pw", pb.c2s_port)
    check_message(t, cl, ua, ub)
    check_message(t, cl, ub, ua)

    with t.check("multiplexed stream up: one connection between the gateways", fatal=True):
        assert "multiplexing enabled" in gwa.log_text(), "multiplexing not enabled"
        assert established([a_outer, b_outer]) == 1, "not exactly one connection"

    with t.check("idle for 6 s (> dead_peer_timeout): kept alive, not closed"):
        cl.sleep(6)
        assert "nothing received from the peer" not in gwa.log_text() + gwb.log_text(), \
            "a healthy idle stream was closed as dead"
        assert established([a_outer, b_outer]) == 1, "the connection between the gateways is gone"

    with t.check("keepalives captured as whitespace writes, and the capture replays"):
        gwa.ctl_ok("capture", "stop")
        text = cap.read_text()
        mux = [l.split(" ")[2] for l in text.splitlines() if l.startswith("@ ") and " mux-enabled" in l]
        assert mux, "no multiplexed stream in the capture"
        spaces = [l for l in text.splitlines() if l.startswith("> ") and l.split(" ", 3)[2] == mux[0]
                  and l.split(" ", 3)[3] == " "]
        assert len(spaces) >= 3, f"{len(spaces)} whitespace keepalives written in 6 s idle (want >= 3)"
        replay = os.environ.get("S2SMUX_REPLAY") or str(REPO / "build" / "tools" / "s2smux-replay")
        r = subprocess.run([replay, str(cap)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stdout

    with t.check("gateway B frozen (SIGSTOP): A drops the connection within 4 s + slack, keeping the stream "
                 "for resumption"):
        t0 = time.monotonic()
        os.kill(gwb.proc.pid, signal.SIGSTOP)
        try:
            cl.wait_for(lambda: "nothing received from the peer" in gwa.log_text(), 10,
                        "gateway A notices the dead peer")
            took = time.monotonic() - t0
            assert took <= 6.5, f"detected after {took:.1f} s"
            # A resumable stream ends without a stream error (that would end
            # the session the peer is to resume): the connection is dropped.
            assert re.search(r"nothing received from the peer in [45] s: connection dropped, the stream can be "
                             r"resumed", gwa.log_text()), "no silent drop logged"
            assert "kept 60 s for resumption" in gwa.log_text(), "the broken stream was not kept for resumption"
        finally:
            os.kill(gwb.proc.pid, signal.SIGCONT)
        t.note(f"dead peer detected after {took:.1f} s")

    with t.check("after B resumes: A resumes the stream (XEP-0198), its certificates kept", fatal=True):
        cl.wait_for(lambda: re.search(r"mux: stream \w+ resumed with b\.test", gwa.log_text()), 10,
                    "A resumes the stream")
        assert re.search(r"mux: stream \w+ resumed with a\.test", gwb.log_text()), "B did not resume it"
        assert established([a_outer, b_outer]) == 1, "not exactly one connection between the gateways"
    check_message(t, cl, ua, ub, label="on the resumed stream: message a.test -> b.test delivered")
    check_message(t, cl, ub, ua, label="on the resumed stream: message b.test -> a.test delivered")


if __name__ == "__main__":
    run(main, timeout=120)
