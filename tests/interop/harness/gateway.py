"""s2smuxd under test: writes a TOML config, starts `s2smuxd --config FILE`.

    gw = S2smuxd(tmp, binary=None, config=S2smuxd.fronting_config(
            domains=["a.test"], certs=[pki.issue("a.test")], ca_file=pki.ca_file,
            upstream=f"127.0.0.1:{pa.s2s_port}",
            routes=[{"domain": "b.test", "address": f"127.0.0.1:{gb.outer_port}"}]))
    gw.start()        # waits until every [listen] address accepts connections
    gw.inner_port     # point Prosody's s2smux_gateway here
    gw.stop()         # SIGTERM, SIGKILL after a timeout

The binary comes from the `binary` argument, else $S2SMUXD (set by meson
test), else build/s2smuxd relative to the repository root. stderr and stdout
go to <dir>/s2smuxd.log (the daemon logs to stderr unless [log] file is set).

The config dict is written as TOML as given (sections -> [table], lists of
dicts -> [[array]]); fronting_config() builds one in the layout of
src/daemon/config.h ([gateway] [listen] [upstream] [tls] [[cert]] [[route]]
[dns] [limits] [log]). Key names there follow config.h's field names and may
need adjusting once the daemon's parser exists.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tomllib
from pathlib import Path
from typing import Iterable, Mapping

from . import REPO_ROOT
from .certs import DomainCert
from .ports import free_port
from .proc import Server


# -- TOML writer (stdlib has a reader only) ------------------------------------------

def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_str(k)


def _toml_str(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (str, Path)):
        return _toml_str(str(v))
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()
                                if x is not None) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(config: Mapping) -> str:
    """Top-level scalars first, then [tables], then [[arrays of tables]]."""
    lines: list[str] = []
    scalars = {k: v for k, v in config.items() if not isinstance(v, Mapping)
               and not (isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v))}
    for k, v in scalars.items():
        if v is not None:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in config.items():
        if isinstance(v, Mapping):
            lines += ["", f"[{_toml_key(k)}]"]
            for kk, vv in v.items():
                if vv is not None:
                    lines.append(f"{_toml_key(kk)} = {_toml_value(vv)}")
    for k, v in config.items():
        if isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
            for item in v:
                lines += ["", f"[[{_toml_key(k)}]]"]
                for kk, vv in item.items():
                    if vv is not None:
                        lines.append(f"{_toml_key(kk)} = {_toml_value(vv)}")
    text = "\n".join(lines).lstrip("\n") + "\n"
    tomllib.loads(text)  # never hand the daemon a file we cannot parse ourselves
    return text


def _port_of(addr: str) -> int | None:
    m = re.fullmatch(r"(?:\[[^\]]+\]|[^:]+):(\d+)", str(addr))
    return int(m.group(1)) if m else None


class S2smuxd(Server):
    kind = "s2smuxd"

    def __init__(self, tmpdir: Path | str, binary: str | Path | None = None,
                 config: Mapping | None = None, name: str = "s2smuxd",
                 extra_args: Iterable[str] = ()):
        super().__init__(name, Path(tmpdir) / name)
        self.binary = Path(binary or os.environ.get("S2SMUXD") or REPO_ROOT / "build" / "s2smuxd")
        self.config = dict(config or {})
        self.config_file = self.dir / "s2smux.toml"
        self.log_file = self.dir / "s2smuxd.log"
        self.console_log = self.log_file  # stderr is the log unless [log] file says otherwise
        self.extra_args = list(extra_args)

    # -- config helpers ------------------------------------------------------------
    @staticmethod
    def fronting_config(*, domains: list[str], certs: Iterable[DomainCert], ca_file: Path | str,
                        upstream: str | None = None, inner: str | None = None,
                        outer: str | None = None, outer_tls: str | None = None,
                        routes: Iterable[Mapping] = (), nameserver: str | None = None,
                        policy: str = "required", upstream_tls: str = "optional",
                        log_level: str = "debug", admin_socket: str | None = "admin.sock",
                        limits: Mapping | None = None) -> dict:
        """A config dict for a gateway fronting a local server (layout of
        src/daemon/config.h). Unset listen addresses get free loopback ports."""
        cfg: dict = {
            "gateway": {"domains": list(domains), "admin_socket": admin_socket},
            "listen": {
                "outer": outer or f"127.0.0.1:{free_port()}",
                "inner": inner or f"127.0.0.1:{free_port()}",
            },
            "tls": {"ca_file": str(ca_file), "system_ca": False, "policy": policy},
            "cert": [{"cert": str(c.chain), "key": str(c.key)} for c in certs],
            "log": {"level": log_level},
        }
        if outer_tls:
            cfg["listen"]["outer_tls"] = outer_tls
        if upstream:
            cfg["upstream"] = {"address": upstream, "tls": upstream_tls}
        routes = [dict(r) for r in routes]
        if routes:
            cfg["route"] = routes
        if nameserver:
            cfg["dns"] = {"nameserver": nameserver}
        if limits:
            cfg["limits"] = dict(limits)
        return cfg

    def listen_addr(self, which: str) -> str | None:
        return (self.config.get("listen") or {}).get(which)

    @property
    def inner_port(self) -> int | None:
        a = self.listen_addr("inner")
        return _port_of(a) if a else None

    @property
    def outer_port(self) -> int | None:
        a = self.listen_addr("outer")
        return _port_of(a) if a else None

    @property
    def outer_tls_port(self) -> int | None:
        a = self.listen_addr("outer_tls")
        return _port_of(a) if a else None

    # -- Server interface ------------------------------------------------------------
    def write_config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(to_toml(self.config))
        return self.config_file

    def command(self) -> list[str]:
        return [str(self.binary), "--config", str(self.config_file), *self.extra_args]

    def ports(self) -> list[int]:
        out = []
        for addr in (self.config.get("listen") or {}).values():
            p = _port_of(addr) if isinstance(addr, str) else None
            if p:
                out.append(p)
        return out

    def start(self, timeout: float = 15.0) -> "S2smuxd":
        if not self.binary.exists():
            raise RuntimeError(f"s2smuxd binary not found at {self.binary} (set $S2SMUXD)")
        self.write_config()
        super().start(timeout)
        self._start_recording()
        return self

    def _start_recording(self) -> None:
        """tools/record-captures.sh: with $S2SMUX_CAPTURE_DIR set, every
        stream of this gateway from now on is captured to
        $S2SMUX_CAPTURE_DIR/<$S2SMUX_CAPTURE_PREFIX><name>.cap."""
        where = os.environ.get("S2SMUX_CAPTURE_DIR")
        if not where or self.admin_socket is None:
            return
        stem = f"{os.environ.get('S2SMUX_CAPTURE_PREFIX', '')}{self.name}"
        path = Path(where) / f"{stem}.cap"
        n = 1
        while path.exists():  # a restarted gateway starts a new file (stream ids start over)
            n += 1
            path = Path(where) / f"{stem}-{n}.cap"
        self.ctl_ok("capture", "start", "*", str(path))

    @property
    def admin_socket(self) -> Path | None:
        a = (self.config.get("gateway") or {}).get("admin_socket")
        if not a:
            return None
        p = Path(a)
        return p if p.is_absolute() else self.dir / p

    def ctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """`s2smuxctl --socket <admin socket> ARGS...` (binary from $S2SMUXCTL,
        else next to the daemon's build directory)."""
        ctl = Path(os.environ.get("S2SMUXCTL") or self.binary.parent / "tools" / "ctl" / "s2smuxctl")
        return subprocess.run([str(ctl), "--socket", str(self.admin_socket), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)

    def ctl_ok(self, *args: str) -> list[str]:
        """ctl() that must succeed; returns its output lines."""
        r = self.ctl(*args)
        if r.returncode != 0:
            raise AssertionError(f"s2smuxctl {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
        return r.stdout.splitlines()

    def stats(self) -> dict[str, str]:
        """`s2smuxctl stats` as {name: value} (values as printed: counters,
        and e.g. "ok" for the accounting line)."""
        out = {}
        for line in self.ctl_ok("stats"):
            parts = line.split(None, 1)
            if len(parts) == 2:
                out[parts[0]] = parts[1].strip()
        return out

    def check_config(self) -> subprocess.CompletedProcess:
        """`s2smuxd -t --config FILE` (config check only)."""
        self.write_config()
        return subprocess.run([str(self.binary), "-t", "--config", str(self.config_file)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=30)

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        super().stop(timeout)
        if proc is not None:
            self.exit_code = proc.returncode

    exit_code: int | None = None

    def post_mortem(self) -> str | None:
        """Why the last run did not end cleanly, or None. s2smuxd exits 0 on
        SIGTERM only when every handle closed (uv_loop_close succeeded)."""
        if self.exit_code is None:
            return None  # never started
        text = self.log_text()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "event loop closed with open handles"):
            if marker in text:
                line = next(l for l in text.splitlines() if marker in l)
                return f"{marker} in {self.log_file}: {line.strip()}"
        if self.exit_code != 0:
            return f"exit status {self.exit_code} after SIGTERM (see {self.log_file})"
        return None

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def reload(self, config: Mapping | None = None) -> None:
        """Rewrite the config (if given) and send SIGHUP."""
        if config is not None:
            self.config = dict(config)
            self.write_config()
        self.signal(signal.SIGHUP)

    def reopen_logs(self) -> None:
        self.signal(signal.SIGUSR1)

    def log_files(self) -> list[Path]:
        files = [self.log_file]
        f = (self.config.get("log") or {}).get("file")
        if f:
            p = Path(f)
            files.append(p if p.is_absolute() else self.dir / p)
        return files

    def log_text(self) -> str:
        return "\n".join(f.read_text(errors="replace") for f in self.log_files() if f.exists())
