"""A private DNS server (dnsmasq-base) on 127.0.0.1:PORT for SRV records.

    dns = Dns(tmp, srv={"_xmpp-server._tcp.a.test": [("127.0.0.1", 5269)]},
              hosts={"gw.test": "127.0.0.1"})
    dns.start()        # dns.port; dns.query("_xmpp-server._tcp.a.test", "SRV")

Every name that is not configured answers NXDOMAIN (`--local=/#/`): no query
ever leaves the machine. SRV target "127.0.0.1" is written as the name
127.0.0.1: ejabberd 23.01 resolves SRV targets with getaddrinfo, which ignores
ERL_INETRC but parses IPv4 literals without any DNS query. Use
xmpp_server(domain, port) for the usual record.
"""

from __future__ import annotations

import getpass
import random
import shutil
import socket
import struct
from pathlib import Path
from typing import Iterable, Mapping

from .ports import free_udp_port
from .proc import Server

DNSMASQ_BIN = "/usr/sbin/dnsmasq"

TYPES = {"A": 1, "AAAA": 28, "SRV": 33, "TXT": 16}


class Dns(Server):
    kind = "dnsmasq"

    def __init__(self, tmpdir: Path | str, name: str = "dns", port: int | None = None,
                 srv: Mapping[str, Iterable[tuple]] | None = None,
                 hosts: Mapping[str, str] | None = None):
        """
        srv: {"_xmpp-server._tcp.a.test": [(target, port), (target, port, priority, weight)]}
        hosts: {"name": "ipv4 or ipv6"} A/AAAA records
        """
        super().__init__(name, Path(tmpdir) / name)
        self.port = port or free_udp_port()
        self.srv: dict[str, list[tuple]] = {k: [tuple(t) for t in v] for k, v in (srv or {}).items()}
        self.hosts: dict[str, str] = dict(hosts or {})
        self.log_file = self.dir / "dnsmasq.log"

    def xmpp_server(self, domain: str, port: int, target: str = "127.0.0.1",
                    direct_tls: bool = False) -> "Dns":
        """Add _xmpp-server._tcp.DOMAIN (or _xmpps-server) -> target:port.
        Takes effect at start() (dnsmasq reads its options once)."""
        name = f"_{'xmpps' if direct_tls else 'xmpp'}-server._tcp.{domain}"
        self.srv.setdefault(name, []).append((target, port))
        return self

    def command(self) -> list[str]:
        cmd = [DNSMASQ_BIN, "--keep-in-foreground", "--conf-file=/dev/null",
               f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
               "--no-resolv", "--no-hosts", "--no-negcache", "--local=/#/",
               f"--pid-file={self.dir / 'dnsmasq.pid'}", f"--user={getpass.getuser()}",
               f"--log-facility={self.log_file}", "--log-queries"]
        for name, targets in self.srv.items():
            for t in targets:
                target, port = t[0], t[1]
                prio = t[2] if len(t) > 2 else 0
                weight = t[3] if len(t) > 3 else 5
                cmd.append(f"--srv-host={name},{target},{port},{prio},{weight}")
        for name, addr in self.hosts.items():
            cmd.append(f"--host-record={name},{addr}")
        return cmd

    def ports(self) -> list[int]:
        return [self.port]

    def start(self, timeout: float = 10.0) -> "Dns":
        if not shutil.which(DNSMASQ_BIN):
            raise RuntimeError("dnsmasq not installed (apt-get install dnsmasq-base)")
        super().start(timeout)
        return self

    def log_files(self):
        return [self.log_file, self.console_log]

    # -- a tiny stub resolver for self-checks -------------------------------------
    def query(self, name: str, qtype: str = "A", timeout: float = 2.0) -> tuple[int, list]:
        """(rcode, answers) from this server. SRV answers are
        (priority, weight, port, target); A/AAAA answers are address strings."""
        return query(name, qtype, ("127.0.0.1", self.port), timeout)


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def _read_name(msg: bytes, off: int) -> tuple[str, int]:
    labels, jumped, end = [], False, off
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if not jumped:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumped = True
            continue
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode())
        off += n
    return ".".join(labels), (end if jumped else off)


def query(name: str, qtype: str, server: tuple[str, int], timeout: float = 2.0) -> tuple[int, list]:
    qid = random.randrange(65536)
    t = TYPES[qtype]
    pkt = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _encode_name(name) + struct.pack(">HH", t, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(pkt, server)
        msg, _ = s.recvfrom(4096)
    rid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", msg[:12])
    if rid != qid:
        raise RuntimeError("DNS id mismatch")
    off = 12
    for _ in range(qd):
        _, off = _read_name(msg, off)
        off += 4
    answers = []
    for _ in range(an):
        _, off = _read_name(msg, off)
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        if rtype == 33:
            prio, weight, port = struct.unpack(">HHH", rdata[:6])
            target, _ = _read_name(msg, off + 6)
            answers.append((prio, weight, port, target))
        elif rtype == 1:
            answers.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28:
            answers.append(socket.inet_ntop(socket.AF_INET6, rdata))
        off += rdlen
    return flags & 0xF, answers
