#!/usr/bin/python3
"""The systemd unit (tools/systemd/s2smuxd.service.in, as configured by
meson) passes `systemd-analyze verify` and `systemd-analyze security`
(offline) with an exposure level of at most 3.0, with the compatibility
drop-in that meson installs next to it on systemd < 253. Skipped (exit 77)
where systemd-analyze is missing.

Run by hand: S2SMUX_UNIT=build/tools/s2smuxd.service /usr/bin/python3 tests/interop/test_systemd_unit.py
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        print("SKIP: no systemd-analyze")
        return 77
    unit = Path(os.environ.get("S2SMUX_UNIT") or ROOT / "build" / "tools" / "s2smuxd.service")
    s2smuxd = Path(os.environ.get("S2SMUXD") or ROOT / "build" / "s2smuxd")
    text = unit.read_text()
    exec_lines = [l for l in text.splitlines() if l.startswith(("ExecStart=", "ExecStartPre="))]
    failed = 0

    def check(ok, label, detail=""):
        nonlocal failed
        print(f"{'ok  ' if ok else 'FAIL'} {label}" + (f": {detail}" if detail and not ok else ""))
        failed += not ok

    check(all("s2smuxd" in l and "--config" in l for l in exec_lines) and len(exec_lines) == 2,
          "ExecStartPre checks the config (-t), ExecStart runs it", str(exec_lines))
    check("Type=notify-reload" in text, "Type=notify-reload")
    check(re.search(r"^CapabilityBoundingSet=CAP_NET_BIND_SERVICE$", text, re.M) is not None,
          "only CAP_NET_BIND_SERVICE")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        # Point the Exec lines at the built daemon: verify checks they exist.
        local = re.sub(r"^(ExecStart(?:Pre)?=)\S+/s2smuxd", lambda m: m.group(1) + str(s2smuxd), text, flags=re.M)
        (d / "s2smuxd.service").write_text(local)
        version = subprocess.run([analyze, "--version"], capture_output=True, text=True).stdout.split()[1]
        if int(re.match(r"\d+", version).group()) < 253:
            (d / "s2smuxd.service.d").mkdir()
            shutil.copy(ROOT / "tools" / "systemd" / "s2smuxd.service.d" / "compat-systemd252.conf",
                        d / "s2smuxd.service.d")
        r = subprocess.run([analyze, "verify", "--man=no", "./s2smuxd.service"], cwd=d, capture_output=True,
                           text=True, timeout=60)
        problems = [l for l in (r.stdout + r.stderr).splitlines()
                    if l.strip() and "Failed to parse service type, ignoring: notify-reload" not in l]
        check(r.returncode == 0 and not problems, f"systemd-analyze verify (systemd {version})",
              "\n".join(problems) or f"exit {r.returncode}")
        r = subprocess.run([analyze, "security", "--offline=yes", "./s2smuxd.service"], cwd=d, capture_output=True,
                           text=True, timeout=60)
        m = re.search(r"Overall exposure level for s2smuxd\.service: ([\d.]+)", r.stdout + r.stderr)
        check(m is not None and float(m.group(1)) <= 3.0, "systemd-analyze security: exposure <= 3.0",
              m.group(0) if m else (r.stdout + r.stderr)[-500:])
        if m:
            print(f"#    {m.group(0)}")
    print(f"{'PASS' if not failed else 'FAIL'} test_systemd_unit: {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
