#!/usr/bin/python3
"""Failed adds between two real gateways: each leaves the stream up, a retry works.

Gateway A (a.test) preconnects to gateway B (b.test), which allows at most
one add per second (burst 1) and 3 domains from A. With s2smuxctl on A:
  cert add c.test from an untrusted CA    -> B answers failed: untrusted
  cert replace with a valid c.test        -> accepted (retry)
  cert add an expired d.test              -> failed: expired
  cert add a not yet valid e.test         -> failed: not-yet-valid
  cert add f.test twice within a second   -> the second add is rate-limited
  one more domain past the cap            -> failed: too-many-domains
After every failure the same single stream is up (s2smuxctl streams, the
kernel's socket table) and B's counters show each reason.

Run by hand: /usr/bin/python3 tests/interop/test_mux_add_failures.py [--keep] [-v]
"""

import time

from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.runner import run
from harness.sockets import established


def stream_ids(gw):
    return [l.split()[0] for l in gw.ctl_ok("streams")[1:] if " outer-" in l]


def main(t):
    pki = t.pki()
    a_outer, b_outer = free_port(), free_port()
    ca, cb = pki.issue("a.test"), pki.issue("b.test")
    gwb_cfg = S2smuxd.fronting_config(domains=["b.test"], certs=[cb], ca_file=pki.ca_file,
                                      upstream="127.0.0.1:1", outer=f"127.0.0.1:{b_outer}")
    gwb_cfg["mux"] = {"add_rate": 1, "add_burst": 1, "max_domains": 3}
    gwb = S2smuxd(t.dir, name="s2smuxd-b", config=gwb_cfg)
    gwa = S2smuxd(t.dir, name="s2smuxd-a", config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[ca], ca_file=pki.ca_file, upstream="127.0.0.1:1",
        outer=f"127.0.0.1:{a_outer}",
        routes=[{"domain": "b.test", "address": f"127.0.0.1:{b_outer}", "preconnect": True}]))
    with t.check("gateway B, then gateway A preconnecting to it", fatal=True):
        t.start(gwb)
        t.start(gwa)
    with t.check("the multiplexed stream is up (preconnect, no traffic needed)", fatal=True):
        t.clients().wait_for(lambda: any(" on " in l for l in gwa.ctl_ok("streams")), 15, "a mux stream on A")
        first = stream_ids(gwa)
        assert len(first) == 1, gwa.ctl_ok("streams")

    def add(kind, cert, want, *, replace=False):
        out = gwa.ctl_ok("cert", "replace" if replace else "add", str(cert.chain), str(cert.key))
        lines = [l for l in out if l.startswith("s")]
        assert lines and want in lines[0], f"{kind}: {out}"
        assert stream_ids(gwa) == first, f"the stream changed after {kind}: {gwa.ctl_ok('streams')}"
        assert established([a_outer, b_outer]) == 1
        t.note(f"{kind}: {lines[0]}")

    with t.check("untrusted CA: failed, stream up"):
        add("untrusted", pki.issue("c.test", ca=pki.untrusted_ca), "failed:untrusted")
    with t.check("retry with a valid certificate (cert replace, same subject): accepted"):
        time.sleep(1.1)  # one add per second on B
        add("retry", pki.issue("c.test", tag="valid"), "accepted", replace=True)
        dom = [l for l in gwa.ctl_ok("domains") if l.startswith("c.test ")]
        assert dom and dom[0].split()[-1] == "accepted", dom
    with t.check("expired: failed, stream up"):
        time.sleep(1.1)
        add("expired", pki.issue("d.test", expired=True), "failed:expired")
    with t.check("not yet valid: failed, stream up"):
        time.sleep(1.1)
        add("not-yet-valid", pki.issue("e.test", starts_in_days=10), "failed:not-yet-valid")
    with t.check("two adds within a second: the second is rate-limited, stream up"):
        time.sleep(1.1)
        add("first", pki.issue("f.test"), "accepted")
        add("second", pki.issue("g.test"), "failed:rate-limited")
    with t.check("past B's cap of 3 domains: too-many-domains, stream up"):
        time.sleep(1.1)
        add("cap", pki.issue("h.test"), "failed:too-many-domains")
    with t.check("gateway B counted every failure by reason"):
        stats = dict(l.split() for l in gwb.ctl_ok("stats") if len(l.split()) == 2)
        for reason in ("untrusted", "expired", "not-yet-valid", "rate-limited", "too-many-domains"):
            assert stats.get(f"mux.peer_adds_failed.{reason}") == "1", (reason, stats)
        assert stats.get("mux.peer_adds_ok") == "2", stats


if __name__ == "__main__":
    run(main, timeout=90)
