"""Steady message streams between two clients, for zero-loss and latency
checks while the gateways change (live adds, transactions, reloads)."""

import secrets
import subprocess
import time


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


def live_pair(t, pki, c_cert, tweak_a=None, before_start=None):
    """Gateways A (a.test) and B (b.test) with one multiplexed stream, each
    fronting a Prosody: Prosody A hosts a.test and c.test (whose certificate
    gateway A does not load at first), Prosody B hosts b.test. Starts all
    four, logs in alice@a.test, carol@c.test and bob@b.test, and checks
    a.test -> b.test. `tweak_a(config)` edits A's config, `before_start(gwa)`
    runs before anything starts. Returns a SimpleNamespace."""
    from types import SimpleNamespace

    from harness.gateway import S2smuxd
    from harness.ports import free_port
    from harness.prosody import Prosody
    from harness.scenarios import check_message

    a_s2s, b_s2s, a_outer, b_outer = free_port(), free_port(), free_port(), free_port()
    ca, cb = pki.issue("a.test"), pki.issue("b.test")
    cfg_a = S2smuxd.fronting_config(
        domains=["a.test"], certs=[ca], ca_file=pki.ca_file, upstream=f"127.0.0.1:{a_s2s}",
        outer=f"127.0.0.1:{a_outer}", routes=[{"domain": "b.test", "address": f"127.0.0.1:{b_outer}"}],
        log_level="info")
    if tweak_a:
        tweak_a(cfg_a)
    gwa = S2smuxd(t.dir, name="s2smuxd-a", config=cfg_a)
    gwb = S2smuxd(t.dir, name="s2smuxd-b", config=S2smuxd.fronting_config(
        domains=["b.test"], certs=[cb], ca_file=pki.ca_file, upstream=f"127.0.0.1:{b_s2s}",
        outer=f"127.0.0.1:{b_outer}", routes=[{"domain": "*.test", "address": f"127.0.0.1:{a_outer}"}],
        log_level="info"))
    pa = Prosody(t.dir, "prosody-a", ["a.test", "c.test"], pki=pki, certs={"a.test": ca, "c.test": c_cert},
                 s2s_port=a_s2s, gateway=f"127.0.0.1:{gwa.inner_port}", s2s_secure_auth=False,
                 users={"alice": "pw", "carol": "pw"})
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, certs={"b.test": cb}, s2s_port=b_s2s,
                 gateway=f"127.0.0.1:{gwb.inner_port}", s2s_secure_auth=False, users={"bob": "pw"})
    if before_start:
        before_start(gwa)
    with t.check("two gateways and two Prosody servers started", fatal=True):
        for s in (gwa, gwb, pa, pb):
            t.start(s)
    cl = t.clients()
    with t.check("alice@a.test, carol@c.test and bob@b.test logged in", fatal=True):
        alice = cl.connect("alice@a.test", "pw", pa.c2s_port)
        carol = cl.connect("carol@c.test", "pw", pa.c2s_port)
        bob = cl.connect("bob@b.test", "pw", pb.c2s_port)
    check_message(t, cl, alice, bob, label="a.test -> b.test over the multiplexed stream")
    return SimpleNamespace(gwa=gwa, gwb=gwb, pa=pa, pb=pb, a_outer=a_outer, b_outer=b_outer, cfg_a=cfg_a,
                           cl=cl, alice=alice, carol=carol, bob=bob)
