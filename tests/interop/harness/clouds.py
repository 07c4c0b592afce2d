"""Two "clouds" of many domains, each Prosody behind its own s2smuxd.

    clouds = TwoClouds(t.dir, t.pki(), n_a=50, n_b=50)   # a1.test..a50.test / b1.test..b50.test
    for s in clouds.servers():                           # gateways first, then Prosody
        t.start(s, timeout=60)
    clouds.pa.c2s_port, clouds.gwa.outer_port, clouds.a_domains, ...

Layout (as test_gateway_two_clouds.py, with N domains per side):

    Prosody A (a1..aN) --inner--> s2smuxd A ==outer==> s2smuxd B <--inner-- Prosody B (b1..bM)
                      <-upstream-           <==outer==           -upstream->

* Each Prosody hosts its cloud's domains as VirtualHosts with one user
  (`users`, default {"u": "pw"}) on every host, routes all outbound S2S to its
  gateway's inner listener (mod_s2smux_route), s2s_secure_auth = false.
* Each gateway lists its cloud's domains in [gateway] domains, one [[cert]]
  per certificate, and an exact [[route]] per domain of the other cloud to the
  other gateway's outer listener (or outer_tls with direct_tls, see
  `direct_tls`).
* Certificates: one per domain from the test PKI (`cert_mode="per-domain"`,
  ~10 ms each with certtool), or ONE certificate per cloud carrying every
  domain as dNSName/SRVName (`cert_mode="shared"`). Multiplexing adds domains
  with their own certificates, so keep per-domain for mux tests.
* Logging is quiet by default (Prosody "info" without mod_stanza_debug,
  gateway "info"): at debug level the logs of thousands of streams cost more
  than the traffic itself.
* Prosody's listen backlog is raised (`prosody_tcp_backlog`, default 4096,
  as `network_settings = { tcp_backlog = ... }`; the kernel caps it at
  net.core.somaxconn). Prosody 0.12's default of 128, with its one accept()
  per poll, overflows when a gateway opens hundreds of upstream connections
  at once: the kernel then drops the handshakes, the gateway's connects take
  15-30 s (SYN-ACK retransmits) or are reset, and stanzas bounce with
  remote-server-timeout ("connection reset by peer", "no authenticated
  stream within 30 s").
* `mux`: None leaves [mux] out of the gateway configs (daemon default);
  True/False writes `[mux] enabled = ...` (plus `mux_options`).

DirectClouds is the same two Prosody servers with no gateway (the standard
S2S baseline): each routes the other cloud's domains straight to the other's
S2S port, s2s_secure_auth = true, so every stream is STARTTLS + SASL
EXTERNAL with the test PKI's certificates (one stream per domain pair and
direction: Prosody 0.12 has no bidirectional streams).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Mapping

from .certs import DomainCert, Pki
from .gateway import S2smuxd
from .ports import free_port
from .prosody import Prosody


def cloud_domains(prefix: str, n: int, parent: str = "test") -> list[str]:
    """["a1.test", ..., "aN.test"]"""
    return [f"{prefix}{i}.{parent}" for i in range(1, n + 1)]


def issue_cloud_certs(pki: Pki, domains: list[str], mode: str = "per-domain",
                      tag: str = "") -> dict[str, DomainCert]:
    """{domain: DomainCert}. mode "per-domain": pki.issue(d) for each domain
    (own key each); "shared": one certificate (and key) naming all of them,
    the same object for every domain."""
    if mode == "per-domain":
        return {d: pki.issue(d, tag=tag) for d in domains}
    if mode == "shared":
        c = pki.issue(domains[0], names=list(domains), tag=tag or "cloud")
        return {d: c for d in domains}
    raise ValueError(f"cert mode {mode!r}: expected 'per-domain' or 'shared'")


def unique_certs(certs: Mapping[str, DomainCert]) -> list[DomainCert]:
    seen, out = set(), []
    for c in certs.values():
        if id(c) not in seen:
            seen.add(id(c))
            out.append(c)
    return out


def prosody_globals(tcp_backlog: int | None,
                    extra_global: Mapping[str, object] | None) -> dict[str, object]:
    """Global Prosody options shared by both layouts (see the backlog note above)."""
    extra: dict[str, object] = {}
    if tcp_backlog:
        extra["network_settings"] = {"tcp_backlog": tcp_backlog, "nagle": False}
    extra.update(extra_global or {})
    return extra


class _Clouds:
    """What both layouts share: pa, pb, a_domains, b_domains, users."""

    pa: Prosody
    pb: Prosody

    def _domains(self, pki: Pki, n_a: int, n_b: int | None, a_prefix: str, b_prefix: str,
                 users: Mapping[str, str] | None, cert_mode: str) -> None:
        self.a_domains = cloud_domains(a_prefix, n_a)
        self.b_domains = cloud_domains(b_prefix, n_a if n_b is None else n_b)
        self.users = dict(users or {"u": "pw"})
        self.a_certs = issue_cloud_certs(pki, self.a_domains, cert_mode)
        self.b_certs = issue_cloud_certs(pki, self.b_domains, cert_mode)

    def servers(self) -> list:
        raise NotImplementedError

    def stop(self, gateway_timeout: float = 30.0) -> dict[str, float]:
        """Stop every server at once (the runner stops servers one after
        the other). With thousands of streams Prosody 0.12 does not exit
        within the 5 s after SIGTERM and is killed, and s2smuxd closes its
        streams one by one (some 600/s on a loaded 2-core machine: 7,500
        streams take over 10 s, the harness's default before SIGKILL), so
        the gateways get `gateway_timeout`. Returns {name: seconds its stop()
        took}. Stopped servers are skipped by the runner's own teardown;
        s2smuxd's exit status is still judged by its post_mortem()."""
        took: dict[str, float] = {}

        def stop(s):
            t0 = time.monotonic()
            try:
                if isinstance(s, S2smuxd):
                    s.stop(timeout=gateway_timeout)
                else:
                    s.stop()
            finally:
                took[s.name] = time.monotonic() - t0

        threads = [threading.Thread(target=stop, args=(s,)) for s in self.servers()]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return took

    def accounts(self, user: str | None = None) -> list[tuple[str, str, int]]:
        """(jid, password, c2s port) of `user` (default: the first) on every domain, A then B."""
        user = user or next(iter(self.users))
        pw = self.users[user]
        return ([(f"{user}@{d}", pw, self.pa.c2s_port) for d in self.a_domains]
                + [(f"{user}@{d}", pw, self.pb.c2s_port) for d in self.b_domains])


class DirectClouds(_Clouds):
    """Prosody A (a1..aN) <==standard S2S, one stream per pair and direction==> Prosody B (b1..bM)"""

    def __init__(self, tmpdir: Path | str, pki: Pki, n_a: int, n_b: int | None = None, *,
                 a_prefix: str = "a", b_prefix: str = "b",
                 users: Mapping[str, str] | None = None,
                 cert_mode: str = "per-domain",
                 prosody_log_level: str = "info", stanza_debug: bool = False,
                 prosody_tcp_backlog: int | None = 4096,
                 prosody_extra_global: Mapping[str, object] | None = None):
        self._domains(pki, n_a, n_b, a_prefix, b_prefix, users, cert_mode)
        self.a_s2s, self.b_s2s = free_port(), free_port()
        common = dict(pki=pki, s2s_secure_auth=True, users=self.users,
                      stanza_debug=stanza_debug, log_level=prosody_log_level,
                      extra_global=prosody_globals(prosody_tcp_backlog, prosody_extra_global))
        self.pa = Prosody(tmpdir, "prosody-a", self.a_domains, certs=self.a_certs, s2s_port=self.a_s2s,
                          routes={d: f"127.0.0.1:{self.b_s2s}" for d in self.b_domains}, **common)
        self.pb = Prosody(tmpdir, "prosody-b", self.b_domains, certs=self.b_certs, s2s_port=self.b_s2s,
                          routes={d: f"127.0.0.1:{self.a_s2s}" for d in self.a_domains}, **common)

    def servers(self) -> list:
        return [self.pa, self.pb]


class TwoClouds(_Clouds):
    def __init__(self, tmpdir: Path | str, pki: Pki, n_a: int, n_b: int | None = None, *,
                 a_prefix: str = "a", b_prefix: str = "b",
                 users: Mapping[str, str] | None = None,
                 cert_mode: str = "per-domain",
                 mux: bool | None = None, mux_options: Mapping | None = None,
                 direct_tls: bool = False,
                 gateway_binary: str | Path | None = None,
                 gateway_log_level: str = "info", gateway_limits: Mapping | None = None,
                 prosody_log_level: str = "info", stanza_debug: bool = False,
                 prosody_tcp_backlog: int | None = 4096,
                 prosody_extra_global: Mapping[str, object] | None = None):
        self._domains(pki, n_a, n_b, a_prefix, b_prefix, users, cert_mode)
        self.a_s2s, self.b_s2s = free_port(), free_port()
        self.a_outer, self.b_outer = free_port(), free_port()
        self.a_outer_tls = free_port() if direct_tls else None
        self.b_outer_tls = free_port() if direct_tls else None

        def routes(domains, outer, outer_tls):
            if outer_tls:
                return [{"domain": d, "address": f"127.0.0.1:{outer_tls}", "direct_tls": True}
                        for d in domains]
            return [{"domain": d, "address": f"127.0.0.1:{outer}"} for d in domains]

        def gw_config(domains, certs, upstream, outer, outer_tls, peer_domains, peer_outer, peer_tls):
            cfg = S2smuxd.fronting_config(
                domains=domains, certs=unique_certs(certs), ca_file=pki.ca_file,
                upstream=f"127.0.0.1:{upstream}", outer=f"127.0.0.1:{outer}",
                outer_tls=f"127.0.0.1:{outer_tls}" if outer_tls else None,
                routes=routes(peer_domains, peer_outer, peer_tls),
                log_level=gateway_log_level, limits=gateway_limits)
            if mux is not None or mux_options:
                m = dict(mux_options or {})
                if mux is not None:
                    m["enabled"] = mux
                cfg["mux"] = m
            return cfg

        self.gwa = S2smuxd(tmpdir, gateway_binary, name="s2smuxd-a", config=gw_config(
            self.a_domains, self.a_certs, self.a_s2s, self.a_outer, self.a_outer_tls,
            self.b_domains, self.b_outer, self.b_outer_tls))
        self.gwb = S2smuxd(tmpdir, gateway_binary, name="s2smuxd-b", config=gw_config(
            self.b_domains, self.b_certs, self.b_s2s, self.b_outer, self.b_outer_tls,
            self.a_domains, self.a_outer, self.a_outer_tls))
        common = dict(pki=pki, s2s_secure_auth=False, users=self.users,
                      stanza_debug=stanza_debug, log_level=prosody_log_level,
                      extra_global=prosody_globals(prosody_tcp_backlog, prosody_extra_global))
        self.pa = Prosody(tmpdir, "prosody-a", self.a_domains, certs=self.a_certs,
                          s2s_port=self.a_s2s, gateway=f"127.0.0.1:{self.gwa.inner_port}", **common)
        self.pb = Prosody(tmpdir, "prosody-b", self.b_domains, certs=self.b_certs,
                          s2s_port=self.b_s2s, gateway=f"127.0.0.1:{self.gwb.inner_port}", **common)

    def servers(self) -> list:
        """Start order: gateways, then the Prosody servers."""
        return [self.gwa, self.gwb, self.pa, self.pb]

    def outer_ports(self, side: str) -> list[int]:
        if side == "a":
            return [p for p in (self.a_outer, self.a_outer_tls) if p]
        return [p for p in (self.b_outer, self.b_outer_tls) if p]
