"""Raw c2s load for bench/clouds_bench.py: many pre-serialized messages over
logged-in client sessions, each checked delivered once to the right user.

    sessions = [C2sSession.login("u@a1.test", "pw", port) for ...]   # SASL PLAIN, bind
    flood = Flood(sessions, window=500)
    res = flood.run([(src_index, dst_index), ...], deadline=120)   # one message each
    res.ok, res.delivered, res.p50_ms, res.tool_cpu_s, res.problems()

slixmpp parses and builds every stanza in Python and tops out at a few
hundred messages per second, well below what two Prosody servers carry.
Here the stanzas are byte strings built once per (sender, recipient) and
body size, written in batches on non-blocking sockets from one selector
loop, and incoming stanzas are read with expat (C) looking only at the
attributes of each top-level element: the id, which says which message it
is, the from (the sender's full JID) and the type (error = bounce).

A message counts as delivered when it arrives on the recipient's session,
from the intended sender, once. At most `window` messages are in flight.
Latency: from the loop iteration that wrote it to the one that read it.
"""

from __future__ import annotations

import base64
import selectors
import socket
import time
import xml.parsers.expat
from dataclasses import dataclass, field

RESOURCE = "bench"
STREAM_HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                 "xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>")
# Body sizes cycled through, so every mode carries the same bytes (mean 1,425 B).
BODY_SIZES = (200, 500, 1000, 4000)


class LoginError(Exception):
    pass


class C2sSession:
    """One logged-in client stream (plain TCP on loopback, as the harness's
    Prosody allows: c2s_require_encryption = false, PLAIN without TLS)."""

    def __init__(self, jid: str, sock: socket.socket):
        self.jid = jid                         # bare
        self.full = f"{jid}/{RESOURCE}"
        self.domain = jid.split("@", 1)[1]
        self.sock = sock
        self.depth = 0
        self.events: list[tuple[str, str, dict]] = []  # ("start"|"end", name, attrs) at depth 1
        self.on_stanza = None                   # flood handler: (session, name, attrs)
        self.out = bytearray()
        self._new_parser()

    def _new_parser(self):
        p = xml.parsers.expat.ParserCreate()
        p.buffer_text = True
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        self.parser = p
        self.depth = 0

    def _start(self, name, attrs):
        self.depth += 1
        if self.depth == 2:
            if self.on_stanza is not None:
                self.on_stanza(self, name, attrs)
            else:
                self.events.append(("start", name, attrs))

    def _end(self, name):
        if self.depth == 2 and self.on_stanza is None:
            self.events.append(("end", name, {}))
        self.depth -= 1

    def feed(self, data: bytes) -> None:
        self.parser.Parse(data, False)

    # -- login (blocking) -------------------------------------------------------
    def _wait(self, what: str, pred, deadline: float):
        while True:
            for i, ev in enumerate(self.events):
                if pred(ev):
                    del self.events[:i + 1]
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoginError(f"{self.jid}: no {what} within the login timeout")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise LoginError(f"{self.jid}: stream closed while waiting for {what}: {self.events}")
            self.feed(data)

    @classmethod
    def login(cls, jid: str, password: str, port: int, timeout: float = 30.0) -> "C2sSession":
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = cls(jid, sock)
        deadline = time.monotonic() + timeout
        node = jid.split("@", 1)[0]
        header = STREAM_HEADER.format(domain=s.domain).encode()
        features_end = (lambda ev: ev[0] == "end" and ev[1] == "stream:features")
        sock.sendall(header)
        s._wait("stream features", features_end, deadline)
        cred = base64.b64encode(f"\0{node}\0{password}".encode()).decode()
        sock.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{cred}</auth>".encode())
        ev = s._wait("SASL result", lambda ev: ev[0] == "start" and ev[1] in ("success", "failure"), deadline)
        if ev[1] != "success":
            raise LoginError(f"{jid}: SASL PLAIN refused")
        s._new_parser()
        s.events.clear()
        sock.sendall(header)
        s._wait("stream features after SASL", features_end, deadline)
        sock.sendall(f"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                     f"<resource>{RESOURCE}</resource></bind></iq>".encode())
        ev = s._wait("bind result", lambda ev: ev[0] == "start" and ev[1] == "iq"
                     and ev[2].get("id") == "bind", deadline)
        if ev[2].get("type") != "result":
            raise LoginError(f"{jid}: resource binding refused")
        s.events.clear()
        sock.setblocking(False)
        return s

    def close(self) -> None:
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(2)
            self.sock.sendall(b"</stream:stream>")
        except OSError:
            pass
        self.sock.close()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


@dataclass
class FloodResult:
    planned: int
    delivered: int = 0
    bounced: list[str] = field(default_factory=list)      # "src->dst: condition"
    misrouted: list[str] = field(default_factory=list)
    duplicates: int = 0
    unknown: int = 0
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0          # first write to last delivery
    bytes_sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    tool_cpu_s: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.delivered == self.planned and not self.bounced and not self.misrouted
                and not self.duplicates and not self.unknown)

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 0.50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 0.99)

    def problems(self) -> str:
        def few(xs):
            return ", ".join(xs[:5]) + (f" (+{len(xs) - 5})" if len(xs) > 5 else "")
        parts = [f"delivered {self.delivered}/{self.planned}"]
        lists = (("missing", self.missing), ("bounced", self.bounced), ("misrouted", self.misrouted))
        parts += [f"{name} {len(xs)}: {few(xs)}" for name, xs in lists if xs]
        parts += [f"{name} {k}" for name, k in (("duplicates", self.duplicates),
                                                ("unknown ids", self.unknown)) if k]
        return "; ".join(parts)


