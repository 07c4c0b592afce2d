"""A pytest-free mini runner for tests/interop/test_*.py scripts.

A test script looks like:

    from harness.runner import run

    def main(t):
        pa = t.start(Prosody(t.dir, "pa", ["a.test"], pki=t.pki(), ...))
        with t.check("message a.test -> b.test delivered"):
            ...                                   # assert / raise on failure
    if __name__ == "__main__":
        run(main, timeout=60)

Output: one line per check,
    ok   message a.test -> b.test delivered (0.42 s)
    FAIL presence b.test -> a.test (10.01 s): timed out ...
then a summary line. Exit status 0 when every check passed, 1 otherwise.

Each run gets a fresh temporary directory (t.dir) holding every server's
config, data and logs. It is removed on success and kept (path printed) on
failure, or always with --keep / S2SMUX_KEEP_TMP=1. The base directory is
$S2SMUX_TEST_TMPDIR or the system default ($TMPDIR, /tmp).

On failure the tail of every involved log (servers, s2smuxd, clients) is
printed. A hard timeout (SIGALRM, then a watchdog that kills the children
and exits) bounds every run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from . import proc
from .certs import Pki
from .client import Clients, WaitTimeout


class TestTimeout(BaseException):
    """Raised in the main thread when the overall time limit is reached."""


class Abort(Exception):
    """Raised by t.require() / fatal checks to stop the test early."""


class TestRun:
    def __init__(self, name: str, directory: Path, tail_lines: int = 60):
        self.name = name
        self.dir = directory
        self.tail_lines = tail_lines
        self.checks: list[tuple[str, bool, float, str]] = []
        self.servers: list[proc.Server] = []
        self._pki: Pki | None = None
        self._clients: Clients | None = None
        self.started = time.monotonic()

    # -- resources ------------------------------------------------------------
    def pki(self) -> Pki:
        """The demo PKI of this run (created on first use)."""
        if self._pki is None:
            self._pki = Pki(self.dir / "pki")
        return self._pki

    def clients(self, level: int | None = None) -> Clients:
        """The slixmpp client loop of this run (created on first use).
        level: clients.log level on creation (default DEBUG, every stanza;
        logging.INFO keeps many-client tests fast)."""
        if self._clients is None:
            self._clients = Clients(self.dir) if level is None else Clients(self.dir, level=level)
        return self._clients

    def add(self, server):
        """Register a server so its log is shown on failure and it is stopped at the end."""
        if server not in self.servers:
            self.servers.append(server)
        return server

    def start(self, server, timeout: float = 20.0):
        """add() and start() a server; start failures abort the test."""
        self.add(server)
        t0 = time.monotonic()
        server.start(timeout=timeout)
        self.note(f"started {server.kind} {server.name} in {time.monotonic() - t0:.2f} s")
        return server

    # -- checks -----------------------------------------------------------------
    @contextlib.contextmanager
    def check(self, description: str, fatal: bool = False):
        """A named check. AssertionError, WaitTimeout or any Exception inside
        marks it failed; the test continues unless fatal=True."""
        t0 = time.monotonic()
        try:
            yield
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            dt = time.monotonic() - t0
            msg = str(e) or type(e).__name__
            if not isinstance(e, (AssertionError, WaitTimeout)):
                msg = "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()
            self._record(description, False, dt, msg)
            if fatal:
                raise Abort(description) from e
        else:
            self._record(description, True, time.monotonic() - t0, "")

    def _record(self, description, ok, dt, msg):
        self.checks.append((description, ok, dt, msg))
        if ok:
            print(f"ok   {description} ({dt:.2f} s)", flush=True)
        else:
            first, _, rest = msg.partition("\n")
            print(f"FAIL {description} ({dt:.2f} s): {first}", flush=True)
            if rest:
                print("     " + rest.replace("\n", "\n     "), flush=True)

    def require(self, cond, message: str):
        if not cond:
            raise AssertionError(message)

    def note(self, text: str):
        """Progress line, only shown with --verbose (S2SMUX_TEST_VERBOSE=1)."""
        if os.environ.get("S2SMUX_TEST_VERBOSE"):
            print(f"#    {text}", flush=True)

    @property
    def failed(self) -> bool:
        return any(not ok for _, ok, _, _ in self.checks)

    # -- teardown ----------------------------------------------------------------
    def close_clients(self):
        if self._clients is not None:
            try:
                self._clients.close()
            except Exception:  # noqa: BLE001
                pass
            self._clients = None

    def stop_servers(self):
        for s in reversed(self.servers):
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001
                print(f"#    stopping {s.name}: {e!r}", flush=True)
        proc.stop_all()

    def print_logs(self):
        for s in self.servers:
            print(s.log_tail(self.tail_lines), flush=True)
        cl = self.dir / "clients.log"
        if cl.exists():
            print(f"--- clients: {cl} (last {self.tail_lines} lines)")
            print(proc.tail(cl.read_text(errors="replace"), self.tail_lines), flush=True)


def _parse_args(argv):
    ap = argparse.ArgumentParser(description="s2smux interop test")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory even on success")
    ap.add_argument("--verbose", "-v", action="store_true", help="print progress notes")
    ap.add_argument("--tail", type=int, default=int(os.environ.get("S2SMUX_TEST_TAIL", "60")),
                    help="log lines to print per file on failure (default 60)")
    ap.add_argument("--timeout", type=float, default=None, help="override the overall time limit (s)")
    return ap.parse_args(argv)


def run(main: Callable[[TestRun], None], timeout: float = 60.0, name: str | None = None,
        argv: list[str] | None = None) -> None:
    """Run `main(t)` as a test and exit the process with 0 (pass) or 1 (fail)."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.verbose:
        os.environ["S2SMUX_TEST_VERBOSE"] = "1"
    keep = args.keep or os.environ.get("S2SMUX_KEEP_TMP") not in (None, "", "0")
    limit = args.timeout or float(os.environ.get("S2SMUX_TEST_TIMEOUT", timeout))
    name = name or Path(sys.argv[0]).stem
    base = os.environ.get("S2SMUX_TEST_TMPDIR") or None
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"s2smux-{name}-", dir=base))
    t = TestRun(name, directory, tail_lines=args.tail)
    t.note(f"temporary directory {directory}")

    # Hard limit, part 1: SIGALRM interrupts the main thread with TestTimeout.
    def on_alarm(_sig, _frm):
        raise TestTimeout()
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)

    # Hard limit, part 2: if the main thread is stuck where the alarm cannot
    # reach it, kill our servers and leave.
    def watchdog():
        time.sleep(limit + 30)
        print(f"FAIL {name}: watchdog: still running {limit + 30:.0f} s after start; "
              f"logs kept in {directory}", flush=True)
        proc.stop_all()
        os._exit(1)
    threading.Thread(target=watchdog, daemon=True).start()

    error = None
    try:
        main(t)
    except TestTimeout:
        error = f"overall time limit of {limit:.0f} s reached"
    except Abort as e:
        error = f"aborted after failed check: {e}"
    except KeyboardInterrupt:
        error = "interrupted"
    except Exception as e:  # noqa: BLE001 - setup errors
        error = "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        except Exception:  # noqa: BLE001
            pass
    signal.setitimer(signal.ITIMER_REAL, 0)

    t.close_clients()
    t.stop_servers()
    # Servers that can judge their own shutdown (s2smuxd: exit status 0 means
    # every libuv handle was closed; no sanitizer report in its log).
    for s in t.servers:
        verdict = getattr(s, "post_mortem", None)
        if verdict is None:
            continue
        problem = verdict()
        t._record(f"{s.name} shut down cleanly", problem is None, 0.0, problem or "")
    elapsed = time.monotonic() - t.started
    if error:
        first, _, rest = error.partition("\n")
        print(f"FAIL {name}: {first}", flush=True)
        if rest:
            print("     " + rest.replace("\n", "\n     "), flush=True)
    failed = bool(error) or t.failed or not t.checks
    if not t.checks and not error:
        print(f"FAIL {name}: no checks were run", flush=True)
    if failed:
        t.print_logs()
        n_bad = sum(1 for _, ok, _, _ in t.checks if not ok)
        what = f"{n_bad} of {len(t.checks)} checks failed"
        if error:
            what += ", stopped early"
        print(f"FAIL {name}: {what} in {elapsed:.1f} s; logs kept in {directory}", flush=True)
        sys.stdout.flush()
        os._exit(1)
    print(f"PASS {name}: {len(t.checks)} checks in {elapsed:.1f} s"
          + (f"; logs kept in {directory}" if keep else ""), flush=True)
    if not keep:
        shutil.rmtree(directory, ignore_errors=True)
    sys.stdout.flush()
    os._exit(0)
