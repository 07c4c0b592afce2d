#!/usr/bin/python3
"""Unreachable remotes: every stanza comes back as an error, with the reason.

Prosody a.test behind s2smuxd, whose resolver asks a private dnsmasq.
  nx.test      no DNS records at all                -> remote-server-not-found (NXDOMAIN)
  refused.test static route to a closed port       -> remote-server-not-found (connection refused)
  silent.test  static route to a peer that accepts
               TCP and never says a word             -> remote-server-timeout (after connect_timeout)
Several stanzas are queued for silent.test while it hangs; each one is
bounced, none is lost. The gateway keeps working: a.test -> b.test (a real
Prosody) is delivered afterwards.

Run by hand: /usr/bin/python3 tests/interop/test_gateway_unreachable.py [--keep] [-v]
"""

import secrets
import socket
import time

from harness.dnsmasq import Dns
from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from harness.scenarios import check_message


def bounce_of(t, cl, alice, rcpt, cond, text_has, timeout=20):
    body = f"to {rcpt} {secrets.token_hex(4)}"
    mid = alice.send_message(rcpt, body)
    err = cl.wait_for(lambda: alice.error_for(body, mid), timeout, f"a bounce of the message to {rcpt}")
    got_cond, text = err["error"]["condition"], err["error"]["text"] or ""
    assert got_cond == cond, f"condition {got_cond} ({text}), want {cond}"
    assert text_has in text, f"bounce text {text!r} does not mention {text_has!r}"
    t.note(f"{rcpt}: {got_cond}: {text}")


def main(t):
    pki = t.pki()
    a_s2s, b_s2s, closed = free_port(), free_port(), free_port()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts (kernel backlog) and never answers
    dns = Dns(t.dir).xmpp_server("b.test", b_s2s)
    gw = S2smuxd(t.dir, config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[pki.issue("a.test")], ca_file=pki.ca_file,
        upstream=f"127.0.0.1:{a_s2s}", nameserver=f"127.0.0.1:{dns.port}",
        limits={"connect_timeout": 2},
        routes=[{"domain": "refused.test", "address": f"127.0.0.1:{closed}"},
                {"domain": "silent.test", "address": f"127.0.0.1:{silent.getsockname()[1]}"}]))
    pa = Prosody(t.dir, "prosody-a", ["a.test"], pki=pki, s2s_port=a_s2s,
                 gateway=f"127.0.0.1:{gw.inner_port}", s2s_secure_auth=False,
                 users={"alice": "alice-pw"})
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, s2s_port=b_s2s,
                 routes={"a.test": f"127.0.0.1:{gw.outer_port}"}, users={"bob": "bob-pw"})
    with t.check("dnsmasq, s2smuxd and two Prosody servers started", fatal=True):
        for s in (dns, gw, pa, pb):
            t.start(s)
    cl = t.clients()
    with t.check("clients logged in", fatal=True):
        alice = cl.connect("alice@a.test", "alice-pw", pa.c2s_port)
        bob = cl.connect("bob@b.test", "bob-pw", pb.c2s_port)

    with t.check("no DNS records: remote-server-not-found, NXDOMAIN"):
        bounce_of(t, cl, alice, "bob@nx.test", "remote-server-not-found", "NXDOMAIN")
    with t.check("closed port: remote-server-not-found, connection refused"):
        bounce_of(t, cl, alice, "bob@refused.test", "remote-server-not-found", "connection refused")
    with t.check("silent peer: every queued stanza bounced with remote-server-timeout"):
        bodies = [f"silent {i} {secrets.token_hex(3)}" for i in range(5)]
        ids = [alice.send_message("bob@silent.test", b) for b in bodies]
        started = time.monotonic()
        cl.wait_for(lambda: all(alice.error_for(b, i) for b, i in zip(bodies, ids)), 20,
                    "bounces of all 5 messages to silent.test")
        for b, i in zip(bodies, ids):
            e = alice.error_for(b, i)["error"]
            assert e["condition"] == "remote-server-timeout", e
        waited = time.monotonic() - started
        assert waited >= 1.5, f"bounced after {waited:.1f} s, before the 2 s connect timeout"
        t.note(f"bounced after {waited:.1f} s: {alice.error_for(bodies[0], ids[0])['error']['text']}")

    check_message(t, cl, alice, bob, label="the gateway still delivers a.test -> b.test")
    silent.close()


if __name__ == "__main__":
    run(main, timeout=90)
