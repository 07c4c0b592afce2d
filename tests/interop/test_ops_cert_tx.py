#!/usr/bin/python3
"""Certificate transactions (cert new / set / commit / abort / show) under
traffic, through two real gateways each fronting a real Prosody.

Gateways A (a.test) and B (b.test) keep one multiplexed stream; Prosody A
also hosts c.test, which gateway A does not serve at first. While
alice@a.test sends a steady stream of messages to bob@b.test:
  1. `cert set` refuses a key that does not match, an untrusted chain and an
     expired certificate, each with one clear line and exit 1; the
     transaction stays empty and nothing changes;
  2. a staged c.test certificate that is aborted changes nothing: c.test is
     not served, carol@c.test -> bob@b.test is still refused;
  3. a commit that must fail (d.test's certificate also names c.test, which
     another certificate serves) changes nothing: no d.test, c.test still
     served by its own certificate, the transaction still staged;
  4. a committed c.test certificate is accepted by gateway B on the live
     stream: carol <-> bob works;
  5. a committed renewal (same subject) replaces it with no gap: B lists the
     new expiry, carol's messages keep flowing.
Zero of alice's messages may be lost or bounced.

Run by hand: /usr/bin/python3 tests/interop/test_ops_cert_tx.py [--keep] [-v]
"""

import secrets
import subprocess

from harness.runner import run
from harness.scenarios import check_message
from harness.sockets import established
from harness.traffic import Stream, live_pair, pct


def ctl_fails(gw, *args) -> str:
    r = gw.ctl(*args)
    assert r.returncode == 1, f"s2smuxctl {' '.join(args)}: exit {r.returncode}, expected 1: {r.stdout}{r.stderr}"
    err = r.stderr.strip()
    assert err.count("\n") == 0 and err, f"not one line: {err!r}"
    return err


def peer_row(gw, domain):
    return [l for l in gw.ctl_ok("certs") if domain in l and l.startswith("peer ")]


