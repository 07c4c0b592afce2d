"""What both demos share (tools/demo/demo.py is the entry point): output
helpers, the run directory, certificates from the demo CA, the commented
gateway configs, client timing, stopping everything, log tails on failure,
and the main loop with its time limit and signal handling.

Servers, clients and config writers come from tests/interop/harness.
"""

from __future__ import annotations

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
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "interop"))

from harness import proc  # noqa: E402
from harness.certs import CertAuthority, DomainCert  # noqa: E402
from harness.client import Client, Clients, WaitTimeout  # noqa: E402
from harness.gateway import S2smuxd  # noqa: E402
from harness.ports import free_port  # noqa: E402

TIME_LIMIT = 60.0     # seconds up to the summary (stopping: own timeouts, watchdog 30 s later)
STEP_TIMEOUT = 10.0   # seconds for one delivery
MARKER = ".s2smux-demo"  # marks a directory this demo may wipe
TAIL = 40             # log lines shown per file on failure
CTL = REPO / "build" / "tools" / "ctl" / "s2smuxctl"
SUN_PATH_MAX = 107    # bytes of a Unix socket path (sockaddr_un), without the NUL


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
    global _line_open
    if _line_open:
        print(flush=True)
        _line_open = False
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


def pick_ports(preferred: dict[str, int]) -> dict[str, int]:
    """pick_port() for each, never the same port twice."""
    out: dict[str, int] = {}
    for k, v in preferred.items():
        p = pick_port(v)
        while p in out.values():
            p = free_port()
        out[k] = p
    return out


# -- certificates -----------------------------------------------------------------------

