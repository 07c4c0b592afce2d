#!/usr/bin/python3
"""A local server that does not take piggybacked dialback pairs: the gateway falls back to one stream per pair.

    remote b1..b3.test (raw S2S, SASL EXTERNAL) --> s2smuxd --upstream--> fake local server (a.test)

The fake local server (a thread here) accepts dialback, answers the first
<db:result/> of each connection 'valid', and treats any further one
(piggybacked) by its mode:
  * "invalid": answers type='invalid';
  * "close": closes the stream with <unsupported-stanza-type/>;
  * "later": answers the first piggybacked pair 'valid', the next 'invalid';
  * "error": answers type='error' (<not-allowed/>);
  * "bounded": accepts everything, with max_pairs_per_stream = 2.
Each remote domain bI sends one message to u@a.test, one after the other.

Checks, in every mode: every message reaches the local server exactly once.
"invalid" and "close": the gateway asked b2's pair on b1's stream
(piggybacking), then gave b2 a stream of its own, and never piggybacked
again (b3 gets its own stream at once): 3 connections for 3 pairs, 1
piggybacked request. "later": b2 rides on b1's stream, b3 is refused there
and gets a stream of its own, but piggybacking is not given up (the server
took a pair before): 2 connections, 2 piggybacked requests. "error": an
error is about that pair only: b2 and b3 are each asked on an established
stream, then get one of their own; piggybacking is not given up.
"bounded": b2 rides on b1's stream, which is then full: b3 gets another.

Run by hand: /usr/bin/python3 tests/interop/test_upstream_piggyback_refused.py [--keep] [-v]
"""

import re
import socket
import threading
import time

from harness.gateway import S2smuxd
from harness.raw_s2s import RawS2S
from harness.runner import run
from test_upstream_piggyback import metric

REMOTES = ["b1.test", "b2.test", "b3.test"]
_DB = re.compile(r"<db:result from=['\"]([^'\"]+)['\"] to=['\"]([^'\"]+)['\"]>[^<]*</db:result>")
_MSG = re.compile(r"<message\b.*?</message>", re.S)