class Flood:
    """Sends planned messages over logged-in sessions and tracks every one."""

    def __init__(self, sessions: list[C2sSession], window: int = 500):
        self.sessions = sessions
        self.window = window
        self.bodies = [("x" * n).encode() for n in BODY_SIZES]
        self.sel = selectors.DefaultSelector()
        for i, s in enumerate(sessions):
            self.sel.register(s.sock, selectors.EVENT_READ, i)
        self._seq = 0   # ids stay unique across run() calls: a late duplicate is never mistaken

    def _stanza(self, src: int, dst: int, mid: str, size: int) -> bytes:
        return b"".join((b"<message type='chat' to='", self.sessions[dst].full.encode(), b"' id='",
                         mid.encode(), b"'><body>", self.bodies[size], b"</body></message>"))

    def run(self, plan: list[tuple[int, int]], deadline: float, progress=None,
            grace: float = 0.3) -> FloodResult:
        """Send one message per (src, dst) session index pair, in order, at
        most `window` in flight; return when all are settled (plus `grace`
        seconds to catch duplicates) or `deadline` seconds have passed.
        progress(delivered, planned) is called about once a second."""
        base = self._seq
        self._seq += len(plan)
        n = len(plan)
        res = FloodResult(planned=n)
        sent_at = [0.0] * n
        state = bytearray(n)           # 0 unsent/in flight, 1 delivered, 2 bounced
        sessions = self.sessions
        now = time.monotonic()
        cpu0 = time.process_time()
        t_end = now + deadline
        next_progress = now + 1.0
        last_done = now
        settled = 0
        in_flight = 0
        nxt = 0

        def on_stanza(sess, name, attrs):
            nonlocal settled, in_flight, last_done
            if name != "message":
                return
            mid = attrs.get("id", "")
            if not mid.startswith("m"):
                res.unknown += 1
                return
            k = int(mid[1:]) - base
            if not 0 <= k < n:
                res.unknown += 1
                return
            src, dst = plan[k]
            if attrs.get("type") == "error":
                if state[k] == 0:
                    state[k] = 2
                    settled += 1
                    in_flight -= 1
                res.bounced.append(f"{sessions[src].jid}->{sessions[dst].jid}")
                return
            if state[k] != 0:
                res.duplicates += 1
                return
            if sess is not sessions[dst] or attrs.get("from") != sessions[src].full:
                res.misrouted.append(f"{sessions[src].jid}->{sessions[dst].jid} arrived at "
                                     f"{sess.jid} from {attrs.get('from')}")
            state[k] = 1
            settled += 1
            in_flight -= 1
            res.delivered += 1
            last_done = now
            res.latencies_ms.append((now - sent_at[k]) * 1000.0)

        for s in sessions:
            s.on_stanza = on_stanza
        writers: set[int] = set()
        t_first = now
        while True:
            now = time.monotonic()
            # Fill the window.
            while nxt < n and in_flight < self.window:
                src, dst = plan[nxt]
                sessions[src].out += self._stanza(src, dst, f"m{base + nxt}", nxt % len(self.bodies))
                sent_at[nxt] = now
                writers.add(src)
                nxt += 1
                in_flight += 1
            for i in list(writers):
                s = sessions[i]
                try:
                    w = s.sock.send(s.out)
                except BlockingIOError:
                    w = 0
                res.bytes_sent += w
                del s.out[:w]
                if not s.out:
                    writers.discard(i)
            if settled == n and now - last_done >= grace:
                break
            if now >= t_end:
                break
            if progress and now >= next_progress:
                next_progress = now + 1.0
                progress(res.delivered, n)
            events = self.sel.select(timeout=0.002 if writers else 0.05 if settled < n else grace)
            now = time.monotonic()
            for key, _mask in events:
                s = sessions[key.data]
                try:
                    data = s.sock.recv(1 << 18)
                except BlockingIOError:
                    continue
                if not data:
                    raise ConnectionError(f"{s.jid}: server closed the client stream")
                s.feed(data)
        res.seconds = max(1e-9, last_done - t_first)
        res.tool_cpu_s = time.process_time() - cpu0
        res.latencies_ms.sort()
        res.missing = [f"{sessions[plan[k][0]].jid}->{sessions[plan[k][1]].jid}"
                       for k in range(n) if state[k] == 0]
        return res

    def close(self) -> None:
        for s in self.sessions:
            self.sel.unregister(s.sock)
            s.close()
        self.sel.close()
