#!/usr/bin/python3
"""Prosody a.test behind s2smuxd <-> plain Prosody b.test.

Prosody A sends all outbound S2S to the gateway's inner listener
(mod_s2smux_route) and receives inbound S2S from the gateway (dialback,
verified back through the inner listener). Prosody B routes a.test to the
gateway's outer listener. Certificates from the demo CA, TLS policy
"required" on the gateway, s2s_secure_auth on B.

Checks: messages and presence subscriptions both ways, a presence probe; the
gateway authenticated B with SASL EXTERNAL over TLS in both directions and
answered A's dialback verification; B saw a TLS + EXTERNAL stream from a.test.

Run by hand: /usr/bin/python3 tests/interop/test_gateway_prosody.py [--keep] [-v]
"""

from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from harness.scenarios import check_message, check_probe, check_subscription


def main(t):
    pki = t.pki()
    a_s2s, b_s2s = free_port(), free_port()
    gw = S2smuxd(t.dir, config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[pki.issue("a.test")], ca_file=pki.ca_file,
        upstream=f"127.0.0.1:{a_s2s}",
        routes=[{"domain": "b.test", "address": f"127.0.0.1:{b_s2s}"}]))
    pa = Prosody(t.dir, "prosody-a", ["a.test"], pki=pki, s2s_port=a_s2s,
                 gateway=f"127.0.0.1:{gw.inner_port}", s2s_secure_auth=False,
                 users={"alice": "alice-pw"})
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, s2s_port=b_s2s,
                 routes={"a.test": f"127.0.0.1:{gw.outer_port}"}, s2s_secure_auth=True,
                 users={"bob": "bob-pw"})
    with t.check("s2smuxd, prosody a.test and prosody b.test started", fatal=True):
        t.start(gw)
        t.start(pa)
        t.start(pb)

    cl = t.clients()
    with t.check("alice@a.test and bob@b.test logged in", fatal=True):
        alice = cl.connect("alice@a.test", "alice-pw", pa.c2s_port)
        bob = cl.connect("bob@b.test", "bob-pw", pb.c2s_port)

    check_message(t, cl, alice, bob)
    check_message(t, cl, bob, alice)
    check_subscription(t, cl, alice, bob)
    check_subscription(t, cl, bob, alice)
    check_probe(t, cl, "alice@a.test", "alice-pw", pa.c2s_port, bob)

    log = gw.log_text()
    with t.check("gateway: outgoing a.test -> b.test authenticated with SASL EXTERNAL over TLS"):
        assert "outer-out a.test->b.test" in log and "authenticated a.test -> b.test (outgoing, SASL EXTERNAL)" in log, \
            "no 'authenticated a.test -> b.test (outgoing, SASL EXTERNAL)' line"
        assert "TLS established (TLS1.3" in log, "no TLS 1.3 stream"
    with t.check("gateway: incoming b.test -> a.test authenticated with SASL EXTERNAL"):
        assert "authenticated b.test -> a.test (incoming, SASL EXTERNAL)" in log
    with t.check("gateway: local server authenticated on the inner side and its dialback verify answered"):
        assert "authenticated a.test -> b.test (incoming, dialback (trusted local server))" in log
        assert "dialback key of b.test for a.test confirmed" in log
    with t.check("prosody b.test: incoming a.test stream was TLS + SASL EXTERNAL"):
        sessions = pb.find_s2s("incoming", "a.test", "b.test")
        assert sessions, "no incoming a.test->b.test session in prosody-b's log"
        method, _ = sessions[-1].auth()
        assert method == "external", f"authenticated with {method}"


if __name__ == "__main__":
    run(main, timeout=90)
