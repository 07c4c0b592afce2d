#!/usr/bin/python3
"""Configuration reload (SIGHUP, `s2smuxctl reload`), SIGUSR1 and systemd
notifications, under traffic, through two real gateways fronting Prosody.

Gateway A starts serving a.test only, under a fake systemd notification
socket ($NOTIFY_SOCKET). While alice@a.test sends a steady stream of
messages to bob@b.test over the one multiplexed stream:
  - a config with a syntax error (`s2smuxctl reload`) and one naming a
    missing certificate (SIGHUP) are rejected with the error; the running
    configuration keeps serving; systemd gets RELOADING=1 then READY=1;
  - a config adding c.test and its certificate (SIGHUP) is applied live:
    gateway B accepts c.test on the same stream, carol@c.test <-> bob works;
  - a config removing c.test, changing limits and a listen address
    (`s2smuxctl reload`) withdraws c.test (carol is refused again), applies
    the limits to live streams and says the listen address needs a restart;
  - SIGUSR1 reopens the log file after logrotate-style renaming;
  - SIGTERM sends STOPPING=1.
No reload reconnects the gateways; none of alice's messages is lost.

Run by hand: /usr/bin/python3 tests/interop/test_ops_reload.py [--keep] [-v]
"""

import copy
import os
import secrets
import signal
import socket
import time
from pathlib import Path

from harness.gateway import to_toml
from harness.ports import free_port
from harness.runner import run
from harness.scenarios import check_message
from harness.sockets import established
from harness.traffic import Stream, live_pair


