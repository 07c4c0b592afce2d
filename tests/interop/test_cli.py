#!/usr/bin/python3
"""s2smuxd command line: --version, -t on good and bad configurations.

`s2smuxd --config FILE -t` must exit 0 with "configuration OK" for a valid
file and 1 with one line naming the file and the offending key otherwise;
usage errors exit 2.

Run by hand: /usr/bin/python3 tests/interop/test_cli.py [--keep] [-v]
"""

import copy
import subprocess
from pathlib import Path

from harness.gateway import S2smuxd, to_toml
from harness.runner import run


def s2smuxd(gw, *args):
    return subprocess.run([str(gw.binary), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=30)


def main(t):
    pki = t.pki()
    base = S2smuxd.fronting_config(domains=["a.test"], certs=[pki.issue("a.test")], ca_file=pki.ca_file,
                                   upstream="127.0.0.1:25269", inner="127.0.0.1:15269", outer="127.0.0.1:5269",
                                   routes=[{"domain": "b.test", "address": "127.0.0.1:6269"}])
    gw = S2smuxd(t.dir, config=base)

    with t.check("--version prints the version and exits 0"):
        r = s2smuxd(gw, "--version")
        assert r.returncode == 0 and r.stdout.startswith("s2smuxd "), r.stdout

    with t.check("no --config: usage error, exit 2"):
        r = s2smuxd(gw)
        assert r.returncode == 2 and "--config" in r.stdout, r.stdout

    with t.check("-t on a valid configuration: exit 0, 'configuration OK'"):
        r = gw.check_config()
        assert r.returncode == 0 and "configuration OK" in r.stdout, r.stdout

    bad = [
        ("[tls] policy", lambda c: c["tls"].update(policy="maybe"), ["[tls] policy", "maybe"]),
        ("[listen] outer", lambda c: c["listen"].update(outer="1.2.3"), ["[listen] outer", "1.2.3"]),
        ("unknown key", lambda c: c["listen"].update(outr="127.0.0.1:1"), ["outr"]),
        ("[gateway] domains", lambda c: c["gateway"].update(domains=["a b"]), ["[gateway] domains"]),
        ("[[cert]] missing file", lambda c: c["cert"][0].update(cert=str(t.dir / "nope.pem")),
         ["[[cert]]", "nope.pem"]),
        ("[[route]] address", lambda c: c["route"][0].update(address="nowhere"), ["[[route]]", "address"]),
    ]
    for label, mutate, needles in bad:
        with t.check(f"-t rejects bad {label}: exit 1, message names the key"):
            cfg = copy.deepcopy(base)
            mutate(cfg)
            gw.config = cfg
            r = gw.check_config()
            assert r.returncode == 1, f"exit {r.returncode}: {r.stdout}"
            line = r.stdout.strip()
            assert str(gw.config_file) in line or "s2smux.toml" in line, f"file not named: {line}"
            for n in needles:
                assert n in line, f"{n!r} not in {line!r}"
            t.note(line)

    with t.check("-t rejects a key that does not match its certificate"):
        cfg = copy.deepcopy(base)
        other = pki.issue("b.test")
        cfg["cert"][0]["key"] = str(other.key)
        gw.config = cfg
        r = gw.check_config()
        assert r.returncode == 1 and "[[cert]]" in r.stdout and "does not match" in r.stdout, r.stdout
        t.note(r.stdout.strip())

    with t.check("the installed example configuration (tools/s2smux.toml.example) passes -t"):
        text = (Path(__file__).resolve().parents[2] / "tools" / "s2smux.toml.example").read_text()
        c = pki.issue("example.org", names=["example.org", "conference.example.org"])
        text = text.replace("/etc/s2smux/example.org.pem", str(c.chain))
        text = text.replace("/etc/s2smux/example.org.key", str(c.key))
        text = text.replace("/run/s2smux/admin.sock", str(t.dir / "example.sock"))
        assert str(c.chain) in text and str(c.key) in text
        f = t.dir / "example.toml"
        f.write_text(text)
        r = s2smuxd(gw, "-t", "--config", str(f))
        assert r.returncode == 0 and "configuration OK" in r.stdout, r.stdout
        t.note(r.stdout.strip())

    with t.check("-t reports a TOML syntax error with line and column"):
        gw.config_file.write_text(to_toml(base) + "\n[listen\n")
        r = s2smuxd(gw, "-t", "--config", str(gw.config_file))
        assert r.returncode == 1 and ":" in r.stdout, r.stdout
        t.note(r.stdout.strip())


if __name__ == "__main__":
    run(main, timeout=60)
