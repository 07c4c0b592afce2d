"""A private Prosody 0.12 instance on loopback ports.

    p = Prosody(tmp, "pa", hosts=["a.test"], pki=pki,
                routes={"b.test": f"127.0.0.1:{b_s2s}"}, users={"alice": "pw"})
    p.start()
    ...
    p.stop()

Everything lives in tmp/<name>/: prosody.cfg.lua, data/, prosody.log,
console.log, prosody.pid. Outgoing S2S is steered with
tools/prosody/mod_s2smux_route.lua (`gateway` and/or `routes`); DNS is never
used for routed domains.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable, Mapping

from . import PROSODY_PLUGIN_DIR
from .certs import DomainCert, Pki
from .ports import free_port
from .proc import Server
from .prosody_log import S2sSession, s2s_sessions

PROSODY_BIN = "/usr/bin/prosody"


def lua_str(s: str | Path) -> str:
    s = str(s)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def lua_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, Path)):
        return lua_str(v)
    if v is None:
        return "nil"
    if isinstance(v, Mapping):
        return "{ " + " ".join(f"[{lua_str(k)}] = {lua_value(x)};" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple, set)):
        return "{ " + " ".join(f"{lua_value(x)};" for x in v) + " }"
    raise TypeError(f"cannot express {v!r} in Lua")


def prosody_encode(s: str) -> str:
    """util.datamanager's path encoding: every non-alphanumeric byte -> %xx."""
    return "".join(c if c.isalnum() and c.isascii() else "".join(f"%{b:02x}" for b in c.encode()) for c in s)


