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
import statistics
import subprocess
import time

from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from harness.scenarios import check_message
from harness.sockets import established


class Stream:
    """A steady stream of messages from one client to another."""

    def __init__(self, cl, sender, rcpt_jid, rcpt):
        self.cl, self.sender, self.rcpt_jid, self.rcpt = cl, sender, rcpt_jid, rcpt
        self.sent: dict[str, float] = {}
        self.phase: dict[str, str] = {}

    def run_while(self, proc: subprocess.Popen | None, phase: str, seconds: float = 0.5, every: float = 0.01):
        """Send every `every` s while `proc` runs (and `seconds` more)."""
        end = None
        while True:
            body = f"steady {len(self.sent)} {secrets.token_hex(3)}"
            self.sent[body] = time.monotonic()
            self.phase[body] = phase
            self.sender.send_message(self.rcpt_jid, body)
            self.cl.sleep(every)
            if end is None and (proc is None or proc.poll() is not None):
                end = time.monotonic() + seconds
            if end is not None and time.monotonic() >= end:
                return

    def latencies(self, phase: str) -> list[float]:
        return [(self.rcpt.received_at[b] - t) * 1000 for b, t in self.sent.items()
                if self.phase[b] == phase and b in self.rcpt.received_at]

    def missing(self) -> list[str]:
        return [b for b in self.sent if b not in self.rcpt.received_at]


def pct(v: list[float], p: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100 * len(v)))] if v else float("nan")


def main(t):
    pki = t.pki()
    a_s2s, b_s2s, a_outer, b_outer = free_port(), free_port(), free_port(), free_port()
    ca, cb = pki.issue("a.test"), pki.issue("b.test")
    c1 = pki.issue("c.test", days=100)
    c2 = pki.issue("c.test", days=400, tag="renewal")
    gwa = S2smuxd(t.dir, name="s2smuxd-a", config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[ca], ca_file=pki.ca_file, upstream=f"127.0.0.1:{a_s2s}",
        outer=f"127.0.0.1:{a_outer}", routes=[{"domain": "b.test", "address": f"127.0.0.1:{b_outer}"}],
        log_level="info"))
    gwb = S2smuxd(t.dir, name="s2smuxd-b", config=S2smuxd.fronting_config(
        domains=["b.test"], certs=[cb], ca_file=pki.ca_file, upstream=f"127.0.0.1:{b_s2s}",
        outer=f"127.0.0.1:{b_outer}", routes=[{"domain": "*.test", "address": f"127.0.0.1:{a_outer}"}],
        log_level="info"))
    pa = Prosody(t.dir, "prosody-a", ["a.test", "c.test"], pki=pki, certs={"a.test": ca, "c.test": c1},
                 s2s_port=a_s2s, gateway=f"127.0.0.1:{gwa.inner_port}", s2s_secure_auth=False,
                 users={"alice": "pw", "carol": "pw"})
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, certs={"b.test": cb}, s2s_port=b_s2s,
                 gateway=f"127.0.0.1:{gwb.inner_port}", s2s_secure_auth=False, users={"bob": "pw"})
    with t.check("two gateways and two Prosody servers started", fatal=True):
        for s in (gwa, gwb, pa, pb):
            t.start(s)
    cl = t.clients()
    with t.check("alice@a.test, carol@c.test and bob@b.test logged in", fatal=True):
        alice = cl.connect("alice@a.test", "pw", pa.c2s_port)
        carol = cl.connect("carol@c.test", "pw", pa.c2s_port)
        bob = cl.connect("bob@b.test", "pw", pb.c2s_port)
    check_message(t, cl, alice, bob, label="a.test -> b.test over the new mux stream")
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
