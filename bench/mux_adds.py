#!/usr/bin/python3
"""Domain adds on one multiplexed stream: time, adds/s, memory per domain.

Two real s2smuxd gateways on loopback. Gateway A serves N domains (one
certificate each, ECDSA P-256, from a bench CA); gateway B serves one. A
preconnects to B; once multiplexing is enabled A adds its N-1 other domains
(the first one is the TLS certificate of the stream). We measure, from B's
admin socket and log: the time from multiplexing enabled to the last domain
accepted, adds per second, and B's resident memory per accepted domain (RSS
after minus RSS before A connected). Also A's RSS with N certificates loaded.

    /usr/bin/python3 bench/mux_adds.py --count 10000 [--build build-rel]

Prints a table and a JSON line. Exit status 1 if not every add was accepted.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "interop"))

from harness.gateway import S2smuxd  # noqa: E402
from harness.ports import free_port  # noqa: E402


def admin(path: Path, command: str, timeout: float = 30.0) -> list[str]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(command.encode() + b"\n")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError(f"admin socket closed during '{command}'")
            buf += chunk
            lines = buf.decode(errors="replace").split("\n")
            for i, line in enumerate(lines[:-1]):
                # Data lines that could be mistaken for the terminator are
                # sent with one extra leading space (admin/protocol.h).
                if line == "OK":
                    return [l[1:] if l.startswith(" ") else l for l in lines[:i]]
                if line.startswith("ERR"):
                    raise RuntimeError(f"'{command}': {line}")


def stats(path: Path) -> dict[str, int]:
    out = {}
    for line in admin(path, "stats"):
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuSampler(threading.Thread):
    """CPU seconds of a process every 20 ms, with the wall time (time.time()),
    so that the CPU spent from a logged instant on can be read afterwards."""

    def __init__(self, pid: int | None = None, config: Path | None = None):
        super().__init__(daemon=True)
        self.pid, self.config, self.samples, self.stopping = pid, config, [], threading.Event()

    def find_pid(self) -> None:
        """The process started with this configuration (before its start() returns)."""
        while self.pid is None and not self.stopping.is_set():
            for d in Path("/proc").iterdir():
                try:
                    if d.name.isdigit() and str(self.config).encode() in (d / "cmdline").read_bytes():
                        self.pid = int(d.name)
                except OSError:
                    pass
            time.sleep(0.005)

    def run(self) -> None:
        self.find_pid()
        while not self.stopping.is_set():
            try:
                self.samples.append((time.time(), cpu_s(self.pid)))
            except OSError:
                return
            time.sleep(0.02)

    def at(self, t: float) -> float:
        """CPU seconds at the last sample not after wall time t."""
        before = [c for (w, c) in self.samples if w <= t]
        return before[-1] if before else (self.samples[0][1] if self.samples else 0.0)


def log_time(line: str) -> float:
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z", line)
    # The daemon logs UTC.
    t = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) + int(m.group(2)) / 1000.0
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--build", default="build")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds to wait after the last add before reading gateway B's RSS (default 1)")
    ap.add_argument("--default-limits", action="store_true",
                    help="leave gateway B's [mux] limits at the daemon's defaults (max_domains, max_pending, "
                         "add_rate, add_burst) instead of raising them to --count")
    args = ap.parse_args()
    binary = ROOT / args.build / "s2smuxd"
    gencerts = ROOT / args.build / "bench" / "s2smux-gencerts"
    tmp = Path(tempfile.mkdtemp(prefix="s2smux-bench-adds-"))
    certdir = tmp / "certs"
    certdir.mkdir()
    t = time.monotonic()
    subprocess.run([str(gencerts), "--out", str(certdir), "--count", str(args.count), "--also", "peer.bench.test"],
                   check=True, stdout=subprocess.DEVNULL)
    gen_s = time.monotonic() - t
    domains = [f"d{i}.bench.test" for i in range(1, args.count + 1)]

    b_outer = free_port()
    cfg_b = {
        "gateway": {"domains": ["peer.bench.test"], "admin_socket": "admin.sock"},
        "listen": {"outer": f"127.0.0.1:{b_outer}", "inner": f"127.0.0.1:{free_port()}"},
        "upstream": {"address": f"127.0.0.1:{free_port()}"},
        "tls": {"ca_file": str(certdir / "ca.pem"), "policy": "required"},
        "cert": [{"cert": str(certdir / "peer.bench.test.pem"), "key": str(certdir / "peer.bench.test.key")}],
        "mux": ({} if args.default_limits else
                {"max_domains": args.count + 10, "add_burst": args.count + 10, "add_rate": 1000000,
                 "max_pending": args.count + 10}),
        "log": {"level": "info"},
    }
    cfg_a = {
        "gateway": {"domains": domains, "admin_socket": "admin.sock"},
        "listen": {"outer": f"127.0.0.1:{free_port()}", "inner": f"127.0.0.1:{free_port()}"},
        "upstream": {"address": f"127.0.0.1:{free_port()}"},
        "tls": {"ca_file": str(certdir / "ca.pem"), "policy": "required"},
        "cert": [{"cert": str(certdir / f"{d}.pem"), "key": str(certdir / f"{d}.key")} for d in domains],
        "route": [{"domain": "peer.bench.test", "address": f"127.0.0.1:{b_outer}", "preconnect": True}],
        "log": {"level": "warn"},
    }
    gb = S2smuxd(tmp, binary=binary, config=cfg_b, name="gw-b")
    ga = S2smuxd(tmp, binary=binary, config=cfg_a, name="gw-a")
    ok = False
    try:
        gb.start()
        time.sleep(0.3)
        rss_b0 = rss_kib(gb.proc.pid)
        load0 = os.getloadavg()
        cpu_b0 = cpu_s(gb.proc.pid)
        t_start = time.monotonic()
        sample_b = CpuSampler(pid=gb.proc.pid)
        sample_b.start()
        sample_a = CpuSampler(config=ga.config_file)  # from its exec on: it connects during start()
        sample_a.start()
        ga.start(timeout=120)
        load_s = time.monotonic() - t_start
        want = args.count - 1
        deadline = time.monotonic() + 600
        last = -1
        while time.monotonic() < deadline:
            st = stats(gb.dir / "admin.sock")
            n = st.get("mux.peer_adds_ok", 0) + st.get("mux.peer_adds_failed", 0)
            if n != last:
                print(f"# accepted {st.get('mux.peer_adds_ok', 0)}, failed {st.get('mux.peer_adds_failed', 0)}",
                      file=sys.stderr, flush=True)
                last = n
            if n >= want:
                break
            time.sleep(0.05)
        st = stats(gb.dir / "admin.sock")
        # A: everything since exec (loading the certificates, then signing the
        # proofs, which overlaps with start-up); B: from before A connected.
        cpu_a1, cpu_b1 = cpu_s(ga.proc.pid), cpu_s(gb.proc.pid)
        sample_a.stopping.set()
        sample_b.stopping.set()
        rss_b_last = rss_kib(gb.proc.pid)  # at the last answer, transient buffers included
        # Steady state: what the accepted domains keep once the burst is over.
        time.sleep(args.settle)
        rss_b1 = rss_kib(gb.proc.pid)
        rss_a = rss_kib(ga.proc.pid)
        hwm_a, hwm_b = rss_kib(ga.proc.pid, "VmHWM"), rss_kib(gb.proc.pid, "VmHWM")
        log_b = gb.log_text().splitlines()
        enabled = [log_time(l) for l in log_b if "multiplexing enabled" in l]
        accepted = [log_time(l) for l in log_b if "mux: accepted the peer's" in l]
        adds_ok, adds_failed = st.get("mux.peer_adds_ok", 0), st.get("mux.peer_adds_failed", 0)
        n_adds = max(1, adds_ok + adds_failed)
        span = (accepted[-1] - enabled[0]) if enabled and accepted else float("nan")
        # CPU of the adds alone: from multiplexing enabled to the last answer
        # (A: signing and sending; B: verifying and answering).
        cpu_a_adds = cpu_a1 - sample_a.at(enabled[0]) if enabled else float("nan")
        cpu_b_adds = cpu_b1 - sample_b.at(enabled[0]) if enabled else float("nan")
        if enabled and sample_a.samples and sample_a.samples[0][0] > enabled[0]:
            print("# note: adding gateway sampled from after multiplexing was enabled: its CPU per add is low",
                  file=sys.stderr)
        res = {
            "domains": args.count, "adds_ok": adds_ok, "adds_failed": adds_failed,
            "seconds_enable_to_last_added": round(span, 3),
            "adds_per_s": round(adds_ok / span) if span and span == span and span > 0 else None,
            "gw_b_rss_kib_before": rss_b0, "gw_b_rss_kib_after": rss_b1,
            "gw_b_bytes_per_domain": round((rss_b1 - rss_b0) * 1024 / max(1, adds_ok)),
            "gw_b_rss_kib_at_last_add": rss_b_last,
            "gw_a_rss_kib": rss_a, "gw_a_start_s": round(load_s, 2), "certgen_s": round(gen_s, 2),
            "connections": admin(gb.dir / "admin.sock", "streams").__len__() - 1,
            "gw_a_cpu_s": round(cpu_a1, 2),
            "gw_b_cpu_s_adds": round(cpu_b1 - cpu_b0, 2), "gw_a_hwm_kib": hwm_a, "gw_b_hwm_kib": hwm_b,
            "gw_a_cpu_ms_per_add": round(1000 * cpu_a_adds / n_adds, 3),
            "gw_b_cpu_ms_per_add": round(1000 * cpu_b_adds / n_adds, 3),
            "adds_per_cpu_s_b": round(n_adds / cpu_b_adds) if cpu_b_adds > 0 else None,
            "failed_by_reason": {k.rsplit(".", 1)[1]: v for k, v in st.items()
                                 if k.startswith("mux.peer_adds_failed.")},
            "b_mux_limits": "defaults" if args.default_limits else "raised to --count",
            "loadavg": [round(x, 2) for x in load0],
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        print(f"domains added on one stream : {adds_ok} ok, {adds_failed} failed (of {want})"
              + (f", failures: {res['failed_by_reason']}" if adds_failed else ""))
        print(f"enable -> last added        : {res['seconds_enable_to_last_added']} s "
              f"({res['adds_per_s']} adds/s)")
        print(f"receiving gateway RSS       : {rss_b0} KiB -> {rss_b1} KiB {args.settle:g} s after the last add "
              f"({res['gw_b_bytes_per_domain']} bytes per domain; {rss_b_last} KiB at the last add)")
        print(f"adding gateway RSS          : {rss_a} KiB with {args.count} certificates loaded "
              f"(start-up {res['gw_a_start_s']} s)")
        print(f"CPU                         : adding gateway {res['gw_a_cpu_s']} s in all (load, sign), receiving "
              f"gateway "
              f"{res['gw_b_cpu_s_adds']} s ({1000 * res['gw_b_cpu_s_adds'] / max(1, adds_ok + adds_failed):.2f} ms "
              f"per add); load average {' '.join(map(str, res['loadavg']))}")
        print(f"CPU per add, enabled -> last: adding gateway {res['gw_a_cpu_ms_per_add']} ms, receiving gateway "
              f"{res['gw_b_cpu_ms_per_add']} ms ({res['adds_per_cpu_s_b']} adds per CPU-second of the receiver)")
        print(json.dumps(res))
        ok = adds_ok == want and adds_failed == 0
    finally:
        ga.stop()
        gb.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"# kept {tmp}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
