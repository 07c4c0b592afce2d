#!/usr/bin/python3
"""Stream management (XEP-0198 acks) and a remote gateway killed mid-traffic.

Two gateways (a.test, b.test) each fronting a Prosody. Prosody b.test loads
mod_smacks: it advertises stream management on S2S only after SASL
authentication, so B's dialback stream to it stays without (and nothing
breaks).

Checks: the multiplexed stream between the gateways negotiates
urn:xmpp:sm:3 and acknowledges traffic (nothing left in flight once idle,
accounting invariant ok); then, while u@a.test sends a
burst of messages to u@b.test, gateway B is frozen (SIGSTOP: what A sends
then stays unacknowledged) and killed with SIGKILL, and started again 1 s
later: A queues the unacknowledged stanzas again and sends them on the new
stream; every message is delivered exactly once, none lost, and A's
accounting invariant holds.

Run by hand: /usr/bin/python3 tests/interop/test_stream_mgmt.py [--keep] [-v]
"""

import os
import re
import signal
import time

from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from harness.scenarios import check_message
from harness.sockets import established

LIMITS = {"keepalive": 1, "dead_peer_timeout": 4, "queue_timeout": 30}
BURST = 400


def main(t):
    pki = t.pki()
    a_s2s, b_s2s = free_port(), free_port()
    a_outer, b_outer = free_port(), free_port()
    ca, cb = pki.issue("a.test"), pki.issue("b.test")
    gwa = S2smuxd(t.dir, name="s2smuxd-a", config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[ca], ca_file=pki.ca_file, upstream=f"127.0.0.1:{a_s2s}",
        outer=f"127.0.0.1:{a_outer}", limits=LIMITS,
        routes=[{"domain": "b.test", "address": f"127.0.0.1:{b_outer}"}]))
    gwb = S2smuxd(t.dir, name="s2smuxd-b", config=S2smuxd.fronting_config(
        domains=["b.test"], certs=[cb], ca_file=pki.ca_file, upstream=f"127.0.0.1:{b_s2s}",
        outer=f"127.0.0.1:{b_outer}", limits=LIMITS,
        routes=[{"domain": "a.test", "address": f"127.0.0.1:{a_outer}"}]))
    pa = Prosody(t.dir, "prosody-a", ["a.test"], pki=pki, s2s_port=a_s2s,
                 gateway=f"127.0.0.1:{gwa.inner_port}", s2s_secure_auth=False, users={"u": "pw"},
                 stanza_debug=False, log_level="info")
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, s2s_port=b_s2s,
                 gateway=f"127.0.0.1:{gwb.inner_port}", s2s_secure_auth=False, users={"u": "pw"},
                 extra_modules=["smacks"], stanza_debug=False, log_level="info")
    with t.check("two gateways and two Prosody servers (b.test with mod_smacks) started", fatal=True):
        for s in (gwa, gwb, pa, pb):
            t.start(s)

    cl = t.clients()
    with t.check("users logged in", fatal=True):
        ua = cl.connect("u@a.test", "pw", pa.c2s_port)
        ub = cl.connect("u@b.test", "pw", pb.c2s_port)
    check_message(t, cl, ua, ub)
    check_message(t, cl, ub, ua)

    with t.check("urn:xmpp:sm:3 on the multiplexed stream (both gateways)"):
        assert established([a_outer, b_outer]) == 1, "not exactly one connection between the gateways"
        la, lb = gwa.log_text(), gwb.log_text()
        assert "multiplexing enabled" in la, "multiplexing not enabled"
        assert re.search(r"outer-\w+ .*stream management enabled", la), "A: no stream management on the mux stream"
        assert re.search(r"outer-\w+ .*stream management enabled", lb), "B: no stream management on the mux stream"

    with t.check("traffic acknowledged: nothing in flight once idle; accounting ok on both"):
        for i in range(150):
            ua.send_message("u@b.test", f"warm {i}")
        cl.wait_for(lambda: sum(1 for b in ub.bodies() if b.startswith("warm ")) == 150, 20, "150 messages")
        cl.sleep(1)
        for gw in (gwa, gwb):
            st = gw.stats()
            assert st.get("stanzas.in_flight") == "0", f"{gw.name}: in flight {st.get('stanzas.in_flight')}"
            assert st.get("accounting") == "ok", f"{gw.name}: accounting {st.get('accounting')}"
        st = gwa.stats()
        t.note(f"A: accepted {st['stanzas.accepted']}, routed {st['stanzas.routed']}")

    bodies = [f"burst {i} {os.urandom(3).hex()}" for i in range(BURST)]
    with t.check(f"{BURST} messages, gateway B killed (SIGKILL) mid-burst and restarted: none lost"):
        ids = {}
        for i, b in enumerate(bodies):
            ids[b] = ua.send_message("u@b.test", b)
            if i == BURST // 2:
                # Frozen first, so that what A sends from now on is surely
                # in flight (in B's socket buffers, unread) when it dies.
                cl.sleep(0.05)
                os.kill(gwb.proc.pid, signal.SIGSTOP)
        cl.sleep(0.5)
        os.kill(gwb.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        gwb.stop()  # reap it (exit status -9, not a clean shutdown: expected here)
        cl.sleep(max(0.0, 1.0 - (time.monotonic() - killed)))
        gwb.start()

        def settled():
            return all(ub.has_body(b) or ua.error_for(b, ids[b]) for b in bodies)
        try:
            cl.wait_for(settled, 60, "every message delivered or bounced")
        finally:
            got = ub.bodies()
            delivered = sum(1 for b in bodies if b in got)
            dups = sum(max(0, got.count(b) - 1) for b in bodies)
            bounced = sum(1 for b in bodies if b not in got and ua.error_for(b, ids[b]))
            lost = BURST - delivered - bounced
            took = time.monotonic() - killed
            t.note(f"sent {BURST}: delivered {delivered}, bounced {bounced}, lost {lost}, duplicates {dups}; "
                   f"settled {took:.1f} s after the kill")
        assert lost == 0, f"{lost} lost"
        # B never read what it got while frozen: those were sent again, once.
        assert dups == 0, f"{dups} delivered twice"
        la = gwa.log_text()
        m = re.findall(r"(\d+) stanza\(s\) sent and not acknowledged by the peer: queued again", la)
        t.note(f"A requeued after the kill: {', '.join(m) if m else 'nothing'} stanza(s)")
        st = gwa.stats()
        assert int(st["stanzas.requeued"]) > 0, "nothing was in flight at the kill: the test proves nothing"
        assert st.get("accounting") == "ok", f"A: accounting {st.get('accounting')}"
        t.note(f"A: requeued {st['stanzas.requeued']}, bounced {st['stanzas.bounced']}, "
               f"queued now {st['stanzas.queued_now']}, in flight {st['stanzas.in_flight']}")

    check_message(t, cl, ua, ub, label="after the restart: a.test -> b.test delivered")
    check_message(t, cl, ub, ua, label="after the restart: b.test -> a.test delivered")


if __name__ == "__main__":
    run(main, timeout=180)
