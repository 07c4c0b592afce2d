#!/usr/bin/python3
"""ejabberd a.test behind s2smuxd <-> plain Prosody b.test.

ejabberd has no route override: a split-horizon dnsmasq answers
_xmpp-server._tcp.b.test with the gateway's inner listener (ERL_INETRC), so
ejabberd's outbound S2S goes to the gateway; the gateway delivers inbound
stanzas to ejabberd's S2S port with dialback, which ejabberd verifies by
calling b.test back through the same DNS view, i.e. the inner listener.
The gateway itself reaches b.test through a static route; Prosody B routes
a.test to the gateway's outer listener. TLS policy "required" outside.

Checks: messages and presence subscriptions both ways; ejabberd's outbound
went through the inner listener; the gateway answered ejabberd's dialback
verification; B authenticated the gateway with SASL EXTERNAL.

Run by hand: /usr/bin/python3 tests/interop/test_gateway_ejabberd_local.py [--keep] [-v]
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
    gw = S2smuxd(t.dir, config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[pki.issue("a.test")], ca_file=pki.ca_file,
        upstream=f"127.0.0.1:{a_s2s}",
        routes=[{"domain": "b.test", "address": f"127.0.0.1:{b_s2s}"}]))
    view = Dns(t.dir, name="split-horizon").xmpp_server("b.test", gw.inner_port)
    ea = Ejabberd(t.dir, "ejabberd-a", "a.test", pki=pki, s2s_port=a_s2s,
                  dns_port=view.port, s2s_use_starttls="optional",
                  users={"alice": "alice-pw"})
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, s2s_port=b_s2s,
                 routes={"a.test": f"127.0.0.1:{gw.outer_port}"}, s2s_secure_auth=True,
                 users={"bob": "bob-pw"})
    with t.check("split-horizon dnsmasq, s2smuxd, ejabberd a.test and prosody b.test started", fatal=True):
        t.start(view)
        t.start(gw)
        t.start(pb)
        t.start(ea, timeout=30)

    cl = t.clients()
    with t.check("alice@a.test and bob@b.test logged in", fatal=True):
        alice = cl.connect("alice@a.test", "alice-pw", ea.c2s_port)
        bob = cl.connect("bob@b.test", "bob-pw", pb.c2s_port)

    check_message(t, cl, alice, bob)
    check_message(t, cl, bob, alice)
    check_subscription(t, cl, alice, bob)
    check_subscription(t, cl, bob, alice)

    log = gw.log_text()
    with t.check("ejabberd's outbound S2S came through the inner listener"):
        assert "query[SRV] _xmpp-server._tcp.b.test" in view.log_text(), "ejabberd did not ask the view"
        assert "authenticated a.test -> b.test (incoming, dialback (trusted local server))" in log
    with t.check("gateway delivered inbound stanzas to ejabberd with dialback, verified through the inner side"):
        assert "authenticated b.test -> a.test (outgoing, dialback)" in log
        assert "dialback key of b.test for a.test confirmed" in log
    with t.check("prosody b.test authenticated the gateway's a.test with SASL EXTERNAL"):
        sessions = pb.find_s2s("incoming", "a.test", "b.test")
        assert sessions, "no incoming a.test->b.test session in prosody-b's log"
        assert sessions[-1].auth()[0] == "external"


if __name__ == "__main__":
    run(main, timeout=120)
