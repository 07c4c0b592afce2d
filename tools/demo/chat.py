#!/usr/bin/python3
"""A minimal console XMPP client for trying the demo by hand
(`./tools/demo.sh --keep-running` prints the exact commands):

    /usr/bin/python3 tools/demo/chat.py --port 15222 alice@a.test alice-pw bob@b.test

Logs in over plain TCP to 127.0.0.1:PORT (the demo's servers allow that on
loopback; a.test and b.test need no DNS), sends its presence, prints every
message and presence change it receives, and sends each line typed on
standard input to PEER as a chat message. Subscription requests are accepted
automatically.

    /to JID    send the following lines to JID instead
    /quit      log out (as do Ctrl-D and Ctrl-C)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
import time

try:
    import slixmpp
except ImportError:
    sys.exit("chat.py: slixmpp not found; run it with /usr/bin/python3 (Debian package python3-slixmpp)")


def out(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


class Chat(slixmpp.ClientXMPP):
    def __init__(self, jid: str, password: str, peer: str, address: tuple[str, int]):
        super().__init__(jid, password)
        self.peer = peer
        self.address_fixed = address
        self.failed = False
        self.seen: dict[str, tuple] = {}  # full JID -> last (type, show, status) printed
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("connection_failed", self.on_connection_failed)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("message_error", self.on_message_error)
        self.add_event_handler("presence", self.on_presence)

    async def get_dns_records(self, domain, port=None):  # noqa: D401 - slixmpp API: no DNS at all
        host, port = self.address_fixed
        return [(host, host, port)]

    async def on_session_start(self, _event):
        await self.get_roster()
        self.send_presence()
        out(f"logged in as {self.boundjid.full}; lines you type go to {self.peer} (/to JID, /quit)")

    def on_failed_auth(self, _event):
        out("login failed: wrong JID or password?")
        self.failed = True
        self.disconnect()

    def on_connection_failed(self, error):
        out(f"cannot connect to {self.address_fixed[0]}:{self.address_fixed[1]}: {error} "
            "(is ./tools/demo.sh --keep-running still running?)")
        self.failed = True
        self.loop.call_soon(self.give_up)  # after slixmpp has scheduled its retry

    def give_up(self):
        self.cancel_connection_attempt()
        self.disconnect()  # not connected: only ends the wait in main()

    def on_message(self, msg):
        if msg["body"]:
            out(f"{msg['from'].bare}: {msg['body']}")

    def on_message_error(self, msg):
        err = msg["error"]
        out(f"error from {msg['from']}: {err['condition']} {err['text'] or ''}".rstrip())

    def on_presence(self, pres):
        kind = pres["type"] or "available"
        who = pres["from"].full if pres["from"].bare == self.boundjid.bare else pres["from"].bare
        if kind in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            out(f"{who}: presence {kind}")
        elif kind in ("available", "unavailable") and pres["from"] != self.boundjid:
            key = (kind, pres["show"], pres["status"])
            if self.seen.get(pres["from"].full) == key:
                return  # the same presence again (e.g. probe answer and broadcast)
            self.seen[pres["from"].full] = key
            state = "online" if kind == "available" else "offline"
            extra = " ".join(x for x in (pres["show"], pres["status"]) if x)
            out(f"{who} is {state}" + (f" ({extra})" if extra else ""))

    def line(self, text: str) -> None:
        text = text.rstrip("\n")
        if text.startswith("/to "):
            self.peer = text[4:].strip()
            out(f"now talking to {self.peer}")
        elif text.strip() == "/quit":
            self.disconnect()
        elif text.strip():
            self.send_message(mto=self.peer, mbody=text, mtype="chat")


def main() -> int:
    ap = argparse.ArgumentParser(description="minimal console XMPP client for the s2smux demo")
    ap.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, required=True, help="the server's client port")
    ap.add_argument("jid", help="your JID, e.g. alice@a.test")
    ap.add_argument("password")
    ap.add_argument("peer", help="whom typed lines go to, e.g. bob@b.test")
    ap.add_argument("--debug", action="store_true", help="slixmpp's debug log (every stanza) on stderr")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR,
                        format="%(levelname)s %(name)s %(message)s")

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    xmpp = Chat(args.jid, args.password, args.peer, (args.host, args.port))
    xmpp.loop = loop

    def reader():
        for text in sys.stdin:
            loop.call_soon_threadsafe(xmpp.line, text)
        loop.call_soon_threadsafe(xmpp.disconnect)
    threading.Thread(target=reader, daemon=True).start()
    loop.add_signal_handler(signal.SIGINT, xmpp.disconnect)
    loop.add_signal_handler(signal.SIGTERM, xmpp.disconnect)

    xmpp.connect((args.host, args.port), use_ssl=False, force_starttls=False, disable_starttls=True)
    loop.run_until_complete(xmpp.disconnected)
    if not xmpp.failed:
        out("logged out")
    return 1 if xmpp.failed else 0


if __name__ == "__main__":
    sys.exit(main())