class Prosody(Server):
    kind = "prosody"

    BASE_MODULES = ["tls", "saslauth", "dialback", "disco", "roster", "ping"]

    def __init__(self, tmpdir: Path | str, name: str, hosts: Iterable[str], *,
                 pki: Pki | None = None,
                 certs: Mapping[str, DomainCert] | None = None,
                 s2s_port: int | None = None, c2s_port: int | None = None,
                 gateway: str | None = None, routes: Mapping[str, str] | None = None,
                 s2s_secure_auth: bool = True, s2s_require_encryption: bool = True,
                 s2s_insecure_domains: Iterable[str] = (),
                 dialback: bool = True, bidi: bool = False,
                 extra_modules: Iterable[str] = (), stanza_debug: bool = True,
                 users: Mapping[str, str] | None = None,
                 extra_global: Mapping[str, object] | None = None,
                 log_level: str = "debug"):
        """
        hosts: VirtualHosts served.
        certs: {host: DomainCert}; hosts without an entry get pki.issue(host).
        gateway: "HOST:PORT" for s2smux_gateway (all outbound S2S there).
        routes: {"b.test" | "*.c.test": "HOST:PORT"} for s2smux_routes.
        users: {"alice": "password"} created on every host.
        stanza_debug: load mod_stanza_debug so every stanza is logged (SEND:/RECV:).
        """
        super().__init__(name, Path(tmpdir) / name)
        self.hosts = list(hosts)
        self.pki = pki
        self.certs = dict(certs or {})
        for h in self.hosts:
            if h not in self.certs:
                if pki is None:
                    raise ValueError(f"{name}: no certificate for {h} and no pki given")
                self.certs[h] = pki.issue(h)
        self.ca_file = pki.ca_file if pki else next(iter(self.certs.values())).ca_file
        self.s2s_port = s2s_port or free_port()
        self.c2s_port = c2s_port or free_port()
        self.gateway = gateway
        self.routes = dict(routes or {})
        self.s2s_secure_auth = s2s_secure_auth
        self.s2s_require_encryption = s2s_require_encryption
        self.s2s_insecure_domains = list(s2s_insecure_domains)
        modules = list(self.BASE_MODULES)
        if not dialback:
            modules.remove("dialback")
        if bidi:
            modules.append("s2s_bidi")
        if stanza_debug:
            modules.append("stanza_debug")
        modules += list(extra_modules)
        if self.gateway or self.routes:
            modules.append("s2smux_route")
        self.modules = modules
        self.users = dict(users or {})
        self.extra_global = dict(extra_global or {})
        self.log_level = log_level
        self.config_file = self.dir / "prosody.cfg.lua"
        self.data_dir = self.dir / "data"
        self.log_file = self.dir / "prosody.log"
        self.pid_file = self.dir / "prosody.pid"

    # -- configuration ------------------------------------------------------
    def config_text(self) -> str:
        g: dict[str, object] = {
            # Prosody refuses to start as root without this (mod_posix).
            "run_as_root": True,
            "pidfile": self.pid_file,
            "data_path": self.data_dir,
            "plugin_paths": [PROSODY_PLUGIN_DIR],
            # Certificates are given per VirtualHost; keep the automatic
            # lookup away from /etc/prosody/certs.
            "certificates": self.dir / "certs",
            "modules_enabled": self.modules,
            "modules_disabled": [],
            "interfaces": ["127.0.0.1"],
            "local_interfaces": ["127.0.0.1"],
            "c2s_ports": [self.c2s_port],
            "s2s_ports": [self.s2s_port],
            "c2s_direct_tls_ports": [],
            "s2s_direct_tls_ports": [],
            "http_ports": [],
            "https_ports": [],
            "component_ports": [],
            "authentication": "internal_plain",
            "storage": "internal",
            # Clients log in over plain TCP with PLAIN/SCRAM: simplest for slixmpp.
            "c2s_require_encryption": False,
            "allow_unencrypted_plain_auth": True,
            "s2s_require_encryption": self.s2s_require_encryption,
            "s2s_secure_auth": self.s2s_secure_auth,
            "s2s_insecure_domains": self.s2s_insecure_domains,
            "use_dane": False,
            # Nagle on Prosody's streams to the gateway adds up to 40 ms per
            # small stanza (tools/prosody/README.md).
            "network_settings": {"nagle": False},
        }
        if self.gateway:
            g["s2smux_gateway"] = self.gateway
        if self.routes:
            g["s2smux_routes"] = self.routes
        g.update(self.extra_global)
        out = ["-- Generated by tests/interop/harness/prosody.py", ""]
        for k, v in g.items():
            out.append(f"{k} = {lua_value(v)}")
        out.append("log = { { levels = { min = %s }; to = \"file\"; filename = %s; timestamps = true; } }"
                   % (lua_str(self.log_level), lua_str(self.log_file)))
        out.append("")
        for h in self.hosts:
            c = self.certs[h]
            out.append(f"VirtualHost {lua_str(h)}")
            out.append(f"\tssl = {{ certificate = {lua_str(c.chain)}; key = {lua_str(c.key)}; "
                       f"cafile = {lua_str(self.ca_file)}; }}")
            out.append("")
        return "\n".join(out)

    def write_accounts(self) -> None:
        # Format of util.datamanager with mod_auth_internal_plain:
        # data/<host, %-encoded>/accounts/<user, %-encoded>.dat containing
        #   return {
        #       ["password"] = "secret";
        #   };
        for h in self.hosts:
            d = self.data_dir / prosody_encode(h) / "accounts"
            d.mkdir(parents=True, exist_ok=True)
            for user, password in self.users.items():
                (d / f"{prosody_encode(user)}.dat").write_text(
                    "return {\n\t[\"password\"] = %s;\n};\n" % lua_str(password))

    # -- Server interface ---------------------------------------------------
    def command(self) -> list[str]:
        return [PROSODY_BIN, "--config", str(self.config_file), "-F"]

    def ports(self) -> list[int]:
        return [self.c2s_port, self.s2s_port]

    def start(self, timeout: float = 20.0) -> "Prosody":
        if not shutil.which(PROSODY_BIN):
            raise RuntimeError("prosody not installed")
        (self.dir / "certs").mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.config_text())
        self.write_accounts()
        super().start(timeout)
        return self

    def ready(self) -> bool:
        # "Server started" comes once every host is activated and modules loaded.
        return self.pid_file.exists()

    def add_user(self, user: str, password: str) -> None:
        """Add an account (works while running: the file is read at login)."""
        self.users[user] = password
        self.write_accounts()

    def jid(self, user: str, host: str | None = None) -> str:
        return f"{user}@{host or self.hosts[0]}"

    # -- logs ---------------------------------------------------------------------
    def s2s_sessions(self) -> dict[str, S2sSession]:
        """Every S2S session in the log, by its log source name."""
        return s2s_sessions(self.log_text())

    def find_s2s(self, direction: str, from_host: str, to_host: str) -> list[S2sSession]:
        """Sessions that completed FROM->TO in `direction` ("incoming" |
        "outgoing"), oldest first."""
        return [s for s in self.s2s_sessions().values()
                if s.direction == direction and (from_host, to_host) in s.completed()]
