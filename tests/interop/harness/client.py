"""slixmpp clients for interop tests, driven synchronously from one asyncio loop.

    with Clients(tmpdir) as cl:
        alice = cl.connect("alice@a.test", "pw", port=pa.c2s_port)
        bob = cl.connect("bob@b.test", "pw", port=pb.c2s_port)
        alice.send_message("bob@b.test", "hello")
        cl.wait_for(lambda: bob.has_body("hello"), 10, "bob gets hello")

Clients connect to 127.0.0.1:PORT directly (no DNS at all), over plain TCP
(servers are configured to allow PLAIN/SCRAM without TLS). slixmpp's own log
goes to DIR/clients.log at debug level (with every stanza), never to the
terminal; the runner prints its tail when a test fails.

slixmpp fires `message_error` (not `message`) for <message type='error'/>:
those land in Client.errors, never in Client.messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Callable

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

LOG = logging.getLogger("interop.client")


class _Xmpp(slixmpp.ClientXMPP):
    """ClientXMPP connecting to a fixed address without any DNS query."""

    def __init__(self, jid, password, address):
        super().__init__(jid, password)
        self._fixed_address = address

    async def get_dns_records(self, domain, port=None):  # noqa: D401 - slixmpp API
        host, port = self._fixed_address
        return [(host, host, port)]


class WaitTimeout(AssertionError):
    pass


class Client:
    def __init__(self, owner: "Clients", jid: str, password: str, port: int, host: str):
        self.owner = owner
        self.jid = jid
        self.port = port
        self.messages: list[slixmpp.Message] = []   # chat/normal/headline received
        self.errors: list[slixmpp.Message] = []     # type='error' messages (bounces)
        self.presences: list[slixmpp.Presence] = []  # every presence received
        self.received_at: dict[str, float] = {}      # body -> time.monotonic() of arrival
        self.session_started = False
        self.auth_failed = False
        self.disconnected = False
        x = _Xmpp(jid, password, (host, port))
        x.loop = owner.loop
        # Subscriptions are handled explicitly by the test, not by slixmpp.
        x.auto_authorize = None
        x.auto_subscribe = False
        x.register_plugin("xep_0030")
        x.register_plugin("xep_0199")
        x.add_event_handler("session_start", self._on_session_start)
        x.add_event_handler("failed_auth", self._on_failed_auth)
        x.add_event_handler("disconnected", self._on_disconnected)
        x.add_event_handler("message", self._on_message)
        x.add_event_handler("message_error", self._on_message_error)
        x.add_event_handler("presence", self._on_presence)
        self.xmpp = x

    # -- event handlers ---------------------------------------------------
    async def _on_session_start(self, _event):
        try:
            await self.xmpp.get_roster(timeout=10)
        except (IqError, IqTimeout) as e:
            LOG.warning("%s: roster request failed: %s", self.jid, e)
        self.xmpp.send_presence()
        self.session_started = True

    def _on_failed_auth(self, _event):
        self.auth_failed = True

    def _on_disconnected(self, _event):
        self.disconnected = True

    def _on_message(self, msg):
        self.messages.append(msg)
        self.received_at[msg["body"]] = time.monotonic()

    def _on_message_error(self, msg):
        self.errors.append(msg)

    def _on_presence(self, pres):
        self.presences.append(pres)

    # -- actions ------------------------------------------------------------
    def send_message(self, to: str, body: str, mtype: str = "chat") -> str:
        msg = self.xmpp.make_message(mto=to, mbody=body, mtype=mtype)
        msg["id"] = self.xmpp.new_id()
        msg.send()
        return msg["id"]

    def send_presence(self, to: str | None = None, ptype: str | None = None, status: str | None = None):
        self.xmpp.send_presence(pto=to, ptype=ptype, pstatus=status)

    def subscribe(self, to: str):
        self.send_presence(to, "subscribe")

    def authorize(self, to: str):
        self.send_presence(to, "subscribed")

    def probe(self, to: str):
        self.send_presence(to, "probe")

    def roster(self) -> dict[str, str]:
        """Fresh roster from the server: {bare jid: subscription}."""
        async def fetch():
            iq = self.xmpp.Iq()
            iq["type"] = "get"
            iq.enable("roster")  # no 'ver': always the full roster
            return await iq.send(timeout=10)
        result = self.owner.run(fetch())
        items = result["roster"]["items"]
        return {str(j): item["subscription"] for j, item in items.items()}

    # -- queries --------------------------------------------------------------
    def bodies(self) -> list[str]:
        return [m["body"] for m in self.messages]

    def has_body(self, body: str, sender: str | None = None) -> bool:
        return any(m["body"] == body and (sender is None or m["from"].bare == sender)
                   for m in self.messages)

    def error_for(self, body: str | None = None, msg_id: str | None = None):
        """The bounce of a message we sent (matched by id or body), or None."""
        for m in self.errors:
            if msg_id is not None and m["id"] == msg_id:
                return m
            if body is not None and m["body"] == body:
                return m
        return None

    def presence_from(self, sender: str, ptype: str | None = None) -> list[slixmpp.Presence]:
        """Presences from bare JID `sender` (ptype None: 'available')."""
        want = ptype or "available"
        return [p for p in self.presences
                if p["from"].bare == sender and (p["type"] or "available") == want]

    def disconnect(self):
        self.owner.disconnect(self)


class Clients:
    """One asyncio loop for all clients of a test; synchronous helpers."""

    def __init__(self, logdir: Path | str | None = None, level: int = logging.DEBUG):
        self.loop = asyncio.new_event_loop()
        self.clients: list[Client] = []
        self.log_file = Path(logdir) / "clients.log" if logdir else None
        self._handler = None
        if self.log_file:
            self._handler = logging.FileHandler(self.log_file)
            self._handler.setFormatter(logging.Formatter(
                "%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s", "%H:%M:%S"))
            self._handler.setLevel(level)
        for name in ("slixmpp", "interop.client"):
            lg = logging.getLogger(name)
            lg.setLevel(level)
            lg.propagate = False  # keep slixmpp noise off the terminal
            if self._handler:
                lg.addHandler(self._handler)

    # -- loop helpers -----------------------------------------------------------
    def run(self, coro, timeout: float = 15.0):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def sleep(self, seconds: float):
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0,
                 what: str = "condition", interval: float = 0.02):
        """Run the loop until predicate() is truthy; returns its value.
        Raises WaitTimeout(what) after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise WaitTimeout(f"timed out after {timeout:.1f} s waiting for: {what}")
            self.sleep(interval)

    # -- clients --------------------------------------------------------------
    def connect(self, jid: str, password: str, port: int, host: str = "127.0.0.1",
                timeout: float = 15.0) -> Client:
        c = Client(self, jid, password, port, host)
        self.clients.append(c)
        c.xmpp.connect((host, port), use_ssl=False, force_starttls=False, disable_starttls=True)
        self.wait_for(lambda: c.session_started or c.auth_failed, timeout, f"{jid} login on port {port}")
        if c.auth_failed:
            raise AssertionError(f"{jid}: authentication failed on port {port}")
        LOG.info("%s: session started", jid)
        return c

    def disconnect(self, c: Client, timeout: float = 5.0):
        if c.disconnected or c.xmpp.transport is None:
            c.disconnected = True
            return
        try:
            self.run(c.xmpp.disconnect(wait=1.0), timeout)
        except (asyncio.TimeoutError, Exception) as e:  # noqa: BLE001
            LOG.warning("%s: disconnect: %r", c.jid, e)
            c.xmpp.abort()
        c.disconnected = True

    def close(self):
        for c in self.clients:
            try:
                self.disconnect(c)
            except Exception:  # noqa: BLE001
                pass
        # Let transports finish closing before the loop goes away.
        try:
            self.sleep(0.05)
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        except Exception:  # noqa: BLE001
            pass
        self.loop.close()
        for name in ("slixmpp", "interop.client"):
            lg = logging.getLogger(name)
            if self._handler:
                lg.removeHandler(self._handler)
        if self._handler:
            self._handler.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