def main(t):
    pki = t.pki()
    c1 = pki.issue("c.test", days=100)
    c2 = pki.issue("c.test", days=400, tag="renewal")
    c_untrusted = pki.issue("c.test", ca=pki.untrusted_ca, tag="untrusted")
    c_expired = pki.issue("c.test", expired=True, tag="expired")
    d_conflict = pki.issue("d.test", names=["d.test", "c.test"], tag="conflict")
    lp = live_pair(t, pki, c1)
    gwa, gwb, cl, alice, carol, bob = lp.gwa, lp.gwb, lp.cl, lp.alice, lp.carol, lp.bob
    a_outer, b_outer = lp.a_outer, lp.b_outer
    other = pki.issue("e.test")  # its key does not match c.test's certificate
    steady = Stream(cl, alice, "bob@b.test", bob)
    steady.run_while(None, "idle", seconds=0.5)
    certs_before = gwa.ctl_ok("certs")

    with t.check("cert set without cert new: refused"):
        t.note(ctl_fails(gwa, "cert", "set", "nosuch", str(c1.chain), str(c1.key)))

    with t.check("cert new c: an empty transaction, listed by cert show"):
        gwa.ctl_ok("cert", "new", "c")
        rows = [l for l in gwa.ctl_ok("cert", "show") if l.startswith("transaction ")]
        assert len(rows) == 1 and " c " in rows[0] and "empty" in rows[0], rows
        t.note(ctl_fails(gwa, "cert", "new", "c"))  # already exists

    for label, chain, key, needle in [
        ("a key that does not match the certificate", c1.chain, other.key, "match"),
        ("an untrusted chain", c_untrusted.chain, c_untrusted.key, "untrusted"),
        ("an expired certificate", c_expired.chain, c_expired.key, "expired"),
    ]:
        with t.check(f"cert set with {label}: one clear error, transaction stays empty"):
            err = ctl_fails(gwa, "cert", "set", "c", str(chain), str(key))
            assert needle in err.lower(), err
            t.note(err)
            show = gwa.ctl_ok("cert", "show", "c")
            assert "state empty" in show, show

    with t.check("cert set with a valid c.test certificate: staged, validated, says it will add"):
        out = gwa.ctl_ok("cert", "set", "c", str(c1.chain), str(c1.key))
        text = "\n".join(out)
        assert "staged in c" in text and "c.test" in text and "will add" in text, text
        assert "chain verifies" in text, text
        t.note(" | ".join(out))
    with t.check("staged but not committed: c.test not served, carol -> bob still refused"):
        assert gwa.ctl_ok("certs") == certs_before
        body = f"staged {secrets.token_hex(3)}"
        mid = carol.send_message("bob@b.test", body)
        cl.wait_for(lambda: carol.error_for(body, mid), 15, "a bounce for carol")
        assert not bob.has_body(body)
    with t.check("cert abort c: nothing changed, transaction gone"):
        out = gwa.ctl_ok("cert", "abort", "c")
        assert "nothing changed" in out[0], out
        assert gwa.ctl_ok("certs") == certs_before
        assert not peer_row(gwb, "c.test")
        t.note(ctl_fails(gwa, "cert", "commit", "c"))

    with t.check("a commit that must fail (d.test's certificate also names c.test) changes nothing"):
        gwa.ctl_ok("cert", "new", "c")
        gwa.ctl_ok("cert", "set", "c", str(c1.chain), str(c1.key))
        gwa.ctl_ok("cert", "commit", "c")
        gwa.ctl_ok("cert", "new", "d")
        gwa.ctl_ok("cert", "set", "d", str(d_conflict.chain), str(d_conflict.key))
        before = gwa.ctl_ok("certs")
        domains_before = gwa.ctl_ok("domains")
        err = ctl_fails(gwa, "cert", "commit", "d")
        assert "c.test" in err and "another certificate" in err, err
        t.note(err)
        assert gwa.ctl_ok("certs") == before, "certificates changed"
        assert gwa.ctl_ok("domains") == domains_before, "domains changed"
        assert not any("d.test" in l for l in gwa.ctl_ok("domains"))
        assert "state staged" in "\n".join(gwa.ctl_ok("cert", "show", "d"))
        gwa.ctl_ok("cert", "abort", "d")

    with t.check("the committed c.test certificate was accepted by gateway B on the live stream"):
        cl.wait_for(lambda: peer_row(gwb, "c.test"), 15, "c.test accepted by B")
        t.note(peer_row(gwb, "c.test")[0])
    check_message(t, cl, carol, bob, label="after the commit: carol@c.test -> bob@b.test delivered")
    check_message(t, cl, bob, carol, label="after the commit: bob@b.test -> carol@c.test delivered")

    with t.check("commit of a renewal (same subject) while carol and alice talk: replaced with no gap"):
        expires_before = peer_row(gwb, "c.test")[0].split()[2]
        gwa.ctl_ok("cert", "new", "renew")
        out = gwa.ctl_ok("cert", "set", "renew", str(c2.chain), str(c2.key))
        assert "will replace" in "\n".join(out), out
        carol_stream = Stream(cl, carol, "bob@b.test", bob)
        errors_before = len(carol.errors)
        proc = subprocess.Popen([str(gwa.binary.parent / "tools" / "ctl" / "s2smuxctl"), "--socket",
                                 str(gwa.admin_socket), "cert", "commit", "renew"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        carol_stream.run_while(proc, "commit", seconds=0.5)
        steady.run_while(None, "commit", seconds=0.2)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, f"commit failed: {err.strip()}"
        assert "committed renew" in out and "replaced" in out and "accepted" in out, out
        t.note(out.strip().replace("\n", " | "))
        cl.wait_for(lambda: not carol_stream.missing() or len(carol.errors) > errors_before, 15,
                    "carol's messages delivered")
        assert len(carol.errors) == errors_before, "carol got bounces during the replace"
        assert not carol_stream.missing(), f"{len(carol_stream.missing())} of carol's messages lost"
        row = peer_row(gwb, "c.test")
        assert row and row[0].split()[2] != expires_before, f"expiry unchanged: {row}"
        t.note(f"c.test now expires {row[0].split()[2]} (was {expires_before})")
        assert not [l for l in gwa.ctl_ok("cert", "show") if l.startswith("transaction ")]

    with t.check("zero loss: every steady message a.test -> b.test delivered, none bounced"):
        cl.wait_for(lambda: not steady.missing(), 20, "all steady messages delivered")
        assert not alice.errors, f"alice got {len(alice.errors)} bounce(s)"
        for phase in ("idle", "commit"):
            lat = steady.latencies(phase)
            t.note(f"{phase:6s}: {len(lat)} messages, latency p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms")
    with t.check("still exactly one TCP connection between the gateways"):
        n = established([a_outer, b_outer])
        assert n == 1, f"{n} connections"


if __name__ == "__main__":
    run(main, timeout=150)
