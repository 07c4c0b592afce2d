"""File descriptor limits (RLIMIT_NOFILE) for servers holding thousands of sockets.

Children inherit the limits of the process that starts them, so the simplest
reliable way to give Prosody and s2smuxd more descriptors is to raise the
test process's own soft limit before starting them:

    from harness.fdlimit import raise_nofile, process_limits, open_fds
    before, after, hard = raise_nofile(30000)   # soft limit -> min(30000, hard)
    ... start servers ...
    process_limits(pa.proc.pid)   # (soft, hard) the child really got
    open_fds(pa.proc.pid)         # descriptors it holds now

Neither Prosody 0.12 nor s2smuxd raises its own limit: Prosody 0.12 has no
option for it (util.pposix has setrlimit/getrlimit, but no module of 0.12 calls
them, and there is no `max_fds` setting); s2smuxd does not call setrlimit.
An unprivileged process may raise its soft limit up to the hard limit only.

FdSampler keeps the peak descriptor count (and the CPU time used) of a few
processes while a test runs (call sample() now and then, e.g. from the
message loop).
"""

from __future__ import annotations

import os
import resource


def nofile_limits() -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of this process (RLIM_INFINITY as -1)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def raise_nofile(want: int | None = None) -> tuple[int, int, int]:
    """Raise this process's soft RLIMIT_NOFILE to min(want, hard) (want None:
    to the hard limit); never lowers it. Returns (old soft, new soft, hard).
    Processes started afterwards inherit the new soft limit."""
    inf = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if want is None:
        target = hard
    elif hard == inf:
        target = want
    else:
        target = min(want, hard)

    def above(x, y):  # x > y, with RLIM_INFINITY the largest
        return x != y and (x == inf or (y != inf and x > y))

    if above(target, soft):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    new_soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, new_soft, hard


def preexec_raise_nofile(want: int | None = None):
    """A subprocess.Popen preexec_fn that raises the child's soft limit (for
    code that starts processes itself; the Server classes inherit instead)."""
    def fn():
        raise_nofile(want)
    return fn


def process_limits(pid: int) -> tuple[int | None, int | None]:
    """(soft, hard) 'Max open files' of process `pid` from /proc/PID/limits
    (-1 for unlimited, None when unreadable)."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    parts = line.split()
                    soft, hard = parts[3], parts[4]
                    conv = (lambda v: -1 if v == "unlimited" else int(v))
                    return conv(soft), conv(hard)
    except OSError:
        pass
    return None, None


def open_fds(pid: int) -> int | None:
    """Number of descriptors process `pid` holds (None when unreadable)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` so far (None when unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    # fields[11], [12]: utime, stime (clock ticks); fields[0] is the state.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FdSampler:
    """Peak descriptor counts of named processes.

        s = FdSampler({"prosody-a": pa.proc.pid, "s2smuxd-a": gwa.proc.pid})
        s.sample()            # as often as useful
        s.peak                # {"prosody-a": 5123, ...}
        s.summary()           # "prosody-a 5123 (limit 20000), ..."
    """

    def __init__(self, pids: dict[str, int]):
        self.pids = dict(pids)
        self.peak: dict[str, int] = {name: 0 for name in self.pids}
        self.limits = {name: process_limits(pid) for name, pid in self.pids.items()}
        self.cpu_start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.cpu_last = dict(self.cpu_start)

    def sample(self) -> dict[str, int]:
        now = {}
        for name, pid in self.pids.items():
            c = cpu_seconds(pid)
            if c is not None:
                self.cpu_last[name] = c
            n = open_fds(pid)
            if n is not None:
                now[name] = n
                if n > self.peak[name]:
                    self.peak[name] = n
        return now

    def summary(self) -> str:
        parts = []
        for name, n in self.peak.items():
            soft, _hard = self.limits.get(name, (None, None))
            parts.append(f"{name} {n} (soft limit {soft})")
        return ", ".join(parts)

    def cpu_used(self) -> dict[str, float]:
        """CPU seconds each process used between construction and the last sample()."""
        return {name: (self.cpu_last[name] or 0.0) - (self.cpu_start[name] or 0.0)
                for name in self.pids if self.cpu_start.get(name) is not None}

    def cpu_summary(self) -> str:
        return ", ".join(f"{name} {s:.1f} s" for name, s in self.cpu_used().items())
