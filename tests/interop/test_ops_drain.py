#!/usr/bin/python3
"""SIGTERM drains: queued stanzas are delivered or bounced, none lost.

Gateway A fronts Prosody A (a.test). Its route to b.test (gateway B,
Prosody B) goes through a proxy that holds every new connection for 1.5 s
before relaying it, and its route to x.test goes to a port that accepts TCP
connections and never answers. alice@a.test sends messages to bob@b.test
and to nobody@x.test; once gateway A holds all of them in its queues it
gets SIGTERM. Expected: A stops accepting remote streams at once, keeps
running until the b.test stream is up and bob got every message, bounces
the x.test messages to alice with <remote-server-timeout/> when
[limits] drain_timeout (4 s) expires, then closes every stream and exits 0.
Sent = delivered + bounced; lost = 0.

Run by hand: /usr/bin/python3 tests/interop/test_ops_drain.py [--keep] [-v]
"""

import signal
import socket
import threading
import time

from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run

N = 25


class SlowProxy:
    """Accepts on `port`, waits `delay` s, then relays to `target`."""

    def __init__(self, port, target, delay):
        self.target, self.delay = target, delay
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", port))
        self.srv.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        time.sleep(self.delay)
        u = socket.create_connection(self.target)
        for a, b in ((c, u), (u, c)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def stat(gw, key):
    for l in gw.ctl_ok("stats"):
        parts = l.split()
        if parts and parts[0] == key:
            return int(parts[-1])
    raise AssertionError(f"no {key} in stats")


def main(t):
    pki = t.pki()
    a_s2s, b_s2s, b_outer, proxy_port = free_port(), free_port(), free_port(), free_port()
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)  # never accepted: TLS never starts
    ca, cb = pki.issue("a.test"), pki.issue("b.test")
    gwa = S2smuxd(t.dir, name="s2smuxd-a", config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[ca], ca_file=pki.ca_file, upstream=f"127.0.0.1:{a_s2s}",
        routes=[{"domain": "b.test", "address": f"127.0.0.1:{proxy_port}"},
                {"domain": "x.test", "address": f"127.0.0.1:{blackhole.getsockname()[1]}"}],
        limits={"drain_timeout": 4, "connect_timeout": 60}, log_level="info"))
    gwb = S2smuxd(t.dir, name="s2smuxd-b", config=S2smuxd.fronting_config(
        domains=["b.test"], certs=[cb], ca_file=pki.ca_file, upstream=f"127.0.0.1:{b_s2s}",
        outer=f"127.0.0.1:{b_outer}", routes=[{"domain": "a.test", "address": gwa.listen_addr("outer")}],
        log_level="info"))
    pa = Prosody(t.dir, "prosody-a", ["a.test"], pki=pki, certs={"a.test": ca}, s2s_port=a_s2s,
                 gateway=f"127.0.0.1:{gwa.inner_port}", s2s_secure_auth=False, users={"alice": "pw"})
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, certs={"b.test": cb}, s2s_port=b_s2s,
                 gateway=f"127.0.0.1:{gwb.inner_port}", s2s_secure_auth=False, users={"bob": "pw"})
    SlowProxy(proxy_port, ("127.0.0.1", b_outer), delay=1.5)
    with t.check("two gateways and two Prosody servers started", fatal=True):
        for s in (gwa, gwb, pa, pb):
            t.start(s)
    cl = t.clients()
    with t.check("alice@a.test and bob@b.test logged in", fatal=True):
        alice = cl.connect("alice@a.test", "pw", pa.c2s_port)
        bob = cl.connect("bob@b.test", "pw", pb.c2s_port)

    to_b = [f"to b {i}" for i in range(N)]
    to_x = [f"to x {i}" for i in range(N)]
    with t.check(f"{2 * N} messages queued in gateway A (b.test connecting, x.test unreachable)", fatal=True):
        ids = {}
        for b in to_b:
            ids[b] = alice.send_message("bob@b.test", b)
        for b in to_x:
            ids[b] = alice.send_message("nobody@x.test", b)
        cl.wait_for(lambda: stat(gwa, "stanzas.queued") >= 2 * N, 15, "all messages queued in gateway A")
        assert not any(bob.has_body(b) for b in to_b), "delivered before the stream could be up"

    with t.check("SIGTERM: gateway A stops accepting remote streams at once"):
        since = len(gwa.log_text())
        gwa.signal(signal.SIGTERM)
        cl.wait_for(lambda: "draining" in gwa.log_text()[since:], 5, "a draining log line")
        time.sleep(0.2)
        try:
            socket.create_connection(("127.0.0.1", gwa.outer_port), timeout=2).close()
            raise AssertionError("the outer listener still accepts")
        except ConnectionRefusedError:
            pass
        line = [l for l in gwa.log_text()[since:].splitlines() if "draining" in l][0]
        t.note(line.split("] ", 1)[-1])

    with t.check("every message to bob@b.test delivered during the drain"):
        cl.wait_for(lambda: all(bob.has_body(b) for b in to_b), 15, "bob's messages")
    with t.check("every message to nobody@x.test bounced to alice with remote-server-timeout"):
        cl.wait_for(lambda: all(alice.error_for(b, ids[b]) for b in to_x), 20, "alice's bounces")
        e = alice.error_for(to_x[0], ids[to_x[0]])["error"]
        assert e["condition"] == "remote-server-timeout", e
        t.note(f"bounce: <{e['condition']}/> {e['text']}")
    with t.check("gateway A exits 0 once drained"):
        code = gwa.proc.wait(timeout=20)
        assert code == 0, f"exit {code}"
        text = gwa.log_text()[since:]
        assert "bouncing" in text and "closing streams" in text, text[-2000:]
    with t.check("sent = delivered + bounced, lost = 0"):
        delivered = sum(bob.has_body(b) for b in to_b)
        bounced = sum(bool(alice.error_for(b, ids[b])) for b in to_x)
        lost = 2 * N - delivered - bounced
        t.note(f"sent {2 * N}, delivered {delivered}, bounced {bounced}, lost {lost}")
        assert lost == 0 and not any(alice.error_for(b, ids[b]) for b in to_b)


if __name__ == "__main__":
    run(main, timeout=150)
