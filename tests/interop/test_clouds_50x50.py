#!/usr/bin/python3
"""Two clouds of 50 domains: every domain pair, both ways, through two gateways.

    Prosody A (a1.test .. a50.test) - s2smuxd A == s2smuxd B - Prosody B (b1.test .. b50.test)

One user u@DOMAIN per domain (100 slixmpp clients on one asyncio loop). For
every pair (aI, bJ) one message u@aI.test -> u@bJ.test and one back, 5,000 in
all, each with a unique token; at most WINDOW in flight at once, one overall
deadline. The first message (a1 -> b1) goes alone, so that the gateways'
first stream exists before the flood (with multiplexing: the one stream).

Checks: servers start; 100 logins; every one of the 5,000 messages delivered
to the right user from the right sender, no bounce, no duplicate (the report
names every missing pair and every bounce with its condition); and, ONLY when
EXPECT_ONE_CONNECTION is on, exactly one TCP connection between the two
gateways. The connection figures (gateway <-> gateway, each Prosody <-> its
gateway, split by the listener that accepted them) and the peak descriptor
counts are always printed as '#' lines.

With standard S2S the gateways open one stream per domain pair (thousands of
connections); once multiplexing carries every pair over one connection, turn
EXPECT_ONE_CONNECTION on (here or S2SMUX_EXPECT_ONE_CONNECTION=1).

Environment (all optional):
  S2SMUX_EXPECT_ONE_CONNECTION=0|1   override EXPECT_ONE_CONNECTION below
  S2SMUX_CLOUDS_MUX=0|1              write [mux] enabled = false|true (unset: daemon default)
  S2SMUX_CLOUDS_N=50                 domains per cloud (10, 25, ... for smaller runs)
  S2SMUX_CLOUDS_WINDOW=300           messages in flight at most
  S2SMUX_CLOUDS_RATE=                messages sent per second at most (unset: window only)
  S2SMUX_CLOUDS_DEADLINE=120         seconds for sending and delivering everything
  S2SMUX_CLOUDS_ORDER=mixed          both directions together (default)
                    a-first        every A->B send first, then B->A (no waiting between)
                    phased         every A->B delivered before the first B->A is sent
  S2SMUX_CLOUDS_CERTS=per-domain|shared
  S2SMUX_CLOUDS_DEBUG=1              debug logs: gateways at "debug", Prosody with every stanza
                                     (slow: for small N when something fails)

Run by hand: /usr/bin/python3 tests/interop/test_clouds_50x50.py [--keep] [-v]
"""

import logging
import os
import time

from harness.clouds import TwoClouds
from harness.conntable import by_listener, connections_between
from harness.fdlimit import FdSampler, process_limits, raise_nofile
from harness.matrix import MessageMatrix, interleaved, login_many
from harness.runner import run

# Switch on when multiplexing carries every domain pair between the two
# gateways over ONE TCP connection (the acceptance criterion of issue 4).
EXPECT_ONE_CONNECTION = True


def env(name, default, conv=str):
    v = os.environ.get(name)
    return conv(v) if v not in (None, "") else default


def flag(name, default):
    v = os.environ.get(name)
    if v in (None, ""):
        return default
    return v.lower() not in ("0", "no", "false", "off")


N = env("S2SMUX_CLOUDS_N", 50, int)
WINDOW = env("S2SMUX_CLOUDS_WINDOW", 300, int)
RATE = env("S2SMUX_CLOUDS_RATE", None, float)
DEADLINE = env("S2SMUX_CLOUDS_DEADLINE", 120.0, float)
ORDER = env("S2SMUX_CLOUDS_ORDER", "mixed")
CERTS = env("S2SMUX_CLOUDS_CERTS", "per-domain")
MUX = flag("S2SMUX_CLOUDS_MUX", None)
DEBUG = flag("S2SMUX_CLOUDS_DEBUG", False)
EXPECT_ONE = flag("S2SMUX_EXPECT_ONE_CONNECTION", EXPECT_ONE_CONNECTION)


