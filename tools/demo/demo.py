#!/usr/bin/python3
"""The s2smux demo (run it through tools/demo.sh, which installs and builds first).

    /usr/bin/python3 tools/demo/demo.py [--keep-running] [--dir DIR]

On 127.0.0.1, under the run directory (default: demo-run/ in the repository,
wiped at start):

    alice@a.test --c2s--> Prosody a.test --inner---> s2smuxd --outer--> Prosody b.test <--c2s-- bob@b.test
                          Prosody a.test <--upstream-- s2smuxd <--outer-- Prosody b.test

1. certificates for a.test and b.test, issued now by the demo CA
   (certs/ca.pem, "s2smux Demo CA (TEST ONLY)") with certs/gen-certs.sh;
2. s2smuxd with a short config written here (everything else is its built-in
   default), Prosody a.test sending all its S2S through it, plain Prosody
   b.test with s2s_secure_auth = true;
3. slixmpp clients alice@a.test and bob@b.test: a message each way, then a
   presence subscription each way;
4. the gateway log lines that show how each stream was secured, a summary,
   and a clean stop (or, with --keep-running, the servers stay up until
   Ctrl-C).

Exit status 0 on success (or Ctrl-C after --keep-running's demo); 1 on
failure, after the tails of the logs; 130 when interrupted before the end.
Servers, clients and config writers come from tests/interop/harness.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "interop"))

from harness import proc  # noqa: E402
from harness.certs import CertAuthority, DomainCert  # noqa: E402
from harness.client import Client, Clients, WaitTimeout  # noqa: E402
from harness.gateway import S2smuxd  # noqa: E402
from harness.ports import free_port  # noqa: E402
from harness.prosody import Prosody  # noqa: E402

TIME_LIMIT = 60.0     # seconds up to the summary (stopping: own timeouts, watchdog 30 s later)
STEP_TIMEOUT = 10.0   # seconds for one delivery
MARKER = ".s2smux-demo"  # marks a directory this demo may wipe
TAIL = 40             # log lines shown per file on failure

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


class DemoTimeout(Exception):
    pass


class Stop(Exception):
    """Ctrl-C or SIGTERM."""


class DemoFailed(Exception):
    pass


_pending: BaseException | None = None  # Stop/DemoTimeout that arrived inside the client loop


def interrupt(exc: BaseException) -> None:
    """From a signal handler: raise `exc` in the main thread, unless the
    clients' asyncio loop is running there; an exception raised inside one of
    its callbacks would be swallowed, so stop the loop instead (the
    interrupted run_until_complete() raises RuntimeError, and main() looks at
    _pending)."""
    global _pending
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise exc from None
    _pending = exc
    loop.call_soon_threadsafe(loop.stop)


# -- output -------------------------------------------------------------------------

_line_open = False  # a say(..., end="") line waits for its result


def say(text: str = "", end: str = "\n") -> None:
    global _line_open
    if _line_open:
        print(flush=True)
    print(f"[demo] {text}" if text else "", end=end, flush=True)
    _line_open = end != "\n"


def more(text: str, end: str = "\n") -> None:
    """Continue a line started with say(..., end="")."""
    global _line_open
    print(text, end=end, flush=True)
    _line_open = end != "\n"


def end_line() -> None:
    """Terminate a line left open by a step that failed half-way."""
    if _line_open:
        more(" FAILED")


def indent(text: str, prefix: str = "       ") -> None:
    for line in text.rstrip("\n").splitlines():
        print(prefix + line if line else prefix.rstrip(), flush=True)


def show_path(p: Path) -> str:
    """p relative to the working directory when below it (for readable output)."""
    try:
        rel = p.resolve().relative_to(Path.cwd().resolve())
        return "./" + str(rel) if str(rel) != "." else "."
    except ValueError:
        return str(p)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# -- run directory --------------------------------------------------------------------

def pid_alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"demo.py" in cmdline


def prepare_dir(d: Path, default: Path) -> None:
    """Wipe and recreate the run directory, refusing anything that does not
    look like one of ours (so that --dir ~ cannot delete a home directory)."""
    if d.exists() or d.is_symlink():
        if not d.is_dir() or d.is_symlink():
            raise DemoFailed(f"{d} exists and is not a directory; choose another --dir")
        pidfile = d / "demo.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and pid != os.getpid() and pid_alive(pid):
            raise DemoFailed(f"a demo is still running in {show_path(d)} (pid {pid}, --keep-running?); "
                             f"stop it with Ctrl-C or 'kill {pid}' first, or use another --dir")
        if not (d / MARKER).exists() and any(d.iterdir()) and d.resolve() != default.resolve():
            raise DemoFailed(f"{d} is not empty and is not a demo run directory (no {MARKER} file); "
                             f"refusing to wipe it: choose an empty or new --dir")
        shutil.rmtree(d)
    d.mkdir(parents=True)
    (d / MARKER).write_text("s2smux demo run directory: tools/demo.sh wipes it at start\n")
    (d / "demo.pid").write_text(f"{os.getpid()}\n")


def pick_port(preferred: int) -> int:
    """`preferred` when nothing listens there, else any free loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


