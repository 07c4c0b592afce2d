"""Reusable check sequences for interop tests."""

from __future__ import annotations

import secrets

from .client import Client, Clients


def domain(jid: str) -> str:
    return jid.split("@", 1)[-1].split("/", 1)[0]


def check_message(t, cl: Clients, sender: Client, rcpt: Client, timeout: float = 10.0,
                  label: str | None = None) -> None:
    """Check: a chat message from `sender` reaches `rcpt` (no bounce)."""
    bare_from = sender.xmpp.boundjid.bare
    bare_to = rcpt.xmpp.boundjid.bare
    label = label or f"message {domain(bare_from)} -> {domain(bare_to)} delivered"
    with t.check(label):
        body = f"hello {bare_to} from {bare_from} {secrets.token_hex(4)}"
        mid = sender.send_message(bare_to, body)
        cl.wait_for(lambda: rcpt.has_body(body, bare_from) or sender.error_for(body, mid),
                    timeout, f"{bare_to} receives '{body}'")
        err = sender.error_for(body, mid)
        if err is not None:
            raise AssertionError(f"bounced: {err['error']['condition']} "
                                 f"({err['error']['text'] or 'no text'}) by {err['error']['by'] or '?'}")


def check_subscription(t, cl: Clients, subscriber: Client, contact: Client,
                       timeout: float = 10.0) -> None:
    """Check: `subscriber` subscribes to `contact`'s presence across S2S.

    subscribe -> (S2S) -> contact gets the request -> subscribed -> (S2S) ->
    subscriber gets 'subscribed' and the contact's available presence; the
    subscriber's roster then shows subscription 'to' or 'both'."""
    s = subscriber.xmpp.boundjid.bare
    c = contact.xmpp.boundjid.bare
    with t.check(f"presence subscription {s} -> {c} ({domain(s)} -> {domain(c)} and back)"):
        subscriber.subscribe(c)
        cl.wait_for(lambda: contact.presence_from(s, "subscribe"), timeout,
                    f"{c} receives the subscription request of {s}")
        contact.authorize(s)
        cl.wait_for(lambda: subscriber.presence_from(c, "subscribed"), timeout,
                    f"{s} receives 'subscribed' from {c}")
        cl.wait_for(lambda: subscriber.presence_from(c), timeout,
                    f"{s} receives the available presence of {c}")
        roster = subscriber.roster()
        if roster.get(c) not in ("to", "both"):
            raise AssertionError(f"roster of {s} has {c} with subscription {roster.get(c)!r}, want to/both")


def check_probe(t, cl: Clients, subscriber_jid: str, password: str, port: int, contact: Client,
                timeout: float = 10.0) -> Client:
    """Check: a new session of `subscriber_jid` sends initial presence, its
    server probes the remote contact, and the contact's presence comes back."""
    c = contact.xmpp.boundjid.bare
    with t.check(f"presence probe {domain(subscriber_jid)} -> {domain(c)} answered"):
        fresh = cl.connect(subscriber_jid, password, port)
        cl.wait_for(lambda: fresh.presence_from(c), timeout,
                    f"new session of {subscriber_jid} receives {c}'s presence after its probe")
        return fresh
    return None
