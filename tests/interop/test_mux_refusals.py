#!/usr/bin/python3
"""Stanzas for domain pairs that were not multiplexed are refused, never delivered.

A raw peer gateway authenticates to s2smuxd B as x.test the standard way
(TLS 1.3, bidi, SASL EXTERNAL with a valid certificate) and enables
multiplexing, so x.test -> b.test is granted. It then sends:
  - a stanza from y.test, which it never added  -> <refused/> from-not-multiplexed
  - a stanza to c.b.test, a domain B never added -> <refused/> to-not-multiplexed
  - a granted stanza from x.test to bob@b.test   -> delivered
Each refusal is counted (s2smuxctl stats: mux.refused_in), logged, and the
stream stays up. A second gateway with [mux] strict = true closes the stream
with <policy-violation/> at the first refused stanza instead.

Run by hand: /usr/bin/python3 tests/interop/test_mux_refusals.py [--keep] [-v]
"""

import secrets

from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.raw_s2s import RawS2S
from harness.runner import run


def stat(gw, key):
    for line in gw.ctl_ok("stats"):
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    raise AssertionError(f"no {key} in s2smuxctl stats")


def main(t):
    pki = t.pki()
    b_s2s, strict_outer = free_port(), free_port()
    cb = pki.issue("b.test")
    gw = S2smuxd(t.dir, config=S2smuxd.fronting_config(
        domains=["b.test"], certs=[cb], ca_file=pki.ca_file, upstream=f"127.0.0.1:{b_s2s}"))
    strict_cfg = S2smuxd.fronting_config(domains=["b.test"], certs=[cb], ca_file=pki.ca_file,
                                         upstream="127.0.0.1:1", outer=f"127.0.0.1:{strict_outer}")
    strict_cfg["mux"] = {"strict": True}
    gws = S2smuxd(t.dir, name="s2smuxd-strict", config=strict_cfg)
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, certs={"b.test": cb}, s2s_port=b_s2s,
                 gateway=f"127.0.0.1:{gw.inner_port}", s2s_secure_auth=False, users={"bob": "pw"})
    with t.check("s2smuxd (normal and strict) and prosody b.test started", fatal=True):
        for s in (gw, gws, pb):
            t.start(s)
    cl = t.clients()
    with t.check("bob@b.test logged in", fatal=True):
        bob = cl.connect("bob@b.test", "pw", pb.c2s_port)

    x = pki.issue("x.test")
    raw = RawS2S("127.0.0.1", gw.outer_port, "x.test", "b.test", cert=x, ca_file=pki.ca_file)
    with t.check("a raw peer gateway authenticates as x.test and enables multiplexing", fatal=True):
        raw.authenticate(bidi=True)
        raw.enable_mux()

    with t.check("stanza from y.test (never added): refused with from-not-multiplexed, not delivered"):
        body = f"spoofed {secrets.token_hex(3)}"
        raw.send(f"<message from='eve@y.test/r' to='bob@b.test' id='s1' type='chat'><body>{body}</body></message>")
        got = raw.read_until("</refused>")
        assert "<from-not-multiplexed/>" in got and "id='s1'" in got, got[-400:]
        cl.sleep(0.5)
        assert not bob.has_body(body), "bob received a stanza from a domain that was never multiplexed"

    with t.check("stanza to c.b.test (never added by B): refused with to-not-multiplexed"):
        raw.received = ""
        raw.send("<message from='x1@x.test/r' to='u@c.b.test' id='s2' type='chat'><body>hi</body></message>")
        got = raw.read_until("</refused>")
        assert "<to-not-multiplexed/>" in got and "id='s2'" in got, got[-400:]

    with t.check("the stream stays up: a granted stanza x.test -> bob@b.test is delivered"):
        body = f"granted {secrets.token_hex(3)}"
        raw.send(f"<message from='x1@x.test/r' to='bob@b.test' id='s3' type='chat'><body>{body}</body></message>")
        cl.wait_for(lambda: bob.has_body(body, "x1@x.test"), 15, "bob receives the granted message")
        assert not raw.closed

    with t.check("refusals counted (s2smuxctl stats mux.refused_in = 2) and logged"):
        n = stat(gw, "mux.refused_in")
        assert n == 2, f"mux.refused_in = {n}"
        log = gw.log_text()
        assert "mux: refused <message/> from eve@y.test/r to bob@b.test: from-not-multiplexed (not delivered)" in log
    raw.close()

    strict = RawS2S("127.0.0.1", gws.outer_port, "x.test", "b.test", cert=x, ca_file=pki.ca_file)
    with t.check("strict mode: the first refused stanza closes the stream with <policy-violation/>"):
        strict.authenticate(bidi=True)
        strict.enable_mux()
        strict.send("<message from='eve@y.test/r' to='bob@b.test' id='s4' type='chat'><body>x</body></message>")
        got = strict.read_until("</stream:stream>")
        assert "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in got, got[-400:]
        assert strict.wait_closed(5), "the strict gateway did not close the connection"
        assert stat(gws, "mux.refused_in") == 1
    strict.close()


if __name__ == "__main__":
    run(main, timeout=90)