def figure(text):
    """A '#' line that is always printed (the figures are the point of this test)."""
    print(f"#    {text}", flush=True)


def spread(pairs):
    """Order (i, j) index pairs diagonal by diagonal, so that consecutive
    messages have different senders and different recipient domains."""
    m = 1 + max(j for _, j in pairs)
    return sorted(pairs, key=lambda p: ((p[1] - p[0]) % m, p[0]))


def main(t):
    # Standard S2S: per process about 2 sockets per domain pair and direction
    # (Prosody: outbound to the inner listener + inbound from the gateway;
    # gateway: inner + upstream + outer), plus logs, clients, listeners.
    # Worst case (crossing streams: two outer connections per pair): 4 per pair.
    need = 4 * N * N + 512
    old, soft, hard = raise_nofile(need)
    figure(f"RLIMIT_NOFILE: soft {old} -> {soft}, hard {hard}; estimated need per server "
           f"with one stream per domain pair: {need}")
    with t.check("RLIMIT_NOFILE allows one stream per domain pair "
                 f"(>= {3 * N * N + 512}: inner + upstream + outer per pair)"):
        assert soft == -1 or soft >= 3 * N * N + 512, (
            f"soft limit {soft} (hard {hard}) is too low for {N}x{N} domain pairs: "
            f"raise the hard limit (ulimit -Hn) or run with a smaller S2SMUX_CLOUDS_N")

    t0 = time.monotonic()
    clouds = TwoClouds(t.dir, t.pki(), N, N, cert_mode=CERTS, mux=MUX,
                       gateway_log_level="debug" if DEBUG else "info",
                       prosody_log_level="debug" if DEBUG else "info", stanza_debug=DEBUG)
    figure(f"{2 * N} domain certificates ({CERTS}) issued in {time.monotonic() - t0:.2f} s")

    with t.check(f"two gateways and two Prosody servers ({N} VirtualHosts each) started", fatal=True):
        for s in clouds.servers():
            t0 = time.monotonic()
            t.start(s, timeout=60)
            figure(f"started {s.name} in {time.monotonic() - t0:.2f} s "
                   f"(RLIMIT_NOFILE soft/hard {process_limits(s.proc.pid)})")

    cl = t.clients(level=logging.INFO)
    with t.check(f"{2 * N} users logged in (u@a1.test .. u@b{N}.test)", fatal=True):
        t0 = time.monotonic()
        users = login_many(cl, clouds.accounts(), timeout=60)
        figure(f"{len(users)} logins in {time.monotonic() - t0:.2f} s")

    a_users = [users[f"u@{d}"] for d in clouds.a_domains]
    b_users = [users[f"u@{d}"] for d in clouds.b_domains]
    m = MessageMatrix(cl)
    pairs = spread([(i, j) for i in range(N) for j in range(N)])
    first = m.add(a_users[0], f"u@{clouds.b_domains[0]}")
    a_to_b = [m.add(a_users[i], f"u@{clouds.b_domains[j]}") for i, j in pairs if (i, j) != (0, 0)]
    b_to_a = [m.add(b_users[j], f"u@{clouds.a_domains[i]}") for i, j in pairs]
    if ORDER == "mixed":
        phases = [interleaved([a_to_b, b_to_a])]
    elif ORDER == "a-first":
        phases = [a_to_b + b_to_a]
    elif ORDER == "phased":
        phases = [a_to_b, b_to_a]
    else:
        raise ValueError(f"S2SMUX_CLOUDS_ORDER={ORDER!r}: expected mixed, a-first or phased")

    servers = {s.name: s.proc.pid for s in clouds.servers()}
    servers["clients"] = os.getpid()
    fds = FdSampler(servers)
    gw_peak = {"n": 0}
    last_conn_sample = {"at": 0.0}

    def tick():
        now_fds = fds.sample()
        now = time.monotonic()
        if now - last_conn_sample["at"] >= 5.0:
            last_conn_sample["at"] = now
            gw_peak["n"] = max(gw_peak["n"], len(connections_between(clouds.gwa, clouds.gwb)))
        r = m.result()
        t.note(f"{len(r.delivered)} delivered, {len(r.bounced)} bounced, {m.in_flight} in flight; "
               f"fds {now_fds}")

    with t.check(f"first message {first.pair} delivered (opens the gateways' stream)"):
        r = m.run(window=1, deadline=20, order=[first])
        assert first.status == "delivered", r.summary()
        figure(f"first message delivered in {r.elapsed:.2f} s")

    total = len(m.planned)
    with t.check(f"all {total} messages delivered ({N}x{N} domain pairs, both ways), no bounces"):
        t0 = time.monotonic()
        send_elapsed = 0.0
        for phase in phases:
            left = DEADLINE - (time.monotonic() - t0)
            r = m.run(window=WINDOW, rate=RATE, deadline=max(0.0, left), order=phase, on_tick=tick)
            send_elapsed = time.monotonic() - t0 - r.elapsed + r.send_elapsed
        fds.sample()
        res = m.result(time.monotonic() - t0, send_elapsed, WINDOW, RATE)
        figure(f"order {ORDER}: " + res.summary())
        figure(f"CPU used from the first message to the last: {fds.cpu_summary()}")
        assert res.ok, res.summary()

    with t.check("connection figures recorded"):
        gw = connections_between(clouds.gwa, clouds.gwb)
        gw_peak["n"] = max(gw_peak["n"], len(gw))
        per_port = by_listener(gw)
        figure(f"TCP connections between the gateways: {len(gw)} (peak sampled {gw_peak['n']}); "
               f"opened by A (accepted on B's outer {clouds.b_outer}): {per_port.get(clouds.b_outer, 0)}, "
               f"opened by B (accepted on A's outer {clouds.a_outer}): {per_port.get(clouds.a_outer, 0)}")
        for side, p, g in (("A", clouds.pa, clouds.gwa), ("B", clouds.pb, clouds.gwb)):
            conns = connections_between(p, g)
            pp = by_listener(conns)
            figure(f"TCP connections Prosody {side} <-> s2smuxd {side}: {len(conns)}; "
                   f"Prosody -> inner {g.inner_port}: {pp.get(g.inner_port, 0)}, "
                   f"gateway -> upstream {p.s2s_port}: {pp.get(p.s2s_port, 0)}")
        figure(f"peak open descriptors: {fds.summary()}")
        mux_cfg = "daemon default" if MUX is None else f"[mux] enabled = {str(MUX).lower()}"
        figure(f"multiplexing ({mux_cfg}): 'multiplexing enabled' logged "
               f"{clouds.gwa.log_text().count('multiplexing enabled')} time(s) by A, "
               f"{clouds.gwb.log_text().count('multiplexing enabled')} by B")

    if EXPECT_ONE:
        with t.check("exactly one TCP connection between the two gateways (multiplexing)"):
            n = len(connections_between(clouds.gwa, clouds.gwb))
            assert n == 1, f"{n} TCP connections between s2smuxd A and s2smuxd B"
            assert gw_peak["n"] <= 1, (f"one connection now, but {gw_peak['n']} at once while "
                                       f"the messages were flowing (sampled every 5 s)")
    else:
        figure("one-connection check not run (EXPECT_ONE_CONNECTION off; "
               "S2SMUX_EXPECT_ONE_CONNECTION=1 to run it)")

    t0 = time.monotonic()
    t.close_clients()
    figure(f"{2 * N} clients disconnected in {time.monotonic() - t0:.2f} s")
    t0 = time.monotonic()
    took = clouds.stop()
    figure(f"servers stopped in {time.monotonic() - t0:.2f} s ("
           + ", ".join(f"{k} {v:.2f} s" for k, v in took.items()) + ")")


if __name__ == "__main__":
    run(main, timeout=350)
