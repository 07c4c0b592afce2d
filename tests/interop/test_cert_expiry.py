#!/usr/bin/python3
"""A standard S2S stream is reset when the peer's certificate expires
(RFC 6120 §13.7.2.3); nothing is lost.

s2smuxd fronts Prosody a.test; Prosody b.test (no gateway) presents a
certificate that expires 20 s after it is issued, and authenticates with
SASL EXTERNAL both ways.

Checks: a message each way (streams authenticated with that certificate);
when it expires, the gateway resets both streams with <reset/>; afterwards
a message to b.test is not delivered over an expired certificate: it comes
back to alice as an error (no new stream can be authenticated), none lost.

Run by hand: /usr/bin/python3 tests/interop/test_cert_expiry.py [--keep] [-v]
"""

import re
import secrets
import time

from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from harness.scenarios import check_message

LIFETIME = 20


def main(t):
    pki = t.pki()
    a_s2s, b_s2s = free_port(), free_port()
    short = pki.issue("b.test", expires_in_seconds=LIFETIME)
    issued = time.monotonic()
    gw = S2smuxd(t.dir, config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[pki.issue("a.test")], ca_file=pki.ca_file,
        upstream=f"127.0.0.1:{a_s2s}", limits={"queue_timeout": 5},
        routes=[{"domain": "b.test", "address": f"127.0.0.1:{b_s2s}"}]))
    pa = Prosody(t.dir, "prosody-a", ["a.test"], pki=pki, s2s_port=a_s2s,
                 gateway=f"127.0.0.1:{gw.inner_port}", s2s_secure_auth=False,
                 users={"alice": "alice-pw"})
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, certs={"b.test": short}, s2s_port=b_s2s,
                 routes={"a.test": f"127.0.0.1:{gw.outer_port}"}, s2s_secure_auth=True,
                 users={"bob": "bob-pw"})
    with t.check("s2smuxd, Prosody a.test and Prosody b.test (certificate valid 20 s) started", fatal=True):
        for s in (gw, pa, pb):
            t.start(s)
    cl = t.clients()
    with t.check("clients logged in", fatal=True):
        alice = cl.connect("alice@a.test", "alice-pw", pa.c2s_port)
        bob = cl.connect("bob@b.test", "bob-pw", pb.c2s_port)
    check_message(t, cl, alice, bob)
    check_message(t, cl, bob, alice)

    with t.check("when b.test's certificate expires, the gateway resets its streams with <reset/>"):
        left = LIFETIME - (time.monotonic() - issued)
        cl.wait_for(lambda: "expired" in gw.log_text() and "<reset/>" in gw.log_text(), left + 10,
                    "the gateway resets the streams")
        resets = re.findall(r"stream error <reset/>: the peer's certificate \(CN=b\.test\) expired", gw.log_text())
        assert resets, "no <reset/> for the expired certificate logged"
        t.note(f"{len(resets)} stream(s) reset, {time.monotonic() - issued:.1f} s after the certificate was issued")

    with t.check("after the expiry: a message to b.test is bounced, not delivered, not lost"):
        cl.sleep(2)  # past the second of expiry: a new connection sees it too
        body = f"after expiry {secrets.token_hex(4)}"
        mid = alice.send_message("bob@b.test", body)
        err = cl.wait_for(lambda: alice.error_for(body, mid), 30, "a bounce")
        assert not bob.has_body(body), "delivered over an expired certificate"
        t.note(f"bounced: {err['error']['condition']}: {err['error']['text']}")


if __name__ == "__main__":
    run(main, timeout=120)
