#!/usr/bin/python3
"""Prosody a.test behind s2smuxd <-> plain ejabberd b.test, with SRV through DNS.

A private dnsmasq serves _xmpp-server._tcp.b.test -> ejabberd's S2S port (the
gateway resolves b.test through [dns] nameserver, no static route) and
_xmpp-server._tcp.a.test -> the gateway's outer port (ejabberd finds a.test
through ERL_INETRC). Prosody A sends its outbound S2S to the gateway's inner
listener. TLS policy "required" on the gateway, s2s_use_starttls: required on
ejabberd; certificates from the demo CA (no XmppAddr).

Checks: messages and presence subscriptions both ways; the gateway resolved
b.test by SRV through dnsmasq; ejabberd authenticated the gateway's a.test
with SASL EXTERNAL over TLS and the gateway authenticated ejabberd's b.test.

Run by hand: /usr/bin/python3 tests/interop/test_gateway_ejabberd.py [--keep] [-v]
"""

from harness.dnsmasq import Dns
from harness.ejabberd import Ejabberd
from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from harness.scenarios import check_message, check_subscription


def main(t):
    pki = t.pki()
    a_s2s, b_s2s = free_port(), free_port()
    dns = Dns(t.dir)
    gw = S2smuxd(t.dir, config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[pki.issue("a.test")], ca_file=pki.ca_file,
        upstream=f"127.0.0.1:{a_s2s}", nameserver=f"127.0.0.1:{dns.port}"))
    dns.xmpp_server("a.test", gw.outer_port).xmpp_server("b.test", b_s2s)
    pa = Prosody(t.dir, "prosody-a", ["a.test"], pki=pki, s2s_port=a_s2s,
                 gateway=f"127.0.0.1:{gw.inner_port}", s2s_secure_auth=False,
                 users={"alice": "alice-pw"})
    eb = Ejabberd(t.dir, "ejabberd-b", "b.test", pki=pki, s2s_port=b_s2s,
                  dns_port=dns.port, s2s_use_starttls="required",
                  users={"bob": "bob-pw"})
    with t.check("dnsmasq, s2smuxd, prosody a.test and ejabberd b.test started", fatal=True):
        t.start(dns)
        t.start(gw)
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

    with t.check("gateway resolved b.test with SRV through dnsmasq"):
        assert "query[SRV] _xmpp-server._tcp.b.test" in dns.log_text(), "no SRV query for b.test in dnsmasq's log"
        log = gw.log_text()
        assert f"connecting (SRV _xmpp-server._tcp.b.test" in log or "SRV _xmpp-server._tcp.b.test" in log, \
            "gateway log does not show the SRV target"

    with t.check("ejabberd-b: inbound a.test -> b.test (the gateway) used TLS + SASL EXTERNAL"):
        auths = cl.wait_for(lambda: eb.find_auth("inbound", "a.test", "b.test"), 5,
                            f"'Accepted inbound s2s ... authentication a.test -> b.test' in {eb.log_file}")
        for a in auths:
            assert a["transport"] == "tls" and a["method"] == "EXTERNAL", a["line"]

    with t.check("gateway: b.test -> a.test from ejabberd authenticated over TLS"):
        log = gw.log_text()
        assert "authenticated b.test -> a.test (incoming, SASL EXTERNAL)" in log, \
            "no 'authenticated b.test -> a.test (incoming, SASL EXTERNAL)' in the gateway log"
        assert "authenticated a.test -> b.test (outgoing, SASL EXTERNAL)" in log


if __name__ == "__main__":
    run(main, timeout=90)
