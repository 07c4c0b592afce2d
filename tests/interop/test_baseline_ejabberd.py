#!/usr/bin/python3
"""Baseline: Prosody a.test <-> ejabberd b.test, no gateway.

Prosody routes b.test to ejabberd's S2S port with mod_s2smux_route;
ejabberd finds a.test through a private dnsmasq (SRV
_xmpp-server._tcp.a.test -> 127.0.0.1:<prosody s2s port>, via ERL_INETRC).
Certificates from the demo CA (no XmppAddr: ejabberd 23.01 crashes on it),
s2s_secure_auth = true on Prosody, s2s_use_starttls: required on ejabberd.
Checks: messages both ways, presence subscription both ways, ejabberd looked
a.test up in DNS, and both streams were TLS + SASL EXTERNAL in both logs.

Run by hand: /usr/bin/python3 tests/interop/test_baseline_ejabberd.py [--keep] [-v]
"""

from harness.dnsmasq import Dns
from harness.ejabberd import Ejabberd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from harness.scenarios import check_message, check_subscription


def main(t):
    pki = t.pki()
    a_s2s, b_s2s = free_port(), free_port()
    dns = Dns(t.dir).xmpp_server("a.test", a_s2s)
    pa = Prosody(t.dir, "prosody-a", ["a.test"], pki=pki, s2s_port=a_s2s,
                 routes={"b.test": f"127.0.0.1:{b_s2s}"}, s2s_secure_auth=True,
                 users={"alice": "alice-pw"})
    eb = Ejabberd(t.dir, "ejabberd-b", "b.test", pki=pki, s2s_port=b_s2s,
                  dns_port=dns.port, s2s_use_starttls="required",
                  users={"bob": "bob-pw"})
    with t.check("dnsmasq, prosody a.test and ejabberd b.test started", fatal=True):
        t.start(dns)
        t.start(pa)
        t.start(eb, timeout=30)

    cl = t.clients()
    with t.check("alice@a.test and bob@b.test logged in", fatal=True):
        alice = cl.connect("alice@a.test", "alice-pw", pa.c2s_port)
        bob = cl.connect("bob@b.test", "bob-pw", eb.c2s_port)

    check_message(t, cl, alice, bob)
    check_message(t, cl, bob, alice)
    check_subscription(t, cl, alice, bob)
    check_subscription(t, cl, bob, alice)

    with t.check("ejabberd resolved a.test with SRV through dnsmasq"):
        # dnsmasq: "query[SRV] _xmpp-server._tcp.a.test from 127.0.0.1"
        cl.wait_for(lambda: "query[SRV] _xmpp-server._tcp.a.test" in dns.log_text(), 3,
                    f"SRV query for _xmpp-server._tcp.a.test in {dns.log_file}")

    with t.check("ejabberd-b: inbound a.test -> b.test and outbound b.test -> a.test used TLS + EXTERNAL"):
        # [info] ... (tls|<0.489.0>) Accepted inbound s2s EXTERNAL authentication a.test -> b.test (127.0.0.1)
        # [info] ... (tls|<0.490.0>) Accepted outbound s2s EXTERNAL authentication b.test -> a.test (127.0.0.1)
        # ejabberd's file log is written with delayed_write (flushed within ~2 s), so poll.
        for direction, f, to in (("inbound", "a.test", "b.test"), ("outbound", "b.test", "a.test")):
            auths = cl.wait_for(lambda: eb.find_auth(direction, f, to), 5,
                                f"'Accepted {direction} s2s ... authentication {f} -> {to}' in {eb.log_file}")
            for a in auths:
                assert a["transport"] == "tls" and a["method"] == "EXTERNAL", a["line"]

    with t.check("prosody-a: outgoing a.test -> b.test and incoming b.test -> a.test used TLS + EXTERNAL"):
        for direction, f, to in (("outgoing", "a.test", "b.test"), ("incoming", "b.test", "a.test")):
            sessions = pa.find_s2s(direction, f, to)
            assert sessions, f"no completed {direction} session {f}->{to} in {pa.log_file}"
            for s in sessions:
                assert s.tls(), f"{s.source}: not encrypted"
                method, _ = s.auth()
                assert method == "external", f"{s.source}: authenticated with {method}"


if __name__ == "__main__":
    run(main, timeout=60)
