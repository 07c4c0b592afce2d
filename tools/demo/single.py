"""The single-gateway demo (`./tools/demo.sh --single`): s2smuxd in front of
one Prosody, federating with a plain Prosody that knows nothing of s2smux.

    alice@a.test --c2s--> Prosody a.test --inner---> s2smuxd --outer--> Prosody b.test <--c2s-- bob@b.test
                          Prosody a.test <--upstream-- s2smuxd <--outer-- Prosody b.test

1. certificates for a.test and b.test, issued now by the demo CA
   (certs/ca.pem, "s2smux Demo CA (TEST ONLY)") with certs/gen-certs.sh;
2. s2smuxd with a short config written here (everything else is its built-in
   default), Prosody a.test sending all its S2S through it, plain Prosody
   b.test with s2s_secure_auth = true;
3. slixmpp clients alice@a.test and bob@b.test: a message each way, then a
   presence subscription each way;
4. the gateway log lines that show how each stream was secured (standard
   S2S: TLS 1.3 + SASL EXTERNAL outside, dialback inside), a summary.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from common import (DemoBase, DemoFailed, DemoGateway, config_text, indent, issue, labelled, ms,
                    pick_ports, say, more, show_path)
from harness.client import Client
from harness.prosody import Prosody

USERS = {"alice": ("a.test", "alice-pw"), "bob": ("b.test", "bob-pw")}

# Preferred loopback ports (a free one is used instead when one is taken).
PORTS = {
    "a_c2s": 15222,     # Prosody a.test, clients
    "a_s2s": 15268,     # Prosody a.test, S2S: only the gateway connects here (upstream)
    "gw_outer": 15269,  # s2smuxd, federation side (what would be 5269 on a real host)
    "gw_inner": 15270,  # s2smuxd, where Prosody a.test sends its outgoing S2S
    "b_c2s": 25222,     # Prosody b.test, clients
    "b_s2s": 25269,     # Prosody b.test, S2S
}


def gateway_config(ports: dict[str, int]) -> str:
    return config_text([
        ("", "s2smuxd configuration written by the demo (tools/demo/single.py)."),
        ("", "Only what the demo needs; everything else is s2smuxd's built-in default"),
        ("", '(man/s2smux.conf.5.scd): TLS policy "required" toward remote servers,'),
        ("", 'TLS "optional" toward the local server, a random dialback secret, log'),
        ("", 'level "info" on standard error. Relative paths: from this file.'),
        ("", None),
        ("[gateway]", None),
        ('domains = ["a.test"]', "the local server's domains"),
        ("", None),
        ("[listen]", None),
        (f'outer = "127.0.0.1:{ports["gw_outer"]}"', "federation side: remote servers connect here"),
        (f'inner = "127.0.0.1:{ports["gw_inner"]}"', "Prosody a.test sends its outgoing S2S here"),
        ("", None),
        ("[upstream]", None),
        (f'address = "127.0.0.1:{ports["a_s2s"]}"', "Prosody a.test's own S2S port"),
        ("", None),
        ("[tls]", None),
        ('ca_file = "../certs/ca.pem"', "trust anchor for remote servers: the demo CA"),
        ("", None),
        ("[[cert]]", "what a.test presents to remote servers"),
        ('cert = "../certs/a.test.pem"', None),
        ('key = "../certs/a.test.key"', None),
        ("", None),
        ("[[route]]", "no DNS in the demo: b.test is on this host"),
        ('domain = "b.test"', None),
        (f'address = "127.0.0.1:{ports["b_s2s"]}"', None),
    ])


def gateway_excerpt(log: str) -> list[str]:
    """The gateway log lines with "TLS established" or "authenticated", without
    the date and level."""
    out = []
    for line in log.splitlines():
        if "TLS established" in line or "authenticated" in line:
            m = re.match(r"^\d{4}-\d\d-\d\dT(\S+?)Z?\s+\w+\s+(.*)$", line)
            out.append(f"{m.group(1)}  {m.group(2)}" if m else line)
    return out


def check_gateway_log(log: str) -> list[str]:
    """What the excerpt must show; returns the problems."""
    want = [
        (r"\[\S+ outer-out a\.test->b\.test [^\]]*\] TLS established \(TLS1\.3",
         "outgoing a.test -> b.test stream with TLS 1.3"),
        (r"authenticated a\.test -> b\.test \(outgoing, SASL EXTERNAL\)",
         "outgoing a.test -> b.test authenticated with SASL EXTERNAL"),
        (r"\[\S+ outer-in [^\]]*\] TLS established \(TLS1\.3",
         "incoming b.test -> a.test stream with TLS 1.3"),
        (r"authenticated b\.test -> a\.test \(incoming, SASL EXTERNAL\)",
         "incoming b.test -> a.test authenticated with SASL EXTERNAL"),
        (r"authenticated a\.test -> b\.test \(incoming, dialback",
         "Prosody a.test authenticated on the inner side with dialback"),
        (r"authenticated b\.test -> a\.test \(outgoing, dialback",
         "stream into Prosody a.test authenticated with dialback"),
    ]
    return [what for rx, what in want if not re.search(rx, log)]


class SingleDemo(DemoBase):
    def run(self) -> None:
        d = self.dir
        certs = issue(d / "certs", ["a.test", "b.test"])
        ca_name = certs["a.test"].ca.name
        say(f'certificates: issued just now by the demo CA "{ca_name}" (certs/ca.pem, TEST ONLY)')
        for dom in ("a.test", "b.test"):
            indent(f"{dom}: {show_path(certs[dom].cert)}  (dNSName {dom}, SRVName _xmpp-server.{dom})")
        self.results["certificates"] = f'a.test, b.test: fresh, from the demo CA "{ca_name}"'

        ports = self.ports = pick_ports(PORTS)
        text = gateway_config(ports)
        gw = self.gw = labelled(DemoGateway(d, text), "s2smuxd")
        self.gateways.append(gw)
        gw.write_config()
        say(f"gateway config ({show_path(gw.config_file)}):")
        indent(text, "       | ")
        gw.check()

        pa = labelled(Prosody(d, "prosody-a", ["a.test"], certs={"a.test": certs["a.test"]},
                              s2s_port=ports["a_s2s"], c2s_port=ports["a_c2s"],
                              gateway=f"127.0.0.1:{ports['gw_inner']}", s2s_secure_auth=False,
                              users={"alice": USERS["alice"][1]}), "Prosody a.test")
        pb = labelled(Prosody(d, "prosody-b", ["b.test"], certs={"b.test": certs["b.test"]},
                              s2s_port=ports["b_s2s"], c2s_port=ports["b_c2s"],
                              routes={"a.test": f"127.0.0.1:{ports['gw_outer']}"}, s2s_secure_auth=True,
                              users={"bob": USERS["bob"][1]}), "Prosody b.test")

        self.start(gw, f"s2smuxd: outer 127.0.0.1:{ports['gw_outer']}, inner 127.0.0.1:{ports['gw_inner']}, "
                       f"upstream 127.0.0.1:{ports['a_s2s']}")
        self.start(pa, f"Prosody a.test (behind s2smuxd): c2s 127.0.0.1:{ports['a_c2s']}, "
                       f"s2s 127.0.0.1:{ports['a_s2s']}, s2smux_gateway = 127.0.0.1:{ports['gw_inner']}")
        self.start(pb, f"Prosody b.test (plain, s2s_secure_auth = true): c2s 127.0.0.1:{ports['b_c2s']}, "
                       f"s2s 127.0.0.1:{ports['b_s2s']}, a.test at 127.0.0.1:{ports['gw_outer']}")

        alice = self.login("alice@a.test", USERS["alice"][1], ports["a_c2s"])
        bob = self.login("bob@b.test", USERS["bob"][1], ports["b_c2s"])

        t1 = self.message(alice, bob, "Hello from a.test")
        t2 = self.message(bob, alice, "Hello back from b.test")
        self.results["messages"] = (f"a.test -> b.test in {ms(t1)}, b.test -> a.test in {ms(t2)} "
                                    "(each includes setting up the S2S streams)")
        s1 = self.subscription(alice, bob)
        s2 = self.subscription(bob, alice)

        ra, rb = alice.roster(), bob.roster()
        sub_a, sub_b = ra.get("bob@b.test"), rb.get("alice@a.test")
        say(f"rosters: alice@a.test has bob@b.test (subscription={sub_a}), "
            f"bob@b.test has alice@a.test (subscription={sub_b})")
        if sub_a != "both" or sub_b != "both":
            raise DemoFailed("the rosters do not show a mutual subscription ('both')")
        self.results["presence"] = (f"mutual subscription, both rosters 'both' (approval and presence "
                                    f"back in {ms(s1)} and {ms(s2)})")

        log = gw.log_text()
        lines = gateway_excerpt(log)
        say(f'gateway log excerpt (lines with "TLS established" or "authenticated", '
            f"{show_path(gw.log_file)}):")
        indent("\n".join(lines) or "(none)", "       | ")
        indent("outer-*       the federation side, to and from b.test: TLS 1.3, b.test's certificate\n"
               "              verified against the demo CA, then SASL EXTERNAL, in both directions\n"
               "inner-in      Prosody a.test's outgoing stream into the gateway: STARTTLS without a client\n"
               "              certificate, then dialback (the local server is trusted)\n"
               "upstream-out  the gateway handing b.test's stanzas to Prosody a.test: TLS, then dialback\n"
               "              (Prosody checks the key through its inner stream)")
        missing = check_gateway_log(log)
        if missing:
            raise DemoFailed("the gateway log does not show: " + "; ".join(missing))
        self.results["outside"] = "s2smuxd <-> Prosody b.test: TLS 1.3 + SASL EXTERNAL, both directions"
        self.results["inside"] = "Prosody a.test <-> s2smuxd: dialback (the local server is trusted)"

        say("summary: OK")
        width = max(len(k) for k in self.results)
        for k, v in self.results.items():
            indent(f"{k:<{width}}  {v}")
        indent(f"{'time':<{width}}  {time.monotonic() - self.t0:.1f} s since the demo started")

    def message(self, sender: Client, rcpt: Client, body: str) -> float:
        say(f'{sender.jid} -> {rcpt.jid}: "{body}" ...', end="")
        dt, _ = self.deliver(sender, rcpt, body)
        more(f" delivered in {ms(dt)}")
        return dt

    def subscription(self, subscriber: Client, contact: Client) -> float:
        s, c = subscriber.jid, contact.jid
        arr = self.arr

        def presence(client, frm, ptype, since):
            return lambda: arr[client].find(
                since, lambda p: p.name == "presence" and p["from"].bare == frm
                and (p["type"] or "available") == ptype)

        say(f"{s} -> {c}: presence subscription request ...", end="")
        since = time.monotonic()
        subscriber.subscribe(c)
        hit = self.wait(presence(contact, s, "subscribe", since), f"{c} receives the request")
        more(f" received in {ms(hit[0] - since)}")

        say(f"{c} -> {s}: approves (subscribed) ...", end="")
        since = time.monotonic()
        contact.authorize(s)
        hit = self.wait(presence(subscriber, c, "subscribed", since), f"{s} receives 'subscribed'")
        more(f" received in {ms(hit[0] - since)}", end="")
        hit2 = self.wait(presence(subscriber, c, "available", since), f"{s} receives {c}'s presence")
        dt = max(hit[0], hit2[0]) - since
        more(f"; {s} sees {c} online after {ms(hit2[0] - since)}")
        return dt

    def hold_text(self) -> str:
        p = self.ports
        rel = show_path(self.dir)
        return f"""\