# -- certificates -----------------------------------------------------------------------

def make_certs(d: Path) -> tuple[str, dict[str, DomainCert]]:
    """Fresh leaves for a.test and b.test from the committed demo CA, with
    certs/gen-certs.sh (it reuses ca.pem/ca.key found in its --out directory)."""
    d.mkdir(parents=True, exist_ok=True)
    for f in ("ca.pem", "ca.key"):
        shutil.copyfile(REPO / "certs" / f, d / f)
    r = subprocess.run([str(REPO / "certs" / "gen-certs.sh"), "--out", str(d), "a.test", "b.test"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    if r.returncode != 0:
        raise DemoFailed(f"certs/gen-certs.sh failed:\n{r.stdout}")
    info = subprocess.run(["certtool", "-i", "--infile", str(d / "ca.pem")],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    m = re.search(r"^\s*Subject: CN=(.*)$", info, re.M)
    ca_name = m.group(1).strip() if m else "s2smux Demo CA (TEST ONLY)"
    ca = CertAuthority(ca_name, d / "ca.pem", d / "ca.key")
    certs = {}
    for dom in ("a.test", "b.test"):
        pem, key = d / f"{dom}.pem", d / f"{dom}.key"
        # gen-certs.sh writes the leaf only: peers trust ca.pem directly.
        certs[dom] = DomainCert(dom, [dom], pem, key, chain=pem, bundle=pem, ca=ca)
    return ca_name, certs


# -- the gateway ------------------------------------------------------------------------

def gateway_config(ports: dict[str, int]) -> str:
    rows = [
        ("# s2smuxd configuration written by the demo (tools/demo/demo.py).", None),
        ("# Only what the demo needs; everything else is s2smuxd's built-in default", None),
        ('# (man/s2smux.conf.5.scd): TLS policy "required" toward remote servers,', None),
        ('# TLS "optional" toward the local server, a random dialback secret, log', None),
        ('# level "info" on standard error. Relative paths: from this file.', None),
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
    ]
    width = max(len(code) for code, comment in rows if comment) + 2
    return "".join((f"{code:<{width}}# {comment}" if comment else code) + "\n" for code, comment in rows)


class DemoGateway(S2smuxd):
    """S2smuxd that writes the demo's commented config text as is."""

    def __init__(self, run_dir: Path, text: str):
        super().__init__(run_dir, binary=REPO / "build" / "s2smuxd", config=tomllib.loads(text))
        self.text = text

    def write_config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.text)
        return self.config_file


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


# -- clients ------------------------------------------------------------------------------

class Arrivals:
    """Arrival time of every message and presence a client receives (the
    harness keeps the stanzas, not when they came)."""

    def __init__(self, c: Client):
        self.items: list[tuple[float, object]] = []
        c.xmpp.add_event_handler("message", lambda m: self.items.append((time.monotonic(), m)))
        c.xmpp.add_event_handler("message_error", lambda m: self.items.append((time.monotonic(), m)))
        c.xmpp.add_event_handler("presence", lambda p: self.items.append((time.monotonic(), p)))

    def find(self, since: float, pred):
        for t, s in self.items:
            if t >= since and pred(s):
                return t, s
        return None


class Demo:
    def __init__(self, run_dir: Path, keep_running: bool):
        self.dir = run_dir
        self.keep_running = keep_running
        self.servers: list = []
        self.cl: Clients | None = None
        self.gw: DemoGateway | None = None
        self.results: dict[str, str] = {}
        self.t0 = time.monotonic()

    # -- steps -----------------------------------------------------------------------
    def run(self) -> None:
        d = self.dir
        ca_name, certs = make_certs(d / "certs")
        say(f'certificates: issued just now by the demo CA "{ca_name}" (certs/ca.pem, TEST ONLY)')
        for dom in ("a.test", "b.test"):
            indent(f"{dom}: {show_path(certs[dom].cert)}  (dNSName {dom}, SRVName _xmpp-server.{dom})")
        self.results["certificates"] = f'a.test, b.test: fresh, from the demo CA "{ca_name}"'

        ports = {k: pick_port(v) for k, v in PORTS.items()}
        self.ports = ports
        text = gateway_config(ports)
        gw = self.gw = DemoGateway(d, text)
        gw.write_config()
        say(f"gateway config ({show_path(gw.config_file)}):")
        indent(text, "       | ")
        r = subprocess.run([str(gw.binary), "-t", "--config", str(gw.config_file)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
        if r.returncode != 0:
            raise DemoFailed(f"s2smuxd -t rejected the config:\n{r.stdout}")

        pa = Prosody(d, "prosody-a", ["a.test"], certs={"a.test": certs["a.test"]},
                     s2s_port=ports["a_s2s"], c2s_port=ports["a_c2s"],
                     gateway=f"127.0.0.1:{ports['gw_inner']}", s2s_secure_auth=False,
                     users={"alice": USERS["alice"][1]})
        pb = Prosody(d, "prosody-b", ["b.test"], certs={"b.test": certs["b.test"]},
                     s2s_port=ports["b_s2s"], c2s_port=ports["b_c2s"],
                     routes={"a.test": f"127.0.0.1:{ports['gw_outer']}"}, s2s_secure_auth=True,
                     users={"bob": USERS["bob"][1]})
        self.pa, self.pb = pa, pb

        self.start(gw, f"s2smuxd: outer 127.0.0.1:{ports['gw_outer']}, inner 127.0.0.1:{ports['gw_inner']}, "
                       f"upstream 127.0.0.1:{ports['a_s2s']}")
        self.start(pa, f"Prosody a.test (behind s2smuxd): c2s 127.0.0.1:{ports['a_c2s']}, "
                       f"s2s 127.0.0.1:{ports['a_s2s']}, s2smux_gateway = 127.0.0.1:{ports['gw_inner']}")
        self.start(pb, f"Prosody b.test (plain, s2s_secure_auth = true): c2s 127.0.0.1:{ports['b_c2s']}, "
                       f"s2s 127.0.0.1:{ports['b_s2s']}, a.test at 127.0.0.1:{ports['gw_outer']}")

        cl = self.cl = Clients(d)
        alice = self.login(cl, "alice", ports["a_c2s"])
        bob = self.login(cl, "bob", ports["b_c2s"])
        arr = {alice: Arrivals(alice), bob: Arrivals(bob)}

        t1 = self.message(cl, arr, alice, bob, "Hello from a.test")
        t2 = self.message(cl, arr, bob, alice, "Hello back from b.test")
        self.results["messages"] = (f"a.test -> b.test in {ms(t1)}, b.test -> a.test in {ms(t2)} "
                                    "(each includes setting up the S2S streams)")
        s1 = self.subscription(cl, arr, alice, bob)
        s2 = self.subscription(cl, arr, bob, alice)

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

    def start(self, server, what: str) -> None:
        say(f"starting {what} ...", end="")
        t = time.monotonic()
        self.servers.append(server)
        server.start(timeout=20)
        more(f" up in {ms(time.monotonic() - t)}")

    def login(self, cl: Clients, user: str, port: int) -> Client:
        host, pw = USERS[user]
        jid = f"{user}@{host}"
        say(f"{jid} logs in (127.0.0.1:{port}) ...", end="")
        t = time.monotonic()
        c = cl.connect(jid, pw, port, timeout=STEP_TIMEOUT)
        more(f" online in {ms(time.monotonic() - t)}")
        return c

    def message(self, cl: Clients, arr, sender: Client, rcpt: Client, body: str) -> float:
        say(f'{sender.jid} -> {rcpt.jid}: "{body}" ...', end="")
        since = time.monotonic()
        mid = sender.send_message(rcpt.jid, body)

        def got():
            return arr[rcpt].find(since, lambda s: s.name == "message" and s["body"] == body
                                  and s["type"] != "error" and s["from"].bare == sender.jid)

        def bounced():
            return arr[sender].find(since, lambda s: s.name == "message" and s["type"] == "error"
                                    and s["id"] == mid)
        hit = self.wait(cl, lambda: got() or bounced(), f"{rcpt.jid} receives \"{body}\"")
        if hit[1]["type"] == "error":
            err = hit[1]["error"]
            raise DemoFailed(f"bounced: {err['condition']} ({err['text'] or 'no text'})")
        dt = hit[0] - since
        more(f" delivered in {ms(dt)}")
        return dt

    def subscription(self, cl: Clients, arr, subscriber: Client, contact: Client) -> float:
        s, c = subscriber.jid, contact.jid

        def presence(client, frm, ptype, since):
            return lambda: arr[client].find(
                since, lambda p: p.name == "presence" and p["from"].bare == frm
                and (p["type"] or "available") == ptype)

        say(f"{s} -> {c}: presence subscription request ...", end="")
        since = time.monotonic()
        subscriber.subscribe(c)
        hit = self.wait(cl, presence(contact, s, "subscribe", since), f"{c} receives the request")
        more(f" received in {ms(hit[0] - since)}")

        say(f"{c} -> {s}: approves (subscribed) ...", end="")
        since = time.monotonic()
        contact.authorize(s)
        hit = self.wait(cl, presence(subscriber, c, "subscribed", since), f"{s} receives 'subscribed'")
        more(f" received in {ms(hit[0] - since)}", end="")
        hit2 = self.wait(cl, presence(subscriber, c, "available", since),
                         f"{s} receives {c}'s presence")
        dt = max(hit[0], hit2[0]) - since
        more(f"; {s} sees {c} online after {ms(hit2[0] - since)}")
        return dt

    def wait(self, cl: Clients, pred, what: str):
        return cl.wait_for(pred, STEP_TIMEOUT, what, interval=0.005)

    # -- keep running ----------------------------------------------------------------
    def hold(self) -> None:
        """--keep-running: servers stay up until Ctrl-C (or SIGTERM)."""
        if self.cl is not None:
            self.cl.close()  # let the user log in as alice and bob
            self.cl = None
        p = self.ports
        rel = show_path(self.dir)
        say("--keep-running: the servers stay up; press Ctrl-C to stop them.")
        indent(f"""\
Log in by hand (plain TCP on 127.0.0.1 is allowed; for STARTTLS trust certs/ca.pem):
  alice@a.test  password {USERS['alice'][1]}  server 127.0.0.1  port {p['a_c2s']}  (Prosody a.test, behind s2smuxd)
  bob@b.test    password {USERS['bob'][1]}    server 127.0.0.1  port {p['b_c2s']}  (Prosody b.test)
The names a.test and b.test do not resolve: set server and port by hand in the client.
Or with the demo's console client, one per terminal (type a line to send it):
  /usr/bin/python3 tools/demo/chat.py --port {p['a_c2s']} alice@a.test {USERS['alice'][1]} bob@b.test
  /usr/bin/python3 tools/demo/chat.py --port {p['b_c2s']} bob@b.test {USERS['bob'][1]} alice@a.test
s2smuxd listens on 127.0.0.1:{p['gw_outer']} (outer, federation) and 127.0.0.1:{p['gw_inner']} (inner).
Watch the gateway: tail -f {rel}/s2smuxd/s2smuxd.log
Other logs: {rel}/prosody-a/prosody.log, {rel}/prosody-b/prosody.log (every stanza)""")
        while True:
            for s in self.servers:
                if not s.running():
                    raise DemoFailed(f"{s.name} exited unexpectedly (status {s.proc.returncode if s.proc else '?'})")
            time.sleep(0.5)

    # -- stop ------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Clients, then the servers; returns problems (unclean exits)."""
        problems = []
        t = time.monotonic()
        if self.servers or self.cl:
            say("stopping clients, Prosody b.test, Prosody a.test, s2smuxd ...", end="")
        if self.cl is not None:
            try:
                self.cl.close()
            except Exception:  # noqa: BLE001 - best effort
                pass
            self.cl = None
        def stop_one(s):
            p = s.proc
            try:
                s.stop(timeout=10)
            except Exception as e:  # noqa: BLE001
                problems.append(f"stopping {s.name}: {e!r}")
            if p is not None and p.returncode not in (0, None):
                problems.append(f"{s.name} exited with status {p.returncode}")
        # Both Prosodys at once (each takes about a second to close its
        # streams), then the gateway.
        prosodys = [s for s in self.servers if s is not self.gw]
        threads = [threading.Thread(target=stop_one, args=(s,)) for s in prosodys]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if self.gw is not None and self.gw in self.servers:
            stop_one(self.gw)
        proc.stop_all()
        if self.servers:
            more(f" done in {ms(time.monotonic() - t)}" + ("" if not problems else " (with problems)"))
        if self.gw is not None:
            last = [ln for ln in self.gw.log_text().splitlines() if " stopped: " in ln]
            if last:
                say("s2smuxd " + "stopped: " + last[-1].split(" stopped: ", 1)[1])
        return problems

    def log_files(self) -> list[tuple[str, Path]]:
        out = []
        for s in self.servers:
            for f in s.log_files():
                out.append((f"{s.kind} {s.name}", f))
        out.append(("clients", self.dir / "clients.log"))
        return out

    def log_sizes(self) -> dict[Path, int]:
        sizes = {}
        for _, f in self.log_files():
            try:
                sizes[f] = f.stat().st_size
            except OSError:
                pass
        return sizes

    def print_logs(self, sizes: dict[Path, int]) -> None:
        """The last TAIL lines of every log (up to `sizes` where given)."""
        for what, f in self.log_files():
            try:
                data = f.read_bytes()
            except OSError:
                continue
            if f in sizes:
                data = data[:sizes[f]]
            text = data.decode(errors="replace")
            if text.strip():
                print(f"--- {what}: {show_path(f)} (last {TAIL} lines)", flush=True)
                print(proc.tail(text, TAIL), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description="s2smux demo: Prosody a.test behind s2smuxd <-> Prosody b.test")
    ap.add_argument("--keep-running", action="store_true",
                    help="leave the servers up and print how to connect a client by hand; Ctrl-C stops them")
    ap.add_argument("--dir", type=Path, default=None,
                    help="run directory, wiped at start (default: demo-run/ in the repository)")
    args = ap.parse_args()
    default = REPO / "demo-run"
    run_dir = (args.dir or default).absolute()

    def on_signal(sig, _frm):
        interrupt(Stop("Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name))

    def on_alarm(_sig, _frm):
        interrupt(DemoTimeout())
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)

    try:
        prepare_dir(run_dir, default)
    except DemoFailed as e:
        say(f"FAILED: {e}")
        return 1
    say(f"run directory: {show_path(run_dir)} (wiped)")

    # Hard limit: SIGALRM in the main thread, and a watchdog in case it cannot
    # get through (servers are stopped by the watchdog too).
    done = threading.Event()

    def watchdog():
        if not done.wait(TIME_LIMIT + 30):
            print(f"[demo] FAILED: still running {TIME_LIMIT + 30:.0f} s after start; "
                  f"logs in {show_path(run_dir)}", flush=True)
            proc.stop_all()
            os._exit(1)
    threading.Thread(target=watchdog, daemon=True).start()
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)

    demo = Demo(run_dir, args.keep_running)
    error = None
    interrupted = None
    try:
        demo.run()
        if args.keep_running:
            signal.setitimer(signal.ITIMER_REAL, 0)
            done.set()
            demo.hold()
    except BaseException as e:  # noqa: BLE001 - everything is reported, servers always stopped
        exc = _pending if _pending is not None else e
        if isinstance(exc, Stop):
            interrupted = str(exc)
        elif isinstance(exc, DemoTimeout):
            error = f"time limit of {TIME_LIMIT:.0f} s reached"
        elif isinstance(exc, (DemoFailed, WaitTimeout, AssertionError)):
            error = str(exc) or type(exc).__name__
        else:
            import traceback
            error = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    signal.setitimer(signal.ITIMER_REAL, 0)
    # Stopping has its own timeouts; the watchdog stays the last resort.
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave servers behind
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    held = args.keep_running and done.is_set()  # interrupted while holding: the normal end
    if interrupted:
        say(f"{interrupted}: stopping")
    sizes = {}
    if error:
        end_line()
        first, _, rest = error.partition("\n")
        say(f"FAILED: {first}")
        if rest:
            indent(rest)
        sizes = demo.log_sizes()  # the log tails shown are the ones from before stopping
    problems = demo.stop()
    done.set()
    try:
        (run_dir / "demo.pid").unlink()
    except OSError:
        pass

    if error or problems:
        for p in problems:
            say(f"FAILED: {p}")
        demo.print_logs(sizes)
        say(f"FAILED; logs kept in {show_path(run_dir)}")
        return 1
    if interrupted and not held:
        say(f"stopped before the end; logs in {show_path(run_dir)}")
        return 130
    say(f"all stopped after {time.monotonic() - demo.t0:.1f} s; configs and logs are in {show_path(run_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
