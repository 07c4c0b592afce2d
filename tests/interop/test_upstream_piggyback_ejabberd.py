#!/usr/bin/python3
"""ejabberd (a1..a3.test) behind s2smuxd takes several domain pairs per upstream stream.

    Prosody B (b1..b4.test) --standard S2S--> s2smuxd --upstream--> ejabberd (a1..a3.test)

Layout as test_gateway_ejabberd_local.py (ejabberd's outbound S2S reaches the
gateway's inner listener through a split-horizon dnsmasq, which is also how
it verifies the gateway's dialback keys), with several domains on each side.
Every pair gets one message each way (24). The gateway delivers the 12 pairs
bJ -> aI to ejabberd: the first on a stream of its own, the others requested
on authenticated streams with <db:result/> (XEP-0220 piggybacking), one pair
per originating domain on a stream: 3 streams (one per aI) instead of 12.

Checks: every message delivered exactly once, no bounce; at most 3 TCP
connections from the gateway to ejabberd's S2S port (kernel table); ejabberd
verified piggybacked pairs, with 'to' domains other than the stream's.

Run by hand: /usr/bin/python3 tests/interop/test_upstream_piggyback_ejabberd.py [--keep] [-v]
"""

import logging

from harness.clouds import cloud_domains
from harness.conntable import by_listener, connections_between
from harness.dnsmasq import Dns
from harness.ejabberd import Ejabberd
from harness.gateway import S2smuxd
from harness.matrix import MessageMatrix, interleaved, login_many
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from test_upstream_piggyback import other_to

N_A, N_B = 3, 4


def figure(text):
    print(f"#    {text}", flush=True)


def main(t):
    pki = t.pki()
    a_domains, b_domains = cloud_domains("a", N_A), cloud_domains("b", N_B)
    a_s2s, b_s2s = free_port(), free_port()
    gw = S2smuxd(t.dir, config=S2smuxd.fronting_config(
        domains=a_domains, certs=[pki.issue(d) for d in a_domains], ca_file=pki.ca_file,
        upstream=f"127.0.0.1:{a_s2s}",
        routes=[{"domain": d, "address": f"127.0.0.1:{b_s2s}"} for d in b_domains]))
    view = Dns(t.dir, name="split-horizon")
    for d in b_domains:
        view.xmpp_server(d, gw.inner_port)
    ea = Ejabberd(t.dir, "ejabberd-a", a_domains, pki=pki, s2s_port=a_s2s, dns_port=view.port,
                  s2s_use_starttls="optional", users={"u": "pw"}, loglevel="info")
    pb = Prosody(t.dir, "prosody-b", b_domains, pki=pki, s2s_port=b_s2s,
                 routes={d: f"127.0.0.1:{gw.outer_port}" for d in a_domains}, s2s_secure_auth=True,
                 users={"u": "pw"}, stanza_debug=False)
    with t.check("dnsmasq, s2smuxd, ejabberd and Prosody started", fatal=True):
        t.start(view)
        t.start(gw)
        t.start(pb)
        t.start(ea, timeout=30)

    cl = t.clients(level=logging.INFO)
    with t.check(f"{N_A + N_B} users logged in", fatal=True):
        users = login_many(cl, [(f"u@{d}", "pw", ea.c2s_port) for d in a_domains]
                           + [(f"u@{d}", "pw", pb.c2s_port) for d in b_domains], timeout=60)
    m = MessageMatrix(cl)
    first = m.add(users[f"u@{b_domains[0]}"], f"u@{a_domains[0]}")
    with t.check(f"first message {first.pair} delivered (opens the upstream stream)", fatal=True):
        r = m.run(window=1, deadline=30, order=[first])
        assert first.status == "delivered", r.summary()

    # Alone, so that it can only ride on the first stream, whose header names a1.
    second = m.add(users[f"u@{b_domains[1]}"], f"u@{a_domains[1]}")
    with t.check(f"message {second.pair} delivered (piggybacked on the first stream)", fatal=True):
        r = m.run(window=1, deadline=30, order=[second])
        assert second.status == "delivered", r.summary()

    pairs = [(i, j) for i in range(N_A) for j in range(N_B)]
    b_to_a = [m.add(users[f"u@{b_domains[j]}"], f"u@{a_domains[i]}") for i, j in pairs
              if (i, j) not in ((0, 0), (1, 1))]
    a_to_b = [m.add(users[f"u@{a_domains[i]}"], f"u@{b_domains[j]}") for i, j in pairs]
    with t.check(f"all {len(m.planned)} messages delivered exactly once ({N_A}x{N_B} pairs, both ways)"):
        m.run(window=12, deadline=60, order=interleaved([b_to_a, a_to_b]))
        res = m.result()
        figure(res.summary())
        assert res.ok, res.summary()

    with t.check("few upstream connections to ejabberd: piggybacked pairs (kernel TCP table)"):
        n = by_listener(connections_between(ea, gw)).get(ea.s2s_port, 0)
        figure(f"s2smuxd -> ejabberd: {n} TCP connection(s) for {len(pairs)} pairs")
        assert 1 <= n <= N_A, f"{n} upstream connections (expected at most {N_A})"

    with t.check("ejabberd verified piggybacked pairs, also with another 'to' than the stream's"):
        log = gw.log_text()
        asked = log.count("(dialback piggybacking)")
        figure(f"the gateway requested {asked} pair(s) on established upstream streams")
        assert asked >= len(pairs) - N_A, f"only {asked} piggybacked requests"
        assert "refused on this stream" not in log
        assert "does not take further domain pairs" not in log
        diff = other_to(log)
        figure(f"{len(diff)} pair(s) authenticated on a stream whose header names another 'to', e.g. {diff[:1]}")
        assert diff, "ejabberd never accepted a pair with another 'to' than the stream header's"


if __name__ == "__main__":
    run(main, timeout=170)