Log in by hand (plain TCP on 127.0.0.1 is allowed; for STARTTLS trust certs/ca.pem):
  alice@a.test  password {USERS['alice'][1]}  server 127.0.0.1  port {p['a_c2s']}  (Prosody a.test, behind s2smuxd)
  bob@b.test    password {USERS['bob'][1]}    server 127.0.0.1  port {p['b_c2s']}  (Prosody b.test)
The names a.test and b.test do not resolve: set server and port by hand in the client.
Or with the demo's console client, one per terminal (type a line to send it):
  /usr/bin/python3 tools/demo/chat.py --port {p['a_c2s']} alice@a.test {USERS['alice'][1]} bob@b.test
  /usr/bin/python3 tools/demo/chat.py --port {p['b_c2s']} bob@b.test {USERS['bob'][1]} alice@a.test
s2smuxd listens on 127.0.0.1:{p['gw_outer']} (outer, federation) and 127.0.0.1:{p['gw_inner']} (inner).
Watch the gateway: tail -f {rel}/s2smuxd/s2smuxd.log
Other logs: {rel}/prosody-a/prosody.log, {rel}/prosody-b/prosody.log (every stanza)"""


def make(run_dir: Path, keep_running: bool) -> SingleDemo:
    return SingleDemo(run_dir, keep_running)
