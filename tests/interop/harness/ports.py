"""Free loopback TCP ports.

A port is found by binding 127.0.0.1:0 and reading what the kernel chose. The
socket is closed again before the server binds the port, so there is a short
window in which another process could take it; to keep at least our own
servers from colliding, every port handed out in this process is remembered
and never handed out twice.
"""

import socket
import threading

_lock = threading.Lock()
_used: set[int] = set()

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """Return a TCP port on `host` that is free now and not given out before."""
    with _lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if port not in _used:
                _used.add(port)
                return port
    raise RuntimeError("no free loopback port found")


def free_ports(n: int, host: str = HOST) -> list[int]:
    return [free_port(host) for _ in range(n)]


def free_udp_port(host: str = HOST) -> int:
    """A port free for both UDP and TCP (for a DNS server)."""
    with _lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((host, 0))
                port = u.getsockname()[1]
                try:
                    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                        t.bind((host, port))
                except OSError:
                    continue
            if port not in _used:
                _used.add(port)
                return port
    raise RuntimeError("no free loopback UDP port found")


def port_open(port: int, host: str = HOST, timeout: float = 0.2) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _proc_listening(port: int) -> bool | None:
    """From /proc/net/tcp{,6}: is some socket in LISTEN state on `port`?
    None when /proc is not available."""
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        found_table = True
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False if found_table else None


def port_listening(port: int, host: str = HOST) -> bool:
    """True when something listens on TCP `port`. Reads /proc/net/tcp so the
    server sees no probe connection (no noise in its log); falls back to
    connecting when /proc is not there."""
    r = _proc_listening(port)
    return port_open(port, host) if r is None else r
