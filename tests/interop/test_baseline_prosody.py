#!/usr/bin/python3
"""Baseline: plain Prosody a.test <-> plain Prosody b.test, no gateway.

Each Prosody routes the other's domain straight to the other's S2S port with
tools/prosody/mod_s2smux_route.lua (no DNS). Both have certificates from the
demo CA and s2s_secure_auth = true, so every stream must be STARTTLS +
SASL EXTERNAL. Checks: messages both ways, presence subscription both ways,
a presence probe, and, from both Prosody logs, that each S2S stream was
TLS-encrypted and authenticated with SASL EXTERNAL.

Run by hand: /usr/bin/python3 tests/interop/test_baseline_prosody.py [--keep] [-v]
"""

from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from harness.scenarios import check_message, check_probe, check_subscription


def check_stream(t, server: Prosody, direction: str, from_host: str, to_host: str):
    with t.check(f"{server.name}: {direction} s2s {from_host} -> {to_host} used TLS + SASL EXTERNAL"):
        sessions = server.find_s2s(direction, from_host, to_host)
        assert sessions, f"no completed {direction} session {from_host}->{to_host} in {server.log_file}"
        for s in sessions:
            # info "Stream encrypted (TLSv1.3 with TLS_AES_128_GCM_SHA256)"
            tls = s.tls()
            assert tls, f"{s.source}: no 'Stream encrypted (...)' line"
            # outgoing: debug "Sending[s2sout_unauthed]: <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>"
            #           debug "Received[s2sout_unauthed]: <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl' xml:lang='en'>"
            # incoming: debug "Received[s2sin_unauthed]: <auth mechanism='EXTERNAL' xml:lang='en' xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
            #           debug "Sending[s2sin_unauthed]: <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
            #           (module line: a.test:saslauth info "Accepting SASL EXTERNAL identity from b.test")
            # then both: debug "connection a.test->b.test is now authenticated for b.test"
            #            info  "Outgoing s2s connection a.test->b.test complete" / "Incoming s2s connection ..."
            method, line = s.auth()
            assert method == "external", f"{s.source}: authenticated with {method}, want SASL EXTERNAL"
            t.note(f"{s.source}: {tls.message} / {line.message}")


def main(t):
    pki = t.pki()
    a_s2s, b_s2s = free_port(), free_port()
    pa = Prosody(t.dir, "prosody-a", ["a.test"], pki=pki, s2s_port=a_s2s,
                 routes={"b.test": f"127.0.0.1:{b_s2s}"}, s2s_secure_auth=True,
                 users={"alice": "alice-pw"})
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, s2s_port=b_s2s,
                 routes={"a.test": f"127.0.0.1:{a_s2s}"}, s2s_secure_auth=True,
                 users={"bob": "bob-pw"})
    with t.check("prosody a.test and b.test started", fatal=True):
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

    check_stream(t, pa, "outgoing", "a.test", "b.test")
    check_stream(t, pb, "incoming", "a.test", "b.test")
    check_stream(t, pb, "outgoing", "b.test", "a.test")
    check_stream(t, pa, "incoming", "b.test", "a.test")


if __name__ == "__main__":
    run(main, timeout=60)
