#!/usr/bin/python3
"""Several domain pairs per upstream stream (dialback piggybacking), and idle upstream streams closed.

    Prosody A (a1..a8.test) - s2smuxd A == s2smuxd B - Prosody B (b1..b3.test)

Every pair (aI, bJ) gets one message each way (48 in all). Gateway B
delivers the 24 pairs aI -> bJ to Prosody B over upstream streams: the first
pair on a stream of its own, every further pair requested on an
authenticated stream with <db:result/> (XEP-0220 piggybacking), one pair per
originating domain on a stream (Prosody 0.12 forgets a domain's
authentication on a stream while it verifies another pair from it), so 3
streams (one per bJ a given aI writes to) instead of 24. Gateway A likewise
needs 8 streams for its 24 pairs bJ -> aI.

Checks: every message delivered exactly once, no bounce; the TCP connections
from each gateway to its Prosody's S2S port (kernel table) at most the
bound above; Prosody B verified piggybacked pairs (the gateway's log);
after [limits] upstream_idle_timeout (4 s here) without a stanza the
upstream streams are closed (no connection left, the log says so), and a
later message opens them again and is delivered.

S2SMUX_UPSTREAM_MAX_PAIRS=1 gives the figures without piggybacking (one
stream per pair; the bound checks then fail, as they should).

Run by hand: /usr/bin/python3 tests/interop/test_upstream_piggyback.py [--keep] [-v]
"""

import logging
import os
import re
import subprocess
import time

from harness.clouds import TwoClouds
from harness.conntable import by_listener, connections_between
from harness.matrix import MessageMatrix, interleaved, login_many
from harness.runner import run
from test_replay_live import replay_bin

N_A, N_B = 8, 3
IDLE = 4
MAX_PAIRS = int(os.environ.get("S2SMUX_UPSTREAM_MAX_PAIRS", "1000"))


def figure(text):
    print(f"#    {text}", flush=True)


_AUTH = re.compile(r"\[(s\d+) upstream-out (\S+)->(\S+) [^\]]*\] authenticated (\S+) -> (\S+) \(outgoing")


def upstream_pairs(log):
    """{stream: (header pair, [pairs authenticated on it])} from a gateway's log."""
    out = {}
    for s, hf, ht, f, to in _AUTH.findall(log):
        out.setdefault(s, ((hf, ht), []))[1].append((f, to))
    return out


def other_to(log):
    """Pairs authenticated on an upstream stream whose header names another 'to' domain."""
    return [(s, hdr, p) for s, (hdr, ps) in upstream_pairs(log).items() for p in ps if p[1] != hdr[1]]


def metric(gw, name):
    """The value of an unlabelled metric from `s2smuxctl metrics`."""
    for line in gw.ctl_ok("metrics"):
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def upstream_conns(prosody, gw):
    """TCP connections from the gateway to its Prosody's S2S port (upstream streams)."""
    return by_listener(connections_between(prosody, gw)).get(prosody.s2s_port, 0)


