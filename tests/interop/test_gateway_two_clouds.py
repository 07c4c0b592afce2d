#!/usr/bin/python3
"""Both clouds behind gateways: Prosody a.test - s2smuxd A == s2smuxd B - Prosody b.test.

Standard S2S between the two gateways: A reaches B with direct TLS
(XEP-0368, B's outer_tls listener, ALPN xmpp-server), SASL EXTERNAL, and
bidi (XEP-0288) so that B answers over the same connection instead of
opening its own.

Checks: messages and presence subscriptions both ways; A authenticated to B
with EXTERNAL over direct TLS; bidi carried B's traffic back (B never opened
an outer connection: exactly one TCP connection between the gateways).

Run by hand: /usr/bin/python3 tests/interop/test_gateway_two_clouds.py [--keep] [-v]
"""

from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from harness.scenarios import check_message, check_subscription


def main(t):
    pki = t.pki()
    a_s2s, b_s2s = free_port(), free_port()
    b_outer, b_outer_tls, a_outer = free_port(), free_port(), free_port()
    gwa = S2smuxd(t.dir, name="s2smuxd-a", config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[pki.issue("a.test")], ca_file=pki.ca_file,
        upstream=f"127.0.0.1:{a_s2s}", outer=f"127.0.0.1:{a_outer}",
        routes=[{"domain": "b.test", "address": f"127.0.0.1:{b_outer_tls}", "direct_tls": True}]))
    gwb = S2smuxd(t.dir, name="s2smuxd-b", config=S2smuxd.fronting_config(
        domains=["b.test"], certs=[pki.issue("b.test")], ca_file=pki.ca_file,
        upstream=f"127.0.0.1:{b_s2s}", outer=f"127.0.0.1:{b_outer}",
        outer_tls=f"127.0.0.1:{b_outer_tls}",
        routes=[{"domain": "a.test", "address": f"127.0.0.1:{a_outer}"}]))
    pa = Prosody(t.dir, "prosody-a", ["a.test"], pki=pki, s2s_port=a_s2s,
                 gateway=f"127.0.0.1:{gwa.inner_port}", s2s_secure_auth=False,
                 users={"alice": "alice-pw"})
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, s2s_port=b_s2s,
                 gateway=f"127.0.0.1:{gwb.inner_port}", s2s_secure_auth=False,
                 users={"bob": "bob-pw"})
    with t.check("two gateways and two Prosody servers started", fatal=True):
        for s in (gwa, gwb, pa, pb):
            t.start(s)

    cl = t.clients()
    with t.check("alice@a.test and bob@b.test logged in", fatal=True):
        alice = cl.connect("alice@a.test", "alice-pw", pa.c2s_port)
        bob = cl.connect("bob@b.test", "bob-pw", pb.c2s_port)

    # a.test speaks first, so A's direct-TLS stream exists before B needs a route.
    check_message(t, cl, alice, bob)
    check_message(t, cl, bob, alice)
    check_subscription(t, cl, alice, bob)
    check_subscription(t, cl, bob, alice)

    la, lb = gwa.log_text(), gwb.log_text()
    with t.check("A -> B: direct TLS with ALPN, SASL EXTERNAL"):
        assert "accepted connection (direct TLS)" in lb, "B's outer_tls listener was not used"
        assert "authenticated a.test -> b.test (outgoing, SASL EXTERNAL)" in la
        assert "authenticated a.test -> b.test (incoming, SASL EXTERNAL)" in lb
    with t.check("B -> A carried back over the same connection (bidi)"):
        assert "authenticated b.test -> a.test (outgoing, bidi)" in lb, "B did not get the reverse direction by bidi"
        assert "outer-out" not in lb, "B opened its own outer connection"


if __name__ == "__main__":
    run(main, timeout=90)
