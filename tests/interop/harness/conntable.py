"""Counting TCP connections between servers from the kernel's socket table.

    from harness.conntable import established_between, Side, by_listener

    established_between(gwa, gwb)                 # processes (Server objects)
    established_between([a_outer], [b_outer])     # ports
    established_between(Side(servers=[gwa]), Side(servers=[gwb]))

A side is one of
  * an int or an iterable of ints: TCP ports. A socket is on the side when
    its LOCAL port is one of them (a listening port's accepted sockets, or a
    bound client port). A connection a gateway opens from an ephemeral port
    is NOT on the side of the gateway's listening ports; use processes for
    "between these two gateways in either direction".
  * a Server (harness.proc.Server, started) or a pid: every socket whose
    inode one of the process group's members holds (/proc/PID/fd).
  * Side(ports=..., pids=..., servers=...): any mix of the above.

established_between(a, b) counts ESTABLISHED connections (IPv4 and IPv6,
loopback included) with one end on side a and the other on side b, each
connection once, whichever side opened it. connections_between(a, b) returns
them (Connection: both ends, which end was accepted on a listening port) for
breakdowns; by_listener() groups them by the port they were accepted on.

Both ends of a loopback connection are in the table; for a connection to
another host only the local end is, and it counts when its remote port is one
of side b's ports.

Reads /proc/net/tcp{,6} and /proc/PID/fd only (stdlib): some 0.1-0.3 s with
tens of thousands of sockets.
"""

from __future__ import annotations

import os
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

ESTABLISHED = "01"
LISTEN = "0A"


def _addr(hexaddr: str) -> tuple[str, int]:
    ip_hex, port_hex = hexaddr.rsplit(":", 1)
    raw = bytes.fromhex(ip_hex)
    # The kernel prints each 32-bit word in host byte order.
    words = struct.unpack(f"<{len(raw) // 4}I", raw)
    packed = struct.pack(f">{len(words)}I", *words)
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    ip = socket.inet_ntop(family, packed)
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]  # v4-mapped: compare as IPv4
    return ip, int(port_hex, 16)


@dataclass(frozen=True)
class TcpEnd:
    """One socket of the table: local and remote (ip, port), state, inode."""
    local: tuple[str, int]
    remote: tuple[str, int]
    state: str
    inode: int

    def __str__(self):
        return f"{self.local[0]}:{self.local[1]}->{self.remote[0]}:{self.remote[1]}"


def read_tcp_table(states: Iterable[str] | None = (ESTABLISHED,)) -> list[TcpEnd]:
    """Sockets of /proc/net/tcp and /proc/net/tcp6 in `states` (hex codes,
    "01" ESTABLISHED, "0A" LISTEN; None: all)."""
    want = set(states) if states is not None else None
    out: list[TcpEnd] = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            p = line.split()
            if len(p) < 10 or (want is not None and p[3] not in want):
                continue
            out.append(TcpEnd(_addr(p[1]), _addr(p[2]), p[3], int(p[9])))
    return out


def listening_ports() -> set[int]:
    return {e.local[1] for e in read_tcp_table((LISTEN,))}


def group_pids(pgid: int) -> list[int]:
    """Live members of process group `pgid` (a Server's session leader pid)."""
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [pgid]
    for e in entries:
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            pids.append(int(e))
    return pids or [pgid]


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` holds."""
    out = set()
    d = f"/proc/{pid}/fd"
    try:
        names = os.listdir(d)
    except OSError:
        return out
    for n in names:
        try:
            link = os.readlink(f"{d}/{n}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


@dataclass
class Side:
    ports: Iterable[int] = ()
    pids: Iterable[int] = ()
    servers: Iterable[object] = ()
    _ports: set[int] = field(default_factory=set, init=False, repr=False)
    _inodes: set[int] = field(default_factory=set, init=False, repr=False)

    def resolve(self) -> "Side":
        """Snapshot the sockets of the processes (call right before counting)."""
        self._ports = set(self.ports)
        pids = set(self.pids)
        for s in self.servers:
            proc = getattr(s, "proc", None)
            if proc is None:
                raise ValueError(f"{s!r} is not running")
            pids.update(group_pids(proc.pid))
        self._inodes = set()
        for pid in pids:
            self._inodes |= socket_inodes(pid)
        return self

    def holds(self, end: TcpEnd) -> bool:
        return end.local[1] in self._ports or end.inode in self._inodes

    def has_port(self, port: int) -> bool:
        return port in self._ports


def as_side(x) -> Side:
    if isinstance(x, Side):
        return x
    if isinstance(x, int):
        return Side(ports=[x])
    if hasattr(x, "proc"):
        return Side(servers=[x])
    items = list(x)
    return Side(ports=[i for i in items if isinstance(i, int)],
                servers=[i for i in items if hasattr(i, "proc")])


@dataclass(frozen=True)
class Connection:
    a: TcpEnd                # the end on side a
    b: TcpEnd | None         # the end on side b (None: not in this host's table)
    server_port: int | None  # the listening port it was accepted on, if known
    accepted_by: str | None  # "a" | "b": which side accepted it

    def __str__(self):
        return f"{self.a} ({'accepted by ' + self.accepted_by if self.accepted_by else 'listener unknown'})"


def connections_between(a, b) -> list[Connection]:
    """ESTABLISHED connections with one end on side `a` and the other on side `b`."""
    sa, sb = as_side(a).resolve(), as_side(b).resolve()
    table = read_tcp_table(None)
    listen = {e.local[1] for e in table if e.state == LISTEN}
    est = [e for e in table if e.state == ESTABLISHED]
    by_key = {(e.local, e.remote): e for e in est}
    seen: set[tuple] = set()
    out: list[Connection] = []
    for e in est:
        if not sa.holds(e):
            continue
        peer = by_key.get((e.remote, e.local))
        if peer is not None:
            if not sb.holds(peer):
                continue
        elif not sb.has_port(e.remote[1]):
            continue
        key = tuple(sorted([(e.local, e.remote), (e.remote, e.local)]))
        if key in seen:
            continue
        seen.add(key)
        if e.local[1] in listen and (peer is None or peer.local[1] not in listen):
            server_port, by = e.local[1], "a"
        elif e.remote[1] in listen or (peer is not None and peer.local[1] in listen):
            server_port, by = e.remote[1], "b"
        else:
            server_port, by = None, None
        out.append(Connection(e, peer, server_port, by))
    return out


def established_between(a, b) -> int:
    """Number of ESTABLISHED TCP connections between side `a` and side `b`
    (either direction, each once). See the module docstring for sides."""
    return len(connections_between(a, b))


def by_listener(conns: Iterable[Connection]) -> dict[int | None, int]:
    """{listening port a connection was accepted on: count}."""
    return dict(Counter(c.server_port for c in conns))
