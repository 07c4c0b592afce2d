#!/usr/bin/python3
"""TLS policy "required": remotes with bad certificates get nothing.

Prosody a.test behind s2smuxd; three remote Prosody servers:
  b.test  certificate from an untrusted CA,
  c.test  certificate valid for another name (evil.test),
  d.test  expired certificate.
Outbound (alice@a.test -> x@remote): nothing is delivered, alice receives a
stanza error (remote-server-timeout) whose text says why, and the gateway
logs the reason. Inbound (bob@b.test -> alice@a.test): b.test cannot use SASL
EXTERNAL and its dialback cannot be verified over a trusted TLS stream, so
alice receives nothing and bob gets an error.

Run by hand: /usr/bin/python3 tests/interop/test_gateway_bad_certs.py [--keep] [-v]
"""

import secrets

from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run


def expect_bounce(t, cl, sender, rcpt, rcpt_client, label, text_has):
    with t.check(label):
        body = f"must not arrive {secrets.token_hex(4)}"
        mid = sender.send_message(rcpt, body)
        err = cl.wait_for(lambda: sender.error_for(body, mid), 20, f"a bounce of the message to {rcpt}")
        cond, text = err["error"]["condition"], err["error"]["text"] or ""
        assert cond == "remote-server-timeout", f"condition {cond}, want remote-server-timeout ({text})"
        for needle in text_has:
            assert needle in text, f"bounce text {text!r} does not mention {needle!r}"
        assert rcpt_client is None or not rcpt_client.has_body(body), f"{rcpt} received it anyway"
        t.note(f"bounce: {cond}: {text}")


def main(t):
    pki = t.pki()
    a_s2s = free_port()
    ports = {d: free_port() for d in ("b.test", "c.test", "d.test")}
    certs = {
        "b.test": pki.issue("b.test", ca=pki.untrusted_ca),
        "c.test": pki.issue("c.test", names=["evil.test"]),
        "d.test": pki.issue("d.test", expired=True),
    }
    gw = S2smuxd(t.dir, config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[pki.issue("a.test")], ca_file=pki.ca_file,
        upstream=f"127.0.0.1:{a_s2s}",
        routes=[{"domain": d, "address": f"127.0.0.1:{p}"} for d, p in ports.items()]))
    pa = Prosody(t.dir, "prosody-a", ["a.test"], pki=pki, s2s_port=a_s2s,
                 gateway=f"127.0.0.1:{gw.inner_port}", s2s_secure_auth=False,
                 users={"alice": "alice-pw"})
    remotes = {d: Prosody(t.dir, f"prosody-{d[0]}", [d], certs={d: certs[d]}, pki=pki, s2s_port=ports[d],
                          routes={"a.test": f"127.0.0.1:{gw.outer_port}"}, s2s_secure_auth=False,
                          users={"bob": "bob-pw"})
               for d in ports}
    with t.check("s2smuxd and four Prosody servers started", fatal=True):
        t.start(gw)
        t.start(pa)
        for p in remotes.values():
            t.start(p)

    cl = t.clients()
    with t.check("clients logged in", fatal=True):
        alice = cl.connect("alice@a.test", "alice-pw", pa.c2s_port)
        bobs = {d: cl.connect(f"bob@{d}", "bob-pw", remotes[d].c2s_port) for d in ports}

    expect_bounce(t, cl, alice, "bob@b.test", bobs["b.test"], "untrusted CA: a.test -> b.test bounced with the reason",
                  ["b.test", "not trusted", "required"])
    expect_bounce(t, cl, alice, "bob@c.test", bobs["c.test"], "wrong name: a.test -> c.test bounced with the reason",
                  ["not valid for c.test"])
    expect_bounce(t, cl, alice, "bob@d.test", bobs["d.test"], "expired: a.test -> d.test bounced with the reason",
                  ["expired"])

    with t.check("inbound from the untrusted b.test: not delivered, sender gets an error"):
        body = f"inbound must not arrive {secrets.token_hex(4)}"
        mid = bobs["b.test"].send_message("alice@a.test", body)
        cl.wait_for(lambda: bobs["b.test"].error_for(body, mid), 30, "bob@b.test gets a bounce")
        assert not alice.has_body(body), "alice received a stanza from an unauthenticated b.test"

    log = gw.log_text()
    with t.check("gateway log says why for each remote"):
        for needle in ("b.test: certificate is not trusted", "certificate is not valid for c.test",
                       "d.test: certificate is not trusted: certificate expired"):
            assert needle in log, f"no '{needle}' in the gateway log"


if __name__ == "__main__":
    run(main, timeout=120)
