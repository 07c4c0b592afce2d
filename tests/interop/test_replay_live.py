#!/usr/bin/python3
"""s2smux-replay --live: a recorded peer played against a running gateway.

s2smuxd fronts Prosody a.test; plain Prosody b.test talks standard S2S to it
(STARTTLS, SASL EXTERNAL). The gateway captures every stream; b.test sends
messages to a.test, then Prosody b.test stops. The capture holds the stream
the gateway accepted from b.test, from its first byte.

Checks: that stream replays deterministically; `s2smux-replay --live` plays
b.test's side of it (TLS with b.test's certificate) against the same running
gateway, which answers as recorded (exit 0); against a second gateway that
serves a.test under a policy that refuses it (tls = "disabled" on the outer
side: no STARTTLS offered) the live replay reports the difference (exit 1,
with a diff naming <starttls/>).

Run by hand: /usr/bin/python3 tests/interop/test_replay_live.py [--keep] [-v]
"""

import os
import re
import subprocess
from pathlib import Path

from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from harness.scenarios import check_message

REPO = Path(__file__).resolve().parents[2]


def replay_bin() -> str:
    return os.environ.get("S2SMUX_REPLAY") or str(REPO / "build" / "tools" / "s2smux-replay")


def main(t):
    pki = t.pki()
    a_s2s, b_s2s = free_port(), free_port()
    cert_a, cert_b = pki.issue("a.test"), pki.issue("b.test")
    gw = S2smuxd(t.dir, config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[cert_a], ca_file=pki.ca_file, upstream=f"127.0.0.1:{a_s2s}",
        routes=[{"domain": "b.test", "address": f"127.0.0.1:{b_s2s}"}]))
    pa = Prosody(t.dir, "prosody-a", ["a.test"], pki=pki, s2s_port=a_s2s,
                 gateway=f"127.0.0.1:{gw.inner_port}", s2s_secure_auth=False, users={"alice": "pw"})
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, s2s_port=b_s2s,
                 routes={"a.test": f"127.0.0.1:{gw.outer_port}"}, s2s_secure_auth=True, users={"bob": "pw"})
    cap = t.dir / "gw.cap"
    with t.check("gateway and both Prosody servers started, capture running", fatal=True):
        t.start(gw)
        gw.ctl_ok("capture", "start", "*", str(cap))
        t.start(pa)
        t.start(pb)

    cl = t.clients()
    with t.check("alice@a.test and bob@b.test logged in", fatal=True):
        alice = cl.connect("alice@a.test", "pw", pa.c2s_port)
        bob = cl.connect("bob@b.test", "pw", pb.c2s_port)
    check_message(t, cl, bob, alice)
    check_message(t, cl, bob, alice, label="second message b.test -> a.test delivered")

    with t.check("Prosody b.test stopped, capture stopped", fatal=True):
        cl.close()
        pb.stop()
        gw.ctl_ok("capture", "stop")

    text = cap.read_text()
    stream = None
    with t.check("the capture holds the stream accepted from b.test, from its start", fatal=True):
        for line in text.splitlines():
            if line.startswith("S ") and " kind=outer-in " in line and " partial=1" not in line:
                sid = line.split(" ")[2]
                if f"< " in text and re.search(rf"^< \d+ {sid} .*from='b\.test'", text, re.M):
                    stream = sid
                    break
        assert stream, "no complete outer-in stream from b.test in the capture"

    with t.check("deterministic replay of the capture passes"):
        r = subprocess.run([replay_bin(), str(cap)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=60)
        assert r.returncode == 0 and " 0 failed" in r.stdout, r.stdout

    live = [replay_bin(), "--stream", stream, "--speed", "0", "--linger", "1",
            "--cert", str(cert_b.chain), "--key", str(cert_b.key)]
    with t.check("live replay against the same gateway: answered as recorded (exit 0)"):
        r = subprocess.run(live + ["--live", f"127.0.0.1:{gw.outer_port}", str(cap)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        assert r.returncode == 0 and "answered as recorded" in r.stdout, f"exit {r.returncode}:\n{r.stdout}"
        assert re.search(r"\d+ inputs, \d+ bytes sent, \d+ bytes received", r.stdout), r.stdout

    other = S2smuxd(t.dir, name="s2smuxd-plain", config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[cert_a], ca_file=pki.ca_file, upstream=f"127.0.0.1:{a_s2s}",
        policy="disabled"))
    with t.check("live replay against a gateway without TLS: the difference is reported (exit 1)"):
        t.start(other)
        r = subprocess.run(live + ["--live", f"127.0.0.1:{other.outer_port}", str(cap)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        assert r.returncode == 1, f"exit {r.returncode}:\n{r.stdout}"
        assert "answered differently" in r.stdout and "- <starttls" in r.stdout, r.stdout


if __name__ == "__main__":
    run(main, timeout=120)
