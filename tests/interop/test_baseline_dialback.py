#!/usr/bin/python3
"""Baseline: dialback between two plain Prosodys, no gateway.

Prosody a.test runs with s2s_secure_auth = false (as it will behind s2smuxd).
Prosody b.test has a certificate from a CA that a.test does not trust, so
a.test offers b.test no SASL EXTERNAL and b.test must use dialback
(XEP-0220): a.test verifies b.test's key by connecting back through its
outbound route (mod_s2smux_route -> b.test's port) and sending <db:verify/>.
b.test trusts a.test's certificate, so a.test -> b.test is still EXTERNAL.

The first message goes b -> a, so a.test has no outgoing stream yet and must
open one for <db:verify/> (the path a gateway's inner listener will see).

Checks: messages both ways; a.test's log shows the incoming b.test stream
authenticated by dialback and the verify answered valid; b.test's log shows
it initiated dialback and answered the verify; a.test -> b.test used EXTERNAL
although a.test did not trust b.test's certificate.

Run by hand: /usr/bin/python3 tests/interop/test_baseline_dialback.py [--keep] [-v]
"""

from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from harness.scenarios import check_message


def main(t):
    pki = t.pki()
    a_s2s, b_s2s = free_port(), free_port()
    b_cert = pki.issue("b.test", ca=pki.untrusted_ca)
    pa = Prosody(t.dir, "prosody-a", ["a.test"], pki=pki, s2s_port=a_s2s,
                 routes={"b.test": f"127.0.0.1:{b_s2s}"}, s2s_secure_auth=False,
                 users={"alice": "alice-pw"})
    # b.test trusts the demo CA (pki.ca_file), but its own cert chains to the untrusted CA.
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, certs={"b.test": b_cert},
                 s2s_port=b_s2s, routes={"a.test": f"127.0.0.1:{a_s2s}"},
                 s2s_secure_auth=True, users={"bob": "bob-pw"})
    with t.check("prosody a.test (s2s_secure_auth=false) and b.test (untrusted cert) started",
                 fatal=True):
        t.start(pa)
        t.start(pb)

    cl = t.clients()
    with t.check("alice@a.test and bob@b.test logged in", fatal=True):
        alice = cl.connect("alice@a.test", "alice-pw", pa.c2s_port)
        bob = cl.connect("bob@b.test", "bob-pw", pb.c2s_port)

    check_message(t, cl, bob, alice)
    check_message(t, cl, alice, bob)

    with t.check("prosody-a: incoming b.test -> a.test authenticated with dialback over TLS"):
        sessions = pa.find_s2s("incoming", "b.test", "a.test")
        assert sessions, f"no completed incoming b.test->a.test session in {pa.log_file}"
        for s in sessions:
            assert s.tls(), f"{s.source}: not encrypted"
            # debug "certificate chain validation result: invalid"
            assert s.find(r"^certificate chain validation result: invalid"), \
                f"{s.source}: b.test's certificate was not rejected"
            # debug "Received[s2sin_unauthed]: <result xmlns='jabber:server:dialback' to='a.test' xml:lang='en' from='b.test'>"
            assert s.find(r"^Received\[s2sin_unauthed\]: <result\b[^>]*xmlns='jabber:server:dialback'"), \
                f"{s.source}: no <db:result/> received"
            # debug "asking b.test if key 5c1e... belongs to them"
            method, _ = s.auth()
            assert method == "dialback", f"{s.source}: authenticated with {method}, want dialback"

    with t.check("prosody-a: opened a new outgoing stream to b.test for <db:verify/>, got type='valid'"):
        # mod_s2s debug "stanza [db:verify] queued until connection complete": no a->b
        # stream existed, so the verify opened one (through mod_s2smux_route) and
        # waited until it was authenticated (SASL EXTERNAL) before being sent.
        assert "stanza [db:verify] queued until connection complete" in pa.log_text(), \
            "db:verify did not open a new outgoing connection"
        outs = pa.find_s2s("outgoing", "a.test", "b.test")
        assert outs, "no completed outgoing a.test->b.test session"
        # Queued stanzas leave as strings, so mod_stanza_debug has no SEND: line for them:
        # debug "Sending[s2sout]: <db:verify from='a.test' id='a2b7a3ed-...' to='b.test'>"
        assert any(o.find(r"^(SEND|Sending\[s2sout(_unauthed)?\]): <db:verify\b") for o in outs), \
            "no <db:verify/> sent"
        # debug "RECV: <verify id='a2b7a3ed-...' to='a.test' xml:lang='en' from='b.test' xmlns='jabber:server:dialback' type='valid'>KEY</verify>"
        assert any(o.find(r"^(RECV|Received\[s2sout(_unauthed)?\]): <verify\b[^>]*type='valid'") for o in outs), "no valid <db:verify/> answer"

    with t.check("prosody-b: initiated dialback to a.test and answered a.test's verify"):
        outs = pb.find_s2s("outgoing", "b.test", "a.test")
        assert outs, "no completed outgoing b.test->a.test session"
        # debug "sent dialback key on outgoing s2s stream"
        method, _ = outs[0].auth()
        assert method == "dialback", f"{outs[0].source}: authenticated with {method}, want dialback"
        # debug "verified dialback key... it is valid"   (on b's incoming a.test stream)
        ins = pb.find_s2s("incoming", "a.test", "b.test")
        assert any(s.find(r"^verified dialback key\.\.\. it is valid") for s in ins), \
            "b.test never answered a <db:verify/> with valid"

    with t.check("a.test -> b.test used SASL EXTERNAL (b trusts a; a accepted b's untrusted cert)"):
        outs = pa.find_s2s("outgoing", "a.test", "b.test")
        ins = pb.find_s2s("incoming", "a.test", "b.test")
        assert outs and ins, "no completed a.test->b.test sessions"
        for s in outs:
            assert s.find(r"^certificate chain validation result: invalid"), \
                f"{s.source}: expected a.test to see b.test's chain as invalid"
            method, _ = s.auth()
            assert method == "external", f"{s.source}: authenticated with {method}"
        for s in ins:
            method, _ = s.auth()
            assert method == "external", f"{s.source}: authenticated with {method}"


if __name__ == "__main__":
    run(main, timeout=60)
