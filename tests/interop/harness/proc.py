"""Child process handling shared by the server wrappers.

Every server runs in its own session (process group), so stop() can signal
the whole group it started (ejabberdctl -> erl -> beam.smp -> helpers) by its
id, and nothing else. All live instances are remembered so the runner can
stop them on timeout or error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from .ports import port_listening

_live: list["Server"] = []
_live_lock = threading.Lock()


def live_servers() -> list["Server"]:
    with _live_lock:
        return list(_live)


def stop_all() -> None:
    """Stop every server that is still running (newest first)."""
    for s in reversed(live_servers()):
        try:
            s.stop()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def _group_alive(pgid: int) -> bool:
    """True while a non-zombie process of process group `pgid` exists."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for e in entries:
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces/parens.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def tail(text: str, lines: int = 60) -> str:
    if lines <= 0:
        return ""
    parts = text.splitlines()
    return "\n".join(parts[-lines:])


class Server:
    """Base: a named child process with log files and listening ports."""

    kind = "server"

    def __init__(self, name: str, directory: Path):
        self.name = name
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.console_log = self.dir / "console.log"   # stdout+stderr of the child
        self.log_file: Path = self.console_log          # main log (overridden)
        self._console = None

    # -- to be provided by subclasses -----------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def ports(self) -> list[int]:
        """TCP ports on 127.0.0.1 that must accept connections once started."""
        return []

    # -- life cycle -------------------------------------------------------
    def start(self, timeout: float = 20.0) -> "Server":
        self._console = open(self.console_log, "ab")
        self.proc = subprocess.Popen(
            self.command(), cwd=self.dir, env=self.environment(),
            stdin=subprocess.DEVNULL, stdout=self._console, stderr=subprocess.STDOUT,
            start_new_session=True)
        with _live_lock:
            _live.append(self)
        try:
            self.wait_ready(timeout)
        except Exception:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.ports())
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name}: exited with status {self.proc.returncode} before it was ready\n"
                    f"{tail(self.log_text(), 30)}")
            pending = [p for p in pending if not port_listening(p)]
            if not pending and self.ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name}: not ready after {timeout:.0f} s (ports not listening: {pending})\n"
                    f"{tail(self.log_text(), 30)}")
            time.sleep(0.05)

    def ready(self) -> bool:
        """Extra readiness condition after the ports are open."""
        return True

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        proc = self.proc
        if proc is None:
            return
        self.before_stop()
        pgid = proc.pid  # leader of the session created by start_new_session
        deadline = time.monotonic() + timeout
        if proc.poll() is None or _group_alive(pgid):
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            # Wait for the leader and every other member of its group (e.g.
            # beam.smp under the ejabberdctl shell) to exit on their own.
            while time.monotonic() < deadline:
                proc.poll()
                if proc.returncode is not None and not _group_alive(pgid):
                    break
                time.sleep(0.05)
        if proc.poll() is None or _group_alive(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None
        if self._console:
            self._console.close()
            self._console = None
        with _live_lock:
            if self in _live:
                _live.remove(self)

    def before_stop(self) -> None:
        pass

    # -- logs -------------------------------------------------------------
    def log_files(self) -> list[Path]:
        files = [self.log_file]
        if self.console_log != self.log_file:
            files.append(self.console_log)
        return files

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        out = []
        for f in self.log_files():
            try:
                text = f.read_text(errors="replace")
            except FileNotFoundError:
                continue
            if text.strip():
                out.append(f"--- {self.kind} {self.name}: {f} (last {lines} lines)\n{tail(text, lines)}")
        return "\n".join(out) or f"--- {self.kind} {self.name}: no log output"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} pid={self.proc.pid if self.proc else None}>"
