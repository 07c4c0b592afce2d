#!/usr/bin/python3
"""Malformed XML, restricted XML and oversize stanzas from a remote.

A raw S2S peer authenticates to the gateway's outer listener as b.test
(STARTTLS + SASL EXTERNAL with a valid demo-CA certificate) and then sends
bad input on fresh streams, one case per stream. Each case must end that
stream with the right RFC 6120 stream error and a log line, while the
gateway keeps serving everyone else: alice@a.test and bob@b.test (Prosody
behind the gateway / plain Prosody) exchange messages before and after, over
streams that were never interrupted.

Run by hand: /usr/bin/python3 tests/interop/test_gateway_bad_input.py [--keep] [-v]
"""

from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.raw_s2s import RawS2S
from harness.runner import run
from harness.scenarios import check_message

MAX_STANZA = 16384

CASES = [
    # (label, payload, expected stream error condition)
    ("oversize stanza", "<message from='x@b.test' to='alice@a.test'><body>" + "x" * (MAX_STANZA * 2) +
     "</body></message>", "policy-violation"),
    ("malformed XML (mismatched tag)", "<message from='x@b.test' to='alice@a.test'><body>hi</message>",
     "not-well-formed"),
    ("restricted XML (comment)", "<!-- hello -->", "restricted-xml"),
    ("restricted XML (processing instruction)", "<?evil instruction?>", "restricted-xml"),
    ("restricted XML (entity reference)", "<message from='x@b.test' to='alice@a.test'><body>&xxe;</body></message>",
     "restricted-xml"),
    ("deeply nested stanza", "<message from='x@b.test' to='alice@a.test'>" + "<a>" * 200 + "</a>" * 200 + "</message>",
     "policy-violation"),
    ("stanza from a domain not authenticated", "<message from='eve@evil.test' to='alice@a.test'><body>x</body></message>",
     "invalid-from"),
]


def main(t):
    pki = t.pki()
    a_s2s, b_s2s = free_port(), free_port()
    gw = S2smuxd(t.dir, config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[pki.issue("a.test")], ca_file=pki.ca_file,
        upstream=f"127.0.0.1:{a_s2s}", limits={"max_stanza_bytes": MAX_STANZA},
        routes=[{"domain": "b.test", "address": f"127.0.0.1:{b_s2s}"}]))
    pa = Prosody(t.dir, "prosody-a", ["a.test"], pki=pki, s2s_port=a_s2s,
                 gateway=f"127.0.0.1:{gw.inner_port}", s2s_secure_auth=False,
                 users={"alice": "alice-pw"})
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, s2s_port=b_s2s,
                 routes={"a.test": f"127.0.0.1:{gw.outer_port}"}, s2s_secure_auth=True,
                 users={"bob": "bob-pw"})
    with t.check("s2smuxd and two Prosody servers started", fatal=True):
        for s in (gw, pa, pb):
            t.start(s)
    cl = t.clients()
    with t.check("clients logged in", fatal=True):
        alice = cl.connect("alice@a.test", "alice-pw", pa.c2s_port)
        bob = cl.connect("bob@b.test", "bob-pw", pb.c2s_port)
    check_message(t, cl, alice, bob, label="before: message a.test -> b.test")
    check_message(t, cl, bob, alice, label="before: message b.test -> a.test")
    streams_before = gw.log_text().count("accepted connection")

    b_cert = pki.issue("b.test", tag="raw")
    for label, payload, cond in CASES:
        with t.check(f"{label}: <{cond}/> and the stream is closed"):
            raw = RawS2S("127.0.0.1", gw.outer_port, "b.test", "a.test", cert=b_cert, ca_file=pki.ca_file)
            try:
                raw.authenticate()
                raw.send(payload)
                raw.read_until(f"<{cond} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>")
                raw.read_until("</stream:stream>")
                assert raw.wait_closed(5), "gateway did not close the connection"
            finally:
                raw.close()

    with t.check("a malformed stream header gets <not-well-formed/> before anything else"):
        raw = RawS2S("127.0.0.1", gw.outer_port, "b.test", "a.test")
        try:
            raw.send("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='a.test' version='1.0'<<")
            raw.read_until("<not-well-formed")
            assert raw.wait_closed(5)
        finally:
            raw.close()

    check_message(t, cl, alice, bob, label="after: message a.test -> b.test")
    check_message(t, cl, bob, alice, label="after: message b.test -> a.test")
    log = gw.log_text()
    with t.check("gateway logged each stream error and kept the legitimate streams"):
        for _, _, cond in CASES:
            assert f"stream error <{cond}/>" in log, f"no 'stream error <{cond}/>' in the gateway log"
        # Only the raw connections were added: Prosody B's stream was never re-established.
        accepted = log.count("accepted connection") - streams_before
        assert accepted == len(CASES) + 1, f"{accepted} new incoming connections, want {len(CASES) + 1}"
        assert "Fatal" not in log and "terminate" not in log


if __name__ == "__main__":
    run(main, timeout=120)
