#!/usr/bin/python3
"""Captures in s2smuxd (s2smuxctl capture start/stop, captures, [[route]]
capture) and their deterministic replay with s2smux-replay.

One s2smuxd fronting Prosody a.test, a plain Prosody b.test on the other
side (as in test_gateway_prosody), a dialback secret in the config:
  - `capture start` with a directory that does not exist, or a bad peer:
    one clear error line, exit 1;
  - `capture start '*' all.cap` (relative: the config's directory) before
    any S2S stream, messages both ways: every stream is recorded from its
    first byte; `capture start b.test late.cap` while they are up records
    the b.test streams as partial; `captures` lists both; `capture stop`
    says how many streams and bytes each recorded;
  - the files start with the header line, are mode 0600, hold S/</>/E
    records (S of all.cap not partial, of late.cap partial), no private key
    and no dialback secret; `s2smux-replay` passes every full stream
    ("0 failed", "ok" lines) and skips the partial ones;
  - reload adding `capture = "route.cap"` to the b.test route starts it: new
    b.test streams (after `close b.test`) are recorded from their start and
    replay; reload removing the key stops it;
  - a capture still running when s2smuxd stops gets its E records and is
    closed (the daemon still stops cleanly);
  - restarted with `capture = "route.cap"` in its config, s2smuxd moves the
    earlier run's route.cap aside and records into a new one.
Then two gateways with one multiplexed stream (harness.traffic.live_pair),
gateway A configured with `capture = "mux.cap"` on its b.test route from
the start: the multiplexed stream, carrying a certificate added live with
`cert add`, is recorded from its first byte and replays.

Run by hand: /usr/bin/python3 tests/interop/test_capture.py [--keep] [-v]
"""

import copy
import os
import re
import secrets
import stat
import subprocess
from pathlib import Path

from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from harness.scenarios import check_message
from harness.traffic import live_pair


def replay_binary(gw):
    return Path(os.environ.get("S2SMUX_REPLAY") or gw.binary.parent / "tools" / "s2smux-replay")


def records(path):
    """(header, [(kind, ms, stream, rest)]) of a capture file."""
    lines = Path(path).read_text(errors="replace").splitlines()
    out = []
    for l in lines[1:]:
        if not l or l.startswith("#"):
            continue
        parts = l.split(" ", 3)
        out.append((parts[0], int(parts[1]), int(parts[2]), parts[3] if len(parts) > 3 else ""))
    return lines[0] if lines else "", out


def unescape(s):
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


def streams_of(recs):
    """stream id -> its S record's rest (key=value tokens)."""
    return {s: rest for kind, _, s, rest in recs if kind == "S"}


