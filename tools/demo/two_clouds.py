"""The two-cloud demo (the default of ./tools/demo.sh): two hosting clouds,
each a Prosody behind its own s2smuxd, multiplexed over ONE connection.

    cloud A                                                        cloud B
    Prosody A  --inner-->  s2smuxd A  ==== one TLS 1.3 ====  s2smuxd B  <--inner--  Prosody B
    a1 a2 a3   <-upstream-            stream, MUX on,                   -upstream->  b1 b2 b3
    (+ c.test)                        every domain pair
                                      both ways

1. certificates issued now by the demo CA (certs/ca.pem, TEST ONLY) with
   certs/gen-certs.sh: a1.test a2.test a3.test, b1.test b2.test b3.test,
   c.test (served by Prosody A, NOT by gateway A at first) and a renewal of
   c.test (same subject, later expiry);
2. both gateways' configs (written and printed here), then the four servers;
3. one client per domain; a message across every domain pair, both ways,
   with its delivery time; `s2smuxctl streams` and `domains` on both
   gateways and the kernel's TCP table: one connection between the gateways;
4. live changes on gateway A with s2smuxctl, as an operator types them:
   `cert add` (c.test joins the stream: carol@c.test <-> bob@b1.test works),
   `cert replace` (renewal while carol keeps talking: gateway B's `certs`
   shows the new expiry), `cert remove` (carol's next message is refused:
   the error she gets is shown), then `stats` on both gateways;
5. a summary.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from common import (CTL, DemoBase, DemoFailed, DemoGateway, config_text, indent, issue, labelled, more, ms,
                    not_after, pick_ports, say, show_path)
from harness.client import Client
from harness.conntable import connections_between
from harness.prosody import Prosody

A_DOMAINS = ["a1.test", "a2.test", "a3.test"]
B_DOMAINS = ["b1.test", "b2.test", "b3.test"]
C = "c.test"  # hosted by Prosody A; gateway A serves it only after `cert add`
C_DAYS, C_RENEWAL_DAYS, DAYS = 90, 455, 365

# One user per domain (every user exists on every host of its Prosody).
USERS_A = {"alice": "a1.test", "anna": "a2.test", "amir": "a3.test", "carol": C}
USERS_B = {"bob": "b1.test", "bea": "b2.test", "ben": "b3.test"}


# Prosody 0.12 leaves Nagle's algorithm on for its sockets: on loopback a
# small stanza that follows another one soon after then waits for the delayed
# ACK (40 ms). Off here, so that the times printed are those of the servers.
PROSODY_TUNING = {"network_settings": {"nagle": False}}


def pw(user: str) -> str:
    return f"{user}-pw"


# Preferred loopback ports (a free one is used instead when one is taken).
PORTS = {
    "a_c2s": 15222,     # Prosody A, clients
    "a_s2s": 15268,     # Prosody A, S2S: only gateway A connects here (upstream)
    "a_outer": 15269,   # s2smuxd A, federation side (what would be 5269 on a real host)
    "a_inner": 15270,   # s2smuxd A, where Prosody A sends its outgoing S2S
    "b_c2s": 25222,
    "b_s2s": 25268,
    "b_outer": 25269,
    "b_inner": 25270,
}


def gateway_config(side: str, ports: dict[str, int]) -> str:
    s, other = side.lower(), ("b" if side == "A" else "a")
    domains = A_DOMAINS if side == "A" else B_DOMAINS
    dlist = ", ".join(f'"{d}"' for d in domains)
    rows: list[tuple[str, str | None]] = [
        ("", f"s2smuxd {side}, in front of Prosody {side}. Everything not set here is s2smuxd's"),
        ("", "default (man 5 s2smux.conf), among them: [mux] enabled = true (offer and"),
        ("", "ask for multiplexing), TLS policy \"required\", log level \"info\"."),
        ("", "Relative paths are relative to this file."),
        ("[gateway]", None),
        (f"domains = [{dlist}]",
         f"cloud {side}'s domains" + (f" ({C} is added live, later)" if side == "A" else "")),
        ('admin_socket = "admin.sock"', "for s2smuxctl (created with mode 0600)"),
        ("[listen]", None),
        (f'outer = "127.0.0.1:{ports[s + "_outer"]}"', "federation side (port 5269 on a real host)"),
        (f'inner = "127.0.0.1:{ports[s + "_inner"]}"', f"Prosody {side} sends its outgoing S2S here"),
        ("[upstream]", None),
        (f'address = "127.0.0.1:{ports[s + "_s2s"]}"', f"Prosody {side}'s own S2S port"),
        ("[tls]", None),
        ('ca_file = "../certs/ca.pem"', "trust anchor: the demo CA"),
    ]
    for i, d in enumerate(domains):
        rows += [("[[cert]]", "one certificate per domain" if i == 0 else None),
                 (f'cert = "../certs/{d}.pem"', None), (f'key = "../certs/{d}.key"', None)]
    rows += [("[[route]]", f"no DNS in the demo: cloud {other.upper()} is on this host"),
             ('domain = "*.test"', None),
             (f'address = "127.0.0.1:{ports[other + "_outer"]}"', f"s2smuxd {other.upper()}'s outer listener")]
    return config_text(rows)


def table(lines: list[str]) -> list[dict[str, str]]:
    """An s2smuxctl listing (header line, whitespace-separated cells) as dicts."""
    if not lines:
        return []
    head = lines[0].split()
    return [dict(zip(head, ln.split())) for ln in lines[1:] if ln.strip()]


def stats_dict(lines: list[str]) -> dict[str, int]:
    out = {}
    for ln in lines:
        f = ln.split()
        if len(f) == 2 and f[1].isdigit():
            out[f[0]] = int(f[1])
    return out


class TwoCloudDemo(DemoBase):
    def run(self) -> None:
        d = self.dir
        if not CTL.exists():
            raise DemoFailed(f"s2smuxctl not found at {show_path(CTL)} (build it: ninja -C build)")
        cdir = d / "certs"
        # -- 1. certificates ------------------------------------------------------------
        certs = issue(cdir, A_DOMAINS + B_DOMAINS, days=DAYS)
        certs[C] = issue(cdir, [C], days=C_DAYS)[C]
        renewal = issue(cdir / "renewal", [C], days=C_RENEWAL_DAYS)[C]
        self.c_cert, self.c_renewal = certs[C], renewal
        ca_name = certs[C].ca.name
        c_exp, r_exp = not_after(certs[C].cert), not_after(renewal.cert)
        say(f'certificates: issued just now by the demo CA "{ca_name}" (certs/ca.pem, TEST ONLY), '
            f"in {show_path(cdir)}/")
        indent(f"cloud A: {' '.join(A_DOMAINS)}   cloud B: {' '.join(B_DOMAINS)}   ({DAYS} days each)\n"
               f"{C}:  {C}.pem expires {c_exp}; renewal/{C}.pem: same subject CN={C}, expires {r_exp}\n"
               f"(each: dNSName and SRVName _xmpp-server.DOMAIN; one key per certificate)")
        self.results["certificates"] = f"{len(certs) + 1} fresh, from the demo CA"

        # -- 2. configs and servers -----------------------------------------------------
        ports = self.ports = pick_ports(PORTS)
        gwa = self.gwa = labelled(DemoGateway(d, gateway_config("A", ports), name="s2smuxd-a"), "s2smuxd A")
        gwb = self.gwb = labelled(DemoGateway(d, gateway_config("B", ports), name="s2smuxd-b"), "s2smuxd B")
        self.gateways += [gwa, gwb]
        for gw in (gwa, gwb):
            gw.write_config()
            say(f"{gw.label} config ({show_path(gw.config_file)}):")
            indent(gw.text, "       | ")
            gw.check()

        pa = self.pa = labelled(Prosody(
            d, "prosody-a", A_DOMAINS + [C], certs={h: certs[h] for h in A_DOMAINS + [C]},
            s2s_port=ports["a_s2s"], c2s_port=ports["a_c2s"], gateway=f"127.0.0.1:{ports['a_inner']}",
            s2s_secure_auth=False, users={u: pw(u) for u in USERS_A}, extra_global=PROSODY_TUNING), "Prosody A")
        pb = self.pb = labelled(Prosody(
            d, "prosody-b", B_DOMAINS, certs={h: certs[h] for h in B_DOMAINS},
            s2s_port=ports["b_s2s"], c2s_port=ports["b_c2s"], gateway=f"127.0.0.1:{ports['b_inner']}",
            s2s_secure_auth=False, users={u: pw(u) for u in USERS_B}, extra_global=PROSODY_TUNING), "Prosody B")
        for gw, s in ((gwa, "a"), (gwb, "b")):
            self.start(gw, f"{gw.label}: outer 127.0.0.1:{ports[s + '_outer']}, inner 127.0.0.1:{ports[s + '_inner']}, "
                           f"upstream 127.0.0.1:{ports[s + '_s2s']}, admin socket {show_path(gw.admin_socket)}")
        self.start(pa, f"Prosody A ({' '.join(A_DOMAINS)} {C}): c2s 127.0.0.1:{ports['a_c2s']}, "
                       f"all outgoing S2S to s2smuxd A")
        self.start(pb, f"Prosody B ({' '.join(B_DOMAINS)}): c2s 127.0.0.1:{ports['b_c2s']}, "
                       f"all outgoing S2S to s2smuxd B")

        # -- 3. clients and messages ----------------------------------------------------
        say("clients log in ...", end="")
        t = time.monotonic()
        users = {}
        for u, dom in USERS_A.items():
            users[dom] = self.login(f"{u}@{dom}", pw(u), ports["a_c2s"], quiet=True)
        for u, dom in USERS_B.items():
            users[dom] = self.login(f"{u}@{dom}", pw(u), ports["b_c2s"], quiet=True)
        self.users = users
        more(f" {len(users)} online in {ms(time.monotonic() - t)}: "
             + ", ".join(c.jid for c in users.values()))

        say("a message across every domain pair, both ways, then a second one; delivery times (sent -> received).")
        indent("The first of a pair includes Prosody opening its own S2S stream to its gateway for that pair\n"
               "(the very first one also the two gateways connecting); the second is the steady state:")
        first_times, again_times = [], []
        for a in A_DOMAINS:
            for b in B_DOMAINS:
                ca, cb = users[a], users[b]
                say(f"  {ca.jid:<13} -> {cb.jid:<11}", end="")
                for n, (x, y) in enumerate(((ca, cb), (cb, ca))):
                    if n:
                        more(f"    {x.jid:<11} -> {y.jid:<13}", end="")
                    t1, _ = self.deliver(x, y, f"hello {y.jid}, this is {x.jid}")
                    more(f"{ms(t1):>7}", end="")
                    t2, _ = self.deliver(x, y, f"hello again {y.jid}, this is {x.jid}")
                    more(f", then {ms(t2):>4}", end="")
                    first_times.append(t1)
                    again_times.append(t2)
                more("")
        again = sorted(again_times)
        self.results["messages"] = (f"{2 * len(first_times)} delivered over {len(A_DOMAINS) * len(B_DOMAINS)} domain "
                                    f"pairs both ways: first of a pair {min(first_times) * 1000:.0f}-{ms(max(first_times))}, "
                                    f"then median {ms(again[len(again) // 2])}, max {ms(again[-1])}")

        self.show_streams()
        n = self.show_connections("kernel TCP table")
        self.results["connections"] = f"{n} TCP connection between the two gateways"
        for gw in (gwa, gwb):
            rows = table(self.ctl(gw, "domains"))
            bad = [r for r in rows if r.get("STATE") != "accepted"]
            if bad:
                raise DemoFailed(f"{gw.label}: domains not accepted on the mux stream: {bad}")

        # -- 4. live changes ------------------------------------------------------------
        self.live(users)

        # -- 5. summary -----------------------------------------------------------------
        n = self.count_connections()
        if n != 1:
            raise DemoFailed(f"{n} TCP connections between the gateways at the end (expected 1)")
        mux = [r for r in table(self.ctl(gwa, "streams", show=False)) if r.get("MUX") == "on"]
        if [r["ID"] for r in mux] != [self.mux_ids[gwa]]:
            raise DemoFailed(f"the mux stream changed during the live changes: {mux}")
        self.results["connections"] += f" (still the same one, {self.mux_ids[gwa]}, after the live changes)"
        say("summary: OK")
        width = max(len(k) for k in self.results)
        for k, v in self.results.items():
            indent(f"{k:<{width}}  {v}")
        indent(f"{'time':<{width}}  {time.monotonic() - self.t0:.1f} s since the demo started")

    # -- s2smuxctl -------------------------------------------------------------------------
    def ctl_command(self, gw: DemoGateway, *args: str) -> tuple[list[str], str]:
        """The argv to run and the line to print (paths as seen from here)."""
        shown = ["s2smuxctl", "-s", show_path(gw.admin_socket), *args]
        return [str(CTL), *shown[1:]], " ".join(shown)

    def ctl(self, gw: DemoGateway, *args: str, show: bool = True, check: bool = True) -> list[str]:
        argv, line = self.ctl_command(gw, *args)
        if show:
            say(f"{gw.label}$ {line}")
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=40)
        if show:
            indent(r.stdout + r.stderr, "       > ")
        if check and r.returncode != 0:
            raise DemoFailed(f"s2smuxctl {' '.join(args)} on {gw.label}: exit {r.returncode}: {r.stderr.strip()}")
        return r.stdout.splitlines()

    def show_streams(self) -> None:
        """`s2smuxctl streams` on both gateways: exactly one mux stream each,
        between the two gateways, carrying every domain each way."""
        ids = {}
        for gw, kind, n_out, n_in in ((self.gwa, "outer-out", len(A_DOMAINS), len(B_DOMAINS)),
                                      (self.gwb, "outer-in", len(B_DOMAINS), len(A_DOMAINS))):
            if gw is self.gwa:
                lines = self.ctl(gw, "streams")
            else:
                # Only the header and the outer stream: the rest mirrors A's.
                _, line = self.ctl_command(gw, "streams")
                say(f"{gw.label}$ {line} | grep -E '^ID|outer'")
                lines = self.ctl(gw, "streams", show=False)
                indent("\n".join(ln for ln in lines if re.match(r"^ID|.*outer", ln)), "       > ")
            rows = table(lines)
            mux = [r for r in rows if r.get("MUX") == "on"]
            outer = [r for r in rows if r.get("KIND", "").startswith("outer")]
            if len(mux) != 1 or len(outer) != 1 or mux[0] is not outer[0]:
                raise DemoFailed(f"{gw.label}: expected exactly one outer stream, with MUX on; got {outer}")
            m = mux[0]
            if m["KIND"] != kind or int(m["DOMAINS_OUT"]) != n_out or int(m["DOMAINS_IN"]) != n_in:
                raise DemoFailed(f"{gw.label}: expected {kind} with {n_out} domains out and {n_in} in: {m}")
            ids[gw] = m["ID"]
            if gw is self.gwa:
                local = len(rows) - 1
                indent(f"between the clouds: ONE outer stream ({m['ID']}: TLS 1.3, MUX on, {n_out} domains out, "
                       f"{n_in} in);\n"
                       f"inside cloud A: {local} standard S2S streams between Prosody A and s2smuxd A, one per "
                       f"domain pair\nand direction (inner-in: Prosody's outgoing streams, dialback; "
                       f"upstream-out: into Prosody)")
        self.mux_ids = ids
        self.results["streams"] = (f"one mux stream ({ids[self.gwa]} on A, {ids[self.gwb]} on B), "
                                   f"{len(A_DOMAINS)} domains each way")

    def count_connections(self) -> int:
        return len(connections_between(self.gwa, self.gwb))

    def show_connections(self, what: str) -> int:
        conns = connections_between(self.gwa, self.gwb)
        pa, pb = self.ports["a_outer"], self.ports["b_outer"]
        say(f"{what} (/proc/net/tcp): {len(conns)} established TCP connection(s) between the two gateway processes")
        for c in conns:
            a = c.a  # gateway A's end
            where = {pa: "s2smuxd A outer", pb: "s2smuxd B outer"}
            left = f"{a.local[0]}:{a.local[1]} ({where.get(a.local[1], 's2smuxd A')})"
            right = f"{a.remote[0]}:{a.remote[1]} ({where.get(a.remote[1], 's2smuxd B')})"
            indent(f"{left} <-> {right}")
        indent(f"(the same with iproute2: ss -tn state established '( sport = :{pa} or sport = :{pb} )')")
        if len(conns) != 1:
            raise DemoFailed(f"{len(conns)} TCP connections between the gateways (expected exactly 1)")
        return len(conns)

    # -- the live part ----------------------------------------------------------------------
    def message_line(self, sender: Client, rcpt: Client, body: str) -> float:
        say(f"  {sender.jid} -> {rcpt.jid}: \"{body}\" ... ", end="")
        dt, _ = self.deliver(sender, rcpt, body)
        more(f"delivered in {ms(dt)}")
        return dt

    def refused_line(self, sender: Client, rcpt: Client, body: str) -> str:
        say(f"  {sender.jid} -> {rcpt.jid}: \"{body}\" ... ", end="")
        dt, err = self.deliver(sender, rcpt, body, refused_ok=True)
        if err is None:
            more(f"delivered in {ms(dt)}")
            raise DemoFailed(f"{sender.jid} -> {rcpt.jid} was delivered; it should have been refused")
        e = err["error"]
        more(f"refused after {ms(dt)}")
        text = f"{e['type']}/{e['condition']}: {e['text'] or '(no text)'}"
        indent(f"    {sender.jid} received <message type='error' from='{err['from']}'>: {text}")
        return text

    def live(self, users: dict[str, Client]) -> None:
        gwa, gwb = self.gwa, self.gwb
        carol, bob, alice = users[C], users["b1.test"], users["a1.test"]
        say(f"live changes on s2smuxd A with s2smuxctl ({show_path(CTL)}), while the stream stays up:")

        # Before: c.test is hosted by Prosody A but not served by gateway A.
        say(f"{C} is hosted by Prosody A, but s2smuxd A has no certificate for it yet:")
        before = self.refused_line(carol, bob, "hi bob, carol here (too early)")
        indent("    (s2smuxd A refuses to authenticate Prosody A's stream from c.test: not one of its domains)")
        self.results["before add"] = f"carol's message refused: {before}"

        # cert add
        out = self.ctl(gwa, "cert", "add", show_path(self.c_cert.cert), show_path(self.c_cert.key))
        if not any("accepted" in ln for ln in out):
            raise DemoFailed(f"cert add: s2smuxd B did not accept {C}: {out}")
        t1 = self.message_line(carol, bob, "hi bob, carol here")
        t2 = self.message_line(bob, carol, "hi carol, welcome")
        self.results["cert add"] = (f"{C} joined the live stream; carol@{C} <-> bob@b1.test in "
                                    f"{ms(t1)} / {ms(t2)}")

        # cert replace, while carol keeps sending
        say(f"carol@{C} keeps sending to bob@b1.test (every 20 ms) during the renewal:")
        argv, line = self.ctl_command(gwa, "cert", "replace", show_path(self.c_renewal.cert),
                                      show_path(self.c_renewal.key))
        say(f"{gwa.label}$ {line}")
        sent: dict[str, str] = {}
        errors_before = len(carol.errors)
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        end = None
        while True:
            body = f"renewal check {len(sent)}"
            sent[body] = carol.send_message(bob.jid, body)
            self.cl.sleep(0.02)
            if end is None and p.poll() is not None:
                end = time.monotonic() + 0.2
            if end is not None and time.monotonic() >= end:
                break
        o, e = p.communicate(timeout=30)
        indent(o + e, "       > ")
        if p.returncode != 0:
            raise DemoFailed(f"cert replace: exit {p.returncode}: {e.strip()}")
        self.wait(lambda: all(bob.has_body(b) for b in sent) or len(carol.errors) > errors_before,
                  "carol's messages during the renewal")
        bounced = len(carol.errors) - errors_before
        got = sum(1 for b in sent if bob.has_body(b))
        say(f"  during the renewal: {len(sent)} messages sent by carol@{C}, {got} delivered, {bounced} refused")
        if bounced or got != len(sent):
            raise DemoFailed(f"messages lost or refused during cert replace ({got}/{len(sent)} delivered)")
        rows = [r for r in table(self.ctl(gwb, "certs")) if r.get("SIDE") == "peer" and C in r.get("NAMES", "")]
        if not rows or rows[0]["EXPIRES"] != not_after(self.c_renewal.cert):
            raise DemoFailed(f"s2smuxd B does not show the renewal's expiry for {C}: {rows}")
        indent(f"s2smuxd B now holds {C}'s renewal: expires {rows[0]['EXPIRES']} "
               f"(was {not_after(self.c_cert.cert)})")
        self.results["cert replace"] = (f"renewal seen by s2smuxd B (expires {rows[0]['EXPIRES']}); "
                                        f"{got}/{len(sent)} of carol's messages delivered during it")

        # cert remove
        self.ctl(gwa, "cert", "remove", C)
        refused = self.refused_line(carol, bob, "hi bob, carol again")
        back = self.refused_line(bob, carol, "carol, are you there?")
        self.message_line(alice, bob, "still here?")
        self.results["cert remove"] = f"carol's message refused: {refused}"
        self.results["refused back"] = f"bob's message to carol refused: {back}"

        self.show_stats()

    def show_stats(self) -> None:
        """`s2smuxctl stats` on both gateways, side by side."""
        st, order = {}, []
        for gw in (self.gwa, self.gwb):
            _, line = self.ctl_command(gw, "stats")
            say(f"{gw.label}$ {line}")
            lines = self.ctl(gw, "stats", show=False)
            st[gw] = stats_dict(lines)
            for k in st[gw]:
                if k in order:
                    continue
                if gw is self.gwa:
                    order.append(k)
                    continue
                # A counter only one side has goes among its siblings (streams.outer-in).
                group = [i for i, o in enumerate(order) if o.rsplit(".", 1)[0] == k.rsplit(".", 1)[0]]
                later = [i for i in group if order[i] > k]
                order.insert(later[0] if later else group[-1] + 1 if group else len(order), k)
        width = max(len(k) for k in order)
        out = [f"{'':<{width}}  {'A':>6}  {'B':>6}"]
        for k in order:
            va, vb = st[self.gwa].get(k, "-"), st[self.gwb].get(k, "-")
            out.append(f"{k:<{width}}  {va:>6}  {vb:>6}")
        indent("\n".join(out), "       > ")
        indent("stanzas.bounced: messages refused by the gateway and returned to their sender with an error;\n"
               "mux.adds_ok / mux.peer_adds_ok: certificates this gateway / its peer added to the live stream")
        if st[self.gwa].get("stanzas.bounced", 0) < 1 or st[self.gwb].get("stanzas.bounced", 0) < 1:
            raise DemoFailed("s2smuxctl stats does not count the refused messages")

    # -- keep running ------------------------------------------------------------------------
    def hold_text(self) -> str:
        p = self.ports
        rel = show_path(self.dir)
        lines = ["Log in by hand (plain TCP on 127.0.0.1 is allowed; the names do not resolve:",
                 "set server 127.0.0.1 and the port by hand in the client):"]
        for u, dom in USERS_A.items():
            note = f"; {C} was removed from s2smuxd A: cert add it again (below)" if dom == C else ""
            lines.append(f"  {u + '@' + dom:<14} password {pw(u):<9} port {p['a_c2s']}  (Prosody A{note})")
        for u, dom in USERS_B.items():
            lines.append(f"  {u + '@' + dom:<14} password {pw(u):<9} port {p['b_c2s']}  (Prosody B)")
        lines += [
            "Or with the demo's console client, one per terminal (type a line to send it):",
            f"  /usr/bin/python3 tools/demo/chat.py --port {p['a_c2s']} alice@a1.test {pw('alice')} bob@b1.test",
            f"  /usr/bin/python3 tools/demo/chat.py --port {p['b_c2s']} bob@b1.test {pw('bob')} alice@a1.test",
            "Control the gateways (s2smuxctl help lists the commands):",
            f"  {show_path(CTL)} -s {show_path(self.gwa.admin_socket)} streams     # s2smuxd A",
            f"  {show_path(CTL)} -s {show_path(self.gwb.admin_socket)} streams     # s2smuxd B",
            f"  {show_path(CTL)} -s {show_path(self.gwa.admin_socket)} cert add "
            f"{show_path(self.c_renewal.cert)} {show_path(self.c_renewal.key)}",
            f"Gateway logs: {rel}/s2smuxd-a/s2smuxd.log, {rel}/s2smuxd-b/s2smuxd.log",
            f"Prosody logs (every stanza): {rel}/prosody-a/prosody.log, {rel}/prosody-b/prosody.log",
        ]
        return "\n".join(lines)


def make(run_dir: Path, keep_running: bool) -> TwoCloudDemo:
    return TwoCloudDemo(run_dir, keep_running)
