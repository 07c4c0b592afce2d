#!/usr/bin/python3
"""Live certificate changes on a multiplexed stream, with traffic flowing.

Gateways A (a.test) and B (b.test) keep one multiplexed stream. Prosody A
also hosts c.test, which gateway A does not serve at first. While alice@a.test
sends a steady stream of messages to bob@b.test:
  1. `s2smuxctl cert add` loads c.test's certificate into A: it is added to
     the live stream (B accepts it), carol@c.test <-> bob@b.test works;
  2. `s2smuxctl cert replace` swaps in a renewal (same subject, later
     expiry): B lists the new expiry, carol's messages flow throughout;
  3. `s2smuxctl cert remove c.test`: carol's and bob's messages are refused
     with an error, never delivered.
Zero of alice's messages may be lost or bounced at any point; the latency
of her messages before/during/after each change is printed.

Run by hand: /usr/bin/python3 tests/interop/test_mux_live.py [--keep] [-v]
"""

import secrets
import subprocess

from harness.runner import run
from harness.scenarios import check_message
from harness.sockets import established
from harness.traffic import Stream, live_pair, pct


def main(t):
    pki = t.pki()
    c1 = pki.issue("c.test", days=100)
    c2 = pki.issue("c.test", days=400, tag="renewal")
    lp = live_pair(t, pki, c1)
    gwa, gwb, cl, alice, carol, bob = lp.gwa, lp.gwb, lp.cl, lp.alice, lp.carol, lp.bob
    a_outer, b_outer = lp.a_outer, lp.b_outer
    steady = Stream(cl, alice, "bob@b.test", bob)
    steady.run_while(None, "idle", seconds=1.0)

    with t.check("before the add: carol@c.test -> bob@b.test is refused (c.test not served)"):
        body = f"too early {secrets.token_hex(3)}"
        mid = carol.send_message("bob@b.test", body)
        cl.wait_for(lambda: carol.error_for(body, mid), 15, "a bounce for carol")
        assert not bob.has_body(body)

    with t.check("cert add c.test while traffic flows: accepted by the peer gateway"):
        proc = subprocess.Popen([str(gwa.binary.parent / "tools" / "ctl" / "s2smuxctl"), "--socket",
                                 str(gwa.admin_socket), "cert", "add", str(c1.chain), str(c1.key)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        steady.run_while(proc, "add")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, f"s2smuxctl failed: {err.strip()}"
        assert "accepted" in out, out
        t.note(out.strip().replace("\n", " | "))
    check_message(t, cl, carol, bob, label="after the add: carol@c.test -> bob@b.test delivered")
    check_message(t, cl, bob, carol, label="after the add: bob@b.test -> carol@c.test delivered")
    with t.check("gateway B lists c.test among the accepted peer certificates"):
        lines = gwb.ctl_ok("certs")
        row = [l for l in lines if "c.test" in l and l.startswith("peer ")]
        assert row, "\n".join(lines)
        t.note(row[0])
        expires_before = row[0].split()[2]

    with t.check("cert replace (renewal, same subject) while carol and alice keep talking"):
        carol_stream = Stream(cl, carol, "bob@b.test", bob)
        errors_before = len(carol.errors)
        proc = subprocess.Popen([str(gwa.binary.parent / "tools" / "ctl" / "s2smuxctl"), "--socket",
                                 str(gwa.admin_socket), "cert", "replace", str(c2.chain), str(c2.key)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        carol_stream.run_while(proc, "replace", seconds=0.5, every=0.01)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, f"s2smuxctl failed: {err.strip()}"
        cl.wait_for(lambda: not carol_stream.missing() or len(carol.errors) > errors_before, 15,
                    "carol's messages delivered")
        assert len(carol.errors) == errors_before, \
            f"carol got {len(carol.errors) - errors_before} bounce(s) during the replace"
        assert not carol_stream.missing(), f"{len(carol_stream.missing())} of carol's messages lost"
        row = [l for l in gwb.ctl_ok("certs") if "c.test" in l and l.startswith("peer ")]
        assert row and row[0].split()[2] != expires_before, f"expiry unchanged: {row}"
        t.note(f"c.test now expires {row[0].split()[2]} (was {expires_before}); "
               f"{len(carol_stream.sent)} messages from carol delivered during the replace")

    steady.run_while(None, "after", seconds=1.0)
    with t.check("cert remove c.test: carol's and bob's messages are refused, not delivered"):
        gwa.ctl_ok("cert", "remove", "c.test")
        body = f"after remove {secrets.token_hex(3)}"
        mid = carol.send_message("bob@b.test", body)
        body2 = f"after remove back {secrets.token_hex(3)}"
        mid2 = bob.send_message("carol@c.test", body2)
        cl.wait_for(lambda: carol.error_for(body, mid) and bob.error_for(body2, mid2), 15, "bounces for both")
        assert not bob.has_body(body) and not carol.has_body(body2)
        t.note(f"carol: {carol.error_for(body, mid)['error']['text']}")
        t.note(f"bob: {bob.error_for(body2, mid2)['error']['text']}")

    with t.check("zero loss: every steady message a.test -> b.test delivered, none bounced"):
        cl.wait_for(lambda: not steady.missing(), 20, "all steady messages delivered")
        assert not alice.errors, f"alice got {len(alice.errors)} bounce(s)"
        for phase in ("idle", "add", "after"):
            lat = steady.latencies(phase)
            t.note(f"{phase:6s}: {len(lat)} messages, latency p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms")
    with t.check("still exactly one TCP connection between the gateways"):
        n = established([a_outer, b_outer])
        assert n == 1, f"{n} connections"


if __name__ == "__main__":
    run(main, timeout=150)