class FakeLocalServer:
    """Plaintext S2S receiver for a.test: dialback taken on trust, stanzas recorded."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.requests = []  # (connection number, from, to, answer)
        self.messages = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                n = self.connections
            threading.Thread(target=self._serve, args=(c, n), daemon=True).start()

    def _serve(self, c, n):
        buf, opened, results = "", False, 0
        c.settimeout(30)
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    return
                buf += data.decode()
                if not opened and ">" in buf[buf.find("<stream:stream"):]:
                    opened = True
                    c.sendall(f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                              f"xmlns:stream='http://etherx.jabber.org/streams' "
                              f"xmlns:db='jabber:server:dialback' id='fake{n}' from='a.test' version='1.0'>"
                              "<stream:features><dialback xmlns='urn:xmpp:features:dialback'/>"
                              "</stream:features>".encode())
                for m in _DB.finditer(buf):
                    frm, to = m.group(1), m.group(2)
                    results += 1
                    answer = "valid" if results == 1 else self.mode
                    if self.mode == "later":
                        answer = "valid" if results <= 2 else "invalid"
                    elif self.mode == "bounded":
                        answer = "valid"
                    with self.lock:
                        self.requests.append((n, frm, to, answer))
                    if answer == "close":
                        c.sendall(b"<stream:error><unsupported-stanza-type "
                                  b"xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>")
                        return
                    if answer == "error":
                        c.sendall(f"<db:result from='{to}' to='{frm}' type='error'><error type='cancel'>"
                                  "<not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
                                  "</db:result>".encode())
                        continue
                    c.sendall(f"<db:result from='{to}' to='{frm}' type='{answer}'/>".encode())
                for m in _MSG.finditer(buf):
                    with self.lock:
                        self.messages.append(m.group(0))
                cut = max([m.end() for m in _DB.finditer(buf)] + [m.end() for m in _MSG.finditer(buf)] + [0])
                buf = buf[cut:] if cut else buf
        except OSError:
            return
        finally:
            c.close()

    def received(self, token):
        with self.lock:
            return sum(token in m for m in self.messages)


# (from, answer) of every <db:result/> the fake server got, in order, and the figures.
EXPECT = {
    "invalid": dict(what="b2 asked on b1's stream once, then its own streams; no piggybacking after",
                    requests=[("b1.test", "valid"), ("b2.test", "invalid"), ("b2.test", "valid"),
                              ("b3.test", "valid")],
                    connections=3, piggybacked=1, failed=1, refused=1),
    "close": dict(what="b2 asked on b1's stream once, then its own streams; no piggybacking after",
                  requests=[("b1.test", "valid"), ("b2.test", "close"), ("b2.test", "valid"),
                            ("b3.test", "valid")],
                  connections=3, piggybacked=1, failed=1, refused=1),
    "later": dict(what="b3 refused on b1's stream gets its own; piggybacking goes on",
                  requests=[("b1.test", "valid"), ("b2.test", "valid"), ("b3.test", "invalid"),
                            ("b3.test", "valid")],
                  connections=2, piggybacked=2, failed=1, refused=0),
    "error": dict(what="b2 and b3 refused on an established stream get their own; piggybacking goes on",
                  requests=[("b1.test", "valid"), ("b2.test", "error"), ("b2.test", "valid"),
                            ("b3.test", "error"), ("b3.test", "valid")],
                  connections=3, piggybacked=2, failed=2, refused=0),
    "bounded": dict(what="at most 2 pairs on a stream: b3 opens another",
                    requests=[("b1.test", "valid"), ("b2.test", "valid"), ("b3.test", "valid")],
                    connections=2, piggybacked=1, failed=0, refused=0),
}


def scenario(t, mode):
    pki = t.pki()
    fake = FakeLocalServer(mode)
    gw = S2smuxd(t.dir, name=f"s2smuxd-{mode}", config=S2smuxd.fronting_config(
        domains=["a.test"], certs=[pki.issue("a.test")], ca_file=pki.ca_file,
        upstream=f"127.0.0.1:{fake.port}"))
    if mode == "bounded":
        gw.config["upstream"]["max_pairs_per_stream"] = 2
    with t.check(f"[{mode}] gateway started", fatal=True):
        t.start(gw)

    with t.check(f"[{mode}] one message from each of {', '.join(REMOTES)} reaches the local server exactly once"):
        for i, d in enumerate(REMOTES):
            c = RawS2S("127.0.0.1", gw.outer_port, d, "a.test", cert=pki.issue(d), ca_file=pki.ca_file)
            c.authenticate()
            token = f"{mode}-{d}-token"
            c.send(f"<message from='x@{d}' to='u@a.test' id='m{i}' type='chat'><body>{token}</body></message>")
            deadline = time.monotonic() + 15
            while fake.received(token) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert fake.received(token) == 1, f"{d}: received {fake.received(token)} time(s); {fake.requests}"
            c.close()
        time.sleep(0.5)  # nothing delivered twice afterwards
        for d in REMOTES:
            assert fake.received(f"{mode}-{d}-token") == 1, f"{d}: duplicated"

    want = EXPECT[mode]
    with t.check(f"[{mode}] {want['what']}"):
        print(f"#    connections {fake.connections}, dialback requests {fake.requests}", flush=True)
        assert [(f, a) for _, f, _, a in fake.requests] == want["requests"], fake.requests
        assert fake.connections == want["connections"], f"{fake.connections} connections for 3 pairs"
        assert ("does not take further domain pairs" in gw.log_text()) == bool(want["refused"])
        assert metric(gw, "s2smux_upstream_piggybacked_total") == want["piggybacked"]
        assert metric(gw, "s2smux_upstream_piggyback_failed_total") == want["failed"]
        assert metric(gw, "s2smux_upstream_piggyback_refused") == want["refused"]
    gw.stop()
    fake.sock.close()


def main(t):
    for mode in EXPECT:
        scenario(t, mode)


if __name__ == "__main__":
    run(main, timeout=120)
