"""Many clients, many messages: parallel logins and a tracked message matrix.

    from harness.matrix import login_many, MessageMatrix

    users = login_many(cl, [(f"u@{d}", "pw", port_of(d)) for d in domains])   # {jid: Client}
    m = MessageMatrix(cl)
    for a in a_domains:
        for b in b_domains:
            m.add(users[f"u@{a}"], f"u@{b}")          # one message a -> b
    res = m.run(window=200, deadline=120)            # sends, waits, returns a MatrixResult
    print(res.summary())    # "delivered 4998/5000 in 21.3 s (...); missing 2: a3.test->b17.test, ..."
    assert res.ok, res.summary()

Every message carries a unique token in its body and as its id. A message
counts as delivered when the intended recipient's client receives it from the
intended sender; as bounced when the sender gets a <message type='error'/>
with that id (or body); it is missing when neither happened before the
deadline. Deliveries to the wrong client or with the wrong sender are
"misrouted"; second copies are "duplicates". Both make res.ok false.

Flow control: at most `window` messages are in flight (sent, neither
delivered nor bounced, for less than `slot_timeout` seconds) at any time, and
optionally at most `rate` are sent per second; one overall `deadline` (seconds from the start of run()) bounds
sending and waiting together. The whole run happens on the Clients' asyncio
loop; run() returns when everything is settled or the deadline passed.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable

from .client import Client, Clients, LOG


def _domain(jid: str) -> str:
    return jid.split("@", 1)[-1].split("/", 1)[0]


# -- logins ----------------------------------------------------------------------

def login_many(cl: Clients, accounts: Iterable[tuple[str, str, int]], timeout: float = 60.0,
               parallel: int = 20, sasl_mech: str | None = "PLAIN") -> dict[str, Client]:
    """Log in every (jid, password, port) with at most `parallel` logins in
    progress at once; returns {jid: Client}. Raises AssertionError naming the
    accounts that failed or did not finish within `timeout` (overall).

    sasl_mech: "PLAIN" (default; the test servers allow it without TLS) is
    ~100x cheaper than slixmpp's SCRAM, whose PBKDF2 is pure Python (~0.1 s
    of CPU per login); None lets slixmpp choose (SCRAM-SHA-1), as
    Clients.connect() does."""
    accounts = list(accounts)
    out: dict[str, Client] = {}
    pending: list[Client] = []
    deadline = time.monotonic() + timeout
    todo = list(accounts)

    def done(c: Client) -> bool:
        return c.session_started or c.auth_failed or c.disconnected

    while todo or pending:
        while todo and len(pending) < parallel:
            jid, password, port = todo.pop(0)
            c = Client(cl, jid, password, port, "127.0.0.1")
            if sasl_mech:
                mechs = c.xmpp["feature_mechanisms"]
                mechs.use_mech = sasl_mech
                if sasl_mech == "PLAIN":
                    mechs.unencrypted_plain = True
            cl.clients.append(c)
            out[jid] = c
            c.xmpp.connect(("127.0.0.1", port), use_ssl=False, force_starttls=False,
                           disable_starttls=True)
            pending.append(c)
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            cl.wait_for(lambda: any(done(c) for c in pending), min(left, 5.0), "a login", interval=0.01)
        except AssertionError:
            if time.monotonic() >= deadline:
                break
        pending = [c for c in pending if not done(c)]
    failed = [j for j, c in out.items() if c.auth_failed]
    unfinished = [j for j, c in out.items() if not c.session_started and not c.auth_failed]
    unfinished += [j for j, _, _ in todo]
    if failed or unfinished:
        parts = []
        if failed:
            parts.append(f"authentication failed: {', '.join(failed[:10])}"
                         + (f" (+{len(failed) - 10})" if len(failed) > 10 else ""))
        if unfinished:
            parts.append(f"not logged in after {timeout:.0f} s: {', '.join(unfinished[:10])}"
                         + (f" (+{len(unfinished) - 10})" if len(unfinished) > 10 else ""))
        raise AssertionError(f"{len(accounts) - len(failed) - len(unfinished)}/{len(accounts)} logged in; "
                             + "; ".join(parts))
    LOG.info("login_many: %d sessions started", len(out))
    return out


# -- the matrix ------------------------------------------------------------------------

@dataclass
class Planned:
    index: int
    token: str
    sender: Client
    src: str                 # bare JID of the sender
    dst: str                 # bare JID of the recipient
    sent_at: float | None = None
    done_at: float | None = None
    status: str | None = None   # None (in flight / not sent) | "delivered" | "bounced"
    error: tuple[str, str, str] | None = None   # (condition, text, by) of a bounce
    duplicates: int = 0

    @property
    def pair(self) -> str:
        return f"{_domain(self.src)}->{_domain(self.dst)}"


@dataclass
class MatrixResult:
    total: int
    delivered: list[Planned]
    bounced: list[Planned]
    missing: list[Planned]       # sent, no answer before the deadline
    unsent: list[Planned]        # not even sent before the deadline
    misrouted: list[str]         # descriptions
    duplicates: int
    elapsed: float               # run() start to settled / deadline
    send_elapsed: float          # run() start to the last send
    window: int
    rate: float | None

    @property
    def ok(self) -> bool:
        return (len(self.delivered) == self.total and not self.bounced and not self.misrouted
                and not self.duplicates)

    def latencies(self) -> list[float]:
        return sorted(p.done_at - p.sent_at for p in self.delivered if p.done_at and p.sent_at)

    def latency_text(self) -> str:
        lat = self.latencies()
        if not lat:
            return "no deliveries"

        def q(f):
            return lat[min(len(lat) - 1, int(f * len(lat)))]
        return f"latency p50 {q(0.5) * 1000:.0f} ms, p95 {q(0.95) * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms"

    def bounce_conditions(self) -> Counter:
        return Counter(p.error[0] for p in self.bounced if p.error)

    def summary(self, max_list: int = 20) -> str:
        rate = len(self.delivered) / self.elapsed if self.elapsed > 0 else 0.0
        head = (f"delivered {len(self.delivered)}/{self.total} in {self.elapsed:.1f} s "
                f"({rate:.0f}/s, sending took {self.send_elapsed:.1f} s, window {self.window}"
                + (f", rate {self.rate:g}/s" if self.rate else "") + f"; {self.latency_text()})")
        parts = [head]

        def listing(items: list[str]) -> str:
            more = f", ... (+{len(items) - max_list} more)" if len(items) > max_list else ""
            return ", ".join(items[:max_list]) + more

        if self.missing:
            parts.append(f"missing {len(self.missing)}: {listing([p.pair for p in self.missing])}")
        if self.unsent:
            parts.append(f"not sent before the deadline {len(self.unsent)}: "
                         f"{listing([p.pair for p in self.unsent])}")
        if self.bounced:
            conds = ", ".join(f"{c} x{n}" for c, n in self.bounce_conditions().most_common())
            items = [f"{p.pair} {p.error[0]}" + (f" ({p.error[1]})" if p.error and p.error[1] else "")
                     for p in self.bounced]
            parts.append(f"bounces {len(self.bounced)} [{conds}]: {listing(items)}")
        if self.misrouted:
            parts.append(f"misrouted {len(self.misrouted)}: {listing(self.misrouted)}")
        if self.duplicates:
            parts.append(f"duplicates: {self.duplicates}")
        return "; ".join(parts)


class MessageMatrix:
    """A set of planned messages, sent with flow control and tracked one by one."""

    PREFIX = "matrix"

    def __init__(self, cl: Clients, label: str | None = None):
        self.cl = cl
        self.label = label or secrets.token_hex(3)
        self.planned: list[Planned] = []
        self.by_token: dict[str, Planned] = {}
        self.misrouted: list[str] = []
        self.duplicates = 0
        self._hooked: set[int] = set()
        self._progress: asyncio.Event | None = None
        self._flying: OrderedDict[str, Planned] = OrderedDict()  # sent, unsettled, by send time
        self.settled = 0
        self.slot_timeout = 30.0
        self._last_settle = 0.0

    # -- planning ------------------------------------------------------------------
    def add(self, sender: Client, to: str) -> Planned:
        """Plan one message from `sender` to bare JID `to`; returns its record."""
        i = len(self.planned)
        token = f"{self.PREFIX}-{self.label}-{i:05d}-{secrets.token_hex(3)}"
        p = Planned(i, token, sender, sender.xmpp.boundjid.bare, to)
        self.planned.append(p)
        self.by_token[token] = p
        return p

    def body(self, p: Planned) -> str:
        return f"{p.token} {p.src} -> {p.dst}"

    # -- tracking ------------------------------------------------------------------
    def _hook(self, clients: Iterable[Client]) -> None:
        for c in clients:
            if id(c) in self._hooked:
                continue
            self._hooked.add(id(c))
            c.xmpp.add_event_handler("message", lambda msg, c=c: self._on_message(c, msg))
            c.xmpp.add_event_handler("message_error", lambda msg, c=c: self._on_error(c, msg))

    def _token_of(self, body: str | None) -> str | None:
        if not body or not body.startswith(self.PREFIX + "-"):
            return None
        return body.split(" ", 1)[0]

    def _settle(self, p: Planned, status: str) -> None:
        p.status = status
        p.done_at = time.monotonic()
        self._flying.pop(p.token, None)
        self.settled += 1
        self._last_settle = p.done_at
        if self._progress is not None:
            self._progress.set()

    def _on_message(self, receiver: Client, msg) -> None:
        # slixmpp fires "message" AND "message_error" for a bounce that
        # carries the original body: bounces are handled in _on_error only.
        if msg["type"] == "error":
            return
        token = self._token_of(msg["body"])
        p = self.by_token.get(token) if token else None
        if p is None:
            return
        got_from, got_to = msg["from"].bare, receiver.xmpp.boundjid.bare
        if got_to != p.dst or got_from != p.src:
            self.misrouted.append(f"{p.pair} token {p.token}: arrived at {got_to} from {got_from}")
            return
        if p.status is not None:
            self.duplicates += 1
            p.duplicates += 1
            return
        self._settle(p, "delivered")

    def _on_error(self, sender: Client, msg) -> None:
        p = self.by_token.get(msg["id"]) or self.by_token.get(self._token_of(msg["body"]) or "")
        if p is None or p.sender is not sender:
            return
        if p.status is not None:
            if p.status == "delivered":
                self.misrouted.append(f"{p.pair} token {p.token}: delivered AND bounced "
                                      f"({msg['error']['condition']})")
            return
        err = msg["error"]
        p.error = (err["condition"] or "?", err["text"] or "", err["by"] or "")
        self._settle(p, "bounced")

    # -- flow control ---------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Sent and neither delivered nor bounced (lost ones included)."""
        return len(self._flying)

    def window_used(self) -> int:
        """In flight for less than slot_timeout: a message that is lost for
        good gives its window slot back after slot_timeout seconds (it stays
        tracked and still counts if it arrives later)."""
        limit = time.monotonic() - self.slot_timeout
        n = len(self._flying)
        for p in self._flying.values():   # oldest first
            if p.sent_at >= limit:
                break
            n -= 1
        return n

    # -- sending --------------------------------------------------------------------
    def _send(self, p: Planned) -> None:
        x = p.sender.xmpp
        msg = x.make_message(mto=p.dst, mbody=self.body(p), mtype="chat")
        msg["id"] = p.token
        p.sent_at = time.monotonic()
        self._flying[p.token] = p
        msg.send()

    async def _run(self, order: list[Planned], window: int, rate: float | None, deadline_at: float,
                   on_tick: Callable[[], None] | None, tick: float) -> float:
        self._progress = asyncio.Event()
        started = time.monotonic()
        last_tick = started
        last_send = started
        interval = 1.0 / rate if rate else 0.0
        next_send = started

        def maybe_tick():
            nonlocal last_tick
            now = time.monotonic()
            if on_tick is not None and now - last_tick >= tick:
                last_tick = now
                on_tick()

        async def wait_progress(limit: float):
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), max(0.0, limit))
            except asyncio.TimeoutError:
                pass

        for p in order:
            while self.window_used() >= window:
                if time.monotonic() >= deadline_at:
                    return last_send - started
                await wait_progress(min(0.25, deadline_at - time.monotonic()))
                maybe_tick()
            if interval:
                delay = next_send - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_send = max(next_send + interval, time.monotonic() - 1.0)
            if time.monotonic() >= deadline_at:
                return last_send - started
            self._send(p)
            last_send = time.monotonic()
            if p.index % 50 == 0:
                await asyncio.sleep(0)  # let the transports write and read
                maybe_tick()
        # Wait for the rest; give up early when nothing settled for
        # slot_timeout seconds (what is still missing then is lost).
        self._last_settle = max(self._last_settle, last_send)
        while self._flying and time.monotonic() < deadline_at:
            if time.monotonic() - self._last_settle > self.slot_timeout:
                break
            await wait_progress(min(0.25, deadline_at - time.monotonic()))
            maybe_tick()
        # A short grace period to catch late duplicates / bounces of what arrived.
        await asyncio.sleep(0.2)
        return last_send - started

    def run(self, window: int = 200, rate: float | None = None, deadline: float = 120.0,
            order: Iterable[Planned] | None = None, on_tick: Callable[[], None] | None = None,
            tick: float = 1.0, slot_timeout: float | None = None) -> MatrixResult:
        """Send every planned (not yet sent) message, at most `window` in flight
        and `rate` per second, and wait for each to be delivered or bounced,
        all within `deadline` seconds. on_tick() is called about every `tick`
        seconds meanwhile (progress notes, descriptor sampling). A message
        unanswered for `slot_timeout` s (default 30) stops holding a window
        slot, so lost messages cannot stall the rest; once everything is
        sent, run() also returns when nothing settled for `slot_timeout` s."""
        if slot_timeout is not None:
            self.slot_timeout = slot_timeout
        todo = [p for p in (order if order is not None else self.planned) if p.sent_at is None]
        clients = {id(c): c for c in self.cl.clients}
        self._hook(clients.values())
        t0 = time.monotonic()
        send_elapsed = self.cl.loop.run_until_complete(
            self._run(todo, max(1, window), rate, t0 + deadline, on_tick, tick))
        elapsed = time.monotonic() - t0
        return self.result(elapsed, send_elapsed, window, rate)

    def result(self, elapsed: float = 0.0, send_elapsed: float = 0.0, window: int = 0,
               rate: float | None = None) -> MatrixResult:
        return MatrixResult(
            total=len(self.planned),
            delivered=[p for p in self.planned if p.status == "delivered"],
            bounced=[p for p in self.planned if p.status == "bounced"],
            missing=[p for p in self.planned if p.status is None and p.sent_at is not None],
            unsent=[p for p in self.planned if p.sent_at is None],
            misrouted=list(self.misrouted), duplicates=self.duplicates,
            elapsed=elapsed, send_elapsed=send_elapsed, window=window, rate=rate)


def interleaved(groups: list[list[Planned]]) -> list[Planned]:
    """Round-robin over several lists (e.g. the A->B and B->A halves), so that
    both directions are in flight together."""
    out: list[Planned] = []
    n = max((len(g) for g in groups), default=0)
    for i in range(n):
        for g in groups:
            if i < len(g):
                out.append(g[i])
    return out