def main(t):
    clouds = TwoClouds(t.dir, t.pki(), N_A, N_B, gateway_log_level="debug",
                       gateway_limits={"upstream_idle_timeout": IDLE})
    for gw in (clouds.gwa, clouds.gwb):
        gw.config["upstream"]["max_pairs_per_stream"] = MAX_PAIRS
    cap = t.dir / "gwb.cap"
    with t.check("two gateways and two Prosody servers started, gateway B capturing", fatal=True):
        for s in clouds.servers():
            t.start(s, timeout=60)
            if s is clouds.gwb:
                s.ctl_ok("capture", "start", "*", str(cap))

    cl = t.clients(level=logging.INFO)
    with t.check(f"{N_A + N_B} users logged in", fatal=True):
        users = login_many(cl, clouds.accounts(), timeout=60)
    a_users = [users[f"u@{d}"] for d in clouds.a_domains]
    b_users = [users[f"u@{d}"] for d in clouds.b_domains]

    m = MessageMatrix(cl)
    first = m.add(a_users[0], f"u@{clouds.b_domains[0]}")
    with t.check(f"first message {first.pair} delivered (opens the streams)", fatal=True):
        r = m.run(window=1, deadline=30, order=[first])
        assert first.status == "delivered", r.summary()

    # Alone, so that it can only ride on the first stream, whose header names b1.
    second = m.add(a_users[1], f"u@{clouds.b_domains[1]}")
    with t.check(f"message {second.pair} delivered (piggybacked on the first stream)", fatal=True):
        r = m.run(window=1, deadline=30, order=[second])
        assert second.status == "delivered", r.summary()

    pairs = [(i, j) for i in range(N_A) for j in range(N_B)]
    a_to_b = [m.add(a_users[i], f"u@{clouds.b_domains[j]}") for i, j in pairs if (i, j) not in ((0, 0), (1, 1))]
    b_to_a = [m.add(b_users[j], f"u@{clouds.a_domains[i]}") for i, j in pairs]
    with t.check(f"all {len(m.planned)} messages delivered exactly once ({N_A}x{N_B} pairs, both ways)"):
        r = m.run(window=20, deadline=60, order=interleaved([a_to_b, b_to_a]))
        res = m.result()
        figure(res.summary())
        assert res.ok, res.summary()

    with t.check("few upstream connections: piggybacked pairs (kernel TCP table)"):
        nb, na = upstream_conns(clouds.pb, clouds.gwb), upstream_conns(clouds.pa, clouds.gwa)
        figure(f"s2smuxd B -> Prosody B: {nb} TCP connection(s) for {len(pairs)} pairs "
               f"(max_pairs_per_stream {MAX_PAIRS}); s2smuxd A -> Prosody A: {na} for {len(pairs)} pairs")
        assert 1 <= nb <= N_B, f"{nb} upstream connections from gateway B (expected at most {N_B})"
        assert 1 <= na <= N_A, f"{na} upstream connections from gateway A (expected at most {N_A})"

    with t.check("the pairs were requested on authenticated streams and verified by Prosody"):
        log = clouds.gwb.log_text()
        asked = log.count("(dialback piggybacking)")
        figure(f"gateway B requested {asked} pair(s) on established upstream streams")
        assert asked >= len(pairs) - N_B, f"only {asked} piggybacked requests"
        diff = other_to(log)
        figure(f"{len(diff)} pair(s) authenticated on a stream whose header names another 'to', e.g. {diff[:1]}")
        assert diff, "Prosody never accepted a pair with another 'to' than the stream header's"
        assert "refused on this stream" not in log
        assert "does not take further domain pairs" not in log
        assert metric(clouds.gwb, "s2smux_upstream_piggybacked_total") == asked
        assert metric(clouds.gwb, "s2smux_upstream_piggyback_failed_total") == 0
        assert metric(clouds.gwb, "s2smux_upstream_piggyback_refused") == 0

    with t.check("gateway B's capture (piggybacked requests included) replays deterministically"):
        clouds.gwb.ctl_ok("capture", "stop")
        assert " request-pair " in cap.read_text(), "no request-pair call recorded"
        r = subprocess.run([replay_bin(), str(cap)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=60)
        assert r.returncode == 0 and " 0 failed" in r.stdout, r.stdout[-2000:]

    with t.check(f"idle upstream streams closed after {IDLE} s without a stanza"):
        deadline = time.monotonic() + IDLE + 8
        while time.monotonic() < deadline and (upstream_conns(clouds.pb, clouds.gwb)
                                               or upstream_conns(clouds.pa, clouds.gwa)):
            time.sleep(0.5)
        nb, na = upstream_conns(clouds.pb, clouds.gwb), upstream_conns(clouds.pa, clouds.gwa)
        assert nb == 0 and na == 0, f"still {nb} (B) and {na} (A) upstream connections"
        assert "closing the idle upstream stream" in clouds.gwb.log_text()
        assert metric(clouds.gwb, "s2smux_upstream_idle_closed_total") >= 1
        assert metric(clouds.gwb, "s2smux_upstream_pairs") == 0

    with t.check("after the idle close, new messages open upstream streams again and are delivered"):
        again = [m.add(a_users[i], f"u@{clouds.b_domains[i % N_B]}") for i in range(N_A)]
        again += [m.add(b_users[j], f"u@{clouds.a_domains[j]}") for j in range(N_B)]
        r = m.run(window=20, deadline=30, order=again)
        res = m.result()
        assert res.ok, res.summary()
        nb = upstream_conns(clouds.pb, clouds.gwb)
        assert 1 <= nb <= N_B, f"{nb} upstream connections from gateway B"


if __name__ == "__main__":
    run(main, timeout=170)
