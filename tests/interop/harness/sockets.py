"""The kernel's TCP socket table, to count real connections between servers."""

from __future__ import annotations

from pathlib import Path


def _parse(path: str) -> list[tuple[int, int, str]]:
    out = []
    try:
        lines = Path(path).read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        f = line.split()
        if len(f) < 4:
            continue
        lport = int(f[1].rsplit(":", 1)[1], 16)
        rport = int(f[2].rsplit(":", 1)[1], 16)
        out.append((lport, rport, f[3]))
    return out


def established(ports_a, ports_b=None) -> int:
    """ESTABLISHED TCP connections (IPv4 and IPv6, loopback included) with
    one end on a port of `ports_a` and, if given, the other on `ports_b`.
    Each connection is counted once (the listening side's entry)."""
    a = set(ports_a)
    b = set(ports_b) if ports_b is not None else None
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        for lport, rport, state in _parse(path):
            if state != "01":  # ESTABLISHED
                continue
            if lport in a and (b is None or rport in b):
                n += 1
    return n


def established_between_listeners(listen_ports_a, listen_ports_b) -> int:
    """Connections accepted on one side's listening ports whose peer is the
    other side (we cannot know the client's ephemeral port, so count the
    accepted sockets on A's ports plus those on B's ports that come from
    any port; callers pass the outer ports of two gateways)."""
    return established(listen_ports_a) + established(listen_ports_b)