def ca_from(d: Path) -> CertAuthority:
    """The demo CA copied into `d` (certs/ca.pem, certs/ca.key)."""
    d.mkdir(parents=True, exist_ok=True)
    for f in ("ca.pem", "ca.key"):
        if not (d / f).exists():
            shutil.copyfile(REPO / "certs" / f, d / f)
    info = subprocess.run(["certtool", "-i", "--infile", str(d / "ca.pem")],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    m = re.search(r"^\s*Subject: CN=(.*)$", info, re.M)
    ca_name = m.group(1).strip() if m else "s2smux Demo CA (TEST ONLY)"
    return CertAuthority(ca_name, d / "ca.pem", d / "ca.key")


def issue(d: Path, domains: list[str], days: int | None = None) -> dict[str, DomainCert]:
    """Fresh leaves from the committed demo CA, with certs/gen-certs.sh (it
    reuses ca.pem/ca.key found in its --out directory): DOMAIN.pem (leaf
    only: peers trust ca.pem directly) and DOMAIN.key in `d`."""
    ca = ca_from(d)
    args = [str(REPO / "certs" / "gen-certs.sh"), "--out", str(d)]
    if days:
        args += ["--days", str(days)]
    r = subprocess.run(args + list(domains), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise DemoFailed(f"certs/gen-certs.sh failed:\n{r.stdout}")
    certs = {}
    for dom in domains:
        pem, key = d / f"{dom}.pem", d / f"{dom}.key"
        certs[dom] = DomainCert(dom, [dom], pem, key, chain=pem, bundle=pem, ca=ca)
    return certs


def not_after(pem: Path) -> str:
    """The certificate's expiry as YYYY-MM-DDTHH:MM:SSZ (UTC), as s2smuxctl prints it."""
    info = subprocess.run(["certtool", "-i", "--infile", str(pem)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, env={**os.environ, "TZ": "UTC", "LC_ALL": "C"}).stdout
    m = re.search(r"^\s*Not After: (.*)$", info, re.M)
    if not m:
        return "?"
    try:
        t = time.strptime(m.group(1).strip(), "%a %b %d %H:%M:%S UTC %Y")
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", t)
    except ValueError:
        return m.group(1).strip()


# -- gateway configs --------------------------------------------------------------------

def config_text(rows: list[tuple[str, str | None]]) -> str:
    """(code, comment) rows -> TOML text with the comments aligned."""
    width = max(len(code) for code, comment in rows if comment and code) + 2
    out = []
    for code, comment in rows:
        if comment and code:
            out.append(f"{code:<{width}}# {comment}")
        elif comment:
            out.append(f"# {comment}")
        else:
            out.append(code)
    return "\n".join(out) + "\n"


class DemoGateway(S2smuxd):
    """S2smuxd that writes the demo's commented config text as is."""

    def __init__(self, run_dir: Path, text: str, name: str = "s2smuxd"):
        super().__init__(run_dir, binary=REPO / "build" / "s2smuxd", config=tomllib.loads(text), name=name)
        self.text = text

    def write_config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.text)
        return self.config_file

    def check(self) -> None:
        """`s2smuxd -t`: the config must pass the daemon's own check."""
        sock = self.admin_socket
        if sock is not None and len(str(sock).encode()) > SUN_PATH_MAX:
            raise DemoFailed(f"the admin socket path {sock} is longer than a Unix socket allows "
                             f"({SUN_PATH_MAX} bytes): choose a shorter --dir")
        r = self.check_config()
        if r.returncode != 0:
            raise DemoFailed(f"s2smuxd -t rejected {show_path(self.config_file)}:\n{r.stdout}")


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


# -- the common part of both demos -------------------------------------------------------

class DemoBase:
    """Servers started in order, clients, stopping and log tails."""

    def __init__(self, run_dir: Path, keep_running: bool):
        self.dir = run_dir
        self.keep_running = keep_running
        self.servers: list = []
        self.gateways: list[DemoGateway] = []
        self.cl: Clients | None = None
        self.arr: dict[Client, Arrivals] = {}
        self.results: dict[str, str] = {}
        self.t0 = time.monotonic()

    def run(self) -> None:
        raise NotImplementedError

    def hold_text(self) -> str:
        raise NotImplementedError

    # -- helpers for the steps ---------------------------------------------------------
    def start(self, server, what: str) -> None:
        say(f"starting {what} ...", end="")
        t = time.monotonic()
        self.servers.append(server)
        server.start(timeout=20)
        more(f" up in {ms(time.monotonic() - t)}")

    def login(self, jid: str, pw: str, port: int, quiet: bool = False) -> Client:
        if self.cl is None:
            self.cl = Clients(self.dir)
        if not quiet:
            say(f"{jid} logs in (127.0.0.1:{port}) ...", end="")
        t = time.monotonic()
        c = self.cl.connect(jid, pw, port, timeout=STEP_TIMEOUT)
        self.arr[c] = Arrivals(c)
        if not quiet:
            more(f" online in {ms(time.monotonic() - t)}")
        return c

    def wait(self, pred, what: str, timeout: float = STEP_TIMEOUT):
        return self.cl.wait_for(pred, timeout, what, interval=0.005)

    def deliver(self, sender: Client, rcpt: Client, body: str, *, refused_ok: bool = False):
        """Send `body` and wait for it, or for its bounce. Returns (seconds,
        None) when delivered, (seconds, error stanza) when bounced (a failure
        unless refused_ok)."""
        since = time.monotonic()
        mid = sender.send_message(rcpt.jid, body)

        def got():
            return self.arr[rcpt].find(since, lambda s: s.name == "message" and s["body"] == body
                                       and s["type"] != "error" and s["from"].bare == sender.jid)

        def bounced():
            return self.arr[sender].find(since, lambda s: s.name == "message" and s["type"] == "error"
                                         and s["id"] == mid)
        hit = self.wait(lambda: got() or bounced(), f"{rcpt.jid} receives \"{body}\" (or its bounce)")
        if hit[1]["type"] == "error":
            if not refused_ok:
                err = hit[1]["error"]
                raise DemoFailed(f"{sender.jid} -> {rcpt.jid} bounced: {err['condition']} "
                                 f"({err['text'] or 'no text'})")
            return hit[0] - since, hit[1]
        return hit[0] - since, None

    # -- keep running ----------------------------------------------------------------
    def hold(self) -> None:
        """--keep-running: servers stay up until Ctrl-C (or SIGTERM)."""
        if self.cl is not None:
            self.cl.close()  # let the user log in as the demo's users
            self.cl = None
        say("--keep-running: the servers stay up; press Ctrl-C to stop them.")
        indent(self.hold_text())
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
        names = ", ".join([label(s) for s in self.servers if s not in self.gateways] +
                          [label(s) for s in self.servers if s in self.gateways])
        if self.servers or self.cl:
            say(f"stopping clients, {names} ..." if names else "stopping clients ...", end="")
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

        def stop_all(group):
            threads = [threading.Thread(target=stop_one, args=(s,)) for s in group]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        # Every Prosody at once (each takes about a second to close its
        # streams), then the gateways.
        stop_all([s for s in self.servers if s not in self.gateways])
        stop_all([s for s in self.servers if s in self.gateways])
        proc.stop_all()
        if self.servers:
            more(f" done in {ms(time.monotonic() - t)}" + ("" if not problems else " (with problems)"))
        for gw in self.gateways:
            last = [ln for ln in gw.log_text().splitlines() if " stopped: " in ln]
            if last:
                who = label(gw) if len(self.gateways) > 1 else "s2smuxd"
                say(f"{who} stopped: " + last[-1].split(" stopped: ", 1)[1])
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


def labelled(server, text: str):
    """Give a server the human name used in 'stopping ...' lines."""
    server.label = text
    return server


def label(server) -> str:
    return getattr(server, "label", server.name)


# -- main loop --------------------------------------------------------------------------

def run_demo(make: Callable[[Path, bool], DemoBase], run_dir: Path, default_dir: Path,
             keep_running: bool) -> int:
    """Run a demo with the time limit, signal handling, clean stop and log
    tails on failure. Exit status: 0 success (or Ctrl-C after
    --keep-running's demo), 1 failure, 130 interrupted before the end."""

    def on_signal(sig, _frm):
        interrupt(Stop("Ctrl-C" if sig == signal.SIGINT else signal.Signals(sig).name))

    def on_alarm(_sig, _frm):
        interrupt(DemoTimeout())
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)

    try:
        prepare_dir(run_dir, default_dir)
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

    demo = make(run_dir, keep_running)
    error = None
    interrupted = None
    try:
        demo.run()
        if keep_running:
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
    held = keep_running and done.is_set()  # interrupted while holding: the normal end
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