def replay(gw, path):
    return subprocess.run([str(replay_binary(gw)), str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=60)


def check_file(t, gw, path, secrets_, label, partial):
    with t.check(f"{label}: header, mode 0600, S/</>/E records, no key or dialback secret"):
        assert path.exists(), f"{path} missing"
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, f"mode {oct(mode)}"
        header, recs = records(path)
        assert re.fullmatch(r"s2smux-capture 1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", header), header
        kinds = {k for k, *_ in recs}
        assert {"S", "<", ">", "E"} <= kinds, f"record kinds {sorted(kinds)}"
        starts = streams_of(recs)
        ends = {s for k, _, s, _ in recs if k == "E"}
        assert starts, "no stream"
        assert set(starts) == ends, f"streams without an E record: {sorted(set(starts) - ends)}"
        if partial:
            assert all("partial=1" in r.split() for r in starts.values()), "a stream not marked partial"
        else:
            assert any("partial=1" not in r.split() for r in starts.values()), "every stream is partial"
        text = path.read_text(errors="replace")
        assert "PRIVATE KEY" not in text, "private key material"
        for s in secrets_:
            assert s not in text, f"secret {s[:12]}... recorded"
        t.note(f"{path.name}: {len(starts)} stream(s), {len(recs)} records, "
               f"kinds {' '.join(sorted(k for k in kinds))}")
    return starts


def check_replay(t, gw, path, label, want_ok):
    with t.check(f"{label}: s2smux-replay exits 0, '0 failed'"):
        r = replay(gw, path)
        out = r.stdout
        assert r.returncode == 0, f"exit {r.returncode}: {out[-3000:]} {r.stderr}"
        summary = out.strip().splitlines()[-1]
        assert re.fullmatch(r"\d+ passed, 0 failed, \d+ skipped", summary), summary
        oks = [l for l in out.splitlines() if l.startswith("ok ")]
        skipped = [l for l in out.splitlines() if l.startswith("skipped ")]
        if want_ok:
            assert oks, f"no stream replayed: {out}"
        else:
            assert not oks and skipped, f"partial streams must be skipped: {out}"
        t.note(summary)


def main(t):
    pki = t.pki()
    a_cert = pki.issue("a.test")
    a_s2s, b_s2s = free_port(), free_port()
    secret = f"capture-test-dialback-{secrets.token_hex(12)}"
    cfg = S2smuxd.fronting_config(
        domains=["a.test"], certs=[a_cert], ca_file=pki.ca_file, upstream=f"127.0.0.1:{a_s2s}",
        routes=[{"domain": "b.test", "address": f"127.0.0.1:{b_s2s}"}])
    cfg["gateway"]["dialback_secret"] = secret
    gw = S2smuxd(t.dir, config=cfg)
    pa = Prosody(t.dir, "prosody-a", ["a.test"], pki=pki, s2s_port=a_s2s,
                 gateway=f"127.0.0.1:{gw.inner_port}", s2s_secure_auth=False,
                 users={"alice": "alice-pw"})
    pb = Prosody(t.dir, "prosody-b", ["b.test"], pki=pki, s2s_port=b_s2s,
                 routes={"a.test": f"127.0.0.1:{gw.outer_port}"}, s2s_secure_auth=True,
                 users={"bob": "bob-pw"})
    with t.check("s2smuxd, prosody a.test and prosody b.test started", fatal=True):
        t.start(gw)
        t.start(pa)
        t.start(pb)
    key_lines = [l for l in Path(a_cert.key).read_text().splitlines() if len(l) > 40]
    hidden = [secret] + key_lines

    with t.check("capture start into a missing directory: one error line, exit 1"):
        r = gw.ctl("capture", "start", "*", str(t.dir / "no-such-dir" / "x.cap"))
        assert r.returncode == 1, r
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1 and "cannot capture into" in err and "no such file" in err, err
        t.note(err)
        assert not gw.ctl_ok("captures")[1:], "a failed capture is listed"
    with t.check("capture start with a bad peer or a directory: one error line, exit 1"):
        r = gw.ctl("capture", "start", "bad..peer", "x.cap")
        assert r.returncode == 1 and "is not a peer" in r.stderr, r
        r = gw.ctl("capture", "start", "*", str(t.dir))
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r
        t.note(r.stderr.strip())
        r = gw.ctl("capture", "stop")
        assert r.returncode == 1 and "no capture is running" in r.stderr, r

    with t.check("capture start '*' all.cap before any S2S stream (relative to the config's directory)"):
        out = gw.ctl_ok("capture", "start", "*", "all.cap")
        assert out[0] == f"capturing * into {gw.dir / 'all.cap'}", out
        assert "0 open stream(s)" in out[1], out

    cl = t.clients()
    with t.check("alice@a.test and bob@b.test logged in", fatal=True):
        alice = cl.connect("alice@a.test", "alice-pw", pa.c2s_port)
        bob = cl.connect("bob@b.test", "bob-pw", pb.c2s_port)
    for i in range(3):
        check_message(t, cl, alice, bob, label=f"message {i + 1} a.test -> b.test delivered")
        check_message(t, cl, bob, alice, label=f"message {i + 1} b.test -> a.test delivered")

    with t.check("capture start b.test late.cap with the streams up: recorded as partial"):
        out = gw.ctl_ok("capture", "start", "b.test", "late.cap")
        m = re.match(r"(\d+) open stream", out[1])
        assert m and int(m.group(1)) >= 1, out
        t.note(" | ".join(out))
    check_message(t, cl, alice, bob, label="message a.test -> b.test with two captures")
    check_message(t, cl, bob, alice, label="message b.test -> a.test with two captures")

    with t.check("captures lists both, with streams and bytes"):
        lines = gw.ctl_ok("captures")
        head = lines[0].split()
        assert head[:2] == ["FILE", "PEER"] and "BYTES_WRITTEN" in head and "BYTES_DROPPED" in head, lines
        rows = {l.split()[0]: dict(zip(head, l.split())) for l in lines[1:]}
        assert set(rows) == {str(gw.dir / "all.cap"), str(gw.dir / "late.cap")}, rows
        assert int(rows[str(gw.dir / "all.cap")]["STREAMS"]) >= 2, rows
        assert int(rows[str(gw.dir / "all.cap")]["BYTES_WRITTEN"]) > 0, rows
        assert rows[str(gw.dir / "late.cap")]["PEER"] == "b.test", rows

    with t.check("capture stop: both stopped, streams and bytes reported, logged"):
        out = gw.ctl_ok("capture", "stop")
        assert len(out) == 2 and all(l.startswith("stopped ") and "bytes written" in l for l in out), out
        t.note(" | ".join(out))
        assert not gw.ctl_ok("captures")[1:]
        assert "capture stopped: " in gw.log_text()

    check_file(t, gw, gw.dir / "all.cap", hidden, "all.cap", partial=False)
    check_replay(t, gw, gw.dir / "all.cap", "all.cap", want_ok=True)
    check_file(t, gw, gw.dir / "late.cap", hidden, "late.cap", partial=True)
    check_replay(t, gw, gw.dir / "late.cap", "late.cap", want_ok=False)

    with t.check("capture start on a file of another run is refused"):
        other = gw.dir / "other.cap"
        other.write_text("s2smux-capture 1 2020-01-01T00:00:00Z\n")
        r = gw.ctl("capture", "start", "*", str(other))
        assert r.returncode == 1 and "not empty" in r.stderr, r

    with t.check("reload adding [[route]] capture = \"route.cap\" for b.test starts it"):
        with_capture = copy.deepcopy(gw.config)
        with_capture["route"][0]["capture"] = "route.cap"
        gw.config = with_capture
        gw.write_config()
        out = gw.ctl_ok("reload")
        assert any("[[route]] capture" in l and "route.cap" in l and "started" in l for l in out), out
        rows = gw.ctl_ok("captures")[1:]
        assert len(rows) == 1 and rows[0].split()[1] == "b.test" and rows[0].split()[2] == "route", rows
    with t.check("close b.test: new streams"):
        gw.ctl_ok("close", "b.test")
    check_message(t, cl, alice, bob, label="message a.test -> b.test on a new stream")
    check_message(t, cl, bob, alice, label="message b.test -> a.test on a new stream")
    with t.check("reload removing the key stops the route capture"):
        without = copy.deepcopy(gw.config)
        del without["route"][0]["capture"]
        gw.config = without
        gw.write_config()
        out = gw.ctl_ok("reload")
        assert any("[[route]] capture" in l and "stopped" in l for l in out), out
        cl.wait_for(lambda: not gw.ctl_ok("captures")[1:], 10, "the capture gone")
        cl.wait_for(lambda: "capture stopped: " + str(gw.dir / "route.cap") in gw.log_text(), 10,
                    "its file closed")
    starts = check_file(t, gw, gw.dir / "route.cap", hidden, "route.cap", partial=False)
    with t.check("route.cap: only b.test streams"):
        peers = {re.search(r"kind=(\S+)", r).group(1) for r in starts.values()}
        assert peers <= {"outer-out", "outer-in", "verify-out"}, peers
    check_replay(t, gw, gw.dir / "route.cap", "route.cap", want_ok=True)

    with t.check("a capture running when s2smuxd stops is ended and closed"):
        gw.ctl_ok("close", "b.test")
        gw.ctl_ok("capture", "start", "*", "at-stop.cap")
        body = f"before stop {secrets.token_hex(3)}"
        alice.send_message("bob@b.test", body)
        cl.wait_for(lambda: bob.has_body(body), 10, "bob gets it")
        gw.stop()
        assert gw.exit_code == 0, f"exit {gw.exit_code}"
        _, recs = records(gw.dir / "at-stop.cap")
        ends = [unescape(rest) for k, _, _, rest in recs if k == "E"]
        assert set(streams_of(recs)) == {s for k, _, s, _ in recs if k == "E"}, "a stream without an E record"
        assert any("gateway shutting down" in e for e in ends), ends
        t.note(f"E records: {sorted(set(ends))}")
    check_replay(t, gw, gw.dir / "at-stop.cap", "at-stop.cap", want_ok=True)

    with t.check("restart with [[route]] capture = \"route.cap\": the earlier run's file is moved aside"):
        old = (gw.dir / "route.cap").read_text()
        restart = copy.deepcopy(gw.config)
        restart["route"][0]["capture"] = "route.cap"
        gw.config = restart
        gw.start()
        cl.wait_for(lambda: [l for l in gw.ctl_ok("captures")[1:] if " open " in l], 10, "route.cap open")
        moved = sorted(gw.dir.glob("route.cap.*"))
        assert len(moved) == 1 and moved[0].read_text() == old, moved
        assert "moved to" in gw.log_text(), "not logged"
        t.note(f"moved to {moved[0].name}")
    check_message(t, cl, alice, bob, label="message a.test -> b.test after the restart")
    with t.check("stop: the new route.cap holds this run's b.test streams"):
        gw.stop()
        assert gw.exit_code == 0, f"exit {gw.exit_code}"
    check_file(t, gw, gw.dir / "route.cap", hidden, "route.cap after the restart", partial=False)
    check_replay(t, gw, gw.dir / "route.cap", "route.cap after the restart", want_ok=True)
    for p in (pa, pb):
        p.stop()

    # Two gateways, one multiplexed stream, captured from start-up.
    c_cert = pki.issue("c.test")
    lp = live_pair(t, pki, c_cert, tweak_a=lambda c: c["route"][0].update(capture="mux.cap"))
    with t.check("[[route]] capture at start-up: listed, the multiplexed stream recorded"):
        rows = lp.gwa.ctl_ok("captures")[1:]
        assert len(rows) == 1 and rows[0].split()[1:4] == ["b.test", "route", "open"], rows
        assert int(rows[0].split()[4]) >= 1, rows
    with t.check("cert add c.test on the live multiplexed stream"):
        out = lp.gwa.ctl_ok("cert", "add", str(c_cert.chain), str(c_cert.key))
        assert any("accepted" in l for l in out), out
    check_message(t, lp.cl, lp.carol, lp.bob, label="c.test -> b.test over the multiplexed stream")
    check_message(t, lp.cl, lp.bob, lp.alice, label="b.test -> a.test over the multiplexed stream")
    with t.check("gateway A stops: the route capture is ended and closed"):
        lp.gwa.stop()
        assert lp.gwa.exit_code == 0, f"exit {lp.gwa.exit_code}"
    key_lines = [l for k in (lp.gwa.config["cert"][0]["key"], c_cert.key)
                 for l in Path(k).read_text().splitlines() if len(l) > 40]
    starts = check_file(t, lp.gwa, lp.gwa.dir / "mux.cap", key_lines, "mux.cap", partial=False)
    with t.check("mux.cap: the multiplexed stream is in it"):
        assert any("want_mux=1" in r.split() and "kind=outer-out" in r.split() for r in starts.values()), starts
        text = (lp.gwa.dir / "mux.cap").read_text(errors="replace")
        assert "c.test" in text, "the live add is not recorded"
    check_replay(t, lp.gwa, lp.gwa.dir / "mux.cap", "mux.cap", want_ok=True)


if __name__ == "__main__":
    run(main, timeout=170)