class Notifications:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.seen: list[dict[str, str]] = []

    def poll(self):
        try:
            while True:
                data = self.sock.recv(4096).decode()
                self.seen.append(dict(l.split("=", 1) for l in data.splitlines() if "=" in l))
        except (socket.timeout, BlockingIOError):
            pass

    def wait(self, key, value=None, after=0, timeout=15.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.poll()
            for i, m in enumerate(self.seen[after:], after):
                if key in m and (value is None or m[key] == value):
                    return i, m
        raise AssertionError(f"no {key}={value or '*'} notification after #{after}: {self.seen[after:]}")


def peer_row(gw, domain):
    return [l for l in gw.ctl_ok("certs") if domain in l and l.startswith("peer ")]


def mux_streams(gw):
    """Ids of the streams with multiplexing on (`s2smuxctl streams`)."""
    lines = gw.ctl_ok("streams")
    col = lines[0].split().index("MUX")
    return [l.split()[0] for l in lines[1:] if l.split()[col] == "on"]


def wait_log(t, gw, needle, since, timeout=15.0):
    t.clients().wait_for(lambda: needle in gw.log_text()[since:], timeout, f"log line {needle!r}")


def main(t):
    pki = t.pki()
    c1 = pki.issue("c.test")
    t.dir.mkdir(parents=True, exist_ok=True)
    notes = Notifications(t.dir / "notify.sock")

    def under_systemd(gw):
        gw.environment = lambda: {**os.environ, "NOTIFY_SOCKET": notes.path}

    lp = live_pair(t, pki, c1, tweak_a=lambda c: c["log"].update(file="gateway.log"), before_start=under_systemd)
    gwa, gwb, cl, alice, carol, bob = lp.gwa, lp.gwb, lp.cl, lp.alice, lp.carol, lp.bob
    a_outer, b_outer, base_a = lp.a_outer, lp.b_outer, lp.cfg_a
    log_file = gwa.dir / "gateway.log"
    with t.check("systemd: READY=1 with a STATUS= line once serving"):
        i, m = notes.wait("READY", "1")
        assert "STATUS" in m and "stream" in m["STATUS"], m
        t.note(f"STATUS={m['STATUS']}")
    steady = Stream(cl, alice, "bob@b.test", bob)
    steady.run_while(None, "start", seconds=0.3)
    mux_at_start = mux_streams(gwb)

    with t.check("s2smuxctl reload with a TOML syntax error: rejected with file and line, exit 1"):
        gwa.config_file.write_text(to_toml(base_a) + "\n[listen\n")
        r = gwa.ctl("reload")
        assert r.returncode == 1, r
        err = r.stderr.strip()
        assert "nothing changed" in err and "s2smux.toml:" in err, err
        t.note(err)
        assert "configuration rejected" in log_file.read_text()
    steady.run_while(None, "rejected", seconds=0.3)
    check_message(t, cl, alice, bob, label="the running configuration keeps serving")

    with t.check("SIGHUP with a missing [[cert]] file: rejected and logged; RELOADING=1 then READY=1"):
        n0 = len(notes.seen)
        since = len(gwa.log_text())
        bad = copy.deepcopy(base_a)
        bad["cert"].append({"cert": str(t.dir / "missing.pem"), "key": str(c1.key)})
        gwa.reload(bad)
        wait_log(t, gwa, "configuration rejected", since)
        i, m = notes.wait("RELOADING", "1", after=n0)
        usec = int(m["MONOTONIC_USEC"])
        assert abs(usec / 1e6 - time.monotonic()) < 30, f"MONOTONIC_USEC {usec} vs {time.monotonic()}"
        _, m = notes.wait("READY", "1", after=i + 1)
        assert "rejected" in m.get("STATUS", ""), m
        line = [l for l in gwa.log_text()[since:].splitlines() if "configuration rejected" in l][0]
        assert "missing.pem" in line, line
        t.note(line.split("] ", 1)[-1])
    check_message(t, cl, alice, bob, label="still serving after the rejected SIGHUP")

    with t.check("SIGHUP adding c.test and its certificate: applied live, gateway B accepts c.test"):
        good = copy.deepcopy(base_a)
        good["gateway"]["domains"] = ["a.test", "c.test"]
        good["cert"].append({"cert": str(c1.chain), "key": str(c1.key)})
        n0 = len(notes.seen)
        since = len(gwa.log_text())
        gwa.reload(good)
        i, _ = notes.wait("RELOADING", "1", after=n0)
        notes.wait("READY", "1", after=i + 1)
        wait_log(t, gwa, "reloaded", since)
        cl.wait_for(lambda: peer_row(gwb, "c.test"), 15, "c.test accepted by B")
        t.note(peer_row(gwb, "c.test")[0])
    steady.run_while(None, "added", seconds=0.3)
    check_message(t, cl, carol, bob, label="after the reload: carol@c.test -> bob@b.test delivered")
    check_message(t, cl, bob, carol, label="after the reload: bob@b.test -> carol@c.test delivered")

    with t.check("s2smuxctl reload removing c.test, changing limits and a listen address"):
        smaller = copy.deepcopy(base_a)
        smaller["limits"] = {"max_stanza_bytes": 200000}
        smaller["mux"] = {"strict": False, "add_rate": 500}
        smaller["listen"]["outer"] = f"127.0.0.1:{free_port()}"
        gwa.config = smaller
        gwa.write_config()
        out = gwa.ctl_ok("reload")
        text = "\n".join(out)
        t.note(" | ".join(out))
        assert out[0].startswith("reloaded "), out
        assert "domains removed: c.test" in text, text
        assert "certificate" in text and "removed" in text, text
        assert "max_stanza_bytes" in text and "[mux] limits" in text, text
        assert "unchanged until a restart: [listen] outer" in text, text
        cl.wait_for(lambda: not peer_row(gwb, "c.test"), 15, "c.test withdrawn from B")
    with t.check("after the removal carol@c.test -> bob@b.test is refused, not delivered"):
        body = f"after removal {secrets.token_hex(3)}"
        mid = carol.send_message("bob@b.test", body)
        cl.wait_for(lambda: carol.error_for(body, mid), 15, "a bounce for carol")
        assert not bob.has_body(body)
    steady.run_while(None, "removed", seconds=0.3)

    with t.check("SIGUSR1 reopens the log file after it was renamed (logrotate)"):
        rotated = log_file.with_name("gateway.log.1")
        log_file.rename(rotated)
        gwa.reopen_logs()
        cl.wait_for(lambda: log_file.exists() and "log file reopened" in log_file.read_text(), 10,
                    "a new log file")
        gwa.ctl_ok("stats")

    with t.check("zero loss, and no reload reconnected the gateways"):
        cl.wait_for(lambda: not steady.missing(), 20, "all steady messages delivered")
        assert not alice.errors, f"alice got {len(alice.errors)} bounce(s)"
        n = established([a_outer, b_outer])
        assert n == 1, f"{n} connections"
        assert mux_streams(gwb) == mux_at_start, f"mux stream changed: {mux_at_start} -> {mux_streams(gwb)}"
        t.note(f"{len(steady.sent)} steady messages delivered across 4 reloads")

    with t.check("s2smuxctl resolve: static route and mux stream named"):
        out = "\n".join(gwa.ctl_ok("resolve", "b.test"))
        assert f"127.0.0.1" in out and str(b_outer) in out and "route" in out, out
        assert "multiplexed on s" in out, out
        t.note(out.replace("\n", " | "))
        out = "\n".join(gwa.ctl_ok("resolve", "a.test"))
        assert "local domain" in out, out
        r = gwa.ctl("resolve", "bad..name")
        assert r.returncode == 1 and "invalid domain" in r.stderr, r

    with t.check("s2smuxctl close b.test: the mux stream closes with <system-shutdown/>, traffic reconnects"):
        r = gwa.ctl("close", "nosuch.test")
        assert r.returncode == 1 and "no open stream matches" in r.stderr, r
        r = gwa.ctl("close", "b.test", "see-other-host")
        assert r.returncode == 1, r
        before = mux_streams(gwb)
        out = gwa.ctl_ok("close", "b.test")
        assert out and all("system-shutdown" in l for l in out), out
        t.note(" | ".join(out))
        cl.wait_for(lambda: "system-shutdown" in gwb.log_text(), 10, "B logs the stream error")
        check_message(t, cl, alice, bob, label="alice -> bob again, on a new stream")
        cl.wait_for(lambda: mux_streams(gwb) and mux_streams(gwb) != before, 10, "a new mux stream")

    with t.check("no secret material in the logs (private keys)"):
        text = gwa.log_text() + log_file.with_name("gateway.log.1").read_text()
        key_lines = [l for l in Path(c1.key).read_text().splitlines() if len(l) > 40]
        assert "PRIVATE KEY" not in text and not any(l in text for l in key_lines)
        for line in ("reloaded", "configuration rejected", "closed by the operator"):
            assert line in text, f"no {line!r} log line"

    with t.check("SIGTERM: STOPPING=1"):
        n0 = len(notes.seen)
        gwa.signal(signal.SIGTERM)
        notes.wait("STOPPING", "1", after=n0)
        gwa.proc.wait(timeout=15)


if __name__ == "__main__":
    run(main, timeout=150)
