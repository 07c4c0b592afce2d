#!/usr/bin/python3
"""Multiplexing between two gateways, two domains each side.

Prosody A hosts a.test and a2.test behind s2smuxd A; Prosody B hosts b.test
and b2.test behind s2smuxd B. Each domain has its own certificate. The
gateways authenticate a.test/b.test in the TLS handshake and SASL EXTERNAL,
enable multiplexing and add a2.test and b2.test with proofs; every domain
pair then travels over ONE TCP connection between the gateways.

Checks: a message for each of the 4 domain pairs both ways; the adds were
accepted on both gateways; exactly one TCP connection between the gateways'
outer ports.

Run by hand: /usr/bin/python3 tests/interop/test_mux_basic.py [--keep] [-v]
"""

from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from harness.scenarios import check_message
from harness.sockets import established


def main(t):
    pki = t.pki()
    a_s2s, b_s2s = free_port(), free_port()
    a_outer, b_outer = free_port(), free_port()
    certs = {d: pki.issue(d) for d in ("a.test", "a2.test", "b.test", "b2.test")}
    gwa = S2smuxd(t.dir, name="s2smuxd-a", config=S2smuxd.fronting_config(
        domains=["a.test", "a2.test"], certs=[certs["a.test"], certs["a2.test"]], ca_file=pki.ca_file,
        upstream=f"127.0.0.1:{a_s2s}", outer=f"127.0.0.1:{a_outer}",
        routes=[{"domain": "*.test", "address": f"127.0.0.1:{b_outer}"}]))
    gwb = S2smuxd(t.dir, name="s2smuxd-b", config=S2smuxd.fronting_config(
        domains=["b.test", "b2.test"], certs=[certs["b.test"], certs["b2.test"]], ca_file=pki.ca_file,
        upstream=f"127.0.0.1:{b_s2s}", outer=f"127.0.0.1:{b_outer}",
        routes=[{"domain": "*.test", "address": f"127.0.0.1:{a_outer}"}]))
    pa = Prosody(t.dir, "prosody-a", ["a.test", "a2.test"], pki=pki, s2s_port=a_s2s,
                 certs={d: certs[d] for d in ("a.test", "a2.test")},
                 gateway=f"127.0.0.1:{gwa.inner_port}", s2s_secure_auth=False, users={"u": "pw"})
    pb = Prosody(t.dir, "prosody-b", ["b.test", "b2.test"], pki=pki, s2s_port=b_s2s,
                 certs={d: certs[d] for d in ("b.test", "b2.test")},
                 gateway=f"127.0.0.1:{gwb.inner_port}", s2s_secure_auth=False, users={"u": "pw"})
    with t.check("two gateways and two Prosody servers started", fatal=True):
        for s in (gwa, gwb, pa, pb):
            t.start(s)

    cl = t.clients()
    with t.check("four users logged in", fatal=True):
        users = {d: cl.connect(f"u@{d}", "pw", pa.c2s_port if d.startswith("a") else pb.c2s_port)
                 for d in ("a.test", "a2.test", "b.test", "b2.test")}

    # a.test speaks first: the stream between the gateways is opened for it.
    for src in ("a.test", "a2.test"):
        for dst in ("b.test", "b2.test"):
            check_message(t, cl, users[src], users[dst])
            check_message(t, cl, users[dst], users[src])

    la, lb = gwa.log_text(), gwb.log_text()
    with t.check("multiplexing enabled and every add accepted on both gateways"):
        for log, name in ((la, "A"), (lb, "B")):
            assert "multiplexing enabled" in log, f"gateway {name}: multiplexing not enabled"
            assert "mux: refused the peer's add" not in log, f"gateway {name} refused an add"
        assert "mux: accepted the peer's b2.test" in la, "A did not accept b2.test"
        assert "mux: accepted the peer's a2.test" in lb, "B did not accept a2.test"
    with t.check("exactly one TCP connection between the two gateways"):
        n = established([a_outer, b_outer])
        assert n == 1, f"{n} connections on the gateways' outer ports"


if __name__ == "__main__":
    run(main, timeout=90)
